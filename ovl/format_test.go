//go:build linux

package ovl

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: trusted.* xattrs and mknod of whiteouts")
	}
}

func openPath(t *testing.T, p string) int {
	t.Helper()
	fd, err := unix.Open(p, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func setx(t *testing.T, p, name, v string) {
	t.Helper()
	if err := unix.Lsetxattr(p, name, []byte(v), 0); err != nil {
		t.Fatalf("setxattr %s %s: %v", p, name, err)
	}
}

func TestIsWhiteout(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	mk := func(name string, fn func(p string) error) {
		t.Helper()
		if err := fn(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	file := func(data string) func(string) error {
		return func(p string) error { return os.WriteFile(p, []byte(data), 0o644) }
	}
	mk("dev00", func(p string) error { return unix.Mknod(p, unix.S_IFCHR, 0) })
	mk("dev11", func(p string) error { return unix.Mknod(p, unix.S_IFCHR, int(unix.Mkdev(1, 1))) })
	mk("xwh", file(""))
	setx(t, filepath.Join(dir, "xwh"), XattrWhiteout, "")
	mk("uwh", file(""))
	setx(t, filepath.Join(dir, "uwh"), XattrUserWhiteout, "")
	mk("xwh-data", file("data"))
	setx(t, filepath.Join(dir, "xwh-data"), XattrWhiteout, "")
	mk("plain", file(""))
	mk("dir", func(p string) error { return os.Mkdir(p, 0o755) })
	mk("link", func(p string) error { return os.Symlink("dev00", p) })
	dfd := openPath(t, dir)
	for name, want := range map[string]bool{
		"dev00": true, "dev11": false, "xwh": true, "uwh": true,
		"xwh-data": false, "plain": false, "dir": false, "link": false,
	} {
		var st unix.Stat_t
		if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
		got, err := IsWhiteout(dfd, name, &st)
		if err != nil || got != want {
			t.Errorf("IsWhiteout(%s) = %v, %v; want %v", name, got, err, want)
		}
	}
}

func TestWhiteoutTarget(t *testing.T) {
	for name, want := range map[string]string{
		".wh.a": "a", ".wh..a": ".a", ".wh.": "", ".wh..wh..opq": "", ".wh..wh.plnk": "", "a": "", "a.wh.b": "",
	} {
		got, ok := WhiteoutTarget(name)
		if got != want || ok != (want != "") {
			t.Errorf("WhiteoutTarget(%q) = %q, %v; want %q", name, got, ok, want)
		}
	}
}

func TestOpacity(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct {
		name           string
		xattrs         map[string]string
		marker         bool
		opaque, xattrW bool
	}{
		{name: "plain"},
		{name: "trusted y", xattrs: map[string]string{XattrOpaque: "y"}, opaque: true},
		{name: "user y", xattrs: map[string]string{XattrUserOpaque: "y"}, opaque: true},
		{name: "fuse-overlayfs y", xattrs: map[string]string{XattrFuseOverlayfsOpaque: "y"}, opaque: true},
		{name: "trusted x", xattrs: map[string]string{XattrOpaque: "x"}, xattrW: true},
		{name: "user x", xattrs: map[string]string{XattrUserOpaque: "x"}, xattrW: true},
		{name: "other value", xattrs: map[string]string{XattrOpaque: "n"}},
		{name: "whiteouts marker", xattrs: map[string]string{XattrWhiteouts: ""}, xattrW: true},
		{name: "user whiteouts marker", xattrs: map[string]string{XattrUserWhiteouts: "y"}, xattrW: true},
		{name: "OCI marker", marker: true, opaque: true},
		{name: "x and marker", xattrs: map[string]string{XattrOpaque: "x"}, marker: true, opaque: true, xattrW: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for k, v := range tc.xattrs {
				setx(t, dir, k, v)
			}
			if tc.marker {
				if err := os.WriteFile(filepath.Join(dir, OpaqueMarker), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			for _, flags := range []int{unix.O_PATH, unix.O_RDONLY} {
				fd, err := unix.Open(dir, flags|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
				if err != nil {
					t.Fatal(err)
				}
				opaque, xw, err := Opacity(fd)
				unix.Close(fd)
				if err != nil || opaque != tc.opaque || xw != tc.xattrW {
					t.Errorf("flags %#x: Opacity = %v, %v, %v; want %v, %v", flags, opaque, xw, err, tc.opaque, tc.xattrW)
				}
			}
		})
	}
}

func TestNoXattr(t *testing.T) {
	for _, err := range []error{unix.ENODATA, unix.ENOTSUP, unix.EPERM} {
		if !NoXattr(err) {
			t.Errorf("NoXattr(%v) = false", err)
		}
	}
	for _, err := range []error{unix.EIO, unix.EBADF, unix.ENOMEM, errors.New("x")} {
		if NoXattr(err) {
			t.Errorf("NoXattr(%v) = true", err)
		}
	}
}

// TestOpacityError: an error that is not NoXattr's is reported, not read
// as "not opaque".
func TestOpacityError(t *testing.T) {
	if _, _, err := Opacity(-1); err == nil {
		t.Error("Opacity of a bad fd: no error")
	}
	if _, err := Metacopy(-1); err == nil {
		t.Error("Metacopy of a bad fd: no error")
	}
	if _, _, err := Redirect(-1); err == nil {
		t.Error("Redirect of a bad fd: no error")
	}
}

func TestProbe(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	dfd := openPath(t, dir)
	d, err := Probe(dfd)
	if err != nil {
		t.Fatal(err)
	}
	if !d.KernelWhiteouts || !d.TrustedXattrs || !d.Kernel() {
		t.Errorf("Probe as root = %+v, want the kernel format", d)
	}
	left, err := os.ReadDir(dir)
	if err != nil || len(left) != 0 {
		t.Errorf("Probe left %v (%v)", left, err)
	}
}

// TestDialectWriters writes each record in each dialect and reads it back
// with the readers, which read every dialect.
func TestDialectWriters(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct {
		name string
		d    Dialect
		// names the records must have on disk
		whiteout, opaque, redirect, metacopy string
	}{
		{"kernel", Dialect{KernelWhiteouts: true, TrustedXattrs: true, UserXattrs: true}, "gone", XattrOpaque, XattrRedirect, XattrMetacopy},
		{"userxattr", Dialect{UserXattrs: true}, ".wh.gone", XattrUserOpaque, XattrUserRedirect, XattrUserMetacopy},
		{"no xattrs", Dialect{}, ".wh.gone", "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			dfd := openPath(t, dir)
			if err := tc.d.Whiteout(dfd, "gone"); err != nil {
				t.Fatal(err)
			}
			if got := tc.d.WhiteoutName("gone"); got != tc.whiteout {
				t.Errorf("WhiteoutName = %q, want %q", got, tc.whiteout)
			}
			var st unix.Stat_t
			if err := unix.Fstatat(dfd, tc.whiteout, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				t.Fatalf("whiteout %s: %v", tc.whiteout, err)
			}
			if tc.whiteout == "gone" {
				if ok, err := IsWhiteout(dfd, "gone", &st); !ok || err != nil {
					t.Errorf("IsWhiteout = %v, %v", ok, err)
				}
			} else if target, ok := WhiteoutTarget(tc.whiteout); target != "gone" || !ok {
				t.Errorf("WhiteoutTarget(%s) = %q", tc.whiteout, target)
			}

			sub := filepath.Join(dir, "sub")
			if err := os.Mkdir(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			sfd := openPath(t, sub)
			if err := tc.d.SetOpaque(sfd); err != nil {
				t.Fatal(err)
			}
			if ok, err := IsOpaque(sfd); !ok || err != nil {
				t.Errorf("IsOpaque after SetOpaque = %v, %v", ok, err)
			}
			if tc.opaque != "" {
				if v, err := GetxattrFd(sfd, tc.opaque); string(v) != "y" || err != nil {
					t.Errorf("%s = %q, %v; want y", tc.opaque, v, err)
				}
			} else if _, err := os.Lstat(filepath.Join(sub, OpaqueMarker)); err != nil {
				t.Errorf("no opaque marker: %v", err)
			}

			err := tc.d.SetRedirect(sfd, "a/b")
			if tc.redirect == "" {
				if !errors.Is(err, ErrNoXattrs) {
					t.Errorf("SetRedirect without xattrs: %v, want ErrNoXattrs", err)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				if v, err := GetxattrFd(sfd, tc.redirect); string(v) != "/a/b" || err != nil {
					t.Errorf("%s = %q, %v; want /a/b", tc.redirect, v, err)
				}
				v, ok, err := Redirect(sfd)
				if v != "/a/b" || !ok || err != nil {
					t.Errorf("Redirect = %q, %v, %v", v, ok, err)
				}
				p, ok, err := RedirectPath(sfd, "x/y")
				if p != "a/b" || !ok || err != nil {
					t.Errorf("RedirectPath = %q, %v, %v", p, ok, err)
				}
			}

			f := filepath.Join(dir, "f")
			if err := os.WriteFile(f, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			ffd := openPath(t, f)
			if IsMetacopy(ffd) {
				t.Error("a plain file is metacopy")
			}
			err = tc.d.SetMetacopy(ffd)
			if tc.metacopy == "" {
				if !errors.Is(err, ErrNoXattrs) {
					t.Errorf("SetMetacopy without xattrs: %v, want ErrNoXattrs", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := GetxattrFd(ffd, tc.metacopy); err != nil {
				t.Errorf("%s: %v", tc.metacopy, err)
			}
			if !IsMetacopy(ffd) {
				t.Error("IsMetacopy after SetMetacopy = false")
			}
		})
	}
}

// TestRedirectRelative reads the kernel's relative form, a name beside
// the entry.
func TestRedirectRelative(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	setx(t, dir, XattrRedirect, "old")
	fd := openPath(t, dir)
	p, ok, err := RedirectPath(fd, "a/b")
	if p != "a/b/old" || !ok || err != nil {
		t.Errorf("RedirectPath = %q, %v, %v; want a/b/old", p, ok, err)
	}
	setx(t, dir, XattrRedirect, "../x")
	if _, _, err := RedirectPath(fd, "a"); !errors.Is(err, ErrBadRedirect) {
		t.Errorf("RedirectPath of ../x: %v, want ErrBadRedirect", err)
	}
	// The user form is read where the trusted one is absent.
	u := t.TempDir()
	setx(t, u, XattrUserRedirect, "/c")
	ufd := openPath(t, u)
	if v, ok, err := Redirect(ufd); v != "/c" || !ok || err != nil {
		t.Errorf("Redirect of the user form = %q, %v, %v", v, ok, err)
	}
}
