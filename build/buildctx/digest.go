package buildctx

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"syscall"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// digestVersion is written first, so a change of the encoding below
// changes every digest instead of colliding with an old one.
const digestVersion = "strata-buildctx-digest-v1"

// Digest is the content digest of what Copy would copy from srcs, for
// the build cache. It covers, per source in order, each entry's name
// (relative to its source; the destination name for a file source),
// type, permission and special bits, owner, size, symlink target,
// extended attributes, contents, and which entries are hard links of
// one another; not mtimes, inode numbers or host paths, so it is stable
// across runs and machines. Flags such as --chown and the destination
// are the caller's to mix in.
func Digest(srcs []Source) (digest.Digest, error) {
	h := sha256.New()
	w := &digestWriter{w: h}
	w.str(digestVersion)
	w.num(uint64(len(srcs)))
	for _, s := range srcs {
		if s.Dir {
			w.str("dir")
		} else {
			w.str("file")
			w.str(s.Base)
		}
		w.num(uint64(len(s.Entries)))
		links := map[[2]uint64]string{}
		for _, e := range s.Entries {
			if err := w.entry(e, links); err != nil {
				return "", fmt.Errorf("digest %s: %w", s.Name, err)
			}
		}
	}
	return digest.NewDigest(digest.SHA256, h), nil
}

type digestWriter struct{ w io.Writer }

// str writes a length-prefixed string, so no two lists of fields encode
// alike.
func (d *digestWriter) str(s string) {
	d.num(uint64(len(s)))
	io.WriteString(d.w, s)
}

func (d *digestWriter) num(n uint64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	d.w.Write(b[:])
}

func (d *digestWriter) entry(e Entry, links map[[2]uint64]string) error {
	fi := e.Info
	d.str(e.Rel)
	d.num(uint64(fi.Mode().Type()))
	d.num(uint64(fi.Mode().Perm() | fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)))
	st, _ := fi.Sys().(*syscall.Stat_t)
	if st != nil {
		d.num(uint64(st.Uid))
		d.num(uint64(st.Gid))
	}
	if err := d.xattrs(e.Path); err != nil {
		return err
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		t, err := os.Readlink(e.Path)
		if err != nil {
			return err
		}
		d.str(t)
	case fi.Mode().IsRegular():
		if st != nil && st.Nlink > 1 && e.Rel != "" {
			key := [2]uint64{uint64(st.Dev), st.Ino}
			if first, ok := links[key]; ok {
				d.str("link")
				d.str(first)
				return nil
			}
			links[key] = e.Rel
		}
		d.str("data")
		d.num(uint64(fi.Size()))
		f, err := os.Open(e.Path)
		if err != nil {
			return err
		}
		fh := sha256.New()
		n, err := io.Copy(fh, f)
		f.Close()
		if err != nil {
			return err
		}
		if n != fi.Size() {
			return fmt.Errorf("%s changed while it was read", e.Path)
		}
		d.w.Write(fh.Sum(nil))
	}
	return nil
}

// xattrs writes the extended attributes of p, sorted by name.
func (d *digestWriter) xattrs(p string) error {
	names, err := listXattrs(p)
	if err != nil {
		return err
	}
	d.num(uint64(len(names)))
	for _, n := range names {
		v, err := getXattr(p, n)
		if err != nil {
			return err
		}
		d.str(n)
		d.str(string(v))
	}
	return nil
}

// listXattrs lists the extended attributes of p (not following a
// symlink), sorted; a file system without them has none.
func listXattrs(p string) ([]string, error) {
	sz, err := unix.Llistxattr(p, nil)
	if err == unix.ENOTSUP || err == unix.EOPNOTSUPP {
		return nil, nil
	}
	if err != nil {
		return nil, &os.PathError{Op: "listxattr", Path: p, Err: err}
	}
	if sz == 0 {
		return nil, nil
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil, &os.PathError{Op: "listxattr", Path: p, Err: err}
	}
	var names []string
	start := 0
	for i := 0; i < sz; i++ {
		if buf[i] == 0 {
			if i > start {
				names = append(names, string(buf[start:i]))
			}
			start = i + 1
		}
	}
	sort.Strings(names)
	return names, nil
}

func getXattr(p, name string) ([]byte, error) {
	sz, err := unix.Lgetxattr(p, name, nil)
	if err != nil {
		return nil, &os.PathError{Op: "getxattr " + name, Path: p, Err: err}
	}
	buf := make([]byte, sz)
	sz, err = unix.Lgetxattr(p, name, buf)
	if err != nil {
		return nil, &os.PathError{Op: "getxattr " + name, Path: p, Err: err}
	}
	return buf[:sz], nil
}
