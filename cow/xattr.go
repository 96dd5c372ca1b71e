//go:build linux

package cow

import (
	"errors"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/ovl"
)

// Xattrs, symlink targets, statfs and fsyncdir of the merged view.
//
// Each method takes the entry's path and its Entry as the caller resolved
// them. The ones that read or change a regular file's xattrs take orphan
// too: 0, or an O_PATH fd of the file taken before its last name was
// removed (the file is still open, and fgetxattr of it still works). With
// an orphan the path is not used.

// Getxattr reads the xattr name of the entry e at rel, as the merged view
// shows it: from the topmost layer holding the entry. The overlay's own
// bookkeeping xattrs do not show (ENODATA); a user's xattr in the
// overlay's namespaces, "trusted.overlay.X", is read from its escaped
// form, "trusted.overlay.overlay.X", as kernel overlayfs stores it.
func (s *Stack) Getxattr(rel string, e *Entry, orphan int, name string) ([]byte, error) {
	stored, err := storedXattr(name, unix.ENODATA)
	if err != nil {
		return nil, err
	}
	if orphan > 0 {
		return ovl.GetxattrFd(orphan, stored)
	}
	l, p := s.inode(rel, e)
	return l.Getxattr(p, stored)
}

// Listxattr lists the xattr names of the entry e at rel, as the merged
// view shows them: the overlay's own bookkeeping xattrs left out,
// escaped ones unescaped.
func (s *Stack) Listxattr(rel string, e *Entry, orphan int) ([]string, error) {
	var names []string
	var err error
	if orphan > 0 {
		names, err = ovl.ListxattrFd(orphan)
	} else {
		l, p := s.inode(rel, e)
		names, err = l.Listxattr(p)
	}
	if err != nil {
		return nil, err
	}
	shown := names[:0]
	for _, n := range names {
		if n, ok := shownXattr(n); ok {
			shown = append(shown, n)
		}
	}
	return shown, nil
}

// Setxattr sets the xattr name of the entry e at rel to val (flags as
// setxattr(2) takes them), copying the entry up first; it updates e.
// A name in the overlay's namespaces is stored escaped, as kernel
// overlayfs (Linux 6.7) stores it, after the copy-up: "trusted.overlay.X"
// as "trusted.overlay.overlay.X". user.fuseoverlayfs.* cannot be set
// (EPERM).
func (s *Stack) Setxattr(rel string, e *Entry, orphan int, name string, val []byte, flags int) error {
	if !s.Writable() {
		return unix.EROFS
	}
	stored, err := storedXattr(name, unix.EPERM)
	if err != nil {
		return err
	}
	return s.changeXattr(rel, e, orphan, func(fd int) error {
		return unix.Setxattr(ovl.ProcPath(fd), stored, val, flags)
	})
}

// Removexattr removes the xattr name of the entry e at rel, copying the
// entry up first unless the entry has no such xattr (ENODATA, and
// nothing is copied); it updates e.
func (s *Stack) Removexattr(rel string, e *Entry, orphan int, name string) error {
	if !s.Writable() {
		return unix.EROFS
	}
	stored, err := storedXattr(name, unix.ENODATA)
	if err != nil {
		return err
	}
	if orphan <= 0 {
		s.Refresh(rel, e)
	}
	if !e.InUpper() {
		// Removing what is not there needs no copy-up.
		if _, err := s.Getxattr(rel, e, orphan, name); err != nil {
			return err
		}
	}
	return s.changeXattr(rel, e, orphan, func(fd int) error {
		return unix.Removexattr(ovl.ProcPath(fd), stored)
	})
}

// changeXattr copies the entry up for a change of its xattrs and runs
// change with an O_PATH fd of its upper file.
func (s *Stack) changeXattr(rel string, e *Entry, orphan int, change func(fd int) error) error {
	if orphan > 0 {
		if !e.InUpper() {
			// A lower file without a name: there is nowhere to copy
			// it up to.
			return unix.ENOENT
		}
		return change(orphan)
	}
	if err := s.copyUpForXattr(rel, e); err != nil {
		return err
	}
	l, p := s.inode(rel, e)
	return l.withPath(p, change)
}

// copyUpForXattr copies the entry e at rel up before a change of its
// xattrs: its metadata only where it can (see CanMetacopy).
func (s *Stack) copyUpForXattr(rel string, e *Entry) error {
	return s.CopyUp(rel, e, MetaOnly)
}

// storedXattr is the name under which the xattr name, as the mount shows
// it, is stored in a layer: escaped in the overlay's own namespaces (see
// ovl.StoredXattr). private is the error for a name of the overlay's
// bookkeeping that has no escaped form.
func storedXattr(name string, private error) (string, error) {
	stored, err := ovl.StoredXattr(name)
	if errors.Is(err, ovl.ErrPrivateXattr) {
		return "", private
	}
	return stored, err
}

// shownXattr is the name under which the xattr stored in a layer shows
// through the mount (unescaped); false for the overlay's own bookkeeping.
func shownXattr(stored string) (string, bool) {
	return ovl.ShownXattr(stored)
}

// Readlink reads the target of the symlink e at rel.
func (s *Stack) Readlink(rel string, e *Entry) (string, error) {
	l, p := s.inode(rel, e)
	return l.Readlink(p)
}

// Statfs reports on the filesystem of the upper layer, or of the top
// lower layer of a read-only stack: where the mount's changes would go.
func (s *Stack) Statfs() (unix.Statfs_t, error) {
	l := s.upper()
	if l == nil {
		l = s.layers[1]
	}
	var st unix.Statfs_t
	err := unix.Fstatfs(l.fd, &st)
	return st, err
}

// Fsyncdir flushes the directory e at rel to disk, if the upper layer
// holds it: a lower directory has no changes to flush.
func (s *Stack) Fsyncdir(rel string, e *Entry) error {
	if !e.InUpper() {
		return nil
	}
	fd, err := s.upper().openAt(rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	return errors.Join(unix.Fsync(fd), unix.Close(fd))
}
