//go:build linux

package ovl

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// ErrBadRedirect is a redirect xattr that names no path beneath the layer
// root.
var ErrBadRedirect = errors.New("bad overlay redirect")

// ResolveRedirect turns the value of a redirect xattr found on the entry
// name of the merged directory whose path in the layers beneath is
// parentLower into the path to look up in those layers (no leading
// slash). An absolute redirect starts at the layer root; a relative one
// is a single name beside the entry, as the kernel writes it for a
// rename within one directory.
func ResolveRedirect(v []byte, parentLower string) (string, error) {
	s := string(v)
	if s == "" || strings.IndexByte(s, 0) >= 0 {
		return "", fmt.Errorf("%w %q", ErrBadRedirect, s)
	}
	if s[0] != '/' {
		if strings.Contains(s, "/") || s == "." || s == ".." {
			return "", fmt.Errorf("%w %q", ErrBadRedirect, s)
		}
		return joinRel(parentLower, s), nil
	}
	clean := path.Clean(s)
	if clean != s && clean+"/" != s || strings.Contains(s, "/../") || strings.HasSuffix(s, "/..") {
		return "", fmt.Errorf("%w %q: not a clean absolute path", ErrBadRedirect, s)
	}
	if clean == "/" {
		return "", fmt.Errorf("%w %q: the root", ErrBadRedirect, s)
	}
	return clean[1:], nil
}

// FormatRedirect is the value of an absolute redirect to lower, a path
// from the layer root without a leading slash.
func FormatRedirect(lower string) []byte { return []byte("/" + lower) }

func joinRel(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// Get reads the first of x's xattrs that fd carries: trusted first, then
// user. ENODATA when it has neither; an error NoXattr accepts on the
// trusted name falls through to the user one.
func (x Xattrs) Get(fd int) ([]byte, error) {
	v, err := GetxattrFd(fd, x.Trusted)
	if err == nil || !NoXattr(err) {
		return v, err
	}
	return GetxattrFd(fd, x.User)
}

// Has reports whether fd carries one of x's xattrs.
func (x Xattrs) Has(fd int) bool {
	_, err := x.Get(fd)
	return err == nil
}
