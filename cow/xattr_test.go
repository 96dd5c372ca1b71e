//go:build linux

package cow_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/cow"
	"github.com/strata-fs/strata/ovl"
)

// listxattr lists the xattrs of rel through the engine, security.* (an
// LSM's labels) left out.
func (f *fixture) listxattr(rel string) []string {
	f.t.Helper()
	e := f.mustLookup(rel)
	names, err := f.s.Listxattr(rel, &e, 0)
	if err != nil {
		f.t.Fatalf("Listxattr(%q): %v", rel, err)
	}
	var out []string
	for _, n := range names {
		if len(n) < 9 || n[:9] != "security." {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

func (f *fixture) getxattr(rel, name string) (string, error) {
	e := f.mustLookup(rel)
	v, err := f.s.Getxattr(rel, &e, 0, name)
	return string(v), err
}

func (f *fixture) setxattr(rel, name, val string) error {
	e := f.mustLookup(rel)
	return f.s.Setxattr(rel, &e, 0, name, []byte(val), 0)
}

func (f *fixture) removexattr(rel, name string) error {
	e := f.mustLookup(rel)
	return f.s.Removexattr(rel, &e, 0, name)
}

func TestXattrs(t *testing.T) {
	needRoot(t, "trusted.* xattrs")
	f := newFixture(t, nil, []fixtureEntry{
		file("f", "data").with("user.a", "1").with(ovl.XattrOrigin, "12345678"),
		file("g", "g"),
		dir("d").with("user.d", "dir").with(ovl.XattrOpaque, "n"),
		symlink("l", "target"),
	})
	if got, want := f.listxattr("f"), []string{"user.a"}; !slices.Equal(got, want) {
		t.Errorf("Listxattr(f) = %q, want %q", got, want)
	}
	if got, want := f.listxattr("d"), []string{"user.d"}; !slices.Equal(got, want) {
		t.Errorf("Listxattr(d) = %q, want %q", got, want)
	}
	if v, err := f.getxattr("f", "user.a"); err != nil || v != "1" {
		t.Errorf("Getxattr(f, user.a) = %q, %v; want 1", v, err)
	}
	if _, err := f.getxattr("f", ovl.XattrOrigin); !errors.Is(err, unix.ENODATA) {
		t.Errorf("Getxattr of the overlay's origin xattr: %v, want ENODATA", err)
	}

	// Removing what the lower file does not have copies nothing up.
	if err := f.removexattr("g", "user.none"); !errors.Is(err, unix.ENODATA) {
		t.Errorf("Removexattr(g, user.none) = %v, want ENODATA", err)
	}
	if k := f.upperKind("g"); k != "absent" {
		t.Errorf("Removexattr of a missing xattr left a %s in the upper, want nothing", k)
	}

	// Setxattr and Removexattr copy up, the metadata alone: the data
	// stays in the lower (a metacopy file), and reads through the stack
	// find it there.
	if err := f.setxattr("g", "user.new", "v"); err != nil {
		t.Fatalf("Setxattr(g): %v", err)
	}
	if k := f.upperKind("g"); k != "file" {
		t.Errorf("upper holds %s at g after Setxattr, want file", k)
	}
	if v, err := lgetxattr(filepath.Join(f.upper, "g"), "user.new"); err != nil || v != "v" {
		t.Errorf("upper g user.new = %q, %v; want v", v, err)
	}
	if _, err := lgetxattr(filepath.Join(f.upper, "g"), ovl.XattrMetacopy); err != nil {
		t.Errorf("upper g after Setxattr: %v, want a metacopy file", err)
	}
	f.checkData("g", "g")
	if err := f.removexattr("f", "user.a"); err != nil {
		t.Fatalf("Removexattr(f, user.a): %v", err)
	}
	if got := f.listxattr("f"); len(got) != 0 {
		t.Errorf("Listxattr(f) after Removexattr = %q, want none", got)
	}
	if k := f.upperKind("f"); k != "file" {
		t.Errorf("upper holds %s at f after Removexattr, want file", k)
	}

	// Overlay bookkeeping cannot be set or removed through the engine.
	if err := f.setxattr("g", "user.fuseoverlayfs.opaque", "y"); !errors.Is(err, unix.EPERM) {
		t.Errorf("Setxattr of user.fuseoverlayfs.opaque: %v, want EPERM", err)
	}
	if err := f.removexattr("g", "user.fuseoverlayfs.opaque"); !errors.Is(err, unix.ENODATA) {
		t.Errorf("Removexattr of user.fuseoverlayfs.opaque: %v, want ENODATA", err)
	}

	e := f.mustLookup("l")
	if target, err := f.s.Readlink("l", &e); err != nil || target != "target" {
		t.Errorf("Readlink(l) = %q, %v; want target", target, err)
	}
	e = f.mustLookup("f")
	if _, err := f.s.Readlink("f", &e); !errors.Is(err, unix.EINVAL) {
		t.Errorf("Readlink of a file: %v, want EINVAL", err)
	}
	f.checkWorkEmpty()
}

// An open file whose last name is gone keeps its xattrs, through the
// O_PATH fd that the caller took before removing it.
func TestXattrsOrphan(t *testing.T) {
	needRoot(t, "kernel-format whiteouts")
	f := newFixture(t, []fixtureEntry{file("u", "u").with("user.u", "1")}, []fixtureEntry{file("l", "l").with("user.l", "2")})
	for _, tc := range []struct {
		rel, name, val string
		setErr         error
	}{
		{"u", "user.u", "1", nil},
		{"l", "user.l", "2", unix.ENOENT}, // a lower file has no name to copy up to
	} {
		e := f.mustLookup(tc.rel)
		fd, err := unix.Open(filepath.Join(f.layerDir(e.Layer), tc.rel), unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		if err := f.remove(tc.rel); err != nil {
			t.Fatal(err)
		}
		if v, err := f.s.Getxattr(tc.rel, &e, fd, tc.name); err != nil || string(v) != tc.val {
			t.Errorf("Getxattr of removed %s = %q, %v; want %q", tc.rel, v, err, tc.val)
		}
		if names, err := f.s.Listxattr(tc.rel, &e, fd); err != nil || !slices.Contains(names, tc.name) {
			t.Errorf("Listxattr of removed %s = %q, %v; want %s in it", tc.rel, names, err, tc.name)
		}
		err = f.s.Setxattr(tc.rel, &e, fd, "user.more", []byte("x"), 0)
		if !errors.Is(err, tc.setErr) {
			t.Errorf("Setxattr of removed %s: %v, want %v", tc.rel, err, tc.setErr)
		}
		if err == nil {
			if v, err := f.s.Getxattr(tc.rel, &e, fd, "user.more"); err != nil || string(v) != "x" {
				t.Errorf("Getxattr of removed %s after Setxattr = %q, %v; want x", tc.rel, v, err)
			}
			if err := f.s.Removexattr(tc.rel, &e, fd, "user.more"); err != nil {
				t.Errorf("Removexattr of removed %s: %v", tc.rel, err)
			}
		}
	}
}

func TestStatfs(t *testing.T) {
	f := newFixture(t, nil, []fixtureEntry{file("a", "a")})
	got, err := f.s.Statfs()
	if err != nil {
		t.Fatal(err)
	}
	var want unix.Statfs_t
	if err := unix.Statfs(f.upper, &want); err != nil {
		t.Fatal(err)
	}
	if got.Type != want.Type || got.Fsid != want.Fsid || got.Bsize != want.Bsize {
		t.Errorf("Statfs = type %#x fsid %v bsize %d; want the upper's, type %#x fsid %v bsize %d",
			got.Type, got.Fsid, got.Bsize, want.Type, want.Fsid, want.Bsize)
	}
	ro, err := cow.New(cow.Options{Lower: f.lowers})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := ro.Statfs(); err != nil {
		t.Errorf("Statfs of a read-only stack: %v", err)
	}
	e := f.mustLookup("a")
	if err := ro.Setxattr("a", &e, 0, "user.x", nil, 0); !errors.Is(err, unix.EROFS) {
		t.Errorf("Setxattr on a read-only stack: %v, want EROFS", err)
	}
}

func TestFsyncdir(t *testing.T) {
	f := newFixture(t, []fixtureEntry{dir("u")}, []fixtureEntry{dir("l")})
	for _, rel := range []string{"u", "l", ""} {
		e := f.mustLookup(rel)
		if err := f.s.Fsyncdir(rel, &e); err != nil {
			t.Errorf("Fsyncdir(%q): %v", rel, err)
		}
	}
	e := f.mustLookup("u")
	if err := os.Remove(filepath.Join(f.upper, "u")); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Fsyncdir("u", &e); !errors.Is(err, unix.ENOENT) {
		t.Errorf("Fsyncdir of a directory gone from the upper: %v, want ENOENT", err)
	}
}

// A user's xattr in the overlay's namespaces is stored escaped after a
// copy-up and shown unescaped, as Linux 6.7 and later do; lower layers
// that carry escaped xattrs show them unescaped too, and copy-up keeps
// them.
func TestXattrsEscaped(t *testing.T) {
	needRoot(t, "trusted.* xattrs")
	f := newFixture(t, nil, []fixtureEntry{
		file("f", "data").with("user.a", "1"),
		file("low", "low").with("trusted.overlay.overlay.low", "L").with("user.overlay.overlay.ulow", "U"),
		file("g", "g"),
	})
	if got, want := f.listxattr("low"), []string{"trusted.overlay.low", "user.overlay.ulow"}; !slices.Equal(got, want) {
		t.Errorf("Listxattr of a lower file with escaped xattrs = %q, want %q", got, want)
	}
	if v, err := f.getxattr("low", "trusted.overlay.low"); err != nil || v != "L" {
		t.Errorf("Getxattr(low, trusted.overlay.low) = %q, %v; want L", v, err)
	}
	if _, err := f.getxattr("low", "trusted.overlay.overlay.low"); !errors.Is(err, unix.ENODATA) {
		t.Errorf("Getxattr of the stored name itself: %v, want ENODATA (it escapes once more)", err)
	}

	// Refused names copy nothing up.
	if err := f.setxattr("g", "trusted.overlay.", "x"); !errors.Is(err, unix.EINVAL) {
		t.Errorf("Setxattr(trusted.overlay.) = %v, want EINVAL", err)
	}
	if err := f.removexattr("g", "trusted.overlay.nothere"); !errors.Is(err, unix.ENODATA) {
		t.Errorf("Removexattr(trusted.overlay.nothere) = %v, want ENODATA", err)
	}
	if k := f.upperKind("g"); k != "absent" {
		t.Errorf("a refused xattr change left a %s at g in the upper, want nothing", k)
	}

	for name, val := range map[string]string{
		"trusted.overlay.foo":       "bar",
		"trusted.overlay.opaque":    "y", // the name of bookkeeping, but the user's
		"trusted.overlay.overlay.x": "dbl",
		"user.overlay.redirect":     "/etc",
	} {
		if err := f.setxattr("f", name, val); err != nil {
			t.Fatalf("Setxattr(f, %s): %v", name, err)
		}
		if v, err := f.getxattr("f", name); err != nil || v != val {
			t.Errorf("Getxattr(f, %s) = %q, %v; want %q", name, v, err, val)
		}
	}
	up := filepath.Join(f.upper, "f")
	for stored, val := range map[string]string{
		"trusted.overlay.overlay.foo":       "bar",
		"trusted.overlay.overlay.opaque":    "y",
		"trusted.overlay.overlay.overlay.x": "dbl",
		"user.overlay.overlay.redirect":     "/etc",
	} {
		if v, err := lgetxattr(up, stored); err != nil || v != val {
			t.Errorf("upper f %s = %q, %v; want %q", stored, v, err, val)
		}
	}
	for _, bookkeeping := range []string{ovl.XattrOpaque, "user.overlay.redirect", "trusted.overlay.foo"} {
		if v, err := lgetxattr(up, bookkeeping); err == nil {
			t.Errorf("upper f carries %s = %q: a user's xattr must not be stored as bookkeeping", bookkeeping, v)
		}
	}
	want := []string{"trusted.overlay.foo", "trusted.overlay.opaque", "trusted.overlay.overlay.x", "user.a", "user.overlay.redirect"}
	if got := f.listxattr("f"); !slices.Equal(got, want) {
		t.Errorf("Listxattr(f) = %q, want %q (the copy's origin hidden)", got, want)
	}
	if err := f.removexattr("f", "trusted.overlay.foo"); err != nil {
		t.Errorf("Removexattr(f, trusted.overlay.foo): %v", err)
	}
	if _, err := lgetxattr(up, "trusted.overlay.overlay.foo"); !errors.Is(err, unix.ENODATA) {
		t.Errorf("upper f keeps trusted.overlay.overlay.foo after Removexattr: %v", err)
	}

	// Copy-up keeps escaped xattrs of the lower file.
	if err := f.setxattr("low", "user.b", "2"); err != nil {
		t.Fatal(err)
	}
	for stored, val := range map[string]string{"trusted.overlay.overlay.low": "L", "user.overlay.overlay.ulow": "U"} {
		if v, err := lgetxattr(filepath.Join(f.upper, "low"), stored); err != nil || v != val {
			t.Errorf("copy of low: %s = %q, %v; want %q", stored, v, err, val)
		}
	}

	// Kernel overlayfs reads the upper the same (it unescapes the
	// trusted namespace, its own without userxattr).
	if !kernelAtLeast(6, 7) {
		t.Skip("kernel overlayfs escapes xattrs from Linux 6.7")
	}
	mnt := f.mountKernel()
	for rel, want := range map[string][]string{
		"f":   {"trusted.overlay.opaque=y", "trusted.overlay.overlay.x=dbl"},
		"low": {"trusted.overlay.low=L"},
	} {
		var got []string
		for _, n := range kernelXattrs(t, filepath.Join(mnt, rel)) {
			if strings.HasPrefix(n, "trusted.") {
				v, err := lgetxattr(filepath.Join(mnt, rel), n)
				if err != nil {
					t.Errorf("kernel overlayfs: getxattr %s %s: %v", rel, n, err)
				}
				got = append(got, n+"="+v)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("kernel overlayfs shows %s with trusted xattrs %q, want %q", rel, got, want)
		}
	}
	f.checkWorkEmpty()
}

func kernelXattrs(t *testing.T, p string) []string {
	t.Helper()
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		t.Fatalf("listxattr %s: %v", p, err)
	}
	var out []string
	for _, s := range strings.Split(string(buf[:n]), "\x00") {
		if s != "" {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// kernelAtLeast reports whether the running kernel is major.minor or later.
func kernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	var maj, min int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &maj, &min); err != nil {
		return false
	}
	return maj > major || maj == major && min >= minor
}
