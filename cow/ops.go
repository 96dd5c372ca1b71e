//go:build linux

package cow

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/ovl"
)

// ErrReservedName is returned for a name that the OCI layer format
// reserves for whiteouts (".wh." prefix): such names cannot be created
// through the mount, since no layer tar could carry them.
var ErrReservedName = errors.New("name reserved for whiteouts")

// Owner is the credentials new entries are created with.
type Owner struct{ Uid, Gid uint32 }

// CheckName refuses names that may not be created through the mount:
// those reserved for whiteouts, and those no directory entry can have
// ("", ".", "..", a '/' or a NUL in it), which the *at calls would
// otherwise resolve as paths, out of the upper layer with ".." or a
// leading '/'.
func CheckName(name string) error {
	if strings.HasPrefix(name, ovl.WhiteoutPrefix) {
		return ErrReservedName
	}
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return unix.EINVAL
	}
	return nil
}

// lowerHas reports whether a lower layer holds name in the merged
// directory parent, hidden or not by the upper: such a name needs a
// whiteout when it leaves the upper.
func (s *Stack) lowerHas(parent *Entry, name string) (bool, error) {
	for _, c := range childLowers(parent, name) {
		var st unix.Stat_t
		dir, n := splitRel(c.Path)
		found, whiteout, err := s.lowerLookup(c.Layer, dir, n, &st)
		if err != nil || found || whiteout {
			return found, err
		}
	}
	return false, nil
}

// openUpperDir opens the upper directory dir (O_PATH), copying it and its
// parents up first if the upper does not have it yet.
func (s *Stack) openUpperDir(dir string) (int, error) {
	u := s.upper()
	pfd, err := u.openAt(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if notFound(err) {
		if err := s.copyUpParents(dir); err != nil {
			return -1, err
		}
		pfd, err = u.openAt(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	}
	return pfd, err
}

// whiteoutIn reports how the upper directory pfd marks name as deleted: a
// kernel-format whiteout at the name itself (kernel), or an OCI ".wh."
// file beside it (oci). A real entry there gives EEXIST.
func (s *Stack) whiteoutIn(pfd int, dir, name string) (kernel, oci bool, err error) {
	var st unix.Stat_t
	err = unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == nil:
		if !s.upper().isWhiteout(path.Join(dir, name), &st) {
			return false, false, unix.EEXIST
		}
		return true, false, nil
	case err != unix.ENOENT:
		return false, false, err
	}
	return false, unix.Fstatat(pfd, ovl.WhiteoutPrefix+name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil, nil
}

// removeOCIWhiteout removes the ".wh." file for name in the upper
// directory pfd, if there is one.
func removeOCIWhiteout(pfd int, name string) error {
	err := unix.Unlinkat(pfd, ovl.WhiteoutPrefix+name, 0)
	if err == unix.ENOENT {
		return nil
	}
	return err
}

// setOwner gives the new entry dn under dfd the caller's owner o, with
// the group of a set-group-ID parent pfd (whose bit a new directory also
// inherits). chown clears set-user-ID and set-group-ID bits, so mode, the
// mode the entry was created with, is put back where it has them.
func setOwner(pfd, dfd int, dn string, isDir bool, o Owner, mode uint32) error {
	var pst unix.Stat_t
	if err := unix.Fstat(pfd, &pst); err != nil {
		return err
	}
	gid := o.Gid
	if pst.Mode&unix.S_ISGID != 0 {
		gid = pst.Gid
		if isDir {
			mode |= unix.S_ISGID
		}
	}
	if err := unix.Fchownat(dfd, dn, int(o.Uid), int(gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
		return unix.Fchmodat(dfd, dn, mode&0o7777, 0)
	}
	return nil
}

// makeNode creates the entry name in the merged directory dir with mk,
// which gets a directory fd and a name: directly in the upper directory,
// or in the work directory and then over a whiteout. With o, the entry
// gets that owner and mode's set-ID bits.
func (s *Stack) makeNode(dir, name string, isDir bool, o *Owner, mode uint32, mk func(dfd int, name string) error) (Entry, error) {
	var e Entry
	if !s.Writable() {
		return e, unix.EROFS
	}
	if err := CheckName(name); err != nil {
		return e, err
	}
	defer s.changing()()
	pfd, err := s.openUpperDir(dir)
	if err != nil {
		return e, err
	}
	defer unix.Close(pfd)
	viaWork, ociWh, err := s.whiteoutIn(pfd, dir, name)
	if err != nil {
		return e, err
	}
	dfd, dn := pfd, name
	if viaWork {
		dfd, dn = s.work.fd, s.tmpName()
	}
	if isDir {
		s.absent.changed()
		defer s.absent.changed()
	}
	if err := mk(dfd, dn); err != nil {
		return e, err
	}
	fail := func(err error) (Entry, error) {
		return e, errors.Join(err, removeAllAt(dfd, dn))
	}
	if o != nil {
		if err := setOwner(pfd, dfd, dn, isDir, *o, mode); err != nil {
			return fail(err)
		}
	}
	if viaWork {
		if isDir {
			// It replaces a whiteout: lower entries of that name
			// stay hidden only if the new directory is opaque.
			if err := s.setOpaqueAt(dfd, dn); err != nil {
				return fail(err)
			}
			if err := unix.Renameat2(dfd, dn, pfd, name, unix.RENAME_EXCHANGE); err != nil {
				return fail(err)
			}
			if err := unix.Unlinkat(dfd, dn, 0); err != nil { // the whiteout, now in work
				return e, err
			}
		} else if err := unix.Renameat(dfd, dn, pfd, name); err != nil {
			return fail(err)
		}
	}
	if ociWh {
		if isDir {
			if err := s.setOpaqueAt(pfd, name); err != nil {
				return e, err
			}
		}
		if err := removeOCIWhiteout(pfd, name); err != nil {
			return e, err
		}
	}
	if err := unix.Fstatat(pfd, name, &e.Stat, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return e, err
	}
	e.Layer = UpperIndex
	e.Ino = s.mapIno(UpperIndex, e.Stat.Ino)
	return e, nil
}

// setOpaqueAt marks the directory name under dfd opaque.
func (s *Stack) setOpaqueAt(dfd int, name string) error {
	fd, err := unix.Openat(dfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return s.dialect.SetOpaque(fd)
}

// Create creates and opens a regular file name in dir.
func (s *Stack) Create(dir, name string, flags int, mode uint32, o Owner) (int, Entry, error) {
	fd := -1
	e, err := s.makeNode(dir, name, false, &o, mode, func(dfd int, n string) error {
		var err error
		fd, err = unix.Openat(dfd, n, (flags&^(unix.O_CREAT|unix.O_EXCL|unix.O_TRUNC))|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode&0o7777)
		return err
	})
	if err != nil && fd >= 0 {
		unix.Close(fd)
		fd = -1
	}
	return fd, e, err
}

// Mkdir creates the directory name in dir.
func (s *Stack) Mkdir(dir, name string, mode uint32, o Owner) (Entry, error) {
	return s.makeNode(dir, name, true, &o, mode, func(dfd int, n string) error {
		return unix.Mkdirat(dfd, n, mode&0o7777)
	})
}

// Mknod creates a special file name in dir.
func (s *Stack) Mknod(dir, name string, mode uint32, dev uint64, o Owner) (Entry, error) {
	if mode&unix.S_IFMT == unix.S_IFCHR && dev == ovl.WhiteoutDev {
		// A 0/0 char device would read back as a whiteout; overlayfs
		// refuses it the same way.
		return Entry{}, unix.EPERM
	}
	return s.makeNode(dir, name, false, &o, mode, func(dfd int, n string) error {
		return unix.Mknodat(dfd, n, mode, int(dev))
	})
}

// Symlink creates the symlink name in dir pointing at target.
func (s *Stack) Symlink(dir, name, target string, o Owner) (Entry, error) {
	return s.makeNode(dir, name, false, &o, 0, func(dfd int, n string) error {
		return unix.Symlinkat(target, dfd, n)
	})
}

// Link makes name in dir a hard link to the entry at oldRel, copying that
// entry up first.
func (s *Stack) Link(oldRel string, old *Entry, dir, name string) (Entry, error) {
	if err := s.CopyUp(oldRel, old, -1); err != nil {
		return Entry{}, err
	}
	il, ip := s.inode(oldRel, old)
	e, err := s.makeNode(dir, name, false, nil, 0, func(dfd int, n string) error {
		return il.withParent(ip, func(ofd int, on string) error {
			return unix.Linkat(ofd, on, dfd, n, 0)
		})
	})
	if err != nil {
		return e, err
	}
	// The inode the new name shares: the copy's, which keeps the old
	// number unless copy-up broke a lower hard link.
	e.Ino = s.upperIno(oldRel, &old.Stat)
	old.Ino = e.Ino
	if !old.Linked {
		// Its inode now has two names: reach it by the links
		// directory from now on (see joinUpper).
		if err := s.joinUpper(oldRel, old); err != nil {
			return e, err
		}
	} else if err := s.Stat(oldRel, old); err != nil { // one more link
		return e, err
	}
	e.Stat, e.NlinkAdjust, e.Linked = old.Stat, old.NlinkAdjust, old.Linked
	return e, nil
}

// whiteoutAt puts a whiteout at name in the upper directory pfd where no
// entry is.
func (s *Stack) whiteoutAt(pfd int, name string) error { return s.dialect.Whiteout(pfd, name) }

// Remove deletes the entry name (resolved as e) from the merged
// directory dir: unlink or rmdir. What a lower layer holds under the
// name is hidden by a whiteout.
func (s *Stack) Remove(dir string, parent *Entry, name string, e *Entry) error {
	if !s.Writable() {
		return unix.EROFS
	}
	defer s.changing()()
	if err := CheckName(name); err != nil && err != ErrReservedName {
		return err
	}
	rel := path.Join(dir, name)
	s.Refresh(rel, e)
	if !e.InUpper() && !e.IsDir() && e.Stat.Nlink > 1 && s.JoinsLinks() {
		// The inode's other names stay, and their link count must drop
		// with this one: copy it up with them (see copyUpLinked).
		if err := s.CopyUp(rel, e, -1); err != nil {
			return err
		}
	}
	if e.InUpper() {
		// Links made since the lookup count for the caller's nlink.
		if err := s.upper().Lstat(rel, &e.Stat); err != nil {
			return err
		}
	}
	if e.IsDir() {
		ents, err := s.ReadDir(rel, e)
		if err != nil {
			return err
		}
		if len(ents) > 0 {
			return unix.ENOTEMPTY
		}
	}
	// Its last name: the links directory's entry goes with it.
	last := e.Linked && e.Nlink() <= 1
	needWh := !e.InUpper()
	if e.InUpper() {
		var err error
		if needWh, err = s.lowerHas(parent, name); err != nil {
			return err
		}
	}
	if err := s.copyUpParents(dir); err != nil {
		return err
	}
	err := s.upper().withParent(rel, func(pfd int, n string) error {
		if !e.InUpper() {
			return s.whiteoutAt(pfd, n)
		}
		if !e.IsDir() && !needWh {
			return unix.Unlinkat(pfd, n, 0)
		}
		if !e.IsDir() && s.dialect.KernelWhiteouts {
			// Build the whiteout aside and rename it over the entry:
			// the name is never absent, so the lower never shows.
			tmp := s.tmpName()
			if err := unix.Mknodat(s.work.fd, tmp, unix.S_IFCHR, ovl.WhiteoutDev); err != nil {
				return err
			}
			if err := unix.Renameat(s.work.fd, tmp, pfd, n); err != nil {
				return errors.Join(err, unix.Unlinkat(s.work.fd, tmp, 0))
			}
			return nil
		}
		if e.IsDir() && !needWh {
			err := unix.Unlinkat(pfd, n, unix.AT_REMOVEDIR)
			if err != unix.ENOTEMPTY && err != unix.EEXIST {
				return err
			}
			// Only whiteouts and markers are left in it.
			tmp := s.tmpName()
			if err := unix.Renameat(pfd, n, s.work.fd, tmp); err != nil {
				return err
			}
			return removeAllAt(s.work.fd, tmp)
		}
		// A directory (or, without kernel whiteouts, anything) that hides
		// a lower entry: move it to work leaving a whiteout behind.
		tmp := s.tmpName()
		err := unix.Renameat2(pfd, n, s.work.fd, tmp, unix.RENAME_WHITEOUT)
		if err == unix.EINVAL || err == unix.EPERM || err == unix.EOPNOTSUPP {
			if err = unix.Renameat(pfd, n, s.work.fd, tmp); err == nil {
				err = s.whiteoutAt(pfd, n)
			}
		}
		if err != nil {
			return err
		}
		return removeAllAt(s.work.fd, tmp)
	})
	if err == nil && last {
		s.unjoin(e)
	}
	return err
}

// Rename moves the entry oldName of merged dir oldDir (whose entry is
// oldParent), resolved as oldE, to newName in newDir (entry newParent),
// over newE if that is not nil. flags are renameat2's (RENAME_NOREPLACE,
// RENAME_EXCHANGE).
//
// A directory that a lower layer holds (merged or lower only) is copied
// up and given a redirect to its path in the layers beneath, as kernel
// overlayfs does with redirect_dir=on; without redirects (NoRedirect) it
// cannot be moved, and gives EXDEV as kernel overlayfs does by default:
// callers such as mv then copy it. A lower regular file is copied up
// without its data where it can be (see CanMetacopy), with a redirect to
// its data.
func (s *Stack) Rename(oldDir string, oldParent *Entry, oldName string, oldE *Entry,
	newDir string, newParent *Entry, newName string, newE *Entry, flags uint) error {
	if !s.Writable() {
		return unix.EROFS
	}
	if err := CheckName(newName); err != nil {
		return err
	}
	defer s.changing()()
	oldRel, newRel := joinRel(oldDir, oldName), joinRel(newDir, newName)
	s.Refresh(oldRel, oldE)
	if newE != nil {
		s.Refresh(newRel, newE)
		if newE.InUpper() {
			// Links made since the lookup count for the caller's nlink.
			if err := s.upper().Lstat(newRel, &newE.Stat); err != nil {
				return err
			}
		}
	}
	exchange := flags&unix.RENAME_EXCHANGE != 0
	if flags&unix.RENAME_NOREPLACE != 0 && newE != nil {
		return unix.EEXIST
	}
	if exchange && newE == nil {
		return unix.ENOENT
	}
	oldRedirect := lowerDir(oldE)
	newRedirect := exchange && lowerDir(newE)
	if (oldRedirect || newRedirect) && !s.makeRedirects {
		return unix.EXDEV
	}
	if newE != nil && !exchange {
		switch {
		case oldE.IsDir() && !newE.IsDir():
			return unix.ENOTDIR
		case !oldE.IsDir() && newE.IsDir():
			return unix.EISDIR
		case newE.IsDir():
			ents, err := s.ReadDir(newRel, newE)
			if err != nil {
				return err
			}
			if len(ents) > 0 {
				return unix.ENOTEMPTY
			}
		}
	}
	if oldE.IsDir() && isAncestor(oldRel, newRel) || exchange && newE.IsDir() && isAncestor(newRel, oldRel) {
		return unix.EINVAL // the kernel checks this before asking
	}
	if newE != nil && !exchange && !newE.IsDir() && !newE.InUpper() && newE.Stat.Nlink > 1 && s.JoinsLinks() {
		// A name of a lower hard link replaced: its other names stay,
		// and their link count must drop with it, as in Remove.
		if err := s.CopyUp(newRel, newE, -1); err != nil {
			return err
		}
	}
	if err := s.CopyUp(oldRel, oldE, MetaOnly); err != nil {
		return err
	}
	if exchange {
		if err := s.CopyUp(newRel, newE, MetaOnly); err != nil {
			return err
		}
	}
	if err := s.copyUpParents(newDir); err != nil {
		return err
	}
	oldWh, err := s.lowerHas(oldParent, oldName)
	if err != nil {
		return err
	}
	newLower, err := s.lowerHas(newParent, newName)
	if err != nil {
		return err
	}
	u := s.upper()
	var nst unix.Stat_t
	_, werr := u.lstatOrWhiteout(newRel, &nst)
	newOCIWh := errors.Is(werr, errOCIWhiteout)
	if werr != nil && !newOCIWh && !notFound(werr) {
		return werr
	}
	if oldE.IsDir() || (newE != nil && newE.IsDir()) {
		s.absent.changed()
		defer s.absent.changed()
	}
	// What is moved must find its lower layers where they are: a
	// directory of the lowers, or a metacopy file, gets a redirect. A
	// pure-upper directory moved onto a name the lowers hold must not
	// merge with them: it is made opaque.
	if err := s.prepareMove(oldRel, oldE, oldRedirect, newLower); err != nil {
		return err
	}
	if exchange {
		ol, err := s.lowerHas(oldParent, oldName)
		if err != nil {
			return err
		}
		if err := s.prepareMove(newRel, newE, newRedirect, ol); err != nil {
			return err
		}
	}
	err = u.withParent(oldRel, func(ofd int, on string) error {
		return u.withParent(newRel, func(nfd int, nn string) error {
			if exchange {
				return unix.Renameat2(ofd, on, nfd, nn, unix.RENAME_EXCHANGE)
			}
			return s.renameUpper(ofd, on, nfd, nn, oldE.IsDir(), oldWh)
		})
	})
	if err != nil {
		return err
	}
	if oldRedirect {
		s.redirs.moved(oldE.LowerName, newRel)
	}
	if newRedirect {
		s.redirs.moved(newE.LowerName, oldRel)
	}
	if newOCIWh && !exchange {
		return u.withParent(newRel, func(nfd int, nn string) error {
			return removeOCIWhiteout(nfd, nn)
		})
	}
	return nil
}

// lowerDir reports whether e is a directory that a lower layer holds.
func lowerDir(e *Entry) bool { return e.IsDir() && (!e.InUpper() || len(e.Lowers) > 0) }

// isAncestor reports whether the merged path a is a directory above b.
func isAncestor(a, b string) bool {
	return strings.HasPrefix(b, a+"/")
}

// prepareMove marks the upper entry rel (resolved as e), about to be
// moved to a name where the lower layers hold something if onLower, so
// that it finds the same lower layers at its new name: a redirect (and
// the inode number, so that it keeps it) for a directory of the lowers,
// a redirect for a metacopy file, opacity for a directory of the upper
// alone.
func (s *Stack) prepareMove(rel string, e *Entry, redirect, onLower bool) error {
	u := s.upper()
	switch {
	case redirect:
		return u.withPath(rel, func(fd int) error {
			if err := s.setRedirectFd(fd, e.LowerName); err != nil {
				return err
			}
			var b [8]byte
			binary.LittleEndian.PutUint64(b[:], e.Ino)
			if err := unix.Setxattr(ovl.ProcPath(fd), s.originXattr(), b[:], 0); err != nil {
				return fmt.Errorf("record the inode number of %s: %w", rel, err)
			}
			return nil
		})
	case e.Metacopy():
		return u.withPath(rel, func(fd int) error { return s.setRedirectFd(fd, e.LowerName) })
	case e.IsDir() && onLower:
		return u.withParent(rel, s.setOpaqueAt)
	}
	return nil
}

// setRedirectFd gives the upper entry fd a redirect to lower, its path in
// the layers beneath. Where no xattr can hold it the rename cannot be
// done faithfully: EXDEV, as without redirects.
func (s *Stack) setRedirectFd(fd int, lower string) error {
	err := s.dialect.SetRedirect(fd, lower)
	if errors.Is(err, ovl.ErrNoXattrs) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EPERM) {
		return unix.EXDEV
	}
	return err
}

// renameUpper moves on to nn in the upper, replacing whatever is at nn
// (an entry the caller checked, or a whiteout), and leaves a whiteout at
// on when wh is set.
func (s *Stack) renameUpper(ofd int, on string, nfd int, nn string, isDir, wh bool) error {
	var tst unix.Stat_t
	terr := unix.Fstatat(nfd, nn, &tst, unix.AT_SYMLINK_NOFOLLOW)
	targetDir := terr == nil && tst.Mode&unix.S_IFMT == unix.S_IFDIR
	if terr == nil && isDir && (!targetDir || !s.isEmptyDirAt(nfd, nn)) {
		// A directory onto a whiteout, or onto an upper directory
		// holding only whiteouts: swap, then clear the old target away.
		if err := unix.Renameat2(ofd, on, nfd, nn, unix.RENAME_EXCHANGE); err != nil {
			return err
		}
		tmp := s.tmpName()
		if err := s.moveToWork(ofd, on, tmp, wh); err != nil {
			return err
		}
		return removeAllAt(s.work.fd, tmp)
	}
	if !wh {
		return unix.Renameat(ofd, on, nfd, nn)
	}
	err := unix.Renameat2(ofd, on, nfd, nn, unix.RENAME_WHITEOUT)
	if err == unix.EINVAL || err == unix.EPERM || err == unix.EOPNOTSUPP {
		if err = unix.Renameat(ofd, on, nfd, nn); err == nil {
			err = s.whiteoutAt(ofd, on)
		}
	}
	return err
}

// moveToWork moves on out of the upper to the work name tmp, leaving a
// whiteout if wh.
func (s *Stack) moveToWork(ofd int, on, tmp string, wh bool) error {
	if wh {
		err := unix.Renameat2(ofd, on, s.work.fd, tmp, unix.RENAME_WHITEOUT)
		if err != unix.EINVAL && err != unix.EPERM && err != unix.EOPNOTSUPP {
			return err
		}
	}
	if err := unix.Renameat(ofd, on, s.work.fd, tmp); err != nil {
		return err
	}
	if wh {
		return s.whiteoutAt(ofd, on)
	}
	return nil
}

func (s *Stack) isEmptyDirAt(dfd int, name string) bool {
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	ents, err := readDirFd(fd)
	return err == nil && len(ents) == 0
}

// LinkFd gives the open file fd (an O_TMPFILE file of the upper layer)
// the name name in dir.
func (s *Stack) LinkFd(fd int, dir, name string) (Entry, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return Entry{}, err
	}
	e, err := s.makeNode(dir, name, false, nil, 0, func(dfd int, n string) error {
		return unix.Linkat(fd, "", dfd, n, unix.AT_EMPTY_PATH)
	})
	return e, err
}

// Tmpfile opens an unnamed regular file (O_TMPFILE) in the upper
// directory dir.
func (s *Stack) Tmpfile(dir string, flags int, mode uint32, o Owner) (int, Entry, error) {
	var e Entry
	if !s.Writable() {
		return -1, e, unix.EROFS
	}
	if err := s.copyUpParents(dir); err != nil {
		return -1, e, err
	}
	fd, err := s.upper().openAt(dir, (flags&^(unix.O_CREAT|unix.O_EXCL|unix.O_DIRECTORY))|unix.O_TMPFILE, mode&0o7777)
	if err != nil {
		return -1, e, err
	}
	uid, gid := int(o.Uid), int(o.Gid)
	if err := unix.Fchown(fd, uid, gid); err != nil {
		unix.Close(fd)
		return -1, e, err
	}
	if err := unix.Fstat(fd, &e.Stat); err != nil {
		unix.Close(fd)
		return -1, e, err
	}
	e.Layer = UpperIndex
	e.Ino = s.mapIno(UpperIndex, e.Stat.Ino)
	return fd, e, nil
}
