//go:build linux

package cow

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/ovl"
)

// A Layer is one directory of a stack, held open for its lifetime. Every
// access to its contents is relative to its directory fd and cannot leave
// it: multi-component paths are resolved with openat2 and
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, single names with *at calls that do
// not follow a trailing symlink.
type Layer struct {
	Path string // as given by the user, for messages only
	fd   int    // O_PATH|O_DIRECTORY
	Dev  uint64
	// metacopies: the layer may hold metacopy files that are not
	// sparse (see ovl.XattrMetacopies).
	metacopies atomic.Bool
}

// OpenLayer opens dir as a layer.
func OpenLayer(dir string) (*Layer, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open layer %s: %w", dir, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("stat layer %s: %w", dir, err)
	}
	l := &Layer{Path: dir, fd: fd, Dev: st.Dev}
	// A layer that was an upper of kernel overlayfs carries the
	// overlay's uuid at its root (Linux 6.6 and later): it may hold
	// metacopy files of any size too.
	l.metacopies.Store(ovl.MetacopiesXattrs.Has(fd) || ovl.UUIDXattrs.Has(fd))
	return l, nil
}

// Close releases the layer's directory fd.
func (l *Layer) Close() error { return unix.Close(l.fd) }

// Fd returns the layer's directory fd; it stays owned by the layer.
func (l *Layer) Fd() int { return l.fd }

const resolveBeneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// errNotBeneath is returned for a path that needs a symlink to resolve.
var errNotBeneath = errors.New("path crosses a symlink")

// openAt opens rel inside the layer. flags get O_CLOEXEC|O_NOFOLLOW; an
// intermediate symlink gives ENOTDIR (as if the component were not a
// directory, which is what it is for the overlay).
//
// A path of PATH_MAX bytes or more (a tree that deep is legal below the
// union root, as it is on any filesystem) is walked in pieces, each
// opened beneath the directory the one before it opened.
func (l *Layer) openAt(rel string, flags int, mode uint32) (int, error) {
	if rel == "" {
		rel = "."
	}
	dfd := l.fd
	for len(rel) >= maxPathArg {
		i := strings.LastIndexByte(rel[:maxPathArg], '/')
		if i <= 0 {
			l.closeDir(dfd)
			return -1, unix.ENAMETOOLONG // a single name that long
		}
		fd, err := openBeneath(dfd, rel[:i], unix.O_PATH|unix.O_DIRECTORY, 0)
		l.closeDir(dfd)
		if err != nil {
			return -1, err
		}
		dfd, rel = fd, rel[i+1:]
	}
	fd, err := openBeneath(dfd, rel, flags, mode)
	l.closeDir(dfd)
	return fd, err
}

// maxPathArg is the length from which a path no longer fits a system
// call's path argument (PATH_MAX counts the terminating NUL).
const maxPathArg = unix.PathMax

// openBeneath opens rel beneath dfd with openat2, never crossing a
// symlink; see openAt for the errors.
func openBeneath(dfd int, rel string, flags int, mode uint32) (int, error) {
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW), Mode: uint64(mode), Resolve: resolveBeneath}
	for {
		fd, err := unix.Openat2(dfd, rel, &how)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		if err == unix.ELOOP && flags&unix.O_PATH != 0 {
			// With O_PATH|O_NOFOLLOW a trailing symlink opens, so this
			// was a symlink on the way: not a directory for the overlay.
			return -1, unix.ENOTDIR
		}
		if err == unix.EXDEV {
			return -1, unix.ENOTDIR
		}
		return fd, err
	}
}

// statAt stats rel, a path whose directories were all opened beneath
// the layer without crossing a symlink before (see lowerLookup), not
// following its last name: one fstatat, or the walk of openAt for a path
// too long for one.
func (l *Layer) statAt(rel string, st *unix.Stat_t) error {
	if len(rel) < maxPathArg {
		return unix.Fstatat(l.fd, rel, st, unix.AT_SYMLINK_NOFOLLOW)
	}
	return l.Lstat(rel, st)
}

// parentDir opens the directory that holds rel and returns it with rel's
// last component. The caller closes the fd unless it equals l.fd.
func (l *Layer) parentDir(rel string) (dfd int, name string, err error) {
	dir, name := path.Split(rel)
	if dir == "" {
		return l.fd, name, nil
	}
	dfd, err = l.openAt(strings.TrimSuffix(dir, "/"), unix.O_PATH|unix.O_DIRECTORY, 0)
	if err == unix.ELOOP {
		err = unix.ENOTDIR
	}
	return dfd, name, err
}

func (l *Layer) closeDir(dfd int) {
	if dfd != l.fd && dfd >= 0 {
		unix.Close(dfd)
	}
}

// withParent runs fn with an fd of rel's parent directory (O_PATH, or the
// layer's own fd) and rel's last name.
func (l *Layer) withParent(rel string, fn func(dfd int, name string) error) error {
	dfd, name, err := l.parentDir(rel)
	if err != nil {
		return err
	}
	defer l.closeDir(dfd)
	return fn(dfd, name)
}

// Lstat stats rel without following a trailing symlink.
func (l *Layer) Lstat(rel string, st *unix.Stat_t) error {
	if rel == "" {
		return unix.Fstat(l.fd, st)
	}
	return l.withParent(rel, func(dfd int, name string) error {
		return unix.Fstatat(dfd, name, st, unix.AT_SYMLINK_NOFOLLOW)
	})
}

// withPath runs fn with an O_PATH fd of rel itself (not following it).
func (l *Layer) withPath(rel string, fn func(fd int) error) error {
	if rel == "" {
		return fn(l.fd)
	}
	fd, err := l.openAt(rel, unix.O_PATH, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return fn(fd)
}

// Getxattr reads one xattr of rel into a new slice.
func (l *Layer) Getxattr(rel, attr string) ([]byte, error) {
	var out []byte
	err := l.withPath(rel, func(fd int) error {
		var err error
		out, err = ovl.GetxattrFd(fd, attr)
		return err
	})
	return out, err
}

// Listxattr lists rel's xattr names.
func (l *Layer) Listxattr(rel string) ([]string, error) {
	var out []string
	err := l.withPath(rel, func(fd int) error {
		var err error
		out, err = ovl.ListxattrFd(fd)
		return err
	})
	return out, err
}

// Setxattr sets one xattr of rel.
func (l *Layer) Setxattr(rel, attr string, val []byte, flags int) error {
	return l.withPath(rel, func(fd int) error {
		return unix.Setxattr(ovl.ProcPath(fd), attr, val, flags)
	})
}

// Removexattr removes one xattr of rel.
func (l *Layer) Removexattr(rel, attr string) error {
	return l.withPath(rel, func(fd int) error {
		return unix.Removexattr(ovl.ProcPath(fd), attr)
	})
}

// Readlink reads the target of the symlink rel.
func (l *Layer) Readlink(rel string) (string, error) {
	var target string
	err := l.withParent(rel, func(dfd int, name string) error {
		buf := make([]byte, 256)
		for {
			n, err := unix.Readlinkat(dfd, name, buf)
			if err != nil {
				return err
			}
			if n < len(buf) {
				target = string(buf[:n])
				return nil
			}
			buf = make([]byte, 2*len(buf))
		}
	})
	return target, err
}

// Open opens rel for I/O with flags (O_NOFOLLOW is always added).
func (l *Layer) Open(rel string, flags int, mode uint32) (int, error) {
	return l.openAt(rel, flags, mode)
}

// isWhiteout reports whether the entry rel, with stat st, is a whiteout in
// any dialect that is visible from the entry itself (ovl.IsWhiteout). An
// entry whose xattrs cannot be read is not one.
func (l *Layer) isWhiteout(rel string, st *unix.Stat_t) bool {
	if st.Mode&unix.S_IFMT == unix.S_IFCHR {
		return st.Rdev == ovl.WhiteoutDev
	}
	wh := false
	l.withParent(rel, func(dfd int, name string) error {
		wh, _ = ovl.IsWhiteout(dfd, name, st)
		return nil
	})
	return wh
}

// isOpaque reports whether the directory rel is opaque in any dialect.
func (l *Layer) isOpaque(rel string) bool { return l.dirMarks(rel).opaque }

// errOCIWhiteout reports that an OCI whiteout file deletes the name.
var errOCIWhiteout = errors.New("deleted by an OCI whiteout file")

// lstatOrWhiteout is Lstat, except that where rel is absent but a
// ".wh." file beside it deletes it, it returns errOCIWhiteout. The parent
// is opened once for both; parentMissing reports that it is not there.
func (l *Layer) lstatOrWhiteout(rel string, st *unix.Stat_t) (parentMissing bool, err error) {
	dfd, name, err := l.parentDir(rel)
	if err != nil {
		return notFound(err), err
	}
	defer l.closeDir(dfd)
	return false, func() error {
		err := unix.Fstatat(dfd, name, st, unix.AT_SYMLINK_NOFOLLOW)
		if err != unix.ENOENT {
			return err
		}
		var wst unix.Stat_t
		if unix.Fstatat(dfd, ovl.WhiteoutPrefix+name, &wst, unix.AT_SYMLINK_NOFOLLOW) == nil {
			return errOCIWhiteout
		}
		return err
	}()
}
