//go:build linux

package layer

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/ovl"
)

// Lower hard links split by a directory rename.
//
// A directory the upper renamed (one with a redirect) is written with its
// full merged contents, so a lower file beneath it is written as a file
// of the layer. If that file has other names outside the renamed
// directory, which the upper does not hold (the inode was never copied
// up), they stay the lower inode's: applied, the layer's file would be an
// inode of its own, where the merged view showed one inode. So before it
// writes anything, Write finds those names and writes them too, each in
// its place in the tar's order (a directory of the lowers on the way to
// one is written with the lowers' metadata, which changes nothing): the
// first name of the inode written holds the data, the others are hard
// links to it, and the layer keeps the inode one.
//
// The names are found by inode number, with one getdents walk of each
// lower layer that holds such a file, which stops once every name is
// found. An upper without a renamed directory costs a walk of its
// directories, not of its files.

// splitInode is a lower file with several names written beneath a
// redirect.
type splitInode struct {
	layer int
	key   writeInode
	nlink int
	names []string // in the layer
}

// findSplitLinks fills lw.split: the upper root is rootfd (O_RDONLY).
func (lw *writeWalker) findSplitLinks(rootfd int) error {
	if len(lw.lowers.roots) == 0 {
		return nil
	}
	marks, err := ovl.ReadMarks(rootfd)
	if err != nil {
		return fmt.Errorf("read marks of the root: %w", err)
	}
	found := make(map[writeInode]*splitInode)
	if err := lw.scanRedirects(rootfd, "", writeAt{lowerOK: true}, marks, found); err != nil {
		return err
	}
	if len(found) == 0 {
		return nil
	}
	byLayer := make(map[int][]*splitInode)
	for _, in := range found {
		byLayer[in.layer] = append(byLayer[in.layer], in)
	}
	for li, ins := range byLayer {
		if err := lw.splitNames(li, ins); err != nil {
			return fmt.Errorf("find the names of lower hard links: %w", err)
		}
	}
	split := make(map[string]map[string]bool)
	for _, in := range found {
		for _, p := range in.names {
			k, err := lw.splitShown(rootfd, p, in.key)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			if k < 0 {
				continue
			}
			// From the first name the upper does not hold down.
			comps := strings.Split(p, "/")
			for j := k; j < len(comps); j++ {
				dir := ""
				if j > 0 {
					dir = strings.Join(comps[:j], "/") + "/"
				}
				if split[dir] == nil {
					split[dir] = make(map[string]bool)
				}
				split[dir][comps[j]] = true
			}
		}
	}
	lw.split = make(map[string][]string, len(split))
	for dir, names := range split {
		lw.split[dir] = slices.Sorted(maps.Keys(names))
	}
	return nil
}

// scanRedirects walks the upper directories beneath dfd (an upper
// directory, O_RDONLY, with the marks m, whose tar name is prefix,
// standing at at) for directories with a redirect, and adds to found the
// lower hard links written beneath each.
func (lw *writeWalker) scanRedirects(dfd int, prefix string, at writeAt, m ovl.Marks, found map[writeInode]*splitInode) error {
	inner := at
	inner.lowerOK = at.lowerOK && !m.Opaque
	ents, err := ovl.ReadDirFd(dfd)
	if err != nil {
		return fmt.Errorf("%s: %w", writeDisplay(prefix), err)
	}
	for _, de := range ents {
		if de.Type != unix.DT_DIR && de.Type != unix.DT_UNKNOWN {
			continue
		}
		if err := lw.scanRedirect(dfd, prefix, de.Name, inner, found); err != nil {
			return err
		}
	}
	return nil
}

// scanRedirect is scanRedirects for the entry name of the upper
// directory dfd, whose tar name is prefix, standing at parent; an entry
// that is no directory (or no longer there) is left.
func (lw *writeWalker) scanRedirect(dfd int, prefix, name string, parent writeAt, found map[writeInode]*splitInode) error {
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == unix.ENOTDIR || err == unix.ELOOP || err == unix.ENOENT {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s%s: %w", prefix, name, err)
	}
	defer unix.Close(fd)
	prefix += name + "/"
	m, err := ovl.ReadMarks(fd)
	if err != nil {
		return fmt.Errorf("%s: %w", prefix, err)
	}
	at, redirected, err := redirectAt(m.Redirect, m.Redirect != "", name, parent)
	if err != nil {
		return fmt.Errorf("%s: %w", prefix, err)
	}
	if !redirected {
		return lw.scanRedirects(fd, prefix, at, m, found)
	}
	at.full = true
	return lw.scanFull(fd, prefix, at, found)
}

// scanFull adds to found the lower files with several names that Write
// writes in the directory dfd (upper, O_RDONLY; -1 for one only the
// lowers hold) beneath a redirect, standing at at, as writeDir merges it.
func (lw *writeWalker) scanFull(dfd int, prefix string, at writeAt, found map[writeInode]*splitInode) error {
	var d *changedDir
	if dfd >= 0 {
		var err error
		if d, err = readChangedDir(dfd); err != nil {
			return fmt.Errorf("%s: %w", prefix, err)
		}
	}
	inner := at.beneath(d)
	ents, dirs, err := lw.lowers.fullDir(dfd, d, inner)
	if err != nil {
		return fmt.Errorf("%s: %w", prefix, err)
	}
	defer lw.lowers.closeHits(dirs)
	for _, e := range ents {
		typ := e.st.Mode & unix.S_IFMT
		switch {
		case typ == unix.S_IFDIR && e.upper:
			if err := lw.scanRedirect(e.dfd, prefix, e.name, inner, found); err != nil {
				return err
			}
		case typ == unix.S_IFDIR:
			sub := writeAt{lower: joinRel(inner.lower, e.name), lowerOK: inner.lowerOK, full: true}
			if err := lw.scanFull(-1, prefix+e.name+"/", sub, found); err != nil {
				return err
			}
		case !e.upper && e.st.Nlink > 1 && typ != unix.S_IFSOCK:
			key := writeInode{dev: e.st.Dev, ino: e.st.Ino}
			if found[key] == nil {
				found[key] = &splitInode{layer: e.layer, key: key, nlink: int(e.st.Nlink)}
			}
		}
	}
	return nil
}

// splitNames finds the names of the inodes ins in the lower layer li.
func (lw *writeWalker) splitNames(li int, ins []*splitInode) error {
	byIno := make(map[uint64]*splitInode, len(ins))
	for _, in := range ins {
		byIno[in.key.ino] = in
	}
	left := len(ins)
	return ovl.Walk(lw.lowers.roots[li], func(p string, de ovl.Dirent) bool {
		if in := byIno[de.Ino]; in != nil && de.Type != unix.DT_DIR && len(in.names) < in.nlink {
			in.names = append(in.names, p)
			if len(in.names) == in.nlink {
				left--
			}
		}
		return left > 0
	})
}

// splitShown reports whether the merged view shows the lower inode key
// at p (its path in a lower layer) from the lowers, outside any
// directory with a redirect: it returns the index of p's first component
// that the upper does not hold, or -1 where the view does not show it
// there (the lowers show something else at p; the upper holds p, a
// whiteout or a non-directory on the way, or an opaque or redirected
// directory above it).
func (lw *writeWalker) splitShown(rootfd int, p string, key writeInode) (int, error) {
	hits, err := lw.lowers.lookup(p)
	if err != nil {
		return -1, err
	}
	shown := len(hits) > 0 && hits[0].st.Dev == key.dev && hits[0].st.Ino == key.ino
	lw.lowers.closeHits(hits)
	if !shown {
		return -1, nil
	}
	comps := strings.Split(p, "/")
	dfd := rootfd
	defer func() {
		if dfd != rootfd {
			unix.Close(dfd)
		}
	}()
	for k, c := range comps {
		var st unix.Stat_t
		if unix.Fstatat(dfd, ovl.WhiteoutPrefix+c, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
			return -1, nil
		}
		err := unix.Fstatat(dfd, c, &st, unix.AT_SYMLINK_NOFOLLOW)
		if err == unix.ENOENT {
			return k, nil
		}
		if err != nil {
			return -1, err
		}
		if k == len(comps)-1 || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return -1, nil
		}
		fd, err := unix.Openat(dfd, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, err
		}
		if dfd != rootfd {
			unix.Close(dfd)
		}
		dfd = fd
		m, err := ovl.ReadMarks(fd)
		if err != nil {
			return -1, err
		}
		if m.Opaque || m.Redirect != "" {
			return -1, nil
		}
	}
	panic("unreachable")
}

// writeSplit writes the entry name, which findSplitLinks found, of the
// directory whose tar name is prefix, standing at at: from the lowers.
func (lw *writeWalker) writeSplit(prefix, name string, at writeAt) error {
	hits, err := lw.lowers.lookup(joinRel(at.lower, name))
	if err != nil {
		return fmt.Errorf("%s%s: %w", prefix, name, err)
	}
	defer lw.lowers.closeHits(hits)
	dirs, err := lw.lowers.dirsAt(at)
	if err != nil {
		return fmt.Errorf("%s: %w", writeDisplay(prefix), err)
	}
	defer lw.lowers.closeHits(dirs)
	if len(hits) > 0 {
		for _, d := range dirs {
			if d.layer == hits[0].layer {
				return lw.writeEntry(d.fd, prefix, changedEntry{name: name, st: hits[0].st}, false, at)
			}
		}
	}
	return fmt.Errorf("%s%s: %w", prefix, name, errChangedDuringWrite)
}
