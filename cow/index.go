//go:build linux

package cow

import (
	"sync"

	"golang.org/x/sys/unix"
)

// dirIndex is one directory of one lower layer, read once. Lower layers
// never change, so lookups consult it instead of the disk: a name that a
// layer does not hold costs no system call, which keeps lookups through
// many layers cheap.
type dirIndex struct {
	missing   bool // the directory is not in this layer
	opaque    bool
	redirect  string               // the directory's redirect xattr, if any
	impure    bool                 // kernel overlayfs marked it impure: its files may be metacopy files
	names     map[string]rawDirent // visible entries
	whiteouts map[string]struct{}  // names hidden beneath this layer
}

type indexKey struct {
	layer int
	dir   string
}

// indexCache holds dirIndexes of lower layers. It is bounded: when full
// it starts over, which costs only rereading.
type indexCache struct {
	mu sync.RWMutex
	m  map[indexKey]*dirIndex
}

const indexCacheMax = 1 << 16

func (c *indexCache) get(k indexKey) *dirIndex {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.m[k]
}

func (c *indexCache) put(k indexKey, d *dirIndex) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= indexCacheMax {
		c.m = make(map[indexKey]*dirIndex)
	}
	c.m[k] = d
}

// lowerIndex returns the index of dir in lower layer li.
func (s *Stack) lowerIndex(li int, dir string) (*dirIndex, error) {
	k := indexKey{li, dir}
	if d := s.index.get(k); d != nil {
		return d, nil
	}
	ents, whs, marks, err := s.readLayerDir(li, dir)
	if notFound(err) {
		d := &dirIndex{missing: true}
		s.index.put(k, d)
		return d, nil
	}
	if err != nil {
		return nil, err
	}
	return s.putIndex(li, dir, ents, whs, marks), nil
}

// putIndex records a listing of dir in lower layer li.
func (s *Stack) putIndex(li int, dir string, ents []rawDirent, whs []string, marks dirMarks) *dirIndex {
	d := &dirIndex{opaque: marks.opaque, redirect: marks.redirect, impure: marks.impure, names: make(map[string]rawDirent, len(ents))}
	for _, de := range ents {
		d.names[de.Name] = de
	}
	if len(whs) > 0 {
		d.whiteouts = make(map[string]struct{}, len(whs))
		for _, w := range whs {
			d.whiteouts[w] = struct{}{}
		}
	}
	s.index.put(indexKey{li, dir}, d)
	return d
}

// lowerLookup finds name in the directory dir of lower layer li through
// the index: found, hidden by a whiteout, or absent.
func (s *Stack) lowerLookup(li int, dir, name string, st *unix.Stat_t) (found, whiteout bool, err error) {
	d, err := s.lowerIndex(li, dir)
	if err != nil || d.missing {
		return false, false, err
	}
	if _, ok := d.names[name]; ok {
		// Every component of dir was opened beneath the layer without
		// crossing a symlink when the index was read, and lower
		// layers do not change: one fstatat that does not follow the
		// last name stays inside the layer.
		err := s.layers[li].statAt(joinRel(dir, name), st)
		if notFound(err) {
			return false, false, nil // changed under us: treat as absent
		}
		// xattr whiteouts are found by the listing, in directories
		// marked as holding them (as the kernel writes them); checking
		// every empty file for one would cost two system calls.
		return err == nil, false, err
	}
	_, wh := d.whiteouts[name]
	return false, wh, nil
}

func joinRel(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// absentDirs remembers merged directories that the upper layer does not
// have, so that lookups in them (the common case in a fresh container)
// skip the upper. Every change that can make a directory appear in the
// upper (copy-up, mkdir, rename) forgets all of it.
type absentDirs struct {
	mu  sync.Mutex
	gen uint64
	m   map[string]struct{}
}

// has reports whether dir is known absent, and the generation to pass
// to add if it is not.
func (a *absentDirs) has(dir string) (bool, uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.m[dir]
	return ok, a.gen
}

// add records dir as absent, as observed at generation gen: if the
// upper's directories changed since, the observation may be stale.
func (a *absentDirs) add(dir string, gen uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if gen != a.gen {
		return
	}
	if a.m == nil || len(a.m) >= indexCacheMax {
		a.m = make(map[string]struct{})
	}
	a.m[dir] = struct{}{}
}

// changed forgets everything: a directory may have appeared.
func (a *absentDirs) changed() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.gen++
	clear(a.m)
}
