//go:build linux

package ovl

import (
	"errors"
	"strings"

	"golang.org/x/sys/unix"
)

// Escaped xattrs (Linux 6.7, fs/overlayfs/xattrs.c). A user may set an
// xattr in the overlay's own namespace through the mount, "trusted.overlay.X"
// say: it is stored in the upper as "trusted.overlay.overlay.X", which
// is not bookkeeping, and shown through the mount as "trusted.overlay.X"
// again. The name escapes once per level, so "trusted.overlay.overlay.X"
// is stored as "trusted.overlay.overlay.overlay.X". A copy-up copies
// escaped xattrs, as it copies any user xattr, and a lower layer may
// carry them (a layer that was an upper): they read the same.
//
// The kernel escapes one namespace, the one of its own bookkeeping:
// trusted.overlay., or user.overlay. with userxattr; a name in the other
// goes down as it is. strata reads bookkeeping from both namespaces in
// every layer (it reads every dialect), so both are its own: a
// user.overlay.X set through a mount whose bookkeeping is trusted.overlay.*
// is escaped too (user.overlay.overlay.X), where the kernel would store
// it as it is, and would read it as bookkeeping under userxattr.
// user.fuseoverlayfs.* has no escaped form: it can be neither set nor
// read through the mount.

// escapeInfix is what escaping inserts after the namespace prefix.
const escapeInfix = "overlay."

// ownXattrPrefixes are the namespaces whose names are escaped.
var ownXattrPrefixes = [...]string{"trusted.overlay.", "user.overlay."}

// xattrNameMax is the longest xattr name Linux takes (XATTR_NAME_MAX).
const xattrNameMax = 255

// ErrPrivateXattr is the name of an xattr of the overlay's bookkeeping
// that has no escaped form (user.fuseoverlayfs.*): it cannot be reached
// through the mount.
var ErrPrivateXattr = errors.New("xattr namespace reserved for the overlay")

// StoredXattr returns the name under which the xattr name, as a user of
// the mount gives it, is stored in a layer: name itself, or its escaped
// form for a name in the overlay's own namespaces. It fails with EINVAL
// for a bare namespace prefix ("trusted.overlay."), as the kernel does,
// with EOPNOTSUPP when the escaped name is longer than the longest xattr
// name, and with ErrPrivateXattr for a bookkeeping name that cannot be
// escaped.
func StoredXattr(name string) (string, error) {
	for _, p := range ownXattrPrefixes {
		if rest, ok := strings.CutPrefix(name, p); ok {
			if rest == "" {
				return "", unix.EINVAL
			}
			s := p + escapeInfix + rest
			if len(s) > xattrNameMax {
				return "", unix.EOPNOTSUPP
			}
			return s, nil
		}
	}
	if IsHiddenXattr(name) {
		return "", ErrPrivateXattr
	}
	return name, nil
}

// ShownXattr returns the name under which the xattr stored in a layer
// as stored shows through the mount, and false for one of the overlay's
// own bookkeeping that does not show.
func ShownXattr(stored string) (string, bool) {
	for _, p := range ownXattrPrefixes {
		if rest, ok := strings.CutPrefix(stored, p+escapeInfix); ok {
			return p + rest, true
		}
	}
	if IsHiddenXattr(stored) {
		return "", false
	}
	return stored, true
}

// IsEscapedXattr reports whether stored is the escaped form of an xattr
// set through a mount: user data, not bookkeeping.
func IsEscapedXattr(stored string) bool {
	for _, p := range ownXattrPrefixes {
		if strings.HasPrefix(stored, p+escapeInfix) {
			return true
		}
	}
	return false
}

// IsPrivateXattr reports whether the xattr stored in a layer as stored
// is the overlay's own bookkeeping: hidden from the mount and never
// copied up. Escaped xattrs are not.
func IsPrivateXattr(stored string) bool {
	return IsHiddenXattr(stored) && !IsEscapedXattr(stored)
}
