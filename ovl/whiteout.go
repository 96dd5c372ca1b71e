//go:build linux

package ovl

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// NoXattr reports whether err, from reading an xattr, means that the file
// has no such xattr for this reader:
//
//   - ENODATA: the file does not carry it;
//   - ENOTSUP: the filesystem (or the file type) holds no xattrs of that
//     namespace;
//   - EPERM: the reader may not see the namespace. The kernel hides
//     trusted.* from unprivileged readers with ENODATA, but FUSE
//     filesystems and security modules answer EPERM; an entry whose
//     overlay xattrs cannot be read is read as the reader's kernel would
//     read it, as a plain entry, rather than failing the whole layer.
//
// Every other error (EIO, ENOMEM, EBADF...) is an error of the layer and
// is returned by the readers of this package.
func NoXattr(err error) bool {
	return errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EPERM)
}

// readXattr reads attr of fd: ok false where NoXattr.
func readXattr(fd int, attr string) (v []byte, ok bool, err error) {
	v, err = GetxattrFd(fd, attr)
	if err != nil {
		if NoXattr(err) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("read xattr %s: %w", attr, err)
	}
	return v, true, nil
}

// listXattrs lists the xattr names of fd; none where NoXattr.
func listXattrs(fd int) ([]string, error) {
	names, err := ListxattrFd(fd)
	if err != nil {
		if NoXattr(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("list xattrs: %w", err)
	}
	return names, nil
}

// WhiteoutTarget returns the name that the OCI whiteout file name
// (".wh.<target>") deletes. ok is false for a name that is no whiteout:
// one without the prefix, the opaque marker, ".wh." alone, and aufs's
// ".wh..wh.*" bookkeeping.
func WhiteoutTarget(name string) (target string, ok bool) {
	t, ok := strings.CutPrefix(name, WhiteoutPrefix)
	if !ok || t == "" || strings.HasPrefix(t, WhiteoutPrefix) {
		return "", false
	}
	return t, true
}

// IsWhiteout reports whether the entry name of the directory dirfd, whose
// lstat is st, is a whiteout in a dialect visible at the entry itself: a
// character device 0/0 (kernel), or a zero-size regular file carrying
// trusted.overlay.whiteout or user.overlay.whiteout (Linux 6.7 "xattr
// whiteouts"). OCI ".wh." files are told by their name (WhiteoutTarget).
//
// The kernel honours an xattr whiteout only in a directory marked with
// overlay.whiteouts (or opaque "x"); strata reads it wherever it is, as a
// zero-size file with that xattr has no other meaning.
func IsWhiteout(dirfd int, name string, st *unix.Stat_t) (bool, error) {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		return st.Rdev == WhiteoutDev, nil
	case unix.S_IFREG:
		if st.Size != 0 {
			return false, nil
		}
		fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return false, fmt.Errorf("open %s: %w", name, err)
		}
		defer unix.Close(fd)
		for _, x := range [...]string{XattrWhiteout, XattrUserWhiteout} {
			_, ok, err := readXattr(fd, x)
			if err != nil {
				return false, fmt.Errorf("%s: %w", name, err)
			}
			if ok {
				return true, nil
			}
		}
	}
	return false, nil
}

// Marks are the overlay's marks on a directory that its readers need.
type Marks struct {
	// Opaque: nothing beneath shows through. Set by an opaque xattr with
	// value "y" (trusted.overlay.opaque, user.overlay.opaque,
	// user.fuseoverlayfs.opaque) or by the OCI marker file ".wh..wh..opq"
	// in the directory.
	Opaque bool
	// XattrWhiteouts: the directory holds xattr whiteouts (Linux 6.7:
	// trusted/user.overlay.whiteouts; Linux 6.8: opaque value "x", which
	// does not make it opaque).
	XattrWhiteouts bool
	// Redirect is the value of its redirect xattr (trusted first), ""
	// for none.
	Redirect string
	// Origin is the value of strata's origin xattr, nil for none.
	Origin []byte
	// Impure: kernel overlayfs marked the directory as holding entries
	// copied up (trusted.overlay.impure), as it does in its uppers.
	Impure bool
}

// ReadMarks reads the marks of the directory fd (O_PATH or O_RDONLY): one
// listxattr, then a getxattr for each mark it carries, and a stat of the
// OCI marker where no xattr makes it opaque. Other values of the opaque
// xattrs mean neither opaque nor xattr whiteouts, as the kernel reads
// them. Errors of the xattr calls are NoXattr's rule.
func ReadMarks(fd int) (Marks, error) {
	var m Marks
	names, err := listXattrs(fd)
	if err != nil {
		return m, err
	}
	for _, n := range names {
		switch n {
		case XattrWhiteouts, XattrUserWhiteouts:
			m.XattrWhiteouts = true
		case XattrOpaque, XattrUserOpaque, XattrFuseOverlayfsOpaque:
			v, ok, err := readXattr(fd, n)
			if err != nil {
				return m, err
			}
			switch {
			case ok && string(v) == "y":
				m.Opaque = true
			case ok && string(v) == "x":
				m.XattrWhiteouts = true
			}
		case XattrRedirect, XattrUserRedirect:
			v, ok, err := readXattr(fd, n)
			if err != nil {
				return m, err
			}
			if ok && (m.Redirect == "" || n == XattrRedirect) {
				m.Redirect = string(v)
			}
		case XattrImpure, XattrUserImpure:
			m.Impure = true
		case XattrOrigin, XattrUserOrigin:
			v, ok, err := readXattr(fd, n)
			if err != nil {
				return m, err
			}
			if ok && (m.Origin == nil || n == XattrOrigin) {
				m.Origin = v
			}
		}
	}
	if !m.Opaque {
		var st unix.Stat_t
		switch err := unix.Fstatat(fd, OpaqueMarker, &st, unix.AT_SYMLINK_NOFOLLOW); err {
		case nil:
			m.Opaque = true
		case unix.ENOENT, unix.ENOTDIR:
		default:
			return m, fmt.Errorf("stat %s: %w", OpaqueMarker, err)
		}
	}
	return m, nil
}

// Opacity reads how the directory fd hides the layers beneath it: see
// Marks.Opaque and Marks.XattrWhiteouts.
func Opacity(fd int) (opaque, xattrWhiteouts bool, err error) {
	m, err := ReadMarks(fd)
	return m.Opaque, m.XattrWhiteouts, err
}

// IsOpaque reports whether the directory fd is opaque (Opacity).
func IsOpaque(fd int) (bool, error) {
	opaque, _, err := Opacity(fd)
	return opaque, err
}

// Redirect reads the redirect xattr of fd (trusted first, then user): the
// raw value, which ResolveRedirect turns into a path. ok is false where fd
// carries none.
func Redirect(fd int) (value string, ok bool, err error) {
	for _, x := range [...]string{XattrRedirect, XattrUserRedirect} {
		v, ok, err := readXattr(fd, x)
		if err != nil || ok {
			return string(v), ok, err
		}
	}
	return "", false, nil
}

// RedirectPath reads the redirect of fd, an entry of the directory whose
// path in the layers beneath is parentLower, and resolves it
// (ResolveRedirect). ok is false where fd carries none.
func RedirectPath(fd int, parentLower string) (lower string, ok bool, err error) {
	v, ok, err := Redirect(fd)
	if err != nil || !ok {
		return "", false, err
	}
	lower, err = ResolveRedirect([]byte(v), parentLower)
	return lower, err == nil, err
}

// Metacopy reads whether fd is a metacopy file: it carries
// trusted.overlay.metacopy or user.overlay.metacopy, of any value.
func Metacopy(fd int) (bool, error) {
	for _, x := range [...]string{XattrMetacopy, XattrUserMetacopy} {
		_, ok, err := readXattr(fd, x)
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

// IsMetacopy reports whether fd is a metacopy file; an xattr that cannot
// be read counts as none.
func IsMetacopy(fd int) bool {
	ok, err := Metacopy(fd)
	return ok && err == nil
}
