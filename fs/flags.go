//go:build linux

package fs

import (
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/cow"
)

// The kernel hands the daemon the flags and attribute masks of the
// caller's request, including bits that mean something only inside the
// kernel. Each bit is translated here, on purpose, before it reaches a
// syscall on a layer: openat2 rejects any bit it does not know with
// EINVAL, which is how exec of every file once failed (__FMODE_EXEC).

// fmodeExec is __FMODE_EXEC: the kernel's OPEN of a file being exec'd
// (do_open_execat) carries it in the open flags. It is no open(2) flag.
const fmodeExec = 0x20

// fmodeNonotify is __FMODE_NONOTIFY as older kernels put it in the open
// flags of fanotify's own opens; also no open(2) flag.
const fmodeNonotify = 0x4000000

// passedOpenFlags are the open flags that reach the daemon's own fd of a
// layer file, each because it changes what that fd does:
//   - O_ACCMODE: the fd must allow the caller's reads and writes.
//   - O_APPEND: kept for the loopback fd; the kernel sends appends at the
//     end it knows, and passthrough uses the caller's own flags anyway.
//   - O_SYNC, O_DSYNC: the caller's durability reaches the layer's file.
//   - O_NOATIME: the kernel checked the caller may ask it (may_open).
//   - O_NONBLOCK: kept as the caller gave it (no effect on regular files).
//   - O_TRUNC: handled by the caller of backingOpenFlags (see Open).
//
// Everything else is dropped:
//   - __FMODE_EXEC, __FMODE_NONOTIFY: kernel-internal, openat2 refuses them.
//   - O_DIRECT: the kernel already bypasses the FUSE inode's page cache for
//     the caller; the daemon's reads and writes come with go-fuse's buffers
//     and the caller's offsets, which O_DIRECT on the layer file would
//     refuse unless aligned. Passthrough gives the backing file the
//     caller's IOCB_DIRECT itself.
//   - O_ASYNC: signals about the daemon's fd would go to the daemon.
//   - O_CLOEXEC, O_NOFOLLOW: the layer code always adds them.
//   - O_CREAT, O_EXCL, O_NOCTTY: the kernel strips them before OPEN;
//     CREATE and TMPFILE handle creation themselves.
//   - O_PATH, O_DIRECTORY, O_TMPFILE: an O_PATH open never reaches a
//     FUSE daemon, directories are opened by OPENDIR and O_TMPFILE by
//     TMPFILE; none of them may change what an OPEN of a file opens.
//   - O_LARGEFILE: every fd is large on 64-bit Linux.
const passedOpenFlags = unix.O_ACCMODE | unix.O_APPEND | unix.O_SYNC | unix.O_DSYNC |
	unix.O_NOATIME | unix.O_NONBLOCK | unix.O_TRUNC

// backingOpenFlags turns the flags of a FUSE OPEN or CREATE into the
// flags for the daemon's open of the layer file.
func backingOpenFlags(kernel uint32) int {
	return int(kernel) & passedOpenFlags
}

// setattrRequest turns the valid mask and values of a FUSE SETATTR into
// the engine's request. Bits, each on purpose:
//   - FATTR_MODE, FATTR_UID, FATTR_GID, FATTR_SIZE: as given. The kernel
//     clears set-user-ID bits itself (ATTR_KILL_SUID becomes a mode
//     change before it reaches FUSE) unless FUSE_HANDLE_KILLPRIV_V2 is
//     negotiated, which go-fuse does not.
//   - FATTR_KILL_SUIDGID: under HANDLE_KILLPRIV_V2 the daemon clears the
//     bits; honoured for a kernel that sends it anyway.
//   - FATTR_ATIME(_NOW), FATTR_MTIME(_NOW): times, now or given.
//   - FATTR_CTIME: the kernel asks for a ctime update; Linux cannot set
//     ctime, so a request with nothing else becomes a change that sets it
//     to now (a chown to the same owner), as the local filesystem would.
//   - FATTR_FH: the open file to truncate through (fh).
//   - FATTR_LOCKOWNER: locks stay in the kernel; nothing to do.
func setattrRequest(in *fuse.SetAttrIn) cow.SetAttr {
	var a cow.SetAttr
	if m, ok := in.GetMode(); ok {
		a.Mode = &m
	}
	if u, ok := in.GetUID(); ok {
		a.Uid = &u
	}
	if g, ok := in.GetGID(); ok {
		a.Gid = &g
	}
	if sz, ok := in.GetSize(); ok {
		s := int64(sz)
		a.Size = &s
	}
	a.Atime = timeArg(in.Valid, fuse.FATTR_ATIME, fuse.FATTR_ATIME_NOW, in.Atime, in.Atimensec)
	a.Mtime = timeArg(in.Valid, fuse.FATTR_MTIME, fuse.FATTR_MTIME_NOW, in.Mtime, in.Mtimensec)
	a.KillSuidGid = in.Valid&fuse.FATTR_KILL_SUIDGID != 0
	a.Ctime = in.Valid&fuse.FATTR_CTIME != 0
	return a
}

func timeArg(valid, set, now uint32, sec uint64, nsec uint32) *unix.Timespec {
	switch {
	case valid&now != 0:
		return &unix.Timespec{Nsec: unix.UTIME_NOW}
	case valid&set != 0:
		return &unix.Timespec{Sec: int64(sec), Nsec: int64(nsec)}
	}
	return nil
}

// The other flags the kernel passes on:
//   - rename: RENAME_NOREPLACE and RENAME_EXCHANGE are the engine's;
//     RENAME_WHITEOUT (and any bit a later kernel adds) gets EINVAL, as
//     from kernel overlayfs, since whiteouts are the overlay's own
//     business (see node.Rename).
//   - fallocate: the kernel sends only FALLOC_FL_KEEP_SIZE,
//     FALLOC_FL_PUNCH_HOLE and FALLOC_FL_ZERO_RANGE to a FUSE daemon
//     (fuse_file_fallocate refuses every other mode with EOPNOTSUPP);
//     each means the same on the layer file, so the mode is passed as it
//     is, after the copy-up.
//   - setxattr: XATTR_CREATE and XATTR_REPLACE pass as they are, after the
//     copy-up.
