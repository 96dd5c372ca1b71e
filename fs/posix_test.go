//go:build linux

package fs

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
	"golang.org/x/sys/unix"
)

// TestPosix runs go-fuse's POSIX conformance suite in a directory that is
// merged from two lower layers: the lower one holds files, the upper one
// whites them out, so the directory is empty but every operation in it
// goes through merging, whiteouts and copy-up.
func TestPosix(t *testing.T) {
	names := make([]string, 0, len(posixtest.All))
	for n := range posixtest.All {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		fn := posixtest.All[name]
		t.Run(name, func(t *testing.T) {
			if reason, skip := posixSkips[name]; skip {
				t.Skip(reason)
			}
			lowers := makeLowers(t, 2)
			top, bottom := lowers[0], lowers[1]
			for _, d := range []string{top, bottom} {
				if err := os.Mkdir(filepath.Join(d, "t"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for _, f := range []string{"file", "dir", "link"} {
				if err := os.WriteFile(filepath.Join(bottom, "t", f), []byte("lower"), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := unix.Mknod(filepath.Join(top, "t", f), unix.S_IFCHR, 0); err != nil {
					t.Fatal(err)
				}
			}
			ts := mountStack(t, lowers, MountOptions{})
			fn(t, filepath.Join(ts.mnt, "t"))
		})
	}
}

// posixSkips lists the cases skipped, with the reason; each reason holds
// for kernel overlayfs on the same machine as well.
var posixSkips = map[string]string{
	"FcntlFlockLocksFile": "asserts that two POSIX (F_SETLK) locks taken by one process through two fds conflict; " +
		"POSIX says a process's own locks never conflict, and kernel overlayfs (like any local filesystem) grants the second lock. " +
		"strata leaves locks to the kernel, which follows POSIX.",
}
