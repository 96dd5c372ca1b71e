//go:build linux

package fs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// xattrScenario sets, reads, lists and removes xattrs in the overlay's
// namespace through the mount mnt, whose upper directory is upper, over
// a lower layer holding "f" (with trusted.overlay.overlay.low, an
// escaped xattr of a layer that was an upper) and "g". It returns what
// it saw, one line each, to compare strata with kernel overlayfs.
func xattrScenario(t *testing.T, mnt, upper string) []string {
	t.Helper()
	var seen []string
	see := func(format string, args ...string) {
		seen = append(seen, format+" "+strings.Join(args, " "))
	}
	errStr := func(err error) string {
		if err == nil {
			return "ok"
		}
		return err.Error()
	}
	f, g := filepath.Join(mnt, "f"), filepath.Join(mnt, "g")
	see("list f", listx(t, f)...)
	see("get f trusted.overlay.low", getx(f, "trusted.overlay.low"))
	see("remove g trusted.overlay.none:", errStr(unix.Removexattr(g, "trusted.overlay.none")))
	see("set g trusted.overlay.:", errStr(unix.Setxattr(g, "trusted.overlay.", []byte("x"), 0)))
	see("g in the upper:", errStr(unix.Access(filepath.Join(upper, "g"), unix.F_OK)))
	see("set f trusted.overlay.foo:", errStr(unix.Setxattr(f, "trusted.overlay.foo", []byte("bar"), 0)))
	see("set f trusted.overlay.opaque:", errStr(unix.Setxattr(f, "trusted.overlay.opaque", []byte("y"), 0)))
	see("get f trusted.overlay.foo", getx(f, "trusted.overlay.foo"))
	see("list f", listx(t, f)...)
	see("upper f trusted.overlay.overlay.foo", getx(filepath.Join(upper, "f"), "trusted.overlay.overlay.foo"))
	see("upper f trusted.overlay.overlay.low", getx(filepath.Join(upper, "f"), "trusted.overlay.overlay.low"))
	see("upper f trusted.overlay.opaque", getx(filepath.Join(upper, "f"), "trusted.overlay.opaque"))
	see("remove f trusted.overlay.foo:", errStr(unix.Removexattr(f, "trusted.overlay.foo")))
	see("list f", listx(t, f)...)
	return seen
}

func getx(p, name string) string {
	buf := make([]byte, 256)
	n, err := unix.Lgetxattr(p, name, buf)
	if err != nil {
		return err.Error()
	}
	return "=" + string(buf[:n])
}

// listx lists the xattrs of p, security.* (an LSM's labels) left out.
func listx(t *testing.T, p string) []string {
	t.Helper()
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		t.Fatalf("listxattr %s: %v", p, err)
	}
	var out []string
	for _, s := range strings.Split(string(buf[:n]), "\x00") {
		if s != "" && !strings.HasPrefix(s, "security.") {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

func xattrLower(t *testing.T) []string {
	t.Helper()
	lowers := makeLowers(t, 1)
	for _, n := range []string{"f", "g"} {
		if err := os.WriteFile(filepath.Join(lowers[0], n), []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Lsetxattr(filepath.Join(lowers[0], "f"), "trusted.overlay.overlay.low", []byte("L"), 0); err != nil {
		t.Fatal(err)
	}
	return lowers
}

// TestOverlayXattrs sets trusted.overlay.* xattrs through the mount: as
// Linux 6.7 and later, the file is copied up and the name stored
// escaped (trusted.overlay.overlay.*), and the mount shows it unescaped.
// Kernel overlayfs, where it escapes, must see the same.
func TestOverlayXattrs(t *testing.T) {
	lowers := xattrLower(t)
	ts := mountStack(t, lowers, MountOptions{})
	got := xattrScenario(t, ts.mnt, ts.upper)
	want := []string{
		"list f trusted.overlay.low",
		"get f trusted.overlay.low =L",
		"remove g trusted.overlay.none: no data available",
		"set g trusted.overlay.: invalid argument",
		"g in the upper: no such file or directory",
		"set f trusted.overlay.foo: ok",
		"set f trusted.overlay.opaque: ok",
		"get f trusted.overlay.foo =bar",
		"list f trusted.overlay.foo trusted.overlay.low trusted.overlay.opaque",
		"upper f trusted.overlay.overlay.foo =bar",
		"upper f trusted.overlay.overlay.low =L",
		"upper f trusted.overlay.opaque no data available",
		"remove f trusted.overlay.foo: ok",
		"list f trusted.overlay.low trusted.overlay.opaque",
	}
	if !slices.Equal(got, want) {
		t.Errorf("through strata:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	kernel, ok := kernelOverlay(t, xattrLower(t))
	if !ok {
		return
	}
	if kgot := xattrScenario(t, kernel.mnt, kernel.upper); !slices.Equal(kgot, got) {
		t.Errorf("kernel overlayfs and strata disagree:\nkernel:\n%s\nstrata:\n%s", strings.Join(kgot, "\n"), strings.Join(got, "\n"))
	}
}

// kernelOverlay mounts lowers with kernel overlayfs and a fresh upper,
// if this kernel escapes overlay xattrs (6.7 and later), and unmounts it
// when the test ends.
func kernelOverlay(t *testing.T, lowers []string) (*testStack, bool) {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var major, minor int
	rel := unix.ByteSliceToString(u.Release[:])
	if _, err := fmt.Sscanf(rel, "%d.%d", &major, &minor); err != nil || major < 6 || major == 6 && minor < 7 {
		t.Logf("kernel %s does not escape overlay xattrs: no comparison", rel)
		return nil, false
	}
	dir, err := os.MkdirTemp("", "strata-kovl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ts := &testStack{lowers: lowers, upper: filepath.Join(dir, "upper"), work: filepath.Join(dir, "work"), mnt: filepath.Join(dir, "mnt")}
	for _, d := range []string{ts.upper, ts.work, ts.mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := "lowerdir=" + strings.Join(lowers, ":") + ",upperdir=" + ts.upper + ",workdir=" + ts.work
	if err := unix.Mount("overlay", ts.mnt, "overlay", 0, opts); err != nil {
		if errors.Is(err, unix.ENODEV) && os.Getenv("CI") != "true" {
			t.Logf("no kernel overlayfs: no comparison")
			return nil, false
		}
		t.Fatalf("mount overlay %s: %v", opts, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(ts.mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", ts.mnt, err)
			unix.Unmount(ts.mnt, unix.MNT_DETACH)
		}
	})
	return ts, true
}

// TestXattrsOfUnlinkedFile reads and changes the xattrs of an open file
// whose last name is gone, which the engine reaches by the fd taken
// before the removal.
func TestXattrsOfUnlinkedFile(t *testing.T) {
	lowers := makeLowers(t, 1)
	ts := mountStack(t, lowers, MountOptions{})
	p := filepath.Join(ts.mnt, "f")
	if err := os.WriteFile(p, []byte("f"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(p, "user.a", []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	fd := int(f.Fd())
	buf := make([]byte, 16)
	if n, err := unix.Fgetxattr(fd, "user.a", buf); err != nil || string(buf[:n]) != "1" {
		t.Errorf("fgetxattr user.a of the unlinked file = %q, %v; want 1", buf[:n], err)
	}
	if err := unix.Fsetxattr(fd, "user.b", []byte("2"), 0); err != nil {
		t.Errorf("fsetxattr of the unlinked file: %v", err)
	}
	n, err := unix.Flistxattr(fd, buf)
	if got := strings.Split(strings.TrimSuffix(string(buf[:max(n, 0)]), "\x00"), "\x00"); err != nil || !slices.Contains(got, "user.a") || !slices.Contains(got, "user.b") {
		t.Errorf("flistxattr of the unlinked file = %q, %v; want user.a and user.b", got, err)
	}
	if err := unix.Fremovexattr(fd, "user.a"); err != nil {
		t.Errorf("fremovexattr of the unlinked file: %v", err)
	}
	if _, err := unix.Fgetxattr(fd, "user.a", buf); !errors.Is(err, unix.ENODATA) {
		t.Errorf("fgetxattr user.a after fremovexattr: %v, want ENODATA", err)
	}
}
