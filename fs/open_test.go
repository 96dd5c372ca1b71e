//go:build linux

package fs

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestOpenFileDuringCopyUp opens a lower file read-only, then writes it
// through a second open, which copies it up. Kernel overlayfs's first open
// file follows the copy; with passthrough=all it keeps the lower file. In
// both, the writer must succeed and later opens must see its data.
func TestOpenFileDuringCopyUp(t *testing.T) {
	for _, tc := range []struct {
		name        string
		passthrough bool
		oldFdReads  string
	}{
		{"default", false, "new\n"},
		{"passthrough=all", true, "old\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lowers := makeLowers(t, 1)
			if err := os.WriteFile(filepath.Join(lowers[0], "f"), []byte("old\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			ts := mountStack(t, lowers, MountOptions{LowerPassthrough: tc.passthrough})
			p := filepath.Join(ts.mnt, "f")
			ro, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer ro.Close()
			buf := make([]byte, 16)
			if n, err := ro.ReadAt(buf, 0); string(buf[:n]) != "old\n" {
				t.Fatalf("first read: got %q, %v; want %q", buf[:n], err, "old\n")
			}
			if err := os.WriteFile(p, []byte("new\n"), 0o644); err != nil {
				t.Fatalf("write while a read-only open is held: %v", err)
			}
			got, err := os.ReadFile(p)
			if err != nil || string(got) != "new\n" {
				t.Errorf("new open reads %q, %v; want %q", got, err, "new\n")
			}
			n, err := ro.ReadAt(buf, 0)
			if err != nil && err != io.EOF {
				t.Fatal(err)
			}
			if string(buf[:n]) != tc.oldFdReads {
				t.Errorf("old fd reads %q after copy-up, want %q", buf[:n], tc.oldFdReads)
			}
			if lower, _ := os.ReadFile(filepath.Join(lowers[0], "f")); string(lower) != "old\n" {
				t.Errorf("lower file changed to %q", lower)
			}
		})
	}
}

// TestOpenForWriteCopiesUp: an open for writing leaves the file in the
// upper layer by the time it is closed, written or not (as with kernel
// overlayfs), and open(O_TRUNC) ends with an empty copy.
func TestOpenForWriteCopiesUp(t *testing.T) {
	lowers := makeLowers(t, 1)
	for _, n := range []string{"a", "b"} {
		if err := os.WriteFile(filepath.Join(lowers[0], n), []byte("lower data\n"), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	ts := mountStack(t, lowers, MountOptions{})
	f, err := os.OpenFile(filepath.Join(ts.mnt, "a"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(ts.upper, "a")); err != nil || string(got) != "lower data\n" {
		t.Errorf("upper copy of a after open for writing: %q, %v; want the lower data", got, err)
	}
	f, err = os.OpenFile(filepath.Join(ts.mnt, "b"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(ts.upper, "b"))
	if err != nil || st.Size() != 0 || st.Mode().Perm() != 0o640 {
		t.Errorf("upper copy of b after open(O_TRUNC): %v, %v; want an empty file with mode 0640", st, err)
	}
	if got, _ := os.ReadFile(filepath.Join(lowers[0], "b")); string(got) != "lower data\n" {
		t.Errorf("lower b changed to %q", got)
	}
}
