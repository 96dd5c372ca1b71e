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
		fd, err := s.upper().openAt(rel, flags, 0)
		return fd, UpperIndex, err
	}
	l, p := s.dataOf(rel, e)
	fd, err = s.layers[l].openAt(p, flags, 0)
	return fd, l, err
}

// dataOf is where the data of the entry e at rel is: its layer and its
// path there.
func (s *Stack) dataOf(rel string, e *Entry) (int, string) {
	switch {
	case e.Metacopy():
		return e.Data.Layer, e.Data.Path
	}
	return e.Layer, e.LayerPath(rel)
}

// OpenPath opens the entry e at rel itself, not its data, as an O_PATH
// fd: for the xattrs and attributes of a file that may lose its name.
func (s *Stack) OpenPath(rel string, e *Entry) (int, error) {
	return s.layers[e.Layer].openAt(e.LayerPath(rel), unix.O_PATH, 0)
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
	if err := s.upper().Lstat(rel, &e.Stat); err != nil {
		return err
	}
	if e.Metacopy() {
		e.Stat.Blocks = blocks
	}
	return nil
}

// LayerPath is the path of the entry e, at rel in the merged view, in its
// layer e.Layer.
func (e *Entry) LayerPath(rel string) string {
	if e.InUpper() {
		return rel
	}
	return e.Path
}
