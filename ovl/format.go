//go:build linux

// Package ovl reads and writes the on-disk format of an overlay layer:
// whiteouts, opaque directories, redirects, metacopy files and strata's
// origin records, in every dialect strata reads (kernel overlayfs, kernel
// overlayfs with userxattr, fuse-overlayfs, OCI layer tars).
//
// strata writes the kernel's format (Documentation/filesystems/overlayfs.rst),
// so an upper directory made by strata is a valid kernel overlayfs upper
// (for a kernel mounted with redirect_dir=on,metacopy=on). Where the kernel
// format cannot be written (no CAP_MKNOD, no trusted.* xattrs) it falls back
// to the user.overlay.* xattrs and the OCI forms.
//
// It also holds the fd-relative helpers every reader of a layer needs:
// xattrs of O_PATH fds and getdents.
package ovl

const (
	// WhiteoutDev is the device number of a kernel whiteout: a character
	// device 0/0.
	WhiteoutDev = 0

	// WhiteoutPrefix marks an OCI whiteout file ".wh.<name>"
	// (image-spec layer.md, "Whiteouts"). Names with this prefix are
	// reserved and cannot be created through the mount.
	WhiteoutPrefix = ".wh."

	// OpaqueMarker is the OCI opaque-directory marker file.
	OpaqueMarker = ".wh..wh..opq"

	// XattrOpaque is the kernel's opaque xattr; value "y" (opaque), or
	// "x" (Linux 6.8: not opaque, holds xattr whiteouts).
	XattrOpaque = "trusted.overlay.opaque"
	// XattrUserOpaque is the opaque xattr of kernel overlayfs mounted
	// with userxattr; value "y".
	XattrUserOpaque = "user.overlay.opaque"
	// XattrFuseOverlayfsOpaque is fuse-overlayfs's opaque xattr.
	XattrFuseOverlayfsOpaque = "user.fuseoverlayfs.opaque"

	// XattrWhiteout marks a zero-size regular file as a whiteout (kernel
	// 6.7 and later, "xattr whiteouts").
	XattrWhiteout = "trusted.overlay.whiteout"
	// XattrUserWhiteout is XattrWhiteout for userxattr mounts.
	XattrUserWhiteout = "user.overlay.whiteout"
	// XattrWhiteouts (and XattrUserWhiteouts) mark a directory that holds
	// xattr whiteouts (Linux 6.7).
	XattrWhiteouts     = "trusted.overlay.whiteouts"
	XattrUserWhiteouts = "user.overlay.whiteouts"

	// XattrRedirect, on an upper directory (or metacopy file), names
	// where the layers beneath find it: an absolute path from the
	// layer root ("/a/b"), or a name relative to the parent's own
	// lower path. Kernel overlayfs writes it with redirect_dir=on.
	XattrRedirect = "trusted.overlay.redirect"
	// XattrUserRedirect is XattrRedirect where trusted.* cannot be
	// written.
	XattrUserRedirect = "user.overlay.redirect"

	// XattrMetacopy marks an upper regular file that holds metadata only:
	// its data is the lower file at the same path (or at its redirect).
	// Kernel overlayfs writes it with metacopy=on; its value is empty or
	// a struct ovl_metacopy (version, length, flags, digest).
	XattrMetacopy = "trusted.overlay.metacopy"
	// XattrUserMetacopy is XattrMetacopy where trusted.* cannot be
	// written.
	XattrUserMetacopy = "user.overlay.metacopy"

	// XattrOrigin records, on an upper file made by copy-up, the inode
	// number the file had in the merged view before, so st_ino survives
	// copy-up and remounts. strata's own, in the overlay namespace so that
	// kernel overlayfs hides it as well.
	XattrOrigin = "trusted.overlay.strata.origin"
	// XattrUserOrigin is XattrOrigin where trusted.* cannot be written.
	XattrUserOrigin = "user.overlay.strata.origin"

	// XattrMetacopies, on the root of a layer, says that the layer may
	// hold metacopy files of any size. strata sets it on an upper when
	// it first makes one there. Without it, readers ask only sparse
	// files whether they are metacopy files: every metacopy file is
	// sparse except a small one whose xattrs take a block of their own,
	// and asking every file would cost lookups a system call each.
	XattrMetacopies     = "trusted.overlay.strata.metacopies"
	XattrUserMetacopies = "user.overlay.strata.metacopies"

	// XattrUUID is what kernel overlayfs (Linux 6.6 and later) writes on
	// the root of its upper: a layer that carries it was an upper, and
	// may hold metacopy files.
	XattrUUID     = "trusted.overlay.uuid"
	XattrUserUUID = "user.overlay.uuid"

	// XattrImpure is what kernel overlayfs writes on an upper directory
	// that holds entries copied up (Linux 4.13 on).
	XattrImpure     = "trusted.overlay.impure"
	XattrUserImpure = "user.overlay.impure"
)

// hiddenXattrPrefixes are xattr namespaces of overlay bookkeeping: never
// shown through the mount, never copied up, and never taken from a layer
// tar.
var hiddenXattrPrefixes = [...]string{
	"trusted.overlay.",
	"user.overlay.",
	"user.fuseoverlayfs.",
}

// IsHiddenXattr reports whether name belongs to the overlay's own
// bookkeeping and must not be visible through the mount.
func IsHiddenXattr(name string) bool {
	for _, p := range hiddenXattrPrefixes {
		if len(name) >= len(p) && name[:len(p)] == p {
			return true
		}
	}
	return false
}

// Xattrs are the names of one kind of bookkeeping xattr in the trusted
// namespace (kernel format) and the user namespace (fallback).
type Xattrs struct{ Trusted, User string }

var (
	RedirectXattrs   = Xattrs{XattrRedirect, XattrUserRedirect}
	MetacopyXattrs   = Xattrs{XattrMetacopy, XattrUserMetacopy}
	OriginXattrs     = Xattrs{XattrOrigin, XattrUserOrigin}
	MetacopiesXattrs = Xattrs{XattrMetacopies, XattrUserMetacopies}
	UUIDXattrs       = Xattrs{XattrUUID, XattrUserUUID}
	OpaqueXattrs     = Xattrs{XattrOpaque, XattrUserOpaque}
	WhiteoutXattrs   = Xattrs{XattrWhiteout, XattrUserWhiteout}
)

// Name returns the name to write: the trusted one when trusted is set.
func (x Xattrs) Name(trusted bool) string {
	if trusted {
		return x.Trusted
	}
	return x.User
}
