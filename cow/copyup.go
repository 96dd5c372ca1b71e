//go:build linux

package cow

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/ovl"
)

// CopyUp makes sure the entry at rel lives in the upper layer, copying it
// and its parent directories up from the lower layer that holds it. It
// updates e. With dataLen 0 a regular file is copied without its data
// (the caller truncates it to zero anyway); -1 copies all of it;
// MetaOnly copies a lower regular file's metadata only where the stack
// makes metacopy files (see CanMetacopy), all of it elsewhere. A
// metacopy file of the upper gets its data for any dataLen but MetaOnly.
//
// The algorithm (gVisor's and the kernel's): parents first; the copy is
// built in the work directory under a fresh name, data first (FICLONE,
// else copy_file_range, holes kept), then xattrs, owner, mode and times,
// fsynced unless the stack is volatile, and renamed into place with
// RENAME_NOREPLACE. A crash leaves the old state or the new one; a
// concurrent copy-up of the same entry that wins the rename makes ours a
// no-op. Callers serialise copy-ups of one entry (a Node's lock) to
// avoid the wasted work.
func (s *Stack) CopyUp(rel string, e *Entry, dataLen int64) error {
	if !s.Writable() {
		return unix.EROFS
	}
	if s.Refresh(rel, e); e.InUpper() {
		if !e.Metacopy() || dataLen == MetaOnly {
			return nil
		}
		defer s.changing()()
		if err := s.copyUpData(rel, e, dataLen); err != nil {
			return fmt.Errorf("copy up data of %s: %w", rel, err)
		}
		return nil
	}
	if dataLen == MetaOnly && !s.CanMetacopy(e) {
		dataLen = -1
	}
	defer s.changing()()
	// A copy of one name of a lower hard link is a file of its own
	// where the names cannot be joined (see copyUpLinked): it gets its
	// own merged inode number.
	linked := !e.IsDir() && e.Stat.Nlink > 1
	brokeLink := linked && !s.JoinsLinks()
	dir, _ := splitRel(rel)
	if err := s.copyUpParents(dir); err != nil {
		return err
	}
	var err error
	switch {
	case e.IsDir():
		err = s.copyUpDir(rel, Lower{e.Layer, e.Path}, &e.Stat)
	case linked && !brokeLink:
		err = s.copyUpLinked(rel, e, dataLen)
	default:
		err = s.copyUpNonDir(rel, e, dataLen)
	}
	if err != nil {
		return fmt.Errorf("copy up %s: %w", rel, err)
	}
	var st unix.Stat_t
	if err := s.upper().Lstat(rel, &st); err != nil {
		return fmt.Errorf("copy up %s: %w", rel, err)
	}
	if dataLen == MetaOnly {
		if !e.Metacopy() {
			e.Data = &Lower{e.Layer, e.Path}
		}
		st.Blocks = e.Stat.Blocks // the data's
	} else {
		e.Data = nil
	}
	e.Layer, e.Path, e.Stat = UpperIndex, rel, st
	if linked && !brokeLink {
		m := s.upper().fileMarks(rel, &st, true, s.upper().maybeMetacopy(&st))
		e.NlinkAdjust, e.Linked = m.adjust, m.linked
	}
	if brokeLink {
		e.Ino = s.mapIno(UpperIndex, st.Ino)
	}
	return nil
}

// MetaOnly is CopyUp's dataLen for a copy of metadata alone.
const MetaOnly = -2

// CanMetacopy reports whether a copy-up of e can leave its data where it
// is: a lower regular file with data and one name, on a stack that makes
// metacopy files. (A lower hard link is copied whole: its names part on
// copy-up, and each copy must then have its own data.)
func (s *Stack) CanMetacopy(e *Entry) bool {
	return s.metacopy && (s.dialect.TrustedXattrs || s.dialect.UserXattrs) &&
		!e.InUpper() && e.Stat.Mode&unix.S_IFMT == unix.S_IFREG &&
		e.Stat.Nlink == 1 && e.Stat.Size > 0
}

// copyUpData gives the metacopy file e of the upper, at rel, its data:
// a full copy is built in the work directory from the lower data and the
// upper file's metadata, and renamed over the metacopy file, so a crash
// leaves one or the other.
func (s *Stack) copyUpData(rel string, e *Entry, dataLen int64) error {
	wfd := s.work.fd
	tmp := s.tmpName()
	var st unix.Stat_t
	if err := s.upper().Lstat(rel, &st); err != nil {
		return err
	}
	if err := s.copyData(*e.Data, tmp, &st, dataLen); err != nil {
		unix.Unlinkat(wfd, tmp, 0)
		return err
	}
	err := s.finishCopy(Lower{UpperIndex, rel}, tmp, &st, e.Ino)
	if err == nil {
		err = s.publish(tmp, rel, 0)
	}
	if err != nil {
		unix.Unlinkat(wfd, tmp, 0)
		return err
	}
	if err := s.upper().Lstat(rel, &e.Stat); err != nil {
		return err
	}
	e.Data = nil
	return nil
}

// copyUpParents makes dir and its parents exist in the upper layer. The
// merged directories are resolved from the root, since a redirect above
// may put them at other paths in the lower layers.
func (s *Stack) copyUpParents(dir string) error {
	if dir == "" {
		return nil
	}
	u := s.upper()
	var st unix.Stat_t
	if err := u.Lstat(dir, &st); err == nil {
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return fmt.Errorf("copy up %s: upper holds a non-directory there: %w", dir, unix.ENOTDIR)
		}
		return nil
	} else if !notFound(err) {
		return err
	}
	e, err := s.Root()
	if err != nil {
		return err
	}
	cur := ""
	for _, name := range strings.Split(dir, "/") {
		ch, err := s.Lookup(cur, &e, name)
		if err != nil {
			return fmt.Errorf("copy up %s: %w", joinRel(cur, name), err)
		}
		cur = joinRel(cur, name)
		if !ch.IsDir() {
			return fmt.Errorf("copy up %s: not a directory: %w", cur, unix.ENOTDIR)
		}
		if !ch.InUpper() {
			if err := s.copyUpDir(cur, Lower{ch.Layer, ch.Path}, &ch.Stat); err != nil {
				return fmt.Errorf("copy up %s: %w", cur, err)
			}
		}
		e = ch
	}
	return nil
}

// copyUpDir copies the directory src (not its contents) to rel.
func (s *Stack) copyUpDir(rel string, src Lower, st *unix.Stat_t) error {
	wfd := s.work.fd
	tmp := s.tmpName()
	if err := unix.Mkdirat(wfd, tmp, 0o700); err != nil {
		return err
	}
	err := s.finishCopy(src, tmp, st, 0)
	if err == nil {
		// Before and after: a lookup between the two must not record
		// the directory absent.
		s.absent.changed()
		err = s.publish(tmp, rel, unix.RENAME_NOREPLACE)
		s.absent.changed()
		if errors.Is(err, unix.EEXIST) {
			// Another copy-up won: drop ours.
			return removeAllAt(wfd, tmp)
		}
	}
	if err != nil {
		return errors.Join(err, removeAllAt(wfd, tmp))
	}
	return nil
}

// copyUpNonDir copies the non-directory e to rel; with dataLen MetaOnly
// a regular file gets its size and metadata, and marks that say where its
// data is.
func (s *Stack) copyUpNonDir(rel string, e *Entry, dataLen int64) error {
	src := Lower{e.Layer, e.Path}
	data := src
	if e.Metacopy() {
		data = *e.Data
	}
	wfd := s.work.fd
	tmp := s.tmpName()
	st := &e.Stat
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if err := s.copyData(data, tmp, st, dataLen); err != nil {
			unix.Unlinkat(wfd, tmp, 0)
			return err
		}
	case unix.S_IFLNK:
		target, err := s.layers[src.Layer].Readlink(src.Path)
		if err != nil {
			return err
		}
		if err := unix.Symlinkat(target, wfd, tmp); err != nil {
			return err
		}
	default:
		if err := unix.Mknodat(wfd, tmp, st.Mode&unix.S_IFMT|0o600, int(st.Rdev)); err != nil {
			return err
		}
	}
	var origin uint64
	if st.Nlink == 1 {
		// Hard links are broken by copy-up (as in overlayfs without
		// index), so only a file with no other name keeps its number.
		origin = e.Ino
	}
	err := s.finishCopy(src, tmp, st, origin)
	if err == nil && dataLen == MetaOnly {
		err = s.markMetacopy(tmp, rel, e.LowerName)
	}
	if err == nil {
		err = s.publish(tmp, rel, unix.RENAME_NOREPLACE)
		if errors.Is(err, unix.EEXIST) {
			err = nil
			unix.Unlinkat(wfd, tmp, 0)
		}
	}
	if err != nil {
		unix.Unlinkat(wfd, tmp, 0)
	}
	return err
}

// markMetacopy marks the work file tmp, to be published at rel, as a
// metacopy file of the lower file that the lower layers know as lname:
// the kernel's metacopy xattr, and a redirect to lname where that is not
// rel (beneath a renamed directory).
func (s *Stack) markMetacopy(tmp, rel, lname string) error {
	if u := s.upper(); !u.metacopies.Load() {
		// Before the first one: readers then ask every file.
		if err := u.Setxattr("", ovl.MetacopiesXattrs.Name(s.dialect.TrustedXattrs), nil, 0); err != nil {
			return fmt.Errorf("mark the upper as holding metacopy files: %w", err)
		}
		u.metacopies.Store(true)
	}
	return s.work.withPath(tmp, func(fd int) error {
		if err := s.dialect.SetMetacopy(fd); err != nil {
			return fmt.Errorf("mark metacopy: %w", err)
		}
		if lname != rel {
			if err := s.dialect.SetRedirect(fd, lname); err != nil {
				return fmt.Errorf("mark metacopy: %w", err)
			}
		}
		return nil
	})
}

// copyData makes a new work file tmp with st's size and the data of the
// regular file data: none with dataLen 0, a hole of that size with
// MetaOnly, all of it with -1.
func (s *Stack) copyData(data Lower, tmp string, st *unix.Stat_t, dataLen int64) error {
	dst, err := unix.Openat(s.work.fd, tmp, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	err = func() error {
		if dataLen == 0 || st.Size == 0 {
			return nil
		}
		if dataLen == MetaOnly {
			return unix.Ftruncate(dst, st.Size)
		}
		in, err := s.layers[data.Layer].openAt(data.Path, unix.O_RDONLY, 0)
		if err != nil {
			return err
		}
		defer unix.Close(in)
		return cloneOrCopy(dst, in, st.Size)
	}()
	if err == nil && !s.volatile && dataLen != MetaOnly {
		err = unix.Fsync(dst)
	}
	return errors.Join(err, unix.Close(dst))
}

// cloneOrCopy fills dst with the first size bytes of src: a reflink where
// the filesystem shares extents, else copy_file_range over the data
// segments only, so holes stay holes.
func cloneOrCopy(dst, src int, size int64) error {
	if unix.IoctlFileClone(dst, src) == nil {
		return nil
	}
	var off int64
	for off < size {
		data, err := unix.Seek(src, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break // only a hole is left
		}
		if err != nil {
			data = off // no SEEK_DATA: copy everything
		}
		hole, err := unix.Seek(src, data, unix.SEEK_HOLE)
		if err != nil || hole > size {
			hole = size
		}
		if err := copyRange(dst, src, data, hole); err != nil {
			return err
		}
		off = hole
	}
	return unix.Ftruncate(dst, size)
}

func copyRange(dst, src int, from, to int64) error {
	for from < to {
		roff, woff := from, from
		n, err := unix.CopyFileRange(src, &roff, dst, &woff, int(min(to-from, 1<<30)), 0)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EXDEV || err == unix.ENOSYS || err == unix.EOPNOTSUPP || err == unix.EINVAL {
			return copyRead(dst, src, from, to)
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("copy data: source shrank at %d: %w", from, unix.EIO)
		}
		from += int64(n)
	}
	return nil
}

func copyRead(dst, src int, from, to int64) error {
	buf := make([]byte, 1<<20)
	for from < to {
		n, err := unix.Pread(src, buf[:min(int64(len(buf)), to-from)], from)
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("copy data: source shrank at %d: %w", from, unix.EIO)
		}
		if _, err := unix.Pwrite(dst, buf[:n], from); err != nil {
			return err
		}
		from += int64(n)
	}
	return nil
}

// finishCopy gives the work entry tmp the owner, xattrs, mode and times of
// src, and records origin (when non-zero) as its merged inode number.
func (s *Stack) finishCopy(src Lower, tmp string, st *unix.Stat_t, origin uint64) error {
	wfd := s.work.fd
	isLink := st.Mode&unix.S_IFMT == unix.S_IFLNK
	// Owner first: chown clears security.capability, which the
	// xattrs then bring back.
	if err := unix.Fchownat(wfd, tmp, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if err := s.copyXattrs(s.layers[src.Layer], src.Path, tmp); err != nil {
		return err
	}
	if !isLink {
		if err := unix.Fchmodat(wfd, tmp, st.Mode&0o7777, 0); err != nil {
			return err
		}
	}
	if origin != 0 {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], origin)
		err := s.work.Setxattr(tmp, s.originXattr(), b[:], 0)
		if err != nil && !(isLink && !s.dialect.TrustedXattrs) {
			return fmt.Errorf("record origin: %w", err)
		}
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	return unix.UtimesNanoAt(wfd, tmp, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// copyXattrs copies every xattr but the overlay's own.
func (s *Stack) copyXattrs(src *Layer, rel, tmp string) error {
	names, err := src.Listxattr(rel)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil
		}
		return err
	}
	for _, n := range names {
		if ovl.IsPrivateXattr(n) { // escaped xattrs are user data: copied
			continue
		}
		v, err := src.Getxattr(rel, n)
		if errors.Is(err, unix.ENODATA) {
			continue
		}
		if err != nil {
			return fmt.Errorf("xattr %s: %w", n, err)
		}
		if err := s.work.Setxattr(tmp, n, v, 0); err != nil {
			if errors.Is(err, unix.EPERM) && strings.HasPrefix(n, "security.") {
				continue // an LSM refusing a label it would set itself
			}
			return fmt.Errorf("xattr %s: %w", n, err)
		}
	}
	return nil
}

// publish renames the work entry tmp to rel in the upper layer, keeping
// the upper parent's times as they were (copy-up and the overlay's own
// bookkeeping do not change a directory's mtime in the merged view).
func (s *Stack) publish(tmp, rel string, flags uint) error {
	return s.upper().withParent(rel, func(pfd int, name string) error {
		var pst unix.Stat_t
		if err := unix.Fstat(pfd, &pst); err != nil {
			return err
		}
		if err := unix.Renameat2(s.work.fd, tmp, pfd, name, flags); err != nil {
			return err
		}
		return restoreTimes(pfd, &pst)
	})
}

// restoreTimes sets the atime and mtime of the directory pfd back to st's.
func restoreTimes(pfd int, st *unix.Stat_t) error {
	return unix.UtimesNanoAt(pfd, "", []unix.Timespec{st.Atim, st.Mtim}, unix.AT_EMPTY_PATH)
}
