package buildctx

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// extractMode says what an archive is unpacked for.
type extractMode int

const (
	// extractContext unpacks a context tar into a fresh private
	// directory: every symlink on the way is refused, device nodes too.
	extractContext extractMode = iota
	// extractAdd unpacks an ADD archive at its destination: symlinks that
	// stay below the destination are followed (usrmerge's bin ->
	// usr/bin), the others refused; device nodes are made.
	extractAdd
)

// xattrPAX is the PAX record prefix of extended attributes (GNU tar and
// Go's archive/tar).
const xattrPAX = "SCHILY.xattr."

type extractor struct {
	base    int // directory fd everything goes below
	resolve uint64
	mode    extractMode
	chown   bool
	uid     int
	gid     int
}

// extractStream unpacks the (maybe compressed) tar r into dir.
func extractStream(dir string, r io.Reader, mode extractMode) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	x := &extractor{base: fd, resolve: resolveNoLinks, mode: mode}
	if mode == extractAdd {
		x.resolve = resolveBeneath
	}
	return x.run(r)
}

func (x *extractor) run(r io.Reader) (err error) {
	d, err := decompress(r)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, d.Close()) }()
	tr := tar.NewReader(d)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		if err := x.entry(hdr, tr); err != nil {
			return fmt.Errorf("tar entry %q: %w", hdr.Name, err)
		}
	}
}

// cleanEntryName refuses a tar name that is absolute or climbs out with
// "..", and returns it relative ("" for the top).
func cleanEntryName(raw string) (string, error) {
	if raw == "" {
		return "", errors.New("empty name")
	}
	if strings.HasPrefix(raw, "/") {
		return "", errors.New("absolute name refused: names in an archive are relative to where it is extracted")
	}
	n := path.Clean(raw)
	if n == ".." || strings.HasPrefix(n, "../") {
		return "", errors.New(`name leads outside the destination with ".."; refused`)
	}
	if n == "." {
		return "", nil
	}
	return n, nil
}

func (x *extractor) openParent(rel string) (int, string, error) {
	dir, base := splitRel(rel)
	owner, group := 0, 0
	if x.chown {
		owner, group = x.uid, x.gid
	}
	fd, err := mkdirAll(x.base, dir, x.resolve, owner, group)
	if err != nil {
		if isEscape(err) && x.mode == extractContext {
			return -1, "", fmt.Errorf("refused: %s is reached through a symlink, and a context tar may not write through one", dir)
		}
		if isEscape(err) {
			return -1, "", fmt.Errorf("refused: %s is reached through a symlink that leads out of the destination", dir)
		}
		return -1, "", err
	}
	return fd, base, nil
}

func (x *extractor) entry(hdr *tar.Header, data io.Reader) error {
	rel, err := cleanEntryName(hdr.Name)
	if err != nil {
		return err
	}
	if rel == "" {
		return nil // the "./" entry: the destination exists already
	}
	uid, gid := hdr.Uid, hdr.Gid
	if x.chown {
		uid, gid = x.uid, x.gid
	}
	perm := uint32(hdr.Mode) & 0o7777
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil // PAX defaults, already applied by archive/tar
	case tar.TypeChar, tar.TypeBlock:
		if x.mode == extractContext {
			return errors.New("device node refused: a build context holds files, directories and symlinks")
		}
	case tar.TypeDir, tar.TypeReg, tar.TypeSymlink, tar.TypeLink, tar.TypeFifo:
	default:
		return fmt.Errorf("unsupported tar entry type %q", hdr.Typeflag)
	}
	pfd, base, err := x.openParent(rel)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	if hdr.Typeflag != tar.TypeDir {
		isDir, err := removeNonDir(pfd, base)
		if err != nil {
			return err
		}
		if isDir {
			return errors.New("a directory is in the way")
		}
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		// As docker's untar: an existing directory is kept and gets the
		// entry's metadata; anything else in the way (a symlink too) is
		// replaced by the directory.
		if isDir, err := removeNonDir(pfd, base); err != nil {
			return err
		} else if !isDir {
			if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
				return &os.PathError{Op: "mkdir", Path: rel, Err: err}
			}
		}
		fd, err := openat2(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, resolveNoLinks)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := setFdMeta(fd, uid, gid, perm, paxXattrs(hdr)); err != nil {
			return err
		}
		return setTimes(pfd, base, hdr.ModTime)
	case tar.TypeReg:
		fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return &os.PathError{Op: "create", Path: rel, Err: err}
		}
		f := os.NewFile(uintptr(fd), rel)
		defer f.Close()
		if n, err := io.Copy(f, data); err != nil {
			return fmt.Errorf("write: %w", err)
		} else if n != hdr.Size {
			return fmt.Errorf("short data: %d of %d bytes", n, hdr.Size)
		}
		if err := setFdMeta(fd, uid, gid, perm, paxXattrs(hdr)); err != nil {
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		return setTimes(pfd, base, hdr.ModTime)
	case tar.TypeSymlink:
		if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
			return &os.PathError{Op: "symlink", Path: rel, Err: err}
		}
		return setLinkMeta(pfd, base, uid, gid, hdr.ModTime)
	case tar.TypeLink:
		target, err := cleanEntryName(hdr.Linkname)
		if err != nil || target == "" {
			return fmt.Errorf("hard link to %q refused: it must name a file of the archive", hdr.Linkname)
		}
		tdir, tbase := splitRel(target)
		tfd, err := openat2(x.base, tdir, unix.O_PATH|unix.O_DIRECTORY, x.resolve)
		if err != nil {
			if isEscape(err) {
				return fmt.Errorf("hard link to %q refused: it is reached through a symlink that leads out", hdr.Linkname)
			}
			return fmt.Errorf("hard link to %q: %w", hdr.Linkname, err)
		}
		defer unix.Close(tfd)
		if err := unix.Linkat(tfd, tbase, pfd, base, 0); err != nil {
			return &os.PathError{Op: "link " + hdr.Linkname, Path: rel, Err: err}
		}
		return nil
	default: // fifo, char, block
		mode := perm
		switch hdr.Typeflag {
		case tar.TypeFifo:
			mode |= unix.S_IFIFO
		case tar.TypeChar:
			mode |= unix.S_IFCHR
		case tar.TypeBlock:
			mode |= unix.S_IFBLK
		}
		dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
		if err := unix.Mknodat(pfd, base, mode, int(dev)); err != nil {
			return &os.PathError{Op: "mknod", Path: rel, Err: err}
		}
		if err := unix.Fchownat(pfd, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return &os.PathError{Op: "chown", Path: rel, Err: err}
		}
		if err := unix.Fchmodat(pfd, base, perm, 0); err != nil {
			return &os.PathError{Op: "chmod", Path: rel, Err: err}
		}
		return setTimes(pfd, base, hdr.ModTime)
	}
}

func paxXattrs(hdr *tar.Header) map[string][]byte {
	var m map[string][]byte
	for k, v := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, xattrPAX); ok {
			if m == nil {
				m = map[string][]byte{}
			}
			m[name] = []byte(v)
		}
	}
	return m
}
