//go:build linux

package ovl

import (
	"io/fs"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// MarkMetacopies marks the layer dir as one that may hold metacopy files
// of any size (see XattrMetacopies) if it holds one: an upper that kernel
// overlayfs wrote does not say so itself, and without the mark a small
// metacopy file whose xattrs took a block of their own would not be found
// once dir is a lower layer. It reports whether dir holds one. The walk
// costs a getxattr for each regular file with data, so it is for the
// moment an upper becomes a layer (a commit), not for every mount.
func MarkMetacopies(dir string) (bool, error) {
	found := false
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || found || !d.Type().IsRegular() {
			return err
		}
		for _, x := range []string{XattrMetacopy, XattrUserMetacopy} {
			if _, err := unix.Lgetxattr(p, x, nil); err == nil {
				found = true
				return fs.SkipAll
			}
		}
		return nil
	})
	if err != nil || !found {
		return found, err
	}
	if unix.Lsetxattr(dir, XattrMetacopies, nil, 0) == nil {
		return true, nil
	}
	return true, unix.Lsetxattr(dir, XattrUserMetacopies, nil, 0)
}
