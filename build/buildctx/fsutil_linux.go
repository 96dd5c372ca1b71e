package buildctx

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Resolve flags. inRoot follows symlinks as a process chrooted at the
// base directory would (absolute targets and ".." stay inside): used to
// read a rootfs and to find a COPY destination, as docker does.
// beneath follows only the symlinks that stay below the base and refuses
// the others (EXDEV): used for ADD's extraction, where docker refuses an
// archive that breaks out of its destination. noLinks refuses every
// symlink: used to unpack a context tar into a directory of our own.
const (
	resolveInRoot  = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS
	resolveBeneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS
	resolveNoLinks = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS
)

// openat2 opens name (relative; "" is the base) below dirfd, retrying
// EINTR and EAGAIN (openat2 returns EAGAIN when a rename raced the
// lookup).
func openat2(dirfd int, name string, flags uint64, resolve uint64) (int, error) {
	if name == "" {
		name = "."
	}
	how := unix.OpenHow{Flags: flags | unix.O_CLOEXEC, Resolve: resolve}
	for i := 0; ; i++ {
		fd, err := unix.Openat2(dirfd, name, &how)
		if (err == unix.EINTR || err == unix.EAGAIN) && i < 64 {
			continue
		}
		if err != nil {
			return -1, &os.PathError{Op: "openat2", Path: name, Err: err}
		}
		return fd, nil
	}
}

// openInRoot opens name inside root with symlinks resolved in root.
func openInRoot(root, name string, flags int) (*os.File, error) {
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(rfd)
	fd, err := openat2(rfd, relName(name), uint64(flags), resolveInRoot)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), filepath.Join(root, relName(name))), nil
}

// relName cleans name as a path below a root: leading "/" and ".."
// that would climb above it are dropped; "" is the root.
func relName(name string) string {
	n := path.Clean("/" + filepath.ToSlash(name))
	return strings.TrimPrefix(n, "/")
}

// splitRel splits a relName into parent and base ("" parent for a top
// entry).
func splitRel(rel string) (dir, base string) {
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		return "", rel
	}
	return rel[:i], rel[i+1:]
}

// isEscape reports whether err is openat2 refusing a path that leaves its
// base or goes through a refused symlink.
func isEscape(err error) bool {
	return errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ELOOP)
}

// mkdirAll makes the directory rel below dirfd, resolving with resolve,
// and returns it open (O_RDONLY|O_DIRECTORY). The directories it makes
// get mode 0755 and the owner uid:gid, as docker's MkdirAllAndChownNew.
func mkdirAll(dirfd int, rel string, resolve uint64, uid, gid int) (int, error) {
	fd, err := openat2(dirfd, rel, unix.O_RDONLY|unix.O_DIRECTORY, resolve)
	if err == nil || !errors.Is(err, unix.ENOENT) || rel == "" {
		return fd, err
	}
	parent, base := splitRel(rel)
	pfd, err := mkdirAll(dirfd, parent, resolve, uid, gid)
	if err != nil {
		return -1, err
	}
	defer unix.Close(pfd)
	if err := unix.Mkdirat(pfd, base, 0o755); err != nil {
		if errors.Is(err, unix.EEXIST) {
			// Not a directory we could open: a dangling symlink.
			return -1, fmt.Errorf("make directory %s: it exists and is not a directory (a symlink to a missing directory?)", rel)
		}
		return -1, &os.PathError{Op: "mkdir", Path: rel, Err: err}
	}
	if err := unix.Fchownat(pfd, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return -1, &os.PathError{Op: "chown", Path: rel, Err: err}
	}
	// Mkdirat is subject to the umask; set the mode it asked for.
	if err := unix.Fchmodat(pfd, base, 0o755, 0); err != nil {
		return -1, &os.PathError{Op: "chmod", Path: rel, Err: err}
	}
	return openat2(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, resolveNoLinks)
}

// removeNonDir removes the entry base of dirfd if it exists and is not a
// directory; it returns isDir true, without removing, for a directory.
func removeNonDir(dirfd int, base string) (isDir bool, err error) {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, &os.PathError{Op: "stat", Path: base, Err: err}
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return true, nil
	}
	if err := unix.Unlinkat(dirfd, base, 0); err != nil {
		return false, &os.PathError{Op: "remove", Path: base, Err: err}
	}
	return false, nil
}

// timespec converts for utimensat.
func timespec(t interface{ UnixNano() int64 }) unix.Timespec {
	return unix.NsecToTimespec(t.UnixNano())
}
