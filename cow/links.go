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

// Hard links of lower layers stay one inode through copy-up.
//
// Kernel overlayfs does this with index=on: the copy of an inode is made
// in an index directory of the work dir, keyed by the lower inode's file
// handle, and each name is linked to it when it is copied up in turn. strata
// needs no index: the copy-up of any name of a lower inode with several
// names copies the inode up once and links every name of it that the
// merged view shows at its lower path into the upper at once. The upper
// then holds an ordinary hard link, which every reader understands: kernel
// overlayfs with or without index, layer commit (a tar hard link), and
// strata's lookups, which find each name in the upper with the copy's
// inode and its merged inode number (the lower one, recorded as origin).
//
// The names are found in the lower layer by inode number: in the copied
// name's own directory first (from the index of lower directories, which
// already holds getdents' inode numbers), then, if some are still missing,
// by walking the layer with getdents, stopping once every name is found.
// A name that the merged view does not show at its lower path (deleted by
// a whiteout, or beneath a renamed directory) is left out.

// JoinsLinks reports whether a copy-up keeps the names of a lower hard
// link one inode (see copyUpLinked). Every writable stack does.
func (s *Stack) JoinsLinks() bool { return s.Writable() }

// copyUpLinked copies up the lower file e, one name of an inode with
// several, to rel, and links the inode's other names into the upper.
func (s *Stack) copyUpLinked(rel string, e *Entry, dataLen int64) error {
	names, err := s.lowerNames(e.Layer, e.Path, e.Stat.Ino, int(e.Stat.Nlink))
	if err != nil {
		return fmt.Errorf("find the other names of %s: %w", rel, err)
	}
	wfd := s.work.fd
	tmp := s.tmpName()
	src := Lower{e.Layer, e.Path}
	st := &e.Stat
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if dataLen == MetaOnly {
			dataLen = -1
		}
		err = s.copyData(src, tmp, st, dataLen)
	case unix.S_IFLNK:
		var target string
		if target, err = s.layers[src.Layer].Readlink(src.Path); err == nil {
			err = unix.Symlinkat(target, wfd, tmp)
		}
	default:
		err = unix.Mknodat(wfd, tmp, st.Mode&unix.S_IFMT|0o600, int(st.Rdev))
	}
	if err == nil {
		err = s.finishCopy(src, tmp, st, e.Ino)
	}
	if err == nil {
		err = s.linkUp(tmp, rel)
	}
	if err != nil {
		return errors.Join(err, ignoreENOENT(unix.Unlinkat(wfd, tmp, 0)))
	}
	// Every name, e.Path too: e may have been resolved at another name
	// of the inode than rel (one node stands for all of them), and a
	// name already in the upper is skipped.
	linked := 1
	for _, p := range names {
		ok, err := s.linkAlias(tmp, src.Layer, p)
		if err != nil {
			return errors.Join(fmt.Errorf("link %s: %w", p, err), unix.Unlinkat(wfd, tmp, 0))
		}
		if ok {
			linked++
		}
	}
	if hidden := int(st.Nlink) - linked; hidden > 0 {
		// The names it could not link still count, as the kernel counts
		// them: recorded beside the inode number (see HiddenLinks).
		var b [12]byte
		binary.LittleEndian.PutUint64(b[:8], e.Ino)
		binary.LittleEndian.PutUint32(b[8:], uint32(hidden))
		if err := s.work.Setxattr(tmp, s.originXattr(), b[:], 0); err != nil {
			return errors.Join(fmt.Errorf("record the link count: %w", err), unix.Unlinkat(wfd, tmp, 0))
		}
		e.HiddenLinks = uint32(hidden)
	}
	return unix.Unlinkat(wfd, tmp, 0)
}

func ignoreENOENT(err error) error {
	if err == unix.ENOENT {
		return nil
	}
	return err
}

// linkUp links the work file tmp to rel in the upper, keeping the
// parent's times. A name another copy-up linked first wins.
func (s *Stack) linkUp(tmp, rel string) error {
	return s.upper().withParent(rel, func(pfd int, name string) error {
		var pst unix.Stat_t
		if err := unix.Fstat(pfd, &pst); err != nil {
			return err
		}
		if err := unix.Linkat(s.work.fd, tmp, pfd, name, 0); err != nil {
			if err == unix.EEXIST {
				return nil
			}
			return err
		}
		return restoreTimes(pfd, &pst)
	})
}

// linkAlias links the work file tmp at p, another name of its lower
// inode in layer li, if the merged view shows that lower name there.
func (s *Stack) linkAlias(tmp string, li int, p string) (linked bool, err error) {
	e, err := s.resolve(p)
	if notFound(err) {
		return false, nil // deleted, or beneath a renamed directory
	}
	if err != nil {
		return false, err
	}
	if e.InUpper() || e.Layer != li || e.Path != p {
		// Already linked (rel itself among them), or another file
		// hides it.
		return false, nil
	}
	dir, _ := splitRel(p)
	if err := s.copyUpParents(dir); err != nil {
		return false, err
	}
	return true, s.linkUp(tmp, p)
}

// resolve looks the merged path rel up from the root.
func (s *Stack) resolve(rel string) (Entry, error) {
	e, err := s.Root()
	if err != nil || rel == "" {
		return e, err
	}
	cur := ""
	for _, name := range strings.Split(rel, "/") {
		ch, err := s.Lookup(cur, &e, name)
		if err != nil {
			return ch, err
		}
		cur, e = joinRel(cur, name), ch
	}
	return e, nil
}

// lowerNames lists the paths in lower layer li of the inode ino, one of
// whose names is p, up to nlink of them.
func (s *Stack) lowerNames(li int, p string, ino uint64, nlink int) ([]string, error) {
	dir, _ := splitRel(p)
	var out []string
	d, err := s.lowerIndex(li, dir)
	if err != nil {
		return nil, err
	}
	for name, de := range d.names {
		if de.Ino == ino {
			out = append(out, joinRel(dir, name))
		}
	}
	if len(out) >= nlink {
		return out, nil
	}
	seen := make(map[string]bool, len(out))
	for _, x := range out {
		seen[x] = true
	}
	err = s.walkLayer(li, "", func(q string, de ovl.Dirent) bool {
		if de.Ino == ino && de.Type != unix.DT_DIR && !seen[q] {
			seen[q] = true
			out = append(out, q)
		}
		return len(out) < nlink
	})
	return out, err
}

// walkLayer calls fn for every entry beneath dir in layer li, depth
// first, until fn returns false.
func (s *Stack) walkLayer(li int, dir string, fn func(p string, de ovl.Dirent) bool) error {
	var walk func(dir string) (bool, error)
	walk = func(dir string) (bool, error) {
		fd, err := s.layers[li].openAt(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return true, err
		}
		ents, err := ovl.ReadDirFd(fd)
		unix.Close(fd)
		if err != nil {
			return true, err
		}
		for _, de := range ents {
			p := joinRel(dir, de.Name)
			if !fn(p, de) {
				return false, nil
			}
			if de.Type == unix.DT_DIR {
				if more, err := walk(p); err != nil || !more {
					return more, err
				}
			}
		}
		return true, nil
	}
	_, err := walk(dir)
	return err
}
