//go:build linux

package cow

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/ovl"
)

// Hard links of lower layers stay one inode through copy-up.
//
// Kernel overlayfs does this with index=on: the copy of an inode is made
// in an index directory of the work dir, keyed by the lower inode, and
// each name is linked to it when it is copied up in turn, or looked up
// after. strata does the same in a format of its own, the links
// directory of the work dir (linksDir): its entry for a lower inode, named
// by the inode's merged number in hex, is a hard link to the inode's copy.
//
// The copy-up of any name of a lower inode with several names copies the
// inode once, links it into the links directory, and links into the
// upper every name of it that the merged view shows at its lower path,
// or beneath a renamed directory (redirMap; lookUpRedirects fills it
// after a remount). A lookup that finds a lower file with several names
// asks the links directory too, and links the copy in. The upper then
// holds ordinary hard links, which every reader understands: kernel
// overlayfs with or without index, layer commit (a tar hard link), and
// strata's lookups, which find each name in the upper with the copy's
// inode and its merged inode number (the lower one, recorded as origin).
//
// st_nlink counts what the kernel counts, the lower inode's names: those
// linked since, those still to link, and those a layer above deleted or
// covered (kernel overlayfs with index=on keeps counting them too). The
// copy's own link count differs from that by the links directory's link
// and the names not linked; the difference is recorded beside the origin
// (Entry.NlinkAdjust), and changes when a name is linked in, not when one
// is made or removed through the mount.
//
// The names are found in the lower layer by inode number: in the copied
// name's own directory first (from the index of lower directories, which
// already holds getdents' inode numbers), then, if some are still missing,
// by walking the layer with getdents, stopping once every name is found.

// linksDir is the links directory's name in the work dir.
const linksDir = "strata.links"

// JoinsLinks reports whether a copy-up keeps the names of a lower hard
// link one inode. Every writable stack does.
func (s *Stack) JoinsLinks() bool { return s.Writable() }

// linkKey names the links directory's entry for the lower inode whose
// merged inode number is ino.
func linkKey(ino uint64) string { return strconv.FormatUint(ino, 16) }

// openLinks opens the links directory, making it if make is set. It
// returns -1 where there is none.
func (s *Stack) openLinks(create bool) (int, error) {
	s.linksMu.Lock()
	defer s.linksMu.Unlock()
	if s.linksFd >= 0 || !create {
		return s.linksFd, nil
	}
	if err := unix.Mkdirat(s.work.fd, linksDir, 0o700); err != nil && err != unix.EEXIST {
		return -1, fmt.Errorf("make the links directory: %w", err)
	}
	fd, err := unix.Openat(s.work.fd, linksDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open the links directory: %w", err)
	}
	s.linksFd = fd
	s.linksUsed.Store(true)
	return fd, nil
}

// copyUpLinked copies up the lower file e, one name of an inode with
// several, to rel, and links the inode's other names into the upper.
func (s *Stack) copyUpLinked(rel string, e *Entry, dataLen int64) error {
	lfd, err := s.openLinks(true)
	if err != nil {
		return err
	}
	key := linkKey(e.Ino)
	var kst unix.Stat_t
	if unix.Fstatat(lfd, key, &kst, unix.AT_SYMLINK_NOFOLLOW) != nil {
		if err := s.copyToLinks(lfd, key, e, dataLen); err != nil {
			return err
		}
	}
	if _, err := s.linkIn(lfd, key, rel); err != nil {
		return err
	}
	names, err := s.lowerNames(e.Layer, e.Path, e.Stat.Ino, int(e.Stat.Nlink))
	if err != nil {
		return fmt.Errorf("find the other names of %s: %w", rel, err)
	}
	// Every name, e.Path too: e may have been resolved at another name
	// of the inode than rel (one node stands for all of them). A lookup
	// of a name links it in (see linkLookedUp); one already in the upper,
	// or hidden, is left.
	var hidden []string
	for _, p := range names {
		if shown, err := s.linkNamesAt(append([]string{p}, s.redirs.mergedPaths(p)...)); err != nil {
			return err
		} else if !shown {
			hidden = append(hidden, p)
		}
	}
	// A name the view shows nowhere may be beneath a directory renamed
	// before this mount, which redirs learns of when it is looked up.
	if len(hidden) == 0 || !s.redirsScanned.CompareAndSwap(false, true) {
		return nil
	}
	if err := s.lookUpRedirects(); err != nil {
		return fmt.Errorf("find the renamed directories of the upper: %w", err)
	}
	for _, p := range hidden {
		if _, err := s.linkNamesAt(s.redirs.mergedPaths(p)); err != nil {
			return err
		}
	}
	return nil
}

// linkNamesAt looks up the merged paths ps, which links in the names of
// a copied-up lower hard link among them (linkLookedUp), and reports
// whether any was found.
func (s *Stack) linkNamesAt(ps []string) (shown bool, err error) {
	for _, m := range ps {
		_, err := s.resolve(m)
		if err == nil {
			shown = true
		} else if !notFound(err) {
			return shown, fmt.Errorf("link %s: %w", m, err)
		}
	}
	return shown, nil
}

// lookUpRedirects looks up every directory of the upper with a redirect,
// so that redirs knows where each went: after a remount it knows only
// those looked up since. A walk of the upper, done at most once per
// stack, when a copy-up of a lower hard link misses a name.
func (s *Stack) lookUpRedirects() error {
	var dirs []string
	var werr error
	err := s.walkLayer(UpperIndex, func(p string, de ovl.Dirent) bool {
		if de.Type != unix.DT_DIR && de.Type != unix.DT_UNKNOWN {
			return true
		}
		fd, err := s.upper().openAt(p, unix.O_PATH|unix.O_DIRECTORY, 0)
		if err == unix.ENOTDIR || err == unix.ENOENT {
			return true
		}
		if err != nil {
			werr = err
			return false
		}
		if ovl.RedirectXattrs.Has(fd) {
			dirs = append(dirs, p)
		}
		unix.Close(fd)
		return true
	})
	if err := errors.Join(err, werr); err != nil {
		return err
	}
	for _, d := range dirs {
		if _, err := s.resolve(d); err != nil && !notFound(err) {
			return err
		}
	}
	return nil
}

// copyToLinks copies the lower file e into the links directory lfd as
// key: built in the work dir, as any copy-up, then linked there. Its
// link count difference says that none of its names is linked yet.
func (s *Stack) copyToLinks(lfd int, key string, e *Entry, dataLen int64) error {
	wfd := s.work.fd
	tmp := s.tmpName()
	src := Lower{e.Layer, e.Path}
	st := &e.Stat
	var err error
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
		// The copy will have the links directory's link, and the lower
		// inode's names are still to be linked.
		err = s.setLinkAdjust(wfd, tmp, e.Ino, int32(st.Nlink)-1)
	}
	if err == nil {
		if err = unix.Linkat(wfd, tmp, lfd, key, 0); err == unix.EEXIST {
			err = nil // another copy-up won
		}
	}
	return errors.Join(err, ignoreENOENT(unix.Unlinkat(wfd, tmp, 0)))
}

// setLinkAdjust records, on the file name of dfd, its merged inode number
// and the difference of its link count from the one to report.
func (s *Stack) setLinkAdjust(dfd int, name string, ino uint64, adjust int32) error {
	var b [12]byte
	binary.LittleEndian.PutUint64(b[:8], ino)
	binary.LittleEndian.PutUint32(b[8:], uint32(adjust))
	fd, err := unix.Openat(dfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	err = unix.Setxattr(ovl.ProcPath(fd), s.originXattr(), b[:], 0)
	if err != nil && !(err == unix.EPERM && !s.dialect.TrustedXattrs) {
		return fmt.Errorf("record the link count: %w", err)
	}
	return nil
}

// linkIn links the copy key of the links directory lfd at rel in the
// upper, copying rel's parents up, and counts the name as linked. It
// reports whether it made the link (false: rel was there already).
func (s *Stack) linkIn(lfd int, key, rel string) (bool, error) {
	dir, _ := splitRel(rel)
	if err := s.copyUpParents(dir); err != nil {
		return false, err
	}
	s.linksMu.Lock()
	defer s.linksMu.Unlock()
	made := false
	err := s.upper().withParent(rel, func(pfd int, name string) error {
		var pst unix.Stat_t
		if err := unix.Fstat(pfd, &pst); err != nil {
			return err
		}
		if err := unix.Linkat(lfd, key, pfd, name, 0); err != nil {
			if err == unix.EEXIST {
				return nil
			}
			return err
		}
		made = true
		return restoreTimes(pfd, &pst)
	})
	if err != nil || !made {
		return made, err
	}
	// One name more in the copy's count, none in the one reported.
	v, err := ovl.GetxattrFdAt(lfd, key, s.originXattr())
	if err != nil || len(v) < 12 {
		return true, nil // an older copy: its count is the upper's
	}
	adj := int32(binary.LittleEndian.Uint32(v[8:])) - 1
	return true, s.setLinkAdjust(lfd, key, binary.LittleEndian.Uint64(v), adj)
}

// linkLookedUp links in the lower file e, found at rel by a lookup, if
// it is a name of a lower inode whose copy is in the links directory, and
// makes e the upper entry. A name beneath a renamed directory is linked
// so, when first looked up.
func (s *Stack) linkLookedUp(rel string, e *Entry) error {
	lfd, err := s.openLinks(false)
	if err != nil || lfd < 0 {
		return err
	}
	key := linkKey(e.Ino)
	var kst unix.Stat_t
	if unix.Fstatat(lfd, key, &kst, unix.AT_SYMLINK_NOFOLLOW) != nil {
		return nil
	}
	defer s.changing()()
	if _, err := s.linkIn(lfd, key, rel); err != nil {
		return fmt.Errorf("link %s to its copied-up inode: %w", rel, err)
	}
	var st unix.Stat_t
	if err := s.upper().Lstat(rel, &st); err != nil {
		return err
	}
	m := s.upper().fileMarks(rel, &st, true, s.upper().maybeMetacopy(&st))
	e.Layer, e.Path, e.Stat, e.Data = UpperIndex, rel, st, nil
	if m.origin != 0 {
		e.Ino = m.origin
	}
	e.NlinkAdjust, e.Linked = m.adjust, m.linked
	return nil
}

// joinUpper reaches the upper file e at rel, an inode with several names
// made in the upper (by link, or in an upper given to the mount), through
// the links directory from now on, as a copied-up lower hard link is: an
// operation on the inode then does not depend on any of its names, which
// renames and the kernel's reclaim of directory entries can leave stale
// (fs resolves a node by the most recent parent go-fuse knows).
func (s *Stack) joinUpper(rel string, e *Entry) error {
	lfd, err := s.openLinks(true)
	if err != nil {
		return err
	}
	key := linkKey(e.Ino)
	err = s.upper().withParent(rel, func(pfd int, name string) error {
		if err := unix.Linkat(pfd, name, lfd, key, 0); err != nil && err != unix.EEXIST {
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("link %s into the links directory: %w", rel, err)
	}
	// The links directory's link is not a name.
	if err := s.setLinkAdjust(lfd, key, e.Ino, -1); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(lfd, key, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	blocks := e.Stat.Blocks
	e.Stat, e.Linked, e.NlinkAdjust = st, true, -1
	if e.Metacopy() {
		e.Stat.Blocks = blocks
	}
	return nil
}

// unjoin removes the links directory's entry of e, whose last name is
// gone.
func (s *Stack) unjoin(e *Entry) {
	if lfd, err := s.openLinks(false); err == nil && lfd >= 0 {
		unix.Unlinkat(lfd, linkKey(e.Ino), 0)
	}
}

// cleanLinks removes the links directory's entries that no name has
// left (the last one removed by a rename over it, or while the daemon
// died): their count, as reported, is 0.
func (s *Stack) cleanLinks() error {
	fd, err := unix.Openat(s.linksFd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open the links directory: %w", err)
	}
	defer unix.Close(fd)
	ents, err := ovl.ReadDirFd(fd)
	if err != nil {
		return fmt.Errorf("read the links directory: %w", err)
	}
	for _, de := range ents {
		var st unix.Stat_t
		if unix.Fstatat(fd, de.Name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil || st.Nlink != 1 {
			continue
		}
		v, err := ovl.GetxattrFdAt(fd, de.Name, s.originXattr())
		if err != nil || len(v) < 12 || int32(binary.LittleEndian.Uint32(v[8:])) != -1 {
			continue // lower names of it may still be linked in
		}
		if err := unix.Unlinkat(fd, de.Name, 0); err != nil {
			return fmt.Errorf("clean the links directory: %w", err)
		}
	}
	return nil
}

func ignoreENOENT(err error) error {
	if err == unix.ENOENT {
		return nil
	}
	return err
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
	err = s.walkLayer(li, func(q string, de ovl.Dirent) bool {
		if de.Ino == ino && de.Type != unix.DT_DIR && !seen[q] {
			seen[q] = true
			out = append(out, q)
		}
		return len(out) < nlink
	})
	return out, err
}

// walkLayer calls fn for every entry of layer li, depth first, until fn
// returns false.
func (s *Stack) walkLayer(li int, fn func(p string, de ovl.Dirent) bool) error {
	fd, err := s.layers[li].openAt("", unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return ovl.Walk(fd, fn)
}

// redirMap remembers where the directories with redirects that this
// stack saw (renamed through it, or looked up) are in the merged view,
// by the name the lower layers know them by. A copy-up of a lower hard
// link finds through it the names of the inode beneath a renamed
// directory, whose merged paths are not their lower paths. Entries may be
// stale (renamed again, removed): what they give is resolved and checked.
type redirMap struct {
	mu sync.Mutex
	m  map[string]string // LowerName -> merged path
}

// moved records that the directory the lowers know as lname is at rel.
func (r *redirMap) moved(lname, rel string) {
	if lname == rel {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil || len(r.m) >= indexCacheMax {
		r.m = make(map[string]string)
	}
	r.m[lname] = rel
}

// mergedPaths returns where the lower path p may be in the merged view
// beneath a renamed directory: for each ancestor of p that was renamed,
// p rebased on where it went.
func (r *redirMap) mergedPaths(p string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for q, _ := splitRel(p); q != ""; q, _ = splitRel(q) {
		if m, ok := r.m[q]; ok {
			out = append(out, m+p[len(q):])
		}
	}
	return out
}
