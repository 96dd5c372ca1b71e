//go:build linux

package cow

import (
	"fmt"
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/ovl"
)

// DirEntry is one name of a merged directory listing.
type DirEntry struct {
	Name  string
	Type  uint32 // S_IFMT bits
	Ino   uint64 // merged inode number
	Layer int    // the layer the entry comes from
	// The directory's path in that layer, and the name the lower
	// layers know it by: one string for the listing, not one per entry.
	ldir, lparent string
}

// readDirFd reads every entry of the open directory fd, "." and ".."
// excluded.
func readDirFd(fd int) ([]rawDirent, error) { return ovl.ReadDirFd(fd) }

type rawDirent = ovl.Dirent

func dtToMode(t uint8) uint32 {
	switch t {
	case unix.DT_DIR:
		return unix.S_IFDIR
	case unix.DT_REG:
		return unix.S_IFREG
	case unix.DT_LNK:
		return unix.S_IFLNK
	case unix.DT_CHR:
		return unix.S_IFCHR
	case unix.DT_BLK:
		return unix.S_IFBLK
	case unix.DT_FIFO:
		return unix.S_IFIFO
	case unix.DT_SOCK:
		return unix.S_IFSOCK
	}
	return 0
}

// readLayerDir lists dir in layer li for a merge: visible entries, and
// the names that the layer's whiteouts hide beneath it.
func (s *Stack) readLayerDir(li int, dir string) (ents []rawDirent, whiteouts []string, marks dirMarks, err error) {
	l := s.layers[li]
	fd, err := l.openAt(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, nil, marks, err
	}
	defer unix.Close(fd)
	raw, err := readDirFd(fd)
	if err != nil {
		return nil, nil, marks, err
	}
	om, err := ovl.ReadMarks(fd)
	if err != nil {
		return nil, nil, marks, fmt.Errorf("%s in %s: %w", dir, l.Path, err)
	}
	marks = marksOf(om)
	opaque, xattrWhiteouts := om.Opaque, om.XattrWhiteouts
	ents = raw[:0]
	for _, de := range raw {
		if strings.HasPrefix(de.Name, ovl.WhiteoutPrefix) {
			// Reserved names are never listed; an OCI whiteout file
			// deletes its target (ovl.WhiteoutTarget).
			if de.Name == ovl.OpaqueMarker {
				opaque = true
			} else if w, ok := ovl.WhiteoutTarget(de.Name); ok {
				whiteouts = append(whiteouts, w)
			}
			continue
		}
		if de.Type == unix.DT_CHR || de.Type == unix.DT_UNKNOWN || (xattrWhiteouts && de.Type == unix.DT_REG) {
			var st unix.Stat_t
			if err := unix.Fstatat(fd, de.Name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				if notFound(err) {
					continue
				}
				return nil, nil, marks, err
			}
			de.Type = uint8(st.Mode & unix.S_IFMT >> 12)
			if l.isWhiteout(path.Join(dir, de.Name), &st) {
				whiteouts = append(whiteouts, de.Name)
				continue
			}
		}
		ents = append(ents, de)
	}
	marks.opaque = opaque
	return ents, whiteouts, marks, nil
}

// ReadDir lists the merged directory dir, whose entry is e. Whiteouts and
// opaque directories are applied; names reserved for whiteouts are never
// listed.
func (s *Stack) ReadDir(dir string, e *Entry) ([]DirEntry, error) {
	seen := make(map[string]int)
	var out []DirEntry
	merge := func(li int, ldir string) error {
		ents, whs, marks, err := s.readLayerDir(li, ldir)
		if err != nil {
			return err
		}
		if li != UpperIndex {
			s.putIndex(li, ldir, ents, whs, marks)
		}
		for _, de := range ents {
			if i, ok := seen[de.Name]; ok {
				if i >= 0 && out[i].Type == unix.S_IFDIR && out[i].Ino&inoFromUpper != 0 {
					// The first lower holding the name of an upper
					// directory: as in Lookup, the directory takes
					// the lower's inode number if it merges with it
					// (not opaque, not redirected elsewhere, and the
					// lower's is a directory), else keeps its own.
					out[i].Ino &^= inoFromUpper
					m := s.upper().dirMarks(joinRel(dir, de.Name))
					switch {
					case m.redirect != "" && s.redirect:
						if m.origin != 0 {
							out[i].Ino = m.origin
						}
					case de.Type == unix.DT_DIR && !m.opaque:
						out[i].Ino = s.mapIno(li, de.Ino)
					}
				}
				continue
			}
			seen[de.Name] = len(out)
			ino := s.mapIno(li, de.Ino)
			if li == UpperIndex {
				ino |= inoFromUpper
			}
			out = append(out, DirEntry{Name: de.Name, Type: dtToMode(de.Type), Ino: ino, Layer: li,
				ldir: ldir, lparent: e.LowerName})
		}
		// A layer's whiteouts hide the names of the layers beneath it
		// only: an OCI ".wh.x" leaves an "x" of its own layer listed,
		// as Lookup does (image-spec layer.md, "Whiteouts").
		for _, w := range whs {
			i, ok := seen[w]
			switch {
			case !ok:
				seen[w] = -1
			case i >= 0 && li != UpperIndex && out[i].Type == unix.S_IFDIR && out[i].Ino&inoFromUpper != 0:
				// A lower whiteout ends the merge of an upper
				// directory of that name: it keeps its own number,
				// or the one a rename recorded.
				out[i].Ino &^= inoFromUpper
				if o, ok := s.originIno(joinRel(dir, w)); ok {
					out[i].Ino = o
				}
			}
		}
		return nil
	}
	if s.Writable() {
		err := merge(UpperIndex, dir)
		if err != nil && !(notFound(err) && !e.InUpper()) {
			return nil, err
		}
	}
	for _, l := range e.Lowers {
		if err := merge(l.Layer, l.Path); err != nil {
			return nil, err
		}
	}
	for i := range out {
		if out[i].Ino&inoFromUpper != 0 {
			out[i].Ino &^= inoFromUpper
			// A copied-up file, or a renamed directory, keeps the
			// number it had.
			if o, ok := s.originIno(joinRel(dir, out[i].Name)); ok {
				out[i].Ino = o
			}
		}
	}
	return out, nil
}

// inoFromUpper tags, during a merge, inode numbers taken from the upper
// layer. mapIno never sets the top bit.
const inoFromUpper = 1 << 63

// removeAllAt removes name under the directory fd, recursively.
func removeAllAt(dfd int, name string) error {
	err := unix.Unlinkat(dfd, name, 0)
	if err == nil || err == unix.ENOENT {
		return nil
	}
	if err != unix.EISDIR && err != unix.EPERM {
		return err
	}
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	ents, err := readDirFd(fd)
	if err == nil {
		for _, de := range ents {
			if err = removeAllAt(fd, de.Name); err != nil {
				break
			}
		}
	}
	unix.Close(fd)
	if err != nil {
		return err
	}
	return unix.Unlinkat(dfd, name, unix.AT_REMOVEDIR)
}

// LookupListed resolves a non-directory that ReadDir listed in dir from
// a lower layer, while the stack's generation is still the one the
// listing was taken at (so the upper has not changed since): the listing
// already proves it is the topmost entry of that name.
func (s *Stack) LookupListed(dir string, de DirEntry) (Entry, bool) {
	if de.Layer == UpperIndex || de.Type == unix.S_IFDIR {
		return Entry{}, false
	}
	var e Entry
	// dir was opened beneath this immutable layer without crossing a
	// symlink when it was listed (see lowerLookup).
	p := joinRel(de.ldir, de.Name)
	if err := s.layers[de.Layer].statAt(p, &e.Stat); err != nil {
		return e, false
	}
	if s.metacopy && s.lowerMaybeMetacopy(de.Layer, p, &e.Stat) {
		return Entry{}, false // may need its data found: look it up
	}
	if e.Stat.Nlink > 1 && s.linksUsed.Load() {
		return Entry{}, false // its inode may be copied up: look it up
	}
	e.Layer, e.Path, e.LowerName = de.Layer, p, p
	if de.lparent != de.ldir {
		e.LowerName = joinRel(de.lparent, de.Name)
	}
	e.Ino = s.mapIno(de.Layer, e.Stat.Ino)
	return e, true
}
