//go:build linux

package cow

import (
	"golang.org/x/sys/unix"
)

// Open opens the entry e, at rel in the merged view, for I/O with flags
// (open(2)'s; O_NOFOLLOW is always added). An open for reading opens the
// file that holds the data, in whichever layer: a metacopy file's data
// is its lower file's. An open for writing (O_WRONLY, O_RDWR or O_TRUNC)
// copies the entry up first, without data for O_TRUNC. It returns the fd
// and the index of the layer the fd is a file of.
func (s *Stack) Open(rel string, e *Entry, flags int) (fd, layer int, err error) {
	if flags&(unix.O_WRONLY|unix.O_RDWR|unix.O_TRUNC) != 0 {
		dataLen := int64(-1)
		if flags&unix.O_TRUNC != 0 {
			dataLen = 0
		}
		if err := s.CopyUp(rel, e, dataLen); err != nil {
			return -1, 0, err
		}
		l, p := s.inode(rel, e)
		fd, err := l.openAt(p, flags, 0)
		return fd, UpperIndex, err
	}
	if e.Metacopy() {
		fd, err = s.layers[e.Data.Layer].openAt(e.Data.Path, flags, 0)
		return fd, e.Data.Layer, err
	}
	l, p := s.inode(rel, e)
	fd, err = l.openAt(p, flags, 0)
	return fd, e.Layer, err
}

// OpenPath opens the entry e at rel itself, not its data, as an O_PATH
// fd: for the xattrs and attributes of a file that may lose its name.
func (s *Stack) OpenPath(rel string, e *Entry) (int, error) {
	l, p := s.inode(rel, e)
	return l.openAt(p, unix.O_PATH, 0)
}

// Stat refreshes e, the entry at rel, from its layer. A directory that a
// child's copy-up created in the upper is found there; a metacopy file
// keeps its data's st_blocks.
func (s *Stack) Stat(rel string, e *Entry) error {
	if !e.InUpper() {
		if e.IsDir() && s.Writable() {
			var ust unix.Stat_t
			if err := s.upper().Lstat(rel, &ust); err == nil && ust.Mode&unix.S_IFMT == unix.S_IFDIR {
				e.Layer, e.Path, e.Stat = UpperIndex, rel, ust
				return nil
			}
		}
		return s.layers[e.Layer].Lstat(e.Path, &e.Stat)
	}
	blocks := e.Stat.Blocks
	l, p := s.inode(rel, e)
	if err := l.Lstat(p, &e.Stat); err != nil {
		return err
	}
	if e.Linked {
		// Another name of a copied-up lower hard link may have been
		// linked in since (see links.go).
		e.NlinkAdjust = l.fileMarks(p, &e.Stat, true, l.maybeMetacopy(&e.Stat)).adjust
	}
	if e.Metacopy() {
		e.Stat.Blocks = blocks
	}
	return nil
}

// inode is where the entry e, at rel in the merged view, is reached for
// what is done to its inode rather than its name (open, attributes,
// xattrs): its layer, and its path there. A copied-up lower hard link is
// reached through its links directory entry, which no rename or removal
// of its names moves (see links.go); any other upper entry at rel; a
// lower one at its path in its layer.
func (s *Stack) inode(rel string, e *Entry) (*Layer, string) {
	switch {
	case e.InUpper() && e.Linked:
		return s.work, linksDir + "/" + linkKey(e.Ino)
	case e.InUpper():
		return s.upper(), rel
	}
	return s.layers[e.Layer], e.Path
}

// LayerPath is the path of the entry e, at rel in the merged view, in its
// layer e.Layer.
func (e *Entry) LayerPath(rel string) string {
	if e.InUpper() {
		return rel
	}
	return e.Path
}
