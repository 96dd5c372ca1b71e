//go:build linux

package cow

import (
	"errors"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/ovl"
)

// SetAttr is a change of attributes, as setattr asks for it: each field
// that is not nil is set.
type SetAttr struct {
	Mode        *uint32 // permission bits and set-ID bits (07777)
	Uid, Gid    *uint32
	Size        *int64
	Atime       *unix.Timespec // Nsec may be UTIME_NOW
	Mtime       *unix.Timespec
	KillSuidGid bool // clear set-user-ID, and set-group-ID where group-executable
	// Ctime asks for the change time to be updated even when nothing
	// else changes.
	Ctime bool
}

// Setattr changes the attributes of the entry at rel, copying it up
// first (without data when it is truncated to zero), and refreshes e. fd,
// if not -1, is an open fd of the entry's upper file to truncate through.
// It works on the stack's root too, which is always in the upper of a
// writable stack.
func (s *Stack) Setattr(rel string, e *Entry, a SetAttr, fd int) error {
	if !s.Writable() {
		return unix.EROFS
	}
	dataLen := int64(MetaOnly) // a change of metadata alone
	switch {
	case a.Size != nil && *a.Size == 0:
		dataLen = 0
	case a.Size != nil:
		dataLen = -1
	}
	if err := s.CopyUp(rel, e, dataLen); err != nil {
		return err
	}
	isLink := e.Stat.Mode&unix.S_IFMT == unix.S_IFLNK
	if a.Mode != nil && isLink {
		return unix.EOPNOTSUPP // as lchmod(2)
	}
	il, ip := s.inode(rel, e)
	return il.withPath(ip, func(pfd int) error {
		changed := false
		// Owner first: a chown clears set-ID bits that a mode in the
		// same request may set.
		if a.Uid != nil || a.Gid != nil {
			uid, gid := -1, -1
			if a.Uid != nil {
				uid = int(*a.Uid)
			}
			if a.Gid != nil {
				gid = int(*a.Gid)
			}
			if err := unix.Fchownat(pfd, "", uid, gid, unix.AT_EMPTY_PATH); err != nil {
				return err
			}
			changed = true
		}
		mode := a.Mode
		if mode == nil && a.KillSuidGid && !isLink {
			var st unix.Stat_t
			if err := unix.Fstat(pfd, &st); err != nil {
				return err
			}
			m := st.Mode &^ unix.S_ISUID
			if m&unix.S_IXGRP != 0 {
				m &^= unix.S_ISGID
			}
			if m != st.Mode {
				m &= 0o7777
				mode = &m
			}
		}
		if mode != nil {
			// chmod has no AT_EMPTY_PATH form before Linux 6.6: go
			// through the fd's magic link, which names the file itself.
			if err := unix.Fchmodat(unix.AT_FDCWD, ovl.ProcPath(pfd), *mode&0o7777, 0); err != nil {
				return err
			}
			changed = true
		}
		if a.Size != nil {
			if err := s.truncate(il, ip, fd, *a.Size); err != nil {
				return err
			}
			changed = true
		}
		if a.Atime != nil || a.Mtime != nil {
			ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
			if a.Atime != nil {
				ts[0] = *a.Atime
			}
			if a.Mtime != nil {
				ts[1] = *a.Mtime
			}
			if err := unix.UtimesNanoAt(pfd, "", ts, unix.AT_EMPTY_PATH); err != nil {
				return err
			}
			changed = true
		}
		if a.Ctime && !changed {
			// Linux sets ctime only as a side effect: an ownership
			// change to the same owner is the cheapest one.
			if err := unix.Fchownat(pfd, "", -1, -1, unix.AT_EMPTY_PATH); err != nil {
				return err
			}
		}
		blocks := e.Stat.Blocks
		if err := unix.Fstat(pfd, &e.Stat); err != nil {
			return err
		}
		if e.Metacopy() {
			e.Stat.Blocks = blocks // the data's
		}
		return nil
	})
}

// truncate sets the size of the file p of layer l, through fd if it is
// one.
func (s *Stack) truncate(l *Layer, p string, fd int, size int64) error {
	if fd >= 0 {
		return unix.Ftruncate(fd, size)
	}
	wfd, err := l.openAt(p, unix.O_WRONLY, 0)
	if err != nil {
		return err
	}
	return errors.Join(unix.Ftruncate(wfd, size), unix.Close(wfd))
}
