package integration

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Tests of strata under the tools people run it with, side by side with
// fuse-overlayfs in the same run.

// toolDebs names the Debian package that installs each tool.
var toolDebs = map[string]string{
	"podman": "podman", "buildah": "buildah", "conmon": "conmon", "runc": "runc",
	"containerd": "containerd", "ctr": "containerd", "fuse-overlayfs": "fuse-overlayfs",
	"ldd": "libc-bin", "chroot": "coreutils", "tar": "tar",
}

// needTool returns the paths of tools. A missing one skips the test,
// except with CI=true, where every tool is installed and a missing one is
// a failure.
func needTool(t testing.TB, tools ...string) []string {
	t.Helper()
	var paths []string
	for _, tool := range tools {
		p, err := exec.LookPath(tool)
		if err != nil {
			msg := fmt.Sprintf("needs %s (apt-get install %s)", tool, toolDebs[tool])
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
		paths = append(paths, p)
	}
	return paths
}

// mountProgram is a program the overlay driver can be told to mount with.
type mountProgram struct{ name, path string }

// mountPrograms are strata-fuse under test and fuse-overlayfs, the
// reference.
func mountPrograms(t testing.TB) []mountProgram {
	t.Helper()
	fo := needTool(t, "fuse-overlayfs")[0]
	return []mountProgram{{"strata-fuse", strataFuse}, {"fuse-overlayfs", fo}}
}

// TestToolNodev checks that strata-fuse, like fuse-overlayfs, mounts
// nodev unless given -o dev: containers-storage drops a "nodev" of its
// mountopt from what it passes to a mount program, so the mount program
// must block device nodes that a container makes in its root filesystem
// by itself.
func TestToolNodev(t *testing.T) {
	needFUSE(t)
	for _, prog := range mountPrograms(t) {
		for _, tc := range []struct {
			extra   []string
			wantDev bool
		}{{nil, false}, {[]string{"dev"}, true}, {[]string{"dev", "nodev"}, false}, {[]string{"nodev", "dev"}, true}} {
			// A comma in the test's name would end up in its temp dirs
			// and so in the options.
			t.Run(prog.name+"/"+strings.Join(append([]string{"o"}, tc.extra...), "+"), func(t *testing.T) {
				l := newLayout(t, 1)
				t.Cleanup(func() { unmountT(t, l.mnt) })
				if out, err := exec.Command(prog.path, "-o", l.opts(tc.extra...), l.mnt).CombinedOutput(); err != nil {
					t.Fatalf("%s: %v\n%s", prog.name, err, out)
				}
				e, ok := mountEntry(l.mnt)
				if !ok {
					t.Fatalf("%s exited 0 but %s is not mounted", prog.name, l.mnt)
				}
				if got := !hasOpt(e.mountOpts, "nodev"); got != tc.wantDev {
					t.Errorf("mount options %v: devices allowed %v, want %v", e.mountOpts, got, tc.wantDev)
				}
				null := filepath.Join(l.mnt, "null")
				if err := unix.Mknod(null, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
					t.Fatalf("mknod through the mount: %v", err)
				}
				err := os.WriteFile(null, []byte("x"), 0)
				if tc.wantDev && err != nil {
					t.Errorf("write to a null device node in the mount: %v, want success", err)
				}
				if !tc.wantDev && !errors.Is(err, unix.EACCES) {
					t.Errorf("write to a null device node in a nodev mount: %v, want EACCES", err)
				}
			})
		}
	}
}
