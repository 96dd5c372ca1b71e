//go:build linux

package fs

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/cow"
)

// needFUSE skips tests that mount when the machine cannot.
func needFUSE(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount through /dev/fuse")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
}

// testStack is a mounted stack of fresh directories.
type testStack struct {
	lowers []string // top first
	upper  string
	work   string
	mnt    string
}

// mountStack mounts lowers (top first, already filled) with a fresh upper
// and unmounts it when the test ends, even when it fails.
func mountStack(t testing.TB, lowers []string, opts MountOptions) *testStack {
	t.Helper()
	needFUSE(t)
	dir := t.TempDir()
	ts := &testStack{
		lowers: lowers,
		upper:  filepath.Join(dir, "upper"),
		work:   filepath.Join(dir, "work"),
		mnt:    filepath.Join(dir, "mnt"),
	}
	for _, d := range []string{ts.upper, ts.work, ts.mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	st, err := cow.New(cow.Options{Lower: lowers, Upper: ts.upper, Work: ts.work})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := Mount(ts.mnt, st, opts)
	if err != nil {
		st.Close()
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
			unix.Unmount(ts.mnt, unix.MNT_DETACH)
		}
		srv.Wait()
		st.Close()
	})
	return ts
}

// makeLowers creates n empty lower layer directories.
func makeLowers(t testing.TB, n int) []string {
	t.Helper()
	dir := t.TempDir()
	var out []string
	for i := 0; i < n; i++ {
		d := filepath.Join(dir, "lower"+string(rune('0'+i)))
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}
