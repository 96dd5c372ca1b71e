package layer

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/ovl"
)

// lowerView reads the lower layers beneath an upper, merged as overlayfs
// merges them with redirect_dir=on,metacopy=on: whiteouts of every
// dialect and opaque directories hide what the layers beneath them hold,
// a directory's redirect says where the layers beneath hold it, and a
// metacopy file's data is in the first layer beneath that holds the file
// (at its redirect, if it has one) without a metacopy record.
//
// Lookups walk each layer from its root, one component at a time, with
// O_NOFOLLOW and AT_SYMLINK_NOFOLLOW: a symlink is an entry, never a way
// out of a layer.
type lowerView struct {
	roots []int // O_PATH fds of the layer roots, top first
}

// openLowers opens the lower layer directories dirs (top first). A layer
// whose root is opaque hides those beneath it, which are not opened.
func openLowers(dirs []string) (*lowerView, error) {
	v := &lowerView{}
	for _, l := range dirs {
		fd, err := unix.Open(l, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			v.close()
			return nil, fmt.Errorf("open lower %s: %w", l, err)
		}
		v.roots = append(v.roots, fd)
		opaque, err := ovl.IsOpaque(fd)
		if err != nil {
			v.close()
			return nil, fmt.Errorf("lower %s: %w", l, err)
		}
		if opaque {
			break
		}
	}
	return v, nil
}

func (v *lowerView) close() {
	changesCloseAll(v.roots)
	v.roots = nil
}

// lowerHit is what one lower layer holds at a path.
type lowerHit struct {
	layer int
	fd    int // O_PATH fd of the entry; the root's fd is the view's
	st    unix.Stat_t
}

func (v *lowerView) closeHits(hits []lowerHit) {
	for _, h := range hits {
		if len(v.roots) <= h.layer || h.fd != v.roots[h.layer] {
			unix.Close(h.fd)
		}
	}
}

func (h *lowerHit) isDir() bool { return h.st.Mode&unix.S_IFMT == unix.S_IFDIR }
func (h *lowerHit) isReg() bool { return h.st.Mode&unix.S_IFMT == unix.S_IFREG }

// lookup resolves p (relative to the layer root, clean, "" for the root)
// in the merged lower layers and returns the entries that make it up, top
// first, which the caller frees with closeHits:
//
//   - for a directory, the directory of each layer that merges at p (a
//     redirect rewriting the path for the layers beneath its own);
//   - for a regular file, the file and, while the last one is a metacopy
//     file, the files beneath it, down to the one that holds the data;
//   - for anything else, the entry alone.
//
// None: the lower layers do not hold p.
func (v *lowerView) lookup(p string) (hits []lowerHit, err error) {
	defer func() {
		if err != nil {
			v.closeHits(hits)
			hits = nil
		}
	}()
	if p == "" {
		for i, fd := range v.roots {
			h := lowerHit{layer: i, fd: fd}
			if err := unix.Fstat(fd, &h.st); err != nil {
				return hits, fmt.Errorf("stat lower root: %w", err)
			}
			hits = append(hits, h)
		}
		return hits, nil
	}
	cur := p
	for li := range v.roots {
		h, found, next, stop, err := v.lookupLayer(li, cur)
		if err != nil {
			return hits, err
		}
		if found {
			switch {
			case len(hits) == 0:
			case hits[0].isDir() && h.isDir(), !hits[0].isDir() && h.isReg():
			default:
				// A non-directory beneath a directory ends the merge; a
				// metacopy file's data must be a regular file.
				v.closeHits([]lowerHit{h})
				return hits, nil
			}
			hits = append(hits, h)
			if !h.isDir() {
				meta := false
				if h.isReg() {
					if meta, err = ovl.Metacopy(h.fd); err != nil {
						return hits, fmt.Errorf("lower %s: %w", p, err)
					}
				}
				if !meta {
					return hits, nil
				}
			}
		}
		if stop {
			break
		}
		cur = next
	}
	return hits, nil
}

// lookupLayer looks p up in the layer li. It returns the entry if the
// layer holds it; next, the path at which the layers beneath hold it
// (redirects on the way rewrite it); and stop, whether the layers beneath
// are hidden there (a whiteout, an opaque directory, a non-directory on
// the way, a non-metacopy file).
func (v *lowerView) lookupLayer(li int, p string) (h lowerHit, found bool, next string, stop bool, err error) {
	dfd := v.roots[li]
	closeDir := func() {
		if dfd != v.roots[li] {
			unix.Close(dfd)
		}
	}
	defer func() { closeDir() }()
	beneath := "" // the path walked so far, for the layers beneath
	comps := strings.Split(p, "/")
	for k, c := range comps {
		last := k == len(comps)-1
		var st unix.Stat_t
		err := unix.Fstatat(dfd, c, &st, unix.AT_SYMLINK_NOFOLLOW)
		if err == unix.ENOENT {
			var wst unix.Stat_t
			if unix.Fstatat(dfd, ovl.WhiteoutPrefix+c, &wst, unix.AT_SYMLINK_NOFOLLOW) == nil {
				return h, false, "", true, nil
			}
			return h, false, joinRel(beneath, strings.Join(comps[k:], "/")), stop, nil
		}
		if err != nil {
			return h, false, "", false, fmt.Errorf("lower %s: stat %s: %w", p, c, err)
		}
		wh, err := ovl.IsWhiteout(dfd, c, &st)
		if err != nil {
			return h, false, "", false, fmt.Errorf("lower %s: %w", p, err)
		}
		if wh {
			return h, false, "", true, nil
		}
		isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
		if !isDir && !last {
			return h, false, "", true, nil // a non-directory hides the rest
		}
		flags := unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC
		if isDir {
			flags |= unix.O_DIRECTORY
		}
		fd, err := unix.Openat(dfd, c, flags, 0)
		if err != nil {
			return h, false, "", false, fmt.Errorf("lower %s: open %s: %w", p, c, err)
		}
		var wst unix.Stat_t
		ociOpaque := unix.Fstatat(dfd, ovl.WhiteoutPrefix+c, &wst, unix.AT_SYMLINK_NOFOLLOW) == nil
		meta := false
		if isDir {
			opaque, err := ovl.IsOpaque(fd)
			if err != nil {
				unix.Close(fd)
				return h, false, "", false, fmt.Errorf("lower %s: %w", p, err)
			}
			stop = stop || opaque || ociOpaque
		} else if st.Mode&unix.S_IFMT == unix.S_IFREG {
			if meta, err = ovl.Metacopy(fd); err != nil {
				unix.Close(fd)
				return h, false, "", false, fmt.Errorf("lower %s: %w", p, err)
			}
		}
		if isDir || meta {
			to, ok, err := ovl.RedirectPath(fd, beneath)
			if err != nil {
				unix.Close(fd)
				return h, false, "", false, fmt.Errorf("lower %s: %w", p, err)
			}
			if ok {
				beneath = to
			} else {
				beneath = joinRel(beneath, c)
			}
		}
		if last {
			if !isDir && !meta {
				stop = true
			}
			return lowerHit{layer: li, fd: fd, st: st}, true, beneath, stop, nil
		}
		closeDir()
		dfd = fd
	}
	panic("unreachable")
}

func joinRel(dir, name string) string {
	if dir == "" {
		return name
	}
	if name == "" {
		return dir
	}
	return dir + "/" + name
}

// dataHit returns the hit of hits (as lookup returns them for a regular
// file) that holds the file's data: the first regular file without a
// metacopy record.
func dataHit(hits []lowerHit) (*lowerHit, error) {
	for i := range hits {
		h := &hits[i]
		if !h.isReg() {
			continue
		}
		meta, err := ovl.Metacopy(h.fd)
		if err != nil {
			return nil, err
		}
		if !meta {
			return h, nil
		}
	}
	return nil, errNoLowerData
}

// errNoLowerData is a metacopy file whose data no lower layer holds.
var errNoLowerData = errors.New("metacopy file: no lower layer holds its data (are the lower layers given, in order?)")

// dirsAt returns the lower directories that merge at at, for the caller
// to close (closeHits).
func (v *lowerView) dirsAt(at writeAt) ([]lowerHit, error) {
	if !at.lowerOK {
		return nil, nil
	}
	hits, err := v.lookup(at.lower)
	if err != nil {
		return nil, err
	}
	if len(hits) > 0 && !hits[0].isDir() {
		v.closeHits(hits)
		return nil, nil
	}
	return hits, nil
}

// fullDir lists a directory beneath a redirect, which a layer holds
// whole: the upper directory ufd (as readChangedDir read it, d; -1 and
// nil for none) over the lower directories that merge where its entries
// stand, inner (writeAt.beneath). dirs are those directories, whose fds
// the lower entries are read by: the caller closes them (closeHits) when
// done with the entries.
func (v *lowerView) fullDir(ufd int, d *changedDir, inner writeAt) (ents []mergedEntry, dirs []lowerHit, err error) {
	if dirs, err = v.dirsAt(inner); err != nil {
		return nil, nil, err
	}
	if ents, err = mergeDir(ufd, d, dirs); err != nil {
		v.closeHits(dirs)
		return nil, nil, fmt.Errorf("read lower layers: %w", err)
	}
	return ents, dirs, nil
}

// mergedEntry is an entry of a merged directory, held by the directory
// fd dfd: the upper's, or a lower layer's.
type mergedEntry struct {
	changedEntry
	dfd   int
	upper bool
	layer int // of the lowers, where !upper
}

// mergeDir lists the directory made of the upper directory d (held open
// as ufd; d nil for none) over the lower directories dirs (top first, as
// lookup returns them): the upper's entries, and the lowers' that no
// whiteout or entry above hides. Sorted by name.
func mergeDir(ufd int, d *changedDir, dirs []lowerHit) ([]mergedEntry, error) {
	seen := make(map[string]bool)
	var out []mergedEntry
	if d != nil {
		for _, e := range d.entries {
			out = append(out, mergedEntry{changedEntry: e, dfd: ufd, upper: true})
			seen[e.name] = true
		}
		for _, wh := range d.whiteouts {
			seen[wh.name] = true
		}
		if d.opaque {
			dirs = nil
		}
	}
	for _, h := range dirs {
		ld, err := changesReadLowerDir(h.fd)
		if err != nil {
			return nil, err
		}
		for _, e := range ld.entries {
			if !seen[e.name] {
				out = append(out, mergedEntry{changedEntry: e, dfd: h.fd, layer: h.layer})
			}
		}
		for _, e := range ld.entries {
			seen[e.name] = true
		}
		for _, wh := range ld.whiteouts {
			seen[wh.name] = true
		}
	}
	slices.SortFunc(out, func(a, b mergedEntry) int { return strings.Compare(a.name, b.name) })
	return out, nil
}
