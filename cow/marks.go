//go:build linux

package cow

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/ovl"
)

// dirMarks are the overlay xattrs of an upper directory that lookups
// need.
type dirMarks struct {
	opaque   bool
	redirect string // the redirect xattr's value, "" for none
	origin   uint64 // merged inode number recorded at a rename, 0 for none
	impure   bool
}

// dirMarks reads the marks of the directory rel (ovl.ReadMarks). A
// directory whose xattrs cannot be read has none.
func (l *Layer) dirMarks(rel string) dirMarks {
	var m dirMarks
	l.withPath(rel, func(fd int) error {
		om, err := ovl.ReadMarks(fd)
		if err == nil {
			m = marksOf(om)
		}
		return nil
	})
	return m
}

// marksOf is the engine's view of a directory's marks.
func marksOf(om ovl.Marks) dirMarks {
	m := dirMarks{opaque: om.Opaque, redirect: om.Redirect, impure: om.Impure}
	if len(om.Origin) >= 8 {
		m.origin = binary.LittleEndian.Uint64(om.Origin)
	}
	return m
}

// maybeMetacopy reports whether a regular file with stat st, in layer l,
// can be a metacopy file, whose data is elsewhere. A metacopy file is
// made by setting its size (by strata and by the kernel), so it is
// sparse, unless its xattrs took a block of their own, which a small file
// may then exceed: files of layers that may hold such files are all
// asked (see ovl.XattrMetacopies), others only when sparse. That keeps
// lookups of ordinary files at the system calls they cost before.
func (l *Layer) maybeMetacopy(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size > 0 &&
		(st.Blocks*512 < st.Size || l.metacopies.Load())
}

// lowerMaybeMetacopy is maybeMetacopy for the file p of lower layer li:
// in a directory that kernel overlayfs marked impure (it holds entries
// copied up, as an upper: Linux 4.13 on), every file with data is asked.
func (s *Stack) lowerMaybeMetacopy(li int, p string, st *unix.Stat_t) bool {
	if s.layers[li].maybeMetacopy(st) {
		return true
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size == 0 {
		return false
	}
	dir, _ := splitRel(p)
	d := s.index.get(indexKey{li, dir})
	return d != nil && d.impure
}

// fileMarks are the overlay xattrs of a non-directory that lookups need.
type fileMarks struct {
	origin   uint64
	adjust   int32 // see Entry.NlinkAdjust
	linked   bool  // see Entry.Linked
	metacopy bool
	redirect string
}

// fileMarks reads the marks of the non-directory rel, whose stat is st:
// its origin if origin is set, whether it is a metacopy file (and its
// redirect) if meta is.
func (l *Layer) fileMarks(rel string, st *unix.Stat_t, origin, meta bool) fileMarks {
	var m fileMarks
	if !origin && !meta {
		return m
	}
	l.withPath(rel, func(fd int) error {
		if origin {
			if v, err := ovl.OriginXattrs.Get(fd); err == nil && len(v) >= 8 {
				m.origin = binary.LittleEndian.Uint64(v)
				if len(v) >= 12 {
					m.adjust = int32(binary.LittleEndian.Uint32(v[8:]))
					m.linked = true
				}
			}
		}
		if meta && ovl.IsMetacopy(fd) {
			m.metacopy = true
			if v, err := ovl.RedirectXattrs.Get(fd); err == nil {
				m.redirect = string(v)
			}
		}
		return nil
	})
	return m
}

// isMetacopy reports whether the regular file rel is a metacopy file.
func (l *Layer) isMetacopy(rel string) bool {
	ok := false
	l.withPath(rel, func(fd int) error {
		ok = ovl.IsMetacopy(fd)
		return nil
	})
	return ok
}

// upperNonDir completes the entry e of a non-directory found in the
// upper at rel: its merged inode number, and for a metacopy file where
// its data is, looked for in cands (the places the lower layers may hold
// the name, in the merged directory parent) or at its redirect.
func (s *Stack) upperNonDir(rel string, parent *Entry, cands []Lower, e *Entry) error {
	m := s.upper().fileMarks(rel, &e.Stat, true, s.upper().maybeMetacopy(&e.Stat))
	e.Ino, e.NlinkAdjust, e.Linked = m.origin, m.adjust, m.linked
	if e.Ino == 0 {
		e.Ino = s.mapIno(UpperIndex, e.Stat.Ino)
	}
	if e.Stat.Nlink > 1 && !e.Linked {
		// An upper hard link: reached by the links directory.
		if err := s.joinUpper(rel, e); err != nil {
			return err
		}
	}
	if !m.metacopy {
		return nil
	}
	return s.findData(rel, parent, UpperIndex, m.redirect, cands, e)
}

// lowerNonDir completes the entry e of a non-directory found in a lower
// layer: if it is a metacopy file (of an upper made by overlayfs, now a
// lower), where its data is, looked for in cands (the places beneath it).
func (s *Stack) lowerNonDir(parent *Entry, cands []Lower, e *Entry) error {
	if !s.lowerMaybeMetacopy(e.Layer, e.Path, &e.Stat) {
		return nil
	}
	m := s.layers[e.Layer].fileMarks(e.Path, &e.Stat, false, true)
	if !m.metacopy {
		return nil
	}
	return s.findData(e.Path, parent, e.Layer, m.redirect, cands, e)
}

// findData finds the data of the metacopy file e, name of the merged
// directory parent, found in layer layer with redirect (its redirect
// xattr, if any): the first regular file beneath it that is not a
// metacopy file itself, at cands or at the redirect. It sets e.Data, and
// st_blocks to the data's. Without metacopy (metacopy=off), or a redirect
// without redirects, it refuses the file with EPERM, as the kernel does:
// the layer is not trusted to say where data is.
func (s *Stack) findData(name string, parent *Entry, layer int, redirect string, cands []Lower, e *Entry) error {
	if !s.metacopy {
		return fmt.Errorf("%s is a metacopy file, and metacopy=off: %w", name, unix.EPERM)
	}
	var d Entry
	var err error
	switch {
	case redirect != "" && !s.redirect:
		return fmt.Errorf("%s has a redirect, and redirect_dir=nofollow: %w", name, unix.EPERM)
	case redirect != "":
		var abs *Entry
		var lname string
		if cands, abs, lname, err = s.redirectLowers(parent, layer, redirect); err != nil {
			return fmt.Errorf("metacopy file %s: %w", name, err)
		}
		if layer == UpperIndex {
			// A moved metacopy file: the lowers know it by its old name.
			e.LowerName = lname
		}
		if abs != nil {
			d = *abs
			break
		}
		fallthrough
	default:
		err = s.mergeLowers(parent, cands, &d, false)
	}
	if err != nil && !notFound(err) {
		return err
	}
	if err != nil || d.Layer <= 0 || d.Stat.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("metacopy file %s: no lower layer holds its data: %w", name, unix.EIO)
	}
	if d.Metacopy() {
		e.Data = d.Data
	} else {
		e.Data = &Lower{d.Layer, d.Path}
	}
	e.Stat.Blocks = d.Stat.Blocks
	return nil
}
