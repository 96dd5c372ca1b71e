//go:build linux

package cow

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/ovl"
)

// Options describe a stack.
type Options struct {
	// Lower lists the read-only layers, top first, as overlayfs's
	// lowerdir does.
	Lower []string
	// Upper and Work are the writable layer and its scratch directory on
	// the same filesystem. Both empty make a read-only stack.
	Upper, Work string
	// Volatile skips the fsync of copied-up data before it is renamed
	// into place (overlayfs "volatile", fuse-overlayfs "fsync=0").
	Volatile bool
	// NoRedirect neither writes nor follows directory redirects
	// (overlayfs "redirect_dir=nofollow"): a directory a lower layer
	// holds cannot be renamed (EXDEV), and a redirect found in a layer
	// is ignored, for lower layers that are not trusted.
	NoRedirect bool
	// RedirectFollowOnly follows redirects but writes none
	// (overlayfs "redirect_dir=follow"): a directory a lower layer holds
	// cannot be renamed (EXDEV).
	RedirectFollowOnly bool
	// NoMetacopy neither makes nor follows metadata-only copies
	// (overlayfs "metacopy=off"): a change of attributes copies the
	// data up too, and a metacopy file found in a layer shows as what
	// it holds itself (an empty, sparse file).
	NoMetacopy bool
}

// A Stack is a union of layers: at most one writable upper layer over
// read-only lower layers. It resolves names as overlayfs does and changes
// only the upper layer. Its methods take paths relative to the stack root
// ("" is the root, no leading slash), already split and clean.
type Stack struct {
	layers        []*Layer // layers[0] is the upper, nil when read-only
	work          *Layer
	sameDev       bool
	volatile      bool
	redirect      bool // follow redirects (not Options.NoRedirect)
	makeRedirects bool // and write them
	metacopy      bool // make and follow metacopy files

	// What the upper's filesystem lets us write, probed at New.
	dialect ovl.Dialect

	// The links directory of the work dir (see links.go): its fd, -1
	// until there is one; linksMu guards making it and the link count
	// records of its copies.
	linksMu   sync.Mutex
	linksFd   int
	linksUsed atomic.Bool

	redirs redirMap // where renamed directories went, for copyUpLinked
	// redirsScanned: lookUpRedirects has run (or is running).
	redirsScanned atomic.Bool

	tmpSeq atomic.Uint64
	index  indexCache // directories of lower layers

	// absent remembers directories the upper does not have.
	absent absentDirs

	// gen counts changes to the upper's namespace, bumped when each
	// starts and when it ends, so a listing taken at one generation is
	// still what a lookup would find while the generation is unchanged.
	gen atomic.Uint64
}

// Gen returns the namespace generation: see Stack.gen.
func (s *Stack) Gen() uint64 { return s.gen.Load() }

// changing marks the start of a change of the upper's namespace; call
// the function it returns at the end.
func (s *Stack) changing() func() {
	s.gen.Add(1)
	return func() { s.gen.Add(1) }
}

// UpperIndex is the index of the upper layer in a stack.
const UpperIndex = 0

// Entry is what a name resolves to in the merged view.
type Entry struct {
	// Layer is the index of the topmost layer holding the entry.
	Layer int
	// Path is, for an entry of a lower layer, its path in that layer,
	// which a redirect above it may make differ from its merged path.
	// Lower layers never change, so it stays true while the entry is
	// renamed. An upper entry is always at its merged path.
	Path string
	// Stat is the entry's real stat in that layer (st_ino not mapped).
	// For a metacopy file, st_blocks are its data's.
	Stat unix.Stat_t
	// Ino is the inode number in the merged view.
	Ino uint64
	// LowerName is the path by which the lower layers know the entry:
	// its merged path, unless a redirect of the upper above it leads
	// elsewhere. It is what a redirect to the entry holds.
	LowerName string
	// Lowers are, for a directory, the lower layers whose directory is
	// merged beneath, top first, each with the directory's path in it
	// (the merged path, unless a redirect leads elsewhere); cut at the
	// first opaque one. It excludes the upper layer.
	Lowers []Lower
	// NlinkAdjust is, for the copy of a lower hard link, what its
	// st_nlink differs by from the link count the merged view reports
	// (see links.go).
	NlinkAdjust int32
	// Linked marks the copy of a lower hard link, whose inode is
	// reached through the links directory (see Stack.inode).
	Linked bool
	// Data is, for a metacopy file of the upper layer (its metadata
	// copied up, not its data), the lower file holding its data; nil
	// for any other entry. What it points to is never changed.
	Data *Lower
}

// Nlink is the link count the merged view reports for e: st_nlink, less
// what the links directory adds (see NlinkAdjust).
func (e *Entry) Nlink() int64 { return int64(e.Stat.Nlink) + int64(e.NlinkAdjust) }

// Lower names a file or directory of a lower layer.
type Lower struct {
	Layer int
	Path  string
}

// Metacopy reports whether e is a metacopy file: its data is e.Data's.
func (e *Entry) Metacopy() bool { return e.Data != nil }

// DataLayer is the layer holding e's data: Data's for a metacopy file.
func (e *Entry) DataLayer() int {
	if e.Metacopy() {
		return e.Data.Layer
	}
	return e.Layer
}

// IsDir reports whether e is a directory.
func (e *Entry) IsDir() bool { return e.Stat.Mode&unix.S_IFMT == unix.S_IFDIR }

// InUpper reports whether the entry lives in the upper layer.
func (e *Entry) InUpper() bool { return e.Layer == UpperIndex }

// New opens the layers of a stack and checks that they can form one.
func New(opts Options) (*Stack, error) {
	if len(opts.Lower) == 0 {
		return nil, errors.New("no lower layer given")
	}
	if (opts.Upper == "") != (opts.Work == "") {
		return nil, errors.New("upperdir and workdir go together")
	}
	if len(opts.Lower) > 254 {
		return nil, fmt.Errorf("%d lower layers: at most 254 are supported", len(opts.Lower))
	}
	s := &Stack{volatile: opts.Volatile, redirect: !opts.NoRedirect, metacopy: !opts.NoMetacopy,
		makeRedirects: !opts.NoRedirect && !opts.RedirectFollowOnly, linksFd: -1,
		layers: make([]*Layer, 1, len(opts.Lower)+1)}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	for _, dir := range opts.Lower {
		l, err := openDirLayer("lowerdir", dir)
		if err != nil {
			return nil, err
		}
		s.layers = append(s.layers, l)
	}
	if opts.Upper != "" {
		u, err := openDirLayer("upperdir", opts.Upper)
		if err != nil {
			return nil, err
		}
		s.layers[UpperIndex] = u
		w, err := openDirLayer("workdir", opts.Work)
		if err != nil {
			return nil, err
		}
		s.work = w
		if u.Dev != w.Dev {
			return nil, fmt.Errorf("workdir %s is not on the filesystem of upperdir %s: they must share one", opts.Work, opts.Upper)
		}
		if err := s.checkNesting(opts); err != nil {
			return nil, err
		}
		if err := s.cleanWork(); err != nil {
			return nil, err
		}
		if fd, err := unix.Openat(w.fd, linksDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err == nil {
			s.linksFd = fd
			s.linksUsed.Store(true)
			if err := s.cleanLinks(); err != nil {
				return nil, err
			}
		}
		s.probeUpper()
	}
	s.sameDev = true
	for _, l := range s.layers {
		if l != nil && l.Dev != s.layers[len(s.layers)-1].Dev {
			s.sameDev = false
		}
	}
	ok = true
	return s, nil
}

func openDirLayer(what, dir string) (*Layer, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, dir, unwrapPathError(err))
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s %s: not a directory", what, dir)
	}
	return OpenLayer(dir)
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// checkNesting refuses an upper or work directory inside a lower layer
// (or a lower inside them): overlayfs refuses these too, since the upper
// would change a lower under the mount.
func (s *Stack) checkNesting(opts Options) error {
	inside := func(child, parent string) bool {
		// Compare by identity, walking up from child: a path string
		// comparison would miss bind mounts and symlinks.
		var pst unix.Stat_t
		if unix.Stat(parent, &pst) != nil {
			return false
		}
		dir := child
		for i := 0; i < 4096; i++ {
			var st unix.Stat_t
			if unix.Stat(dir, &st) != nil {
				return false
			}
			if st.Dev == pst.Dev && st.Ino == pst.Ino {
				return true
			}
			up := dir + "/.."
			var ust unix.Stat_t
			if unix.Stat(up, &ust) != nil || (ust.Dev == st.Dev && ust.Ino == st.Ino) {
				return false
			}
			dir = up
		}
		return false
	}
	for _, lo := range opts.Lower {
		for _, w := range []struct{ what, dir string }{{"upperdir", opts.Upper}, {"workdir", opts.Work}} {
			if inside(w.dir, lo) {
				return fmt.Errorf("%s %s is inside lowerdir %s: use a directory outside every lower layer", w.what, w.dir, lo)
			}
			if inside(lo, w.dir) {
				return fmt.Errorf("lowerdir %s is inside %s %s: use a directory outside it", lo, w.what, w.dir)
			}
		}
	}
	if inside(opts.Work, opts.Upper) || inside(opts.Upper, opts.Work) {
		return fmt.Errorf("upperdir %s and workdir %s must not contain each other", opts.Upper, opts.Work)
	}
	return nil
}

// Close releases the layers.
func (s *Stack) Close() error {
	var errs []error
	for _, l := range s.layers {
		if l != nil {
			errs = append(errs, l.Close())
		}
	}
	if s.work != nil {
		errs = append(errs, s.work.Close())
	}
	if s.linksFd >= 0 {
		errs = append(errs, unix.Close(s.linksFd))
	}
	return errors.Join(errs...)
}

// Writable reports whether the stack has an upper layer.
func (s *Stack) Writable() bool { return s.layers[UpperIndex] != nil }

// Layer returns layer i (0 is the upper).
func (s *Stack) Layer(i int) *Layer { return s.layers[i] }

// NumLayers counts the layers, the upper slot included.
func (s *Stack) NumLayers() int { return len(s.layers) }

func (s *Stack) upper() *Layer { return s.layers[UpperIndex] }

// allLowers lists every lower layer index, top first.
func (s *Stack) allLowers() []int {
	out := make([]int, 0, len(s.layers)-1)
	for i := 1; i < len(s.layers); i++ {
		out = append(out, i)
	}
	return out
}

// Root resolves the root directory of the stack.
func (s *Stack) Root() (Entry, error) {
	var e Entry
	found := false
	if u := s.upper(); u != nil {
		if err := u.Lstat("", &e.Stat); err != nil {
			return e, err
		}
		found = true
		if u.isOpaque("") {
			e.Ino = s.mapIno(UpperIndex, e.Stat.Ino)
			return e, nil
		}
	}
	for _, li := range s.allLowers() {
		var st unix.Stat_t
		if err := s.layers[li].Lstat("", &st); err != nil {
			return e, err
		}
		if !found {
			e.Layer, e.Stat, found = li, st, true
		}
		if len(e.Lowers) == 0 {
			e.Ino = s.mapIno(li, st.Ino)
		}
		e.Lowers = append(e.Lowers, Lower{li, ""})
		if li < len(s.layers)-1 && s.layers[li].isOpaque("") {
			break
		}
	}
	return e, nil
}

func notFound(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR)
}

// childLowers are the places where the lower layers may hold name of the
// merged directory parent: name in each of parent's lower directories.
func childLowers(parent *Entry, name string) []Lower {
	out := make([]Lower, len(parent.Lowers))
	var dir, p string
	for i, l := range parent.Lowers {
		// Most layers know the directory by one path: one string for
		// all of them (a lookup through 100 layers made 100).
		if i == 0 || l.Path != dir {
			dir, p = l.Path, joinRel(l.Path, name)
		}
		out[i] = Lower{l.Layer, p}
	}
	return out
}

// lowerRoot is the root of the stack's lower layers from layer from on,
// as a lookup from the root of those layers sees it.
func (s *Stack) lowerRoot(from int) (Entry, error) {
	e := Entry{Layer: -1}
	for li := from; li < len(s.layers); li++ {
		if li == from {
			e.Layer = li
			if err := s.layers[li].Lstat("", &e.Stat); err != nil {
				return e, err
			}
			e.Ino = s.mapIno(li, e.Stat.Ino)
		}
		e.Lowers = append(e.Lowers, Lower{li, ""})
		if li < len(s.layers)-1 && s.layers[li].isOpaque("") {
			break
		}
	}
	return e, nil
}

// resolveLower resolves the path p (no leading slash) in the lower
// layers from layer from on, from their root, one name at a time, as
// kernel overlayfs resolves an absolute redirect: whiteouts, opacity and
// the redirects of the layers on the way count. It gives ENOENT where
// those layers do not hold p.
func (s *Stack) resolveLower(p string, from int) (Entry, error) {
	if from >= len(s.layers) {
		return Entry{}, unix.ENOENT
	}
	e, err := s.lowerRoot(from)
	if err != nil || p == "" {
		return e, err
	}
	for _, name := range strings.Split(p, "/") {
		if !e.IsDir() {
			return Entry{}, unix.ENOTDIR
		}
		parent := e
		e = Entry{LowerName: joinRel(parent.LowerName, name)}
		if err := s.mergeLowers(&parent, childLowers(&parent, name), &e, false); err != nil {
			return Entry{}, err
		}
	}
	return e, nil
}

// redirectLowers returns the lower entry that a redirect found in layer
// layer sends the entry name of the merged directory parent to: an
// absolute redirect is a path from the root of the layers beneath, a
// relative one a name beside the entry in parent's lower directories
// beneath. lname is the name the layers beneath know it by.
func (s *Stack) redirectLowers(parent *Entry, layer int, redirect string) (cands []Lower, abs *Entry, lname string, err error) {
	if strings.HasPrefix(redirect, "/") {
		p, err := ovl.ResolveRedirect([]byte(redirect), "")
		if err != nil {
			return nil, nil, "", err
		}
		e, err := s.resolveLower(p, layer+1)
		if notFound(err) {
			return nil, nil, p, nil
		}
		if err != nil {
			return nil, nil, "", err
		}
		return nil, &e, p, nil
	}
	if _, err := ovl.ResolveRedirect([]byte(redirect), ""); err != nil {
		return nil, nil, "", err
	}
	for _, l := range parent.Lowers {
		if l.Layer > layer {
			cands = append(cands, Lower{l.Layer, joinRel(l.Path, redirect)})
		}
	}
	return cands, nil, joinRel(parent.LowerName, redirect), nil
}

// Lookup resolves name in the merged directory dir, whose entry is
// parent.
func (s *Stack) Lookup(dir string, parent *Entry, name string) (e Entry, err error) {
	defer func() {
		// Most entries are known to the lowers by their own path: keep
		// one string for the two (a node lives as long as the kernel
		// holds the inode, and there can be millions).
		if e.LowerName == e.Path {
			e.LowerName = e.Path
		}
	}()
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return e, unix.ENOENT // not a name in this directory
	}
	rel := joinRel(dir, name)
	e.LowerName = joinRel(parent.LowerName, name)
	cands := childLowers(parent, name)
	absent, gen := s.absent.has(dir)
	if u := s.upper(); u != nil && !absent {
		var st unix.Stat_t
		parentMissing, err := u.lstatOrWhiteout(rel, &st)
		if parentMissing {
			s.absent.add(dir, gen)
		}
		switch {
		case errors.Is(err, errOCIWhiteout):
			return e, unix.ENOENT
		case err == nil:
			if u.isWhiteout(rel, &st) {
				return e, unix.ENOENT
			}
			e.Layer, e.Path, e.Stat = UpperIndex, rel, st
			if !e.IsDir() {
				return e, s.upperNonDir(rel, parent, cands, &e)
			}
			m := u.dirMarks(rel)
			if m.opaque {
				e.Ino = s.mapIno(UpperIndex, st.Ino)
				return e, nil
			}
			if m.redirect != "" {
				if !s.redirect {
					return e, fmt.Errorf("%s has a redirect, and redirect_dir=nofollow: %w", rel, unix.EPERM)
				}
				var abs *Entry
				if cands, abs, e.LowerName, err = s.redirectLowers(parent, UpperIndex, m.redirect); err != nil {
					return e, fmt.Errorf("%s: %w", rel, err)
				}
				// A renamed directory keeps the number it had
				// (recorded at the rename), else has its own.
				e.Ino = m.origin
				if e.Ino == 0 {
					e.Ino = s.mapIno(UpperIndex, st.Ino)
				}
				if abs != nil && abs.IsDir() {
					e.Lowers = abs.Lowers
				}
				s.redirs.moved(e.LowerName, rel)
				if abs != nil {
					return e, nil
				}
			}
			if len(cands) == 0 {
				if e.Ino == 0 {
					e.Ino = s.mapIno(UpperIndex, st.Ino)
				}
				return e, nil
			}
			return e, s.mergeLowers(parent, cands, &e, true)
		case notFound(err):
		default:
			return e, err
		}
	}
	if err := s.mergeLowers(parent, cands, &e, false); err != nil {
		return e, err
	}
	if e.Stat.Nlink > 1 && !e.IsDir() && s.linksUsed.Load() {
		// A name of a lower inode copied up through another name.
		return e, s.linkLookedUp(rel, &e)
	}
	return e, nil
}

// mergeLowers completes the entry e, name of the merged directory
// parent, from the lower layers: cands are where they may hold it, top
// first. found reports that e was found above (a directory of the upper),
// so that only directories merge beneath it. Without found, e.Layer is
// set by the first layer holding the name, and ENOENT returned where none
// does.
func (s *Stack) mergeLowers(parent *Entry, cands []Lower, e *Entry, found bool) error {
	for i := 0; i < len(cands); i++ {
		c := cands[i]
		var st unix.Stat_t
		cdir, cname := splitRel(c.Path)
		ok, wh, err := s.lowerLookup(c.Layer, cdir, cname, &st)
		if err != nil {
			return err
		}
		if wh {
			break
		}
		if !ok {
			continue
		}
		isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
		if !found {
			e.Layer, e.Path, e.Stat, found = c.Layer, c.Path, st, true
			if !isDir {
				e.Ino = s.mapIno(c.Layer, st.Ino)
				return s.lowerNonDir(parent, cands[i+1:], e)
			}
		} else if !isDir {
			break // a non-directory ends the merge beneath a directory
		}
		if e.Ino == 0 {
			e.Ino = s.mapIno(c.Layer, st.Ino)
		}
		e.Lowers = append(e.Lowers, c)
		if c.Layer == len(s.layers)-1 {
			continue
		}
		d, err := s.lowerIndex(c.Layer, c.Path)
		if err != nil {
			return err
		}
		if d.opaque {
			break
		}
		if d.redirect == "" {
			continue
		}
		if !s.redirect {
			return fmt.Errorf("%s in %s has a redirect, and redirect_dir=nofollow: %w", c.Path, s.layers[c.Layer].Path, unix.EPERM)
		}
		rest, abs, _, err := s.redirectLowers(parent, c.Layer, d.redirect)
		if err != nil {
			return fmt.Errorf("%s in %s: %w", c.Path, s.layers[c.Layer].Path, err)
		}
		if abs != nil {
			if abs.IsDir() {
				e.Lowers = append(e.Lowers, abs.Lowers...)
			}
			break
		}
		cands = append(cands[:i+1:i+1], rest...)
	}
	if !found {
		return unix.ENOENT
	}
	if e.Ino == 0 {
		e.Ino = s.mapIno(e.Layer, e.Stat.Ino)
	}
	return nil
}

// splitRel splits a layer path into its directory and last name.
func splitRel(p string) (dir, name string) {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i], p[i+1:]
	}
	return "", p
}

// Refresh notices that e, resolved in a lower layer, has been copied up
// since (a directory is, by a copy-up of anything beneath it).
func (s *Stack) Refresh(rel string, e *Entry) {
	if e.InUpper() || !s.Writable() {
		return
	}
	var st unix.Stat_t
	u := s.upper()
	if u.Lstat(rel, &st) == nil && !u.isWhiteout(rel, &st) && st.Mode&unix.S_IFMT == e.Stat.Mode&unix.S_IFMT {
		if e.Stat.Mode&unix.S_IFMT == unix.S_IFREG && s.metacopy && u.maybeMetacopy(&st) && u.isMetacopy(rel) {
			// Copied up without its data, which stays where it was.
			if !e.Metacopy() {
				e.Data = &Lower{e.Layer, e.Path}
			}
			st.Blocks = e.Stat.Blocks
		}
		e.Layer, e.Path, e.Stat = UpperIndex, rel, st
		if st.Nlink > 1 && !e.IsDir() {
			m := u.fileMarks(rel, &st, true, u.maybeMetacopy(&st))
			e.NlinkAdjust, e.Linked = m.adjust, m.linked
		}
	}
}

// upperIno is the merged inode number of a non-directory in the upper
// layer: the one it had before copy-up if it was copied up.
func (s *Stack) upperIno(rel string, st *unix.Stat_t) uint64 {
	if o, ok := s.originIno(rel); ok {
		return o
	}
	return s.mapIno(UpperIndex, st.Ino)
}

// originIno reads the inode number recorded on an upper file at copy-up.
func (s *Stack) originIno(rel string) (uint64, bool) {
	v, err := s.upper().Getxattr(rel, s.originXattr())
	if err != nil || len(v) < 8 {
		return 0, false
	}
	return binary.LittleEndian.Uint64(v), true
}

func (s *Stack) originXattr() string {
	if s.dialect.TrustedXattrs {
		return ovl.XattrOrigin
	}
	return ovl.XattrUserOrigin
}

// mapIno turns a layer's st_ino into a merged one, unique in the mount and
// stable across remounts of the same layers. When every layer shares one
// filesystem its inode numbers are already unique; otherwise the layer
// index goes into the high bits (as overlayfs's xino does), and an inode
// number too large for that is hashed into a range of its own.
func (s *Stack) mapIno(layer int, ino uint64) uint64 {
	if s.sameDev && ino < 1<<62 {
		return ino
	}
	if ino < 1<<56 {
		return uint64(layer+1)<<56 | ino
	}
	h := fnv.New64a()
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], uint64(layer))
	binary.LittleEndian.PutUint64(b[8:], ino)
	h.Write(b[:])
	return 1<<62 | h.Sum64()&(1<<62-1)
}

// tmpName returns a fresh name for the work directory.
func (s *Stack) tmpName() string {
	return "#strata." + strconv.Itoa(os.Getpid()) + "." + strconv.FormatUint(s.tmpSeq.Add(1), 10)
}

// cleanWork removes what a crashed daemon left in the work directory:
// half-built copy-ups and removed directories. Nothing there is ever
// visible in the merged view, so removing it loses nothing.
func (s *Stack) cleanWork() error {
	fd, err := s.work.openAt("", unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return fmt.Errorf("open workdir: %w", err)
	}
	defer unix.Close(fd)
	ents, err := readDirFd(fd)
	if err != nil {
		return fmt.Errorf("read workdir: %w", err)
	}
	for _, de := range ents {
		if strings.HasPrefix(de.Name, "#strata.") {
			if err := removeAllAt(fd, de.Name); err != nil {
				return fmt.Errorf("clean workdir: %w", err)
			}
		}
	}
	return nil
}

// probeUpper finds out which format the upper can hold (ovl.Probe, in
// the work dir, on the upper's filesystem). A probe that fails leaves the
// fallbacks it could not rule out.
func (s *Stack) probeUpper() { s.dialect, _ = ovl.Probe(s.work.fd) }

// KernelFormat reports whether the upper is written in kernel overlayfs's
// format (char 0/0 whiteouts, trusted.overlay.opaque) rather than the
// OCI fallback.
func (s *Stack) KernelFormat() bool { return s.dialect.Kernel() }
