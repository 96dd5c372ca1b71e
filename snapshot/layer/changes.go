//go:build linux

package layer

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/ovl"
)

// The changes of a snapshot are read from its upper directory alone: every
// entry there is an added or modified path, every whiteout a deleted one,
// and an opaque directory hides all that the lower layers hold beneath it.
// readChangedDir reads one directory of an upper in those terms; Write
// encodes the result as tar, Changes as a list. Lower layers are consulted
// only by Changes, to tell an added path from a modified one.
//
// Every access is relative to a directory fd, one component at a time,
// with O_NOFOLLOW or AT_SYMLINK_NOFOLLOW: a symlink in a layer is an entry
// to report, never a way out of the layer. The names come from getdents,
// so they hold no '/' and are never "." or "..".

// changedDir is one directory of an upper layer, read and classified.
type changedDir struct {
	// opaque: the directory hides the lower layers' contents beneath it
	// (an opaque xattr with value "y", or an OpaqueMarker file in it).
	opaque bool
	// whiteouts are the names deleted in this directory, sorted, each
	// once, whatever dialect marked them.
	whiteouts []changedWhiteout
	// entries are the directory's other entries, sorted by name bytes.
	entries []changedEntry
}

// changedWhiteout is a name deleted by a whiteout, with the whiteout's
// mtime (the latest, where two dialects delete the same name).
type changedWhiteout struct {
	name  string
	mtime unix.Timespec
}

// changedEntry is an entry of an upper directory that is not a whiteout,
// with its lstat as read when the directory was.
type changedEntry struct {
	name string
	st   unix.Stat_t
}

// readChangedDir reads and classifies the upper directory dfd (opened
// O_RDONLY|O_DIRECTORY). An entry that disappears while the directory is
// read is left out, as if the directory had been read a moment later.
func readChangedDir(dfd int) (*changedDir, error) {
	names, err := changesReadNames(dfd)
	if err != nil {
		return nil, fmt.Errorf("read directory: %w", err)
	}
	d := &changedDir{}
	// The marker file is seen below, by name.
	if d.opaque, _, err = ovl.Opacity(dfd); err != nil {
		return nil, err
	}
	deleted := make(map[string]int) // name -> index in d.whiteouts
	addWhiteout := func(name string, mtime unix.Timespec) {
		if i, ok := deleted[name]; ok {
			if changesTimeAfter(mtime, d.whiteouts[i].mtime) {
				d.whiteouts[i].mtime = mtime
			}
			return
		}
		deleted[name] = len(d.whiteouts)
		d.whiteouts = append(d.whiteouts, changedWhiteout{name: name, mtime: mtime})
	}
	for _, name := range names {
		if name == ovl.OpaqueMarker {
			d.opaque = true
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if err == unix.ENOENT {
				continue
			}
			return nil, fmt.Errorf("stat %s: %w", name, err)
		}
		if strings.HasPrefix(name, ovl.WhiteoutPrefix) {
			// An OCI whiteout file (ovl.WhiteoutTarget: ".wh." alone,
			// and aufs's ".wh..wh." bookkeeping, delete nothing).
			if deletes, ok := ovl.WhiteoutTarget(name); ok {
				addWhiteout(deletes, st.Mtim)
			}
			continue
		}
		wh, err := ovl.IsWhiteout(dfd, name, &st)
		if err != nil {
			return nil, err
		}
		if wh {
			addWhiteout(name, st.Mtim)
			continue
		}
		d.entries = append(d.entries, changedEntry{name: name, st: st})
	}
	slices.SortFunc(d.whiteouts, func(a, b changedWhiteout) int { return strings.Compare(a.name, b.name) })
	slices.SortFunc(d.entries, func(a, b changedEntry) int { return strings.Compare(a.name, b.name) })
	return d, nil
}

// changesReadNames lists the names in the directory dfd, without "." and
// "..", in no particular order.
func changesReadNames(dfd int) ([]string, error) {
	if _, err := unix.Seek(dfd, 0, 0); err != nil {
		return nil, err
	}
	ents, err := ovl.ReadDirFd(dfd)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name
	}
	return names, nil
}

func changesTimeAfter(a, b unix.Timespec) bool {
	return a.Sec > b.Sec || a.Sec == b.Sec && a.Nsec > b.Nsec
}

// Changes lists the changes held in the upper directory upper against the
// lower layers lowers (top first), as `docker diff` does, sorted by path:
//
//   - a whiteout (of any dialect) is a deleted path; a whiteout beside an
//     entry of the same name (an OCI ".wh." file) only hides the lower one,
//     and the entry is reported instead;
//   - an opaque directory deletes each name the lower layers hold directly
//     in it that the upper does not (their contents are not listed, as for
//     a deleted directory);
//   - any other entry is modified if the lower layers, merged, hold its
//     path, and added if not. A directory copied up because something
//     beneath it changed is thus modified, and everything beneath an added
//     directory is added.
//
// Lower layers are merged as cow merges them: a whiteout, or an opaque
// directory, hides what the layers beneath it hold; a non-directory ends
// the merge of a directory beneath it.
func Changes(upper string, lowers []string) (changes []Change, err error) {
	ufd, err := unix.Open(upper, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("changes: open upper %s: %w", upper, err)
	}
	defer unix.Close(ufd)
	v, err := openLowers(lowers)
	if err != nil {
		return nil, fmt.Errorf("changes: %w", err)
	}
	defer v.close()
	if err := changesWalk(v, ufd, "/", v.roots, &changes); err != nil {
		return nil, fmt.Errorf("changes of %s: %w", upper, err)
	}
	slices.SortFunc(changes, func(a, b Change) int { return strings.Compare(a.Path, b.Path) })
	return changes, nil
}

// changesWalk appends the changes in the upper directory udfd, whose path
// in the merged tree is dir, to out. lowerDirs are O_PATH fds of the lower
// directories that merge at dir, top first (none if the lower layers do
// not hold dir as a directory).
func changesWalk(v *lowerView, udfd int, dir string, lowerDirs []int, out *[]Change) error {
	d, err := readChangedDir(udfd)
	if err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	present := make(map[string]bool, len(d.entries))
	for _, e := range d.entries {
		present[e.name] = true
	}
	deleted := make(map[string]bool, len(d.whiteouts))
	for _, wh := range d.whiteouts {
		if !present[wh.name] {
			deleted[wh.name] = true
			*out = append(*out, Change{Kind: Deleted, Path: path.Join(dir, wh.name)})
		}
	}
	if d.opaque && len(lowerDirs) > 0 {
		names, err := changesLowerNames(lowerDirs)
		if err != nil {
			return fmt.Errorf("read lower %s: %w", dir, err)
		}
		for _, n := range names {
			if !present[n] && !deleted[n] {
				*out = append(*out, Change{Kind: Deleted, Path: path.Join(dir, n)})
			}
		}
	}
	for _, e := range d.entries {
		p := path.Join(dir, e.name)
		childDirs, err := changesReport(lowerDirs, e.name, p, out)
		if err != nil {
			return err
		}
		if e.st.Mode&unix.S_IFMT == unix.S_IFDIR {
			parent := writeAt{lower: dir[1:], lowerOK: !d.opaque}
			err = changesWalkChild(v, udfd, e.name, p, childDirs, parent, out)
		}
		changesCloseAll(childDirs)
		if err != nil {
			return err
		}
	}
	return nil
}

func changesWalkChild(v *lowerView, udfd int, name, p string, lowerDirs []int, parent writeAt, out *[]Change) error {
	fd, err := unix.Openat(udfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", p, err)
	}
	defer unix.Close(fd)
	at, redirected, err := entryLower(fd, name, parent, true)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if redirected || parent.full {
		if len(v.roots) == 0 {
			return fmt.Errorf("%s: %w", p, errNoLowers)
		}
		return changesWalkFull(v, fd, p, lowerDirs, at, out)
	}
	return changesWalk(v, fd, p, lowerDirs, out)
}

// changesWalkFull appends the changes in the directory of the merged
// tree at path dir, beneath a redirect: its contents are those of the
// upper directory ufd (-1 for none) over the lower directories at at, and
// lowerDirs (O_PATH fds, top first) are what the lowers held at dir
// before, against which each entry is added or modified, and which the
// directory, opaque at dir, deletes where it does not hold them.
func changesWalkFull(v *lowerView, ufd int, dir string, lowerDirs []int, at writeAt, out *[]Change) error {
	var d *changedDir
	if ufd >= 0 {
		var err error
		if d, err = readChangedDir(ufd); err != nil {
			return fmt.Errorf("%s: %w", dir, err)
		}
	}
	at.full = true
	inner := at.beneath(d)
	ents, dirs, err := v.fullDir(ufd, d, inner)
	if err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	defer v.closeHits(dirs)
	present := make(map[string]bool, len(ents))
	for _, e := range ents {
		present[e.name] = true
	}
	if len(lowerDirs) > 0 {
		names, err := changesLowerNames(lowerDirs)
		if err != nil {
			return fmt.Errorf("read lower %s: %w", dir, err)
		}
		for _, n := range names {
			if !present[n] {
				*out = append(*out, Change{Kind: Deleted, Path: path.Join(dir, n)})
			}
		}
	}
	for _, e := range ents {
		p := path.Join(dir, e.name)
		childDirs, err := changesReport(lowerDirs, e.name, p, out)
		if err != nil {
			return err
		}
		if e.st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if e.upper {
				err = changesWalkChild(v, e.dfd, e.name, p, childDirs, inner, out)
			} else {
				cat := writeAt{lower: joinRel(inner.lower, e.name), lowerOK: true, full: true}
				err = changesWalkFull(v, -1, p, childDirs, cat, out)
			}
		}
		changesCloseAll(childDirs)
		if err != nil {
			return err
		}
	}
	return nil
}

// changesLowerLookup resolves name in the merged lower directory whose
// layers' directories are dirs (top first). found reports whether the
// merged lower tree holds it; if it is a directory there, childDirs are
// O_PATH fds of the directories that merge at it, which the caller
// closes.
func changesLowerLookup(dirs []int, name string) (found bool, childDirs []int, err error) {
	defer func() {
		if err != nil {
			changesCloseAll(childDirs)
			childDirs = nil
		}
	}()
	for _, dfd := range dirs {
		var st unix.Stat_t
		err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
		switch {
		case err == nil:
			wh, err := ovl.IsWhiteout(dfd, name, &st)
			if err != nil {
				return found, childDirs, err
			}
			if wh {
				return found, childDirs, nil
			}
			isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
			if !isDir {
				// A non-directory is the answer if nothing is above
				// it, and ends the merge beneath a directory.
				return true, childDirs, nil
			}
			found = true
			fd, err := unix.Openat(dfd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return found, childDirs, fmt.Errorf("open %s: %w", name, err)
			}
			childDirs = append(childDirs, fd)
			opaque, err := ovl.IsOpaque(fd)
			if err != nil {
				return found, childDirs, err
			}
			if opaque {
				return found, childDirs, nil
			}
		case err != unix.ENOENT:
			return found, childDirs, fmt.Errorf("stat %s: %w", name, err)
		}
		// An OCI whiteout hides the name in the layers beneath its own.
		if unix.Fstatat(dfd, ovl.WhiteoutPrefix+name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
			return found, childDirs, nil
		}
	}
	return found, childDirs, nil
}

// changesLowerNames lists the names the merged lower directory (its
// layers' directories dirs, top first) holds, sorted: whiteouts hide names
// of the layers beneath their own.
func changesLowerNames(dirs []int) ([]string, error) {
	seen := make(map[string]bool) // false: hidden by a whiteout
	var names []string
	for _, dfd := range dirs {
		d, err := changesReadLowerDir(dfd)
		if err != nil {
			return nil, err
		}
		for _, e := range d.entries {
			if _, ok := seen[e.name]; !ok {
				names = append(names, e.name)
			}
		}
		for _, e := range d.entries {
			seen[e.name] = true
		}
		for _, wh := range d.whiteouts {
			if _, ok := seen[wh.name]; !ok {
				seen[wh.name] = false
			}
		}
	}
	slices.Sort(names)
	return names, nil
}

// changesReadLowerDir reads the lower directory dfd (O_PATH).
func changesReadLowerDir(dfd int) (*changedDir, error) {
	fd, err := unix.Openat(dfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	return readChangedDir(fd)
}

func changesCloseAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// changesReport appends to out the change of the upper entry name at path
// p, added or modified as lowerDirs (the lower directories merged where
// it is) hold it or not, and returns the lower directories that merge at
// it, for the caller to close.
func changesReport(lowerDirs []int, name, p string, out *[]Change) ([]int, error) {
	found, childDirs, err := changesLowerLookup(lowerDirs, name)
	if err != nil {
		return nil, fmt.Errorf("look up %s in lower layers: %w", p, err)
	}
	kind := Added
	if found {
		kind = Modified
	}
	*out = append(*out, Change{Kind: kind, Path: p})
	return childDirs, nil
}
