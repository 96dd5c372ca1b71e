//go:build linux

package cow

// On-disk formats of whiteouts and opaque directories.
//
// strata reads every dialect below and writes the kernel's
// (Documentation/filesystems/overlayfs.rst, "whiteouts and opaque
// directories"), so an upper directory made by strata is a valid kernel
// overlayfs upper. Where the kernel format cannot be written (no CAP_MKNOD,
// no trusted.* xattrs) it falls back to the OCI forms, which kernel
// overlayfs does not read but fuse-overlayfs and OCI tools do.
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

	// XattrOpaque is the kernel's opaque xattr; value "y".
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

	// XattrOrigin records, on an upper file made by copy-up, the inode
	// number the file had in the merged view before, so st_ino survives
	// copy-up and remounts. strata's own, in the overlay namespace so that
	// kernel overlayfs hides it as well.
	XattrOrigin = "trusted.overlay.strata.origin"
	// XattrUserOrigin is XattrOrigin where trusted.* cannot be written.
	XattrUserOrigin = "user.overlay.strata.origin"
)

// hiddenXattrPrefixes are xattr namespaces of overlay bookkeeping: never
// shown through the mount, never copied up, and not settable through it.
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
