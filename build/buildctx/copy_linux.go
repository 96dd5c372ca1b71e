package buildctx

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// CopyOptions are the flags of one COPY or ADD.
type CopyOptions struct {
	// UID and GID own everything copied when Chown is set (--chown,
	// resolved by the caller, e.g. with LookupOwner). Without it copied
	// files are owned by 0:0, as docker's, and extracted files keep the
	// archive's owners.
	UID, GID int
	Chown    bool
	// Mode, when set (--chmod), is the permission of every copied file
	// and directory (not of symlinks, nor of extracted files).
	Mode *os.FileMode
	// Extract is ADD: a source that is a tar (plain, gzip, bzip2, xz,
	// zstd) is extracted at the destination instead of copied.
	Extract bool
}

// multiDestMessage is docker's error for several sources and a file
// destination.
const multiDestMessage = "When using COPY with more than one source file, the destination must be a directory and end with a /"

// Copy copies srcs into the root filesystem root at dest, an absolute
// path in the container (the caller joins a relative one to the
// WORKDIR), with docker's COPY rules:
//
//   - a directory source copies its contents, not itself;
//   - a file source lands at dest, or at dest/<name> when dest ends in
//     "/" or is an existing directory; several sources need a dest that
//     ends in "/";
//   - missing directories of dest are made, mode 0755, owned by the
//     --chown owner (else root);
//   - modes, symlinks (as symlinks), hard links between the sources,
//     extended attributes and mtimes are kept.
//
// Every path in root is resolved in root (openat2 RESOLVE_IN_ROOT): a
// symlink of the image on the way to dest is followed as the container
// would see it and cannot lead out of root. A file destination that is a
// symlink is followed the same way, as docker does; below a directory
// destination, an existing non-directory at a copied name is replaced
// (renamed over, never written through).
func Copy(root, dest string, srcs []Source, opts CopyOptions) error {
	rootfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("copy: open root: %w", &os.PathError{Op: "open", Path: root, Err: err})
	}
	defer unix.Close(rootfd)
	c := &copier{root: rootfd, opts: opts, links: map[[2]uint64]string{}}
	if opts.Chown {
		c.uid, c.gid = opts.UID, opts.GID
	}
	destRel := relName(dest)
	dirDest := strings.HasSuffix(dest, "/") || strings.HasSuffix(dest, "/.") || dest == "."
	if len(srcs) > 1 && !dirDest {
		return errors.New(multiDestMessage)
	}
	for _, s := range srcs {
		// Hard links are kept within one source, as Digest counts them.
		clear(c.links)
		if err := c.source(s, destRel, dirDest); err != nil {
			return fmt.Errorf("copy %s to %s: %w", s.Name, dest, err)
		}
	}
	return nil
}

type copier struct {
	root     int
	opts     CopyOptions
	uid, gid int
	// links maps a source inode to the first path it was copied to, so
	// its other names become hard links of that copy.
	links map[[2]uint64]string
}

func (c *copier) isDir(rel string) bool {
	fd, err := openat2(c.root, rel, unix.O_PATH|unix.O_DIRECTORY, resolveInRoot)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

func (c *copier) source(s Source, destRel string, dirDest bool) error {
	top := s.Entries[0]
	if c.opts.Extract && !s.Dir && top.Info.Mode().IsRegular() {
		ok, err := fileIsArchive(top.Path)
		if err != nil {
			return err
		}
		if ok {
			return c.extract(top.Path, destRel)
		}
	}
	if !s.Dir {
		target := destRel
		if dirDest || c.isDir(destRel) {
			target = path.Join(destRel, s.Base)
		}
		target, err := c.followFinal(target)
		if err != nil {
			return err
		}
		return c.entry(top, target)
	}
	fd, err := c.mkdirDest(destRel)
	if err != nil {
		return err
	}
	unix.Close(fd)
	for _, e := range s.Entries[1:] {
		if err := c.entry(e, path.Join(destRel, e.Rel)); err != nil {
			return err
		}
	}
	return nil
}

// followFinal follows a symlink at a file destination rel, inside root,
// as docker does (the copy goes to its target, made if missing); parent
// directories are resolved in root when the file is written.
func (c *copier) followFinal(rel string) (string, error) {
	for i := 0; i < maxLinks; i++ {
		dir, base := splitRel(rel)
		pfd, err := openat2(c.root, dir, unix.O_PATH|unix.O_DIRECTORY, resolveInRoot)
		if err != nil {
			return rel, nil // made, or refused, by mkdirDest later
		}
		t, err := readlinkat(pfd, base)
		unix.Close(pfd)
		if err != nil {
			return rel, nil // not a symlink, or absent
		}
		if path.IsAbs(t) {
			rel = relName(t)
		} else {
			rel = relName(path.Join(dir, t))
		}
		if rel == "" {
			return "", errors.New("the destination is a symlink to /")
		}
	}
	return "", fmt.Errorf("destination /%s: too many levels of symbolic links", rel)
}

func readlinkat(dirfd int, name string) (string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(dirfd, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

func (c *copier) mkdirDest(rel string) (int, error) {
	fd, err := mkdirAll(c.root, rel, resolveInRoot, c.uid, c.gid)
	if err != nil {
		if errors.Is(err, unix.ENOTDIR) {
			return -1, fmt.Errorf("destination /%s: a file is in the way of a directory", rel)
		}
		return -1, fmt.Errorf("destination /%s: %w", rel, err)
	}
	return fd, nil
}

func fileIsArchive(p string) (bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var magic [6]byte
	n, _ := io.ReadFull(f, magic[:])
	if n == len(magicXz) && string(magic[:]) == string(magicXz) {
		if _, err := xzLook(); err != nil {
			return false, err
		}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return false, err
	}
	return isArchive(f), nil
}

func (c *copier) extract(p, destRel string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	dfd, err := c.mkdirDest(destRel)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	x := &extractor{base: dfd, resolve: resolveBeneath, mode: extractAdd,
		chown: c.opts.Chown, uid: c.uid, gid: c.gid}
	if err := x.run(f); err != nil {
		return fmt.Errorf("extract: %w", err)
	}
	return nil
}

// entry copies one source entry to rel in root.
func (c *copier) entry(e Entry, rel string) error {
	if rel == "" {
		if e.Info.IsDir() {
			return nil
		}
		return errors.New("cannot copy a file over the root directory")
	}
	dir, base := splitRel(rel)
	pfd, err := c.mkdirDest(dir)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	fi := e.Info
	st, _ := fi.Sys().(*syscall.Stat_t)
	perm := uint32(fi.Mode().Perm())
	if fi.Mode()&fs.ModeSetuid != 0 {
		perm |= unix.S_ISUID
	}
	if fi.Mode()&fs.ModeSetgid != 0 {
		perm |= unix.S_ISGID
	}
	if fi.Mode()&fs.ModeSticky != 0 {
		perm |= unix.S_ISVTX
	}
	if c.opts.Mode != nil {
		perm = uint32(c.opts.Mode.Perm())
	}
	xattrs, err := readXattrs(e.Path, fi)
	if err != nil {
		return err
	}
	switch {
	case fi.IsDir():
		return c.dir(pfd, base, rel, perm, xattrs, fi.ModTime())
	case fi.Mode().IsRegular():
		if st != nil && st.Nlink > 1 && e.Rel != "" {
			key := [2]uint64{uint64(st.Dev), st.Ino}
			if first, ok := c.links[key]; ok {
				return c.hardlink(pfd, base, first)
			}
			defer func() { c.links[key] = rel }()
		}
		return c.file(pfd, base, e.Path, perm, xattrs, fi.ModTime())
	case fi.Mode()&fs.ModeSymlink != 0:
		t, err := os.Readlink(e.Path)
		if err != nil {
			return err
		}
		return c.replace(pfd, base, func(tmp string) error {
			if err := unix.Symlinkat(t, pfd, tmp); err != nil {
				return &os.PathError{Op: "symlink", Path: rel, Err: err}
			}
			return setLinkMeta(pfd, tmp, c.uid, c.gid, fi.ModTime())
		})
	case fi.Mode()&fs.ModeNamedPipe != 0:
		return c.replace(pfd, base, func(tmp string) error {
			if err := unix.Mknodat(pfd, tmp, unix.S_IFIFO|0o600, 0); err != nil {
				return &os.PathError{Op: "mknod", Path: rel, Err: err}
			}
			if err := unix.Fchownat(pfd, tmp, c.uid, c.gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return err
			}
			if err := unix.Fchmodat(pfd, tmp, perm, 0); err != nil {
				return err
			}
			return setTimes(pfd, tmp, fi.ModTime())
		})
	case fi.Mode()&fs.ModeSocket != 0:
		return nil // not copied, as docker's tar of a context skips them
	default:
		return fmt.Errorf("%s: device nodes are not copied from a build context", e.Path)
	}
}

func (c *copier) dir(pfd int, base, rel string, perm uint32, xattrs map[string][]byte, mtime time.Time) error {
	err := unix.Mkdirat(pfd, base, 0o700)
	if errors.Is(err, unix.EEXIST) {
		// An existing directory (or a symlink to one, followed in root,
		// as docker does) is merged into; its metadata stays.
		if c.isDir(rel) {
			return nil
		}
		return fmt.Errorf("/%s exists and is not a directory", rel)
	}
	if err != nil {
		return &os.PathError{Op: "mkdir", Path: rel, Err: err}
	}
	fd, err := openat2(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, resolveNoLinks)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := setFdMeta(fd, c.uid, c.gid, perm, xattrs); err != nil {
		return err
	}
	return setTimes(pfd, base, mtime)
}

func (c *copier) file(pfd int, base, src string, perm uint32, xattrs map[string][]byte, mtime time.Time) error {
	in, err := os.OpenFile(src, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	return c.replace(pfd, base, func(tmp string) error {
		fd, err := unix.Openat(pfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return &os.PathError{Op: "create", Path: base, Err: err}
		}
		out := os.NewFile(uintptr(fd), base)
		if _, err := io.Copy(out, in); err != nil {
			return errors.Join(fmt.Errorf("copy %s: %w", src, err), out.Close())
		}
		if err := setFdMeta(fd, c.uid, c.gid, perm, xattrs); err != nil {
			return errors.Join(err, out.Close())
		}
		if err := out.Close(); err != nil {
			return err
		}
		return setTimes(pfd, tmp, mtime)
	})
}

func (c *copier) hardlink(pfd int, base, first string) error {
	fdir, fbase := splitRel(first)
	ffd, err := openat2(c.root, fdir, unix.O_PATH|unix.O_DIRECTORY, resolveInRoot)
	if err != nil {
		return err
	}
	defer unix.Close(ffd)
	return c.replace(pfd, base, func(tmp string) error {
		if err := unix.Linkat(ffd, fbase, pfd, tmp, 0); err != nil {
			return &os.PathError{Op: "link /" + first, Path: base, Err: err}
		}
		return nil
	})
}

// replace makes a new entry under a temporary name with mk, then renames
// it over base: an existing file or symlink at base is replaced, never
// written through, and a failure leaves the old one. A directory at base
// is an error.
func (c *copier) replace(pfd int, base string, mk func(tmp string) error) error {
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return fmt.Errorf("%s: cannot replace a directory with a file", base)
	}
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return err
	}
	tmp := ".strata-copy-" + hex.EncodeToString(rnd[:])
	if err := mk(tmp); err != nil {
		unix.Unlinkat(pfd, tmp, 0)
		return err
	}
	if err := unix.Renameat(pfd, tmp, pfd, base); err != nil {
		return errors.Join(&os.PathError{Op: "rename", Path: base, Err: err}, unix.Unlinkat(pfd, tmp, 0))
	}
	return nil
}

// readXattrs reads the extended attributes of a copied file.
func readXattrs(p string, fi fs.FileInfo) (map[string][]byte, error) {
	if fi.Mode()&fs.ModeSymlink != 0 {
		return nil, nil
	}
	names, err := listXattrs(p)
	if err != nil || len(names) == 0 {
		return nil, err
	}
	m := make(map[string][]byte, len(names))
	for _, n := range names {
		v, err := getXattr(p, n)
		if err != nil {
			return nil, err
		}
		m[n] = v
	}
	return m, nil
}

// setFdMeta sets owner, then mode (chown clears set-id bits), then
// extended attributes (chown drops security.capability).
func setFdMeta(fd, uid, gid int, perm uint32, xattrs map[string][]byte) error {
	if err := unix.Fchown(fd, uid, gid); err != nil {
		return fmt.Errorf("chown: %w", err)
	}
	if err := unix.Fchmod(fd, perm); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	for k, v := range xattrs {
		if err := unix.Fsetxattr(fd, k, v, 0); err != nil {
			return fmt.Errorf("set extended attribute %s: %w", k, err)
		}
	}
	return nil
}

func setLinkMeta(pfd int, base string, uid, gid int, mtime time.Time) error {
	if err := unix.Fchownat(pfd, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "lchown", Path: base, Err: err}
	}
	return setTimes(pfd, base, mtime)
}

func setTimes(pfd int, base string, mtime time.Time) error {
	ts := []unix.Timespec{timespec(mtime), timespec(mtime)}
	if err := unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimes", Path: base, Err: err}
	}
	return nil
}
