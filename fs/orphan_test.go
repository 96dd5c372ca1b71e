//go:build linux

package fs

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// TestOpenUnlinked reopens files whose last name is gone through
// /proc/self/fd/N, which the kernel opens by the node, not by a name (as
// it opens /proc/PID/exe: see TestToolExecUnlinked in integration, which
// execs; a program cannot exec from a mount its own process serves). A
// lower file is whited out, an upper one unlinked; either may be removed
// or replaced by a rename. Kernel overlayfs and fuse-overlayfs serve these
// opens; the node's path no longer leads to the file, and they failed
// with ENOENT.
func TestOpenUnlinked(t *testing.T) {
	type testCase struct {
		name    string
		inUpper bool
		replace bool // by a rename over it, else removed
		opts    MountOptions
	}
	var cases []testCase
	for _, pass := range []bool{false, true} {
		suffix := ""
		if pass {
			suffix = ", passthrough=all"
		}
		opts := MountOptions{LowerPassthrough: pass}
		cases = append(cases,
			testCase{"lower, removed" + suffix, false, false, opts},
			testCase{"lower, replaced by rename" + suffix, false, true, opts},
			testCase{"upper, removed" + suffix, true, false, opts},
			testCase{"upper, replaced by rename" + suffix, true, true, opts})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lowers := makeLowers(t, 1)
			ts := mountStack(t, lowers, tc.opts)
			dir := lowers[0]
			if tc.inUpper {
				dir = ts.upper
			}
			const content = "the old file\n"
			if err := os.WriteFile(filepath.Join(dir, "f"), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(ts.mnt, "f")
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if tc.replace {
				if err := os.WriteFile(p+".new", []byte("new\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				err = os.Rename(p+".new", p)
			} else {
				err = os.Remove(p)
			}
			if err != nil {
				t.Fatal(err)
			}
			fdPath := "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
			if got, err := os.ReadFile(fdPath); err != nil || string(got) != content {
				t.Errorf("read through %s: got %q, %v; want %q", fdPath, got, err, content)
			}
			if !tc.inUpper {
				return
			}
			// The upper file is the file itself: a write through a new
			// open reaches what the old open reads.
			w, err := os.OpenFile(fdPath, os.O_WRONLY, 0)
			if err != nil {
				t.Fatalf("open %s for writing: %v", fdPath, err)
			}
			if _, err := w.WriteAt([]byte("THE"), 0); err != nil {
				t.Errorf("write: %v", err)
			}
			if err := w.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
			buf := make([]byte, 3)
			if _, err := f.ReadAt(buf, 0); err != nil || string(buf) != "THE" {
				t.Errorf("old open reads %q, %v after a write through a reopen; want %q", buf, err, "THE")
			}
		})
	}
}
