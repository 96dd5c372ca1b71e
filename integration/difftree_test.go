package integration

// Fixtures, tree snapshots and whiteout-dialect normalisation for the
// differential test (differential_test.go).

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Explicit timestamps (fixture mtimes and utimes ops) all lie in this window,
// far from "now". Regular-file and symlink mtimes are compared only when one
// side shows a time inside it; every other mtime is not compared.
const (
	dtExplicitBase = 1_000_000_000 // 2001-09-09
	dtExplicitSpan = 1_000_000
)

func dtExplicitTime(sec int64) bool {
	return sec >= dtExplicitBase && sec < dtExplicitBase+dtExplicitSpan
}

// ---------------------------------------------------------------------------
// Fixtures: lower layers as data.

type fxKind string

const (
	fxDir      fxKind = "dir"
	fxFile     fxKind = "file"
	fxSymlink  fxKind = "symlink"
	fxHardlink fxKind = "hardlink" // Target names a file of the same layer
	fxFifo     fxKind = "fifo"
	fxWhiteout fxKind = "whiteout" // kernel format: char device 0/0
)

// fxEntry is one entry of a lower layer. Entries are listed parents first.
type fxEntry struct {
	Kind   fxKind
	Path   string
	Mode   uint32
	UID    int
	GID    int
	Data   string
	Target string      // symlink target, or hard link source
	Xattrs [][2]string // user.* xattrs
	Opaque bool        // dir: trusted.overlay.opaque=y
	Mtime  int64       // file and symlink: explicit mtime, seconds
}

func (e fxEntry) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-8s %-10s", e.Kind, e.Path)
	switch e.Kind {
	case fxWhiteout:
		return b.String()
	case fxHardlink:
		fmt.Fprintf(&b, " => %s", e.Target)
		return b.String()
	case fxSymlink:
		fmt.Fprintf(&b, " -> %q", e.Target)
	default:
		fmt.Fprintf(&b, " %04o", e.Mode)
	}
	if e.UID != 0 || e.GID != 0 {
		fmt.Fprintf(&b, " %d:%d", e.UID, e.GID)
	}
	if e.Kind == fxFile {
		fmt.Fprintf(&b, " %q", e.Data)
	}
	if e.Opaque {
		b.WriteString(" opaque")
	}
	for _, x := range e.Xattrs {
		fmt.Fprintf(&b, " %s=%q", x[0], x[1])
	}
	if e.Mtime != 0 {
		fmt.Fprintf(&b, " mtime=%d", e.Mtime)
	}
	return b.String()
}

// fixture is a stack of lower layers; Layers[0] is the bottom one.
type dtFixture struct {
	Layers [][]fxEntry
}

func (fx *dtFixture) String() string {
	var b strings.Builder
	for i := len(fx.Layers) - 1; i >= 0; i-- {
		fmt.Fprintf(&b, "layer %d (%s):\n", i, map[bool]string{true: "top", false: "lower"}[i == len(fx.Layers)-1])
		for _, e := range fx.Layers[i] {
			fmt.Fprintf(&b, "  %s\n", e)
		}
	}
	return b.String()
}

// fxNames is the small name pool of fixtures; it is small so that layers
// overlap (file over dir, dir over file, merged dirs) and ops collide.
var fxNames = []string{"a", "b", "c", "d", "e", "f", "g", "h"}

var (
	fxDirModes  = []uint32{0o755, 0o700, 0o775, 0o750}
	fxFileModes = []uint32{0o644, 0o600, 0o755, 0o444, 0o640}
)

// dtGenFixture builds 2 or 3 lower layers from rng.
func dtGenFixture(rng *rand.Rand) *dtFixture {
	n := 2 + rng.IntN(2)
	fx := &dtFixture{}
	below := map[string]fxKind{}
	for i := 0; i < n; i++ {
		l := &dtLayerGen{rng: rng, layer: i, top: i > 0, below: below, used: map[string]fxKind{"": fxDir}}
		for j, count := 0, 10+rng.IntN(10); j < count; j++ {
			l.step()
		}
		fx.Layers = append(fx.Layers, l.entries)
		for p, k := range l.used {
			if p != "" {
				below[p] = k
			}
		}
	}
	return fx
}

type dtLayerGen struct {
	rng     *rand.Rand
	layer   int
	top     bool              // not the bottom layer: may hold whiteouts and opaque dirs
	below   map[string]fxKind // paths of the layers below
	used    map[string]fxKind // paths of this layer
	entries []fxEntry
}

var fxKindWeights = []struct {
	kind   fxKind
	weight int
	opaque bool
}{
	{fxDir, 4, false},
	{fxFile, 6, false},
	{fxSymlink, 2, false},
	{fxHardlink, 2, false},
	{fxFifo, 1, false},
	{fxWhiteout, 3, false},
	{fxDir, 2, true},
}

func (l *dtLayerGen) step() {
	weights := make([]int, len(fxKindWeights))
	for i, w := range fxKindWeights {
		name := string(w.kind)
		if w.opaque {
			name = "opaque"
		}
		if !dtWithout(name) {
			weights[i] = w.weight
		}
	}
	i := dtPickWeighted(l.rng, weights)
	if i < 0 {
		return
	}
	kind, opaque := fxKindWeights[i].kind, fxKindWeights[i].opaque
	if (kind == fxWhiteout || opaque) && !l.top {
		return
	}
	var p string
	switch {
	case kind == fxWhiteout:
		p = l.pickBelow("")
	case opaque:
		p = l.pickBelow(fxDir)
	default:
		p = l.newPath()
	}
	if p == "" || strings.Count(p, "/") > 2 {
		return
	}
	if _, ok := l.used[p]; ok {
		return
	}
	if !l.ensureDir(path.Dir(p)) {
		return
	}
	e := fxEntry{Kind: kind, Path: p, Opaque: opaque}
	switch kind {
	case fxDir:
		e.Mode = fxDirModes[l.rng.IntN(len(fxDirModes))]
		l.owner(&e)
		l.xattrs(&e)
	case fxFile:
		e.Mode = fxFileModes[l.rng.IntN(len(fxFileModes))]
		e.Data = strings.Repeat(fmt.Sprintf("L%d %s %d\n", l.layer, p, l.rng.IntN(1000)), l.rng.IntN(4))
		e.Mtime = dtExplicitBase + int64(l.rng.IntN(dtExplicitSpan))
		l.owner(&e)
		l.xattrs(&e)
	case fxSymlink:
		targets := append([]string{"zz", "a/b", "../a"}, fxNames...)
		e.Target = targets[l.rng.IntN(len(targets))]
		if e.Target == "../a" && !strings.Contains(p, "/") {
			e.Target = "a" // never point outside the mount
		}
		e.Mtime = dtExplicitBase + int64(l.rng.IntN(dtExplicitSpan))
	case fxHardlink:
		var files []string
		for _, q := range dtSortedKeys(l.used) {
			if l.used[q] == fxFile {
				files = append(files, q)
			}
		}
		if len(files) == 0 {
			return
		}
		e.Target = files[l.rng.IntN(len(files))]
		l.used[p] = fxFile
		l.entries = append(l.entries, e)
		return
	case fxFifo:
		e.Mode = 0o644
	}
	l.used[p] = kind
	l.entries = append(l.entries, e)
}

func (l *dtLayerGen) owner(e *fxEntry) {
	if l.rng.IntN(4) == 0 {
		e.UID, e.GID = 1000, 1000+l.rng.IntN(2)
	}
}

func (l *dtLayerGen) xattrs(e *fxEntry) {
	if l.rng.IntN(3) != 0 {
		return
	}
	for k := 0; k < 1+l.rng.IntN(2); k++ {
		e.Xattrs = append(e.Xattrs, [2]string{fmt.Sprintf("user.k%d", k), fmt.Sprintf("v%d-%d", l.layer, l.rng.IntN(100))})
	}
}

// pickBelow returns a path of the layers below, of the given kind if kind is
// not empty; "" if there is none.
func (l *dtLayerGen) pickBelow(kind fxKind) string {
	var c []string
	for _, p := range dtSortedKeys(l.below) {
		if kind == "" || l.below[p] == kind {
			c = append(c, p)
		}
	}
	if len(c) == 0 {
		return ""
	}
	return c[l.rng.IntN(len(c))]
}

// newPath returns a path for a new entry: half the time (above the bottom
// layer) one that exists below, else a pool name in a dir of this layer.
func (l *dtLayerGen) newPath() string {
	if l.top && l.rng.IntN(2) == 0 {
		if p := l.pickBelow(""); p != "" {
			return p
		}
	}
	var dirs []string
	for _, p := range dtSortedKeys(l.used) {
		if l.used[p] == fxDir {
			dirs = append(dirs, p)
		}
	}
	d := dirs[l.rng.IntN(len(dirs))]
	return path.Join(d, fxNames[l.rng.IntN(len(fxNames))])
}

// ensureDir adds the missing dirs of p (mkdir -p) to the layer; false if a
// non-dir of this layer is in the way.
func (l *dtLayerGen) ensureDir(p string) bool {
	if p == "." || p == "" {
		return true
	}
	if k, ok := l.used[p]; ok {
		return k == fxDir
	}
	if !l.ensureDir(path.Dir(p)) {
		return false
	}
	l.used[p] = fxDir
	l.entries = append(l.entries, fxEntry{Kind: fxDir, Path: p, Mode: 0o755})
	return true
}

// dtPickWeighted returns an index drawn with the given weights, -1 if they are
// all 0.
func dtPickWeighted(rng *rand.Rand, weights []int) int {
	total := 0
	for _, w := range weights {
		total += w
	}
	if total == 0 {
		return -1
	}
	r := rng.IntN(total)
	i := 0
	for ; r >= weights[i]; i++ {
		r -= weights[i]
	}
	return i
}

func dtSortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// materialize writes layer i of fx into dir.
func (fx *dtFixture) materialize(i int, dir string) error {
	for _, e := range fx.Layers[i] {
		if err := e.materialize(dir); err != nil {
			return fmt.Errorf("layer %d: %s: %w", i, e, err)
		}
	}
	return nil
}

func (e fxEntry) materialize(dir string) error {
	p := filepath.Join(dir, e.Path)
	var err error
	switch e.Kind {
	case fxDir:
		err = unix.Mkdir(p, 0o700)
	case fxFile:
		err = os.WriteFile(p, []byte(e.Data), 0o600)
	case fxSymlink:
		err = unix.Symlink(e.Target, p)
	case fxHardlink:
		return unix.Link(filepath.Join(dir, e.Target), p)
	case fxFifo:
		err = unix.Mkfifo(p, 0o600)
	case fxWhiteout:
		return unix.Mknod(p, unix.S_IFCHR, 0)
	}
	if err != nil {
		return err
	}
	if e.Kind != fxSymlink {
		if err := unix.Chmod(p, e.Mode); err != nil {
			return err
		}
	}
	if err := unix.Lchown(p, e.UID, e.GID); err != nil {
		return err
	}
	for _, x := range e.Xattrs {
		if err := unix.Lsetxattr(p, x[0], []byte(x[1]), 0); err != nil {
			return err
		}
	}
	if e.Opaque {
		if err := unix.Lsetxattr(p, "trusted.overlay.opaque", []byte("y"), 0); err != nil {
			return err
		}
	}
	if e.Mtime != 0 {
		ts := []unix.Timespec{{Sec: e.Mtime}, {Sec: e.Mtime, Nsec: 1000}}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	}
	return nil
}

// ---------------------------------------------------------------------------
// Snapshots of trees.

// node is one entry of a snapshot; String is what is compared.
type dtNode struct {
	Type   string // dir file symlink fifo char block socket whiteout
	Mode   uint32 // permission bits with setuid, setgid and sticky
	UID    uint32
	GID    uint32
	Size   int64  // file and symlink
	Hash   string // file: content
	Data   string // file: content if short, for the dump only
	Target string // symlink
	Nlink  uint64 // file
	Rdev   uint64 // char and block devices (not whiteouts)
	Mtime  string // file and symlink, explicit times only
	Xattrs string // without bookkeeping xattrs
	Opaque bool   // upper snapshots only
	Links  string // other names of the same inode (hard links)

	key [2]uint64 // st_dev, st_ino
}

func (n *dtNode) String() string {
	var b strings.Builder
	b.WriteString(n.Type)
	if n.Type == "whiteout" {
		return b.String()
	}
	fmt.Fprintf(&b, " %04o %d:%d", n.Mode, n.UID, n.GID)
	switch n.Type {
	case "file":
		fmt.Fprintf(&b, " size=%d", n.Size)
		if n.Hash != "" {
			fmt.Fprintf(&b, " sha=%s", n.Hash)
		}
		fmt.Fprintf(&b, " nlink=%d", n.Nlink)
	case "symlink":
		if n.Target != "" {
			fmt.Fprintf(&b, " -> %q", n.Target)
		}
	case "char", "block":
		fmt.Fprintf(&b, " rdev=%d:%d", unix.Major(n.Rdev), unix.Minor(n.Rdev))
	}
	if n.Mtime != "" {
		fmt.Fprintf(&b, " mtime=%s", n.Mtime)
	}
	if n.Opaque {
		b.WriteString(" opaque")
	}
	if n.Xattrs != "" {
		fmt.Fprintf(&b, " xattrs{%s}", n.Xattrs)
	}
	if n.Links != "" {
		fmt.Fprintf(&b, " links[%s]", n.Links)
	}
	return b.String()
}

// dumpLine is String plus the content of short files, for dumps.
func (n *dtNode) dumpLine() string {
	s := n.String()
	if n.Type == "file" && n.Data != "" {
		s += fmt.Sprintf(" data=%q", n.Data)
	}
	return s
}

type dtTree map[string]*dtNode

func dtFileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFREG:
		return "file"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFCHR:
		return "char"
	case unix.S_IFBLK:
		return "block"
	case unix.S_IFSOCK:
		return "socket"
	}
	return fmt.Sprintf("type%o", mode&unix.S_IFMT)
}

// dtBookkeepingXattr reports xattrs that overlay implementations keep for
// themselves; they are never compared.
func dtBookkeepingXattr(name string) bool {
	for _, p := range []string{"trusted.overlay.", "user.overlay.", "user.fuseoverlayfs."} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// dtXattrs returns all xattrs of p (not following symlinks), sorted.
func dtXattrs(p string) (map[string]string, error) {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz == 0 {
		return nil, err
	}
	buf := make([]byte, sz+256)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:sz]), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		v := make([]byte, 4096)
		n, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			m[name] = "<" + dtErrnoOf(err).Error() + ">"
			continue
		}
		m[name] = string(v[:n])
	}
	return m, nil
}

func dtFormatXattrs(m map[string]string) string {
	var parts []string
	for _, k := range dtSortedKeys(m) {
		if !dtBookkeepingXattr(k) {
			parts = append(parts, fmt.Sprintf("%s=%q", k, m[k]))
		}
	}
	return strings.Join(parts, " ")
}

// dtStatNode describes p from its lstat, without content or xattrs.
func dtStatNode(st *unix.Stat_t) *dtNode {
	n := &dtNode{
		Type: dtFileType(st.Mode),
		Mode: st.Mode & 0o7777,
		UID:  st.Uid,
		GID:  st.Gid,
		key:  [2]uint64{st.Dev, st.Ino},
	}
	switch n.Type {
	case "file":
		n.Size, n.Nlink = st.Size, st.Nlink
	case "symlink":
		n.Size = st.Size
	case "char", "block":
		n.Rdev = st.Rdev
	}
	if (n.Type == "file" || n.Type == "symlink") && dtExplicitTime(st.Mtim.Sec) {
		n.Mtime = fmt.Sprintf("%d.%09d", st.Mtim.Sec, st.Mtim.Nsec)
	}
	return n
}

func dtReadAll(p string) ([]byte, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var out []byte
	buf := make([]byte, 64<<10)
	for len(out) < 16<<20 {
		n, err := unix.Read(fd, buf)
		if err != nil {
			return out, err
		}
		if n == 0 {
			break
		}
		out = append(out, buf[:n]...)
	}
	return out, nil
}

func dtHashOf(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:6])
}

// dtDescribe returns the full node of p: stat, content hash, symlink target
// and xattrs.
func dtDescribe(p string) (*dtNode, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return nil, err
	}
	n := dtStatNode(&st)
	switch n.Type {
	case "file":
		b, err := dtReadAll(p)
		if err != nil {
			return nil, fmt.Errorf("read: %w", err)
		}
		if int64(len(b)) != n.Size {
			n.Hash = fmt.Sprintf("read %d bytes of %d: ", len(b), n.Size)
		}
		n.Hash += dtHashOf(b)
		if len(b) <= 48 {
			n.Data = string(b)
		}
	case "symlink":
		t, err := dtReadlink(p)
		if err != nil {
			return nil, fmt.Errorf("readlink: %w", err)
		}
		n.Target = t
	}
	x, err := dtXattrs(p)
	if err != nil && !errors.Is(err, unix.ENOTSUP) {
		return nil, fmt.Errorf("listxattr: %w", err)
	}
	n.Xattrs = dtFormatXattrs(x)
	return n, nil
}

func dtReadlink(p string) (string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Readlink(p, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// readdirnames lists dir, sorted. It opens with O_NONBLOCK|O_DIRECTORY so
// that a fifo fails with ENOTDIR instead of blocking.
func dtReaddirnames(dir string) ([]string, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	f := os.NewFile(uintptr(fd), dir)
	defer f.Close()
	names, err := f.Readdirnames(-1)
	sort.Strings(names)
	return names, err
}

// dtSnapshotMerged walks a mounted merged tree. Paths are relative to root,
// root itself is ".". Regular files, symlinks and fifos that share an inode
// get Links.
func dtSnapshotMerged(root string) (dtTree, error) {
	t := dtTree{}
	var walk func(rel string) error
	walk = func(rel string) error {
		n, err := dtDescribe(filepath.Join(root, rel))
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		t[rel] = n
		if n.Type != "dir" {
			return nil
		}
		names, err := dtReaddirnames(filepath.Join(root, rel))
		if err != nil {
			return fmt.Errorf("%s: readdir: %w", rel, err)
		}
		for _, name := range names {
			if err := walk(path.Join(rel, name)); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk("."); err != nil {
		return t, err
	}
	t.setLinks()
	return t, nil
}

// setLinks fills Links of non-dirs that share an inode.
func (t dtTree) setLinks() {
	groups := map[[2]uint64][]string{}
	for _, p := range dtSortedKeys(t) {
		n := t[p]
		if n.Type != "dir" && n.Type != "whiteout" {
			groups[n.key] = append(groups[n.key], p)
		}
	}
	for _, g := range groups {
		if len(g) < 2 {
			continue
		}
		for _, p := range g {
			var others []string
			for _, q := range g {
				if q != p {
					others = append(others, q)
				}
			}
			t[p].Links = strings.Join(others, " ")
		}
	}
}

// checkInodes checks inode identity within one mount: names that share an
// inode describe the same file, nlink covers the names seen, and no two dirs
// (nor a dir and a non-dir) share an inode.
func (t dtTree) checkInodes() []string {
	var bad []string
	first := map[[2]uint64]string{}
	for _, p := range dtSortedKeys(t) {
		n := t[p]
		if n.Type == "whiteout" {
			continue
		}
		q, seen := first[n.key]
		if !seen {
			first[n.key] = p
			if n.Links != "" && n.Type == "file" && n.Nlink < uint64(strings.Count(n.Links, " ")+2) {
				bad = append(bad, fmt.Sprintf("%s: nlink=%d but %d names share its inode", p, n.Nlink, strings.Count(n.Links, " ")+2))
			}
			continue
		}
		m := t[q]
		if n.Type == "dir" || m.Type == "dir" {
			bad = append(bad, fmt.Sprintf("%s and %s share inode %d (%s, %s)", q, p, n.key[1], m.Type, n.Type))
			continue
		}
		a, b := *m, *n
		a.Links, b.Links, a.Data, b.Data = "", "", "", ""
		if a.String() != b.String() {
			bad = append(bad, fmt.Sprintf("%s and %s share inode %d but differ:\n    %s\n    %s", q, p, n.key[1], a.String(), b.String()))
		}
	}
	return bad
}

// dtSnapshotUpper walks an upper dir and normalises the whiteout and opaque
// dialects to one form: a whiteout is a node of Type "whiteout" at the
// whited-out name, an opaque dir has Opaque set.
//
//	whiteout: char device 0/0 NAME (kernel, fuse-overlayfs as root);
//	          .wh.NAME (aufs style, fuse-overlayfs unprivileged);
//	          file NAME with xattr trusted.overlay.whiteout or
//	          user.overlay.whiteout (kernel "xattr whiteouts")
//	opaque:   xattr trusted.overlay.opaque=y, user.overlay.opaque=y,
//	          user.fuseoverlayfs.opaque=y; a .wh..wh..opq entry (any type);
//	          fuse-overlayfs also leaves a char 0/0 .wh..opq, taken as a marker
func dtSnapshotUpper(root string) (dtTree, error) {
	t := dtTree{}
	var walk func(rel string) error
	walk = func(rel string) error {
		full := filepath.Join(root, rel)
		name := path.Base(rel)
		dir := path.Dir(rel)
		if rel != "." && (name == ".wh..wh..opq" || name == ".wh..opq") {
			if d := t[dir]; d != nil {
				d.Opaque = true
			}
			return nil
		}
		if rel != "." && strings.HasPrefix(name, ".wh.") {
			t[path.Join(dir, strings.TrimPrefix(name, ".wh."))] = &dtNode{Type: "whiteout"}
			return nil
		}
		n, err := dtDescribe(full)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		x, _ := dtXattrs(full)
		switch {
		case n.Type == "char" && n.Rdev == 0:
			n = &dtNode{Type: "whiteout"}
		case n.Type == "file" && (dtHasKey(x, "trusted.overlay.whiteout") || dtHasKey(x, "user.overlay.whiteout")):
			n = &dtNode{Type: "whiteout"}
		case n.Type == "dir":
			for _, k := range []string{"trusted.overlay.opaque", "user.overlay.opaque", "user.fuseoverlayfs.opaque"} {
				if x[k] == "y" {
					n.Opaque = true
				}
			}
		}
		t[rel] = n
		if n.Type != "dir" {
			return nil
		}
		names, err := dtReaddirnames(full)
		if err != nil {
			return fmt.Errorf("%s: readdir: %w", rel, err)
		}
		for _, name := range names {
			if err := walk(path.Join(rel, name)); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk("."); err != nil {
		return t, err
	}
	t.setLinks()
	return t, nil
}

// dropNoops removes what has no effect from a normalised upper tree, so that
// uppers that differ only in that compare equal: a whiteout with nothing
// beneath it, and the opaque mark of a dir with no lower dir beneath it.
// lower maps the paths of the merged lower layers (as a lowers-only overlay
// mount shows them) to their types.
func (t dtTree) dropNoops(lower map[string]string) {
	// merged reports whether lower entries at p can show through: every
	// proper ancestor is an upper dir, not opaque, over a lower dir.
	merged := func(p string) bool {
		for a := path.Dir(p); a != "."; a = path.Dir(a) {
			n := t[a]
			if n == nil || n.Type != "dir" || n.Opaque || lower[a] != "dir" {
				return false
			}
		}
		return true
	}
	for p, n := range t {
		switch {
		case n.Type == "whiteout" && (lower[p] == "" || !merged(p)):
			delete(t, p)
		case n.Type == "dir" && n.Opaque && (lower[p] != "dir" || !merged(p)):
			n.Opaque = false
		}
	}
}

// resolveMetacopy replaces the content of each regular file of a normalised
// upper tree that carries the metacopy xattr (its data is in a lower layer)
// with the content the merged tree showed at that path, so that a
// metadata-only copy-up and a full one with the same data compare equal.
// A metacopy file that the merged tree does not show keeps a marker.
func (t dtTree) resolveMetacopy(upper string, merged dtTree) {
	for p, n := range t {
		if n.Type != "file" {
			continue
		}
		x, _ := dtXattrs(filepath.Join(upper, p))
		if !dtHasKey(x, "trusted.overlay.metacopy") && !dtHasKey(x, "user.overlay.metacopy") {
			continue
		}
		if m := merged[p]; m != nil && m.Type == "file" {
			n.Hash, n.Data = m.Hash, m.Data
		} else {
			n.Hash, n.Data = "metacopy", ""
		}
	}
}

// dtListTypes maps every path under root ("." for root) to its type.
func dtListTypes(root string) (map[string]string, error) {
	m := map[string]string{}
	var walk func(rel string) error
	walk = func(rel string) error {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(root, rel), &st); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		m[rel] = dtFileType(st.Mode)
		if m[rel] != "dir" {
			return nil
		}
		names, err := dtReaddirnames(filepath.Join(root, rel))
		if err != nil {
			return fmt.Errorf("%s: readdir: %w", rel, err)
		}
		for _, n := range names {
			if err := walk(path.Join(rel, n)); err != nil {
				return err
			}
		}
		return nil
	}
	return m, walk(".")
}

func dtHasKey(m map[string]string, k string) bool {
	_, ok := m[k]
	return ok
}

// dtDiffTrees lists the differences between want (kernel) and got (program
// under test), skipping paths for which skip returns true.
func dtDiffTrees(want, got dtTree, wantName, gotName string, skip func(string) bool) []string {
	paths := map[string]bool{}
	for p := range want {
		paths[p] = true
	}
	for p := range got {
		paths[p] = true
	}
	var diffs []string
	for _, p := range dtSortedKeys(paths) {
		if skip != nil && skip(p) {
			continue
		}
		w, g := want[p], got[p]
		switch {
		case g == nil:
			diffs = append(diffs, fmt.Sprintf("%s: only in %s: %s", p, wantName, w))
		case w == nil:
			diffs = append(diffs, fmt.Sprintf("%s: only in %s: %s", p, gotName, g))
		case w.String() != g.String():
			diffs = append(diffs, fmt.Sprintf("%s:\n    %-7s %s\n    %-7s %s", p, wantName+":", w, gotName+":", g))
		}
	}
	return diffs
}

func (t dtTree) dump() string {
	var b strings.Builder
	for _, p := range dtSortedKeys(t) {
		fmt.Fprintf(&b, "  %-12s %s\n", p, t[p].dumpLine())
	}
	return b.String()
}

// dtErrnoOf maps an error to its errno; nil is 0.
func dtErrnoOf(err error) unix.Errno {
	if err == nil {
		return 0
	}
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return unix.EIO
}

// dropLinkedAliases removes from t, prog's upper, the names that strata
// linked in for a lower hard link copied up through another name, which
// the kernel (index=on) keeps in its index instead: a non-directory that
// kt, the kernel's upper, lacks, one of whose other names kt has, and
// then the directories kt lacks that are left empty. The merged trees,
// compared before, showed the names the same; in the uppers it is a
// difference of format. The Links of what stays are cut to what stays.
func (t dtTree) dropLinkedAliases(kt dtTree, linked map[uint64]bool) {
	for p, n := range t {
		if _, ok := kt[p]; ok || n.Type == "dir" {
			continue
		}
		if linked[n.key[1]] {
			// A name linked to a copy in the links directory (at a
			// copy-up, or when looked up), which the kernel keeps in
			// its index.
			delete(t, p)
			continue
		}
		if n.Links == "" {
			continue
		}
		for _, o := range strings.Split(n.Links, " ") {
			if _, ok := kt[o]; ok {
				delete(t, p)
				break
			}
		}
	}
	for changed := true; changed; {
		changed = false
		for p, n := range t {
			if _, ok := kt[p]; ok || n.Type != "dir" || p == "." {
				continue
			}
			empty := true
			for q := range t {
				if strings.HasPrefix(q, p+"/") {
					empty = false
					break
				}
			}
			if empty {
				delete(t, p)
				changed = true
			}
		}
	}
	for _, n := range t {
		if n.Links == "" {
			continue
		}
		var keep []string
		for _, o := range strings.Split(n.Links, " ") {
			if _, ok := t[o]; ok {
				keep = append(keep, o)
			}
		}
		n.Links = strings.Join(keep, " ")
	}
}

// dropOpaqueBeneathRedirects clears the opaque mark of the directories of
// t, an upper at root, beneath a directory with a redirect: which lower
// entries a mark hides there depends on the redirect, not on the paths
// dropNoops compares, and strata marks a new directory opaque only where a
// lower holds the name, the kernel in any merged parent.
func (t dtTree) dropOpaqueBeneathRedirects(root string) {
	// lowerPath is where the lowers hold the upper directory a (a path
	// relative to root): its redirect moves it, and so do its parents'.
	// A redirect may name the directory's own place (the kernel leaves
	// one on a directory whose rename then failed with ENOTEMPTY): that
	// moves nothing.
	memo := map[string]string{".": "."}
	var lowerPath func(a string) string
	lowerPath = func(a string) string {
		if lp, ok := memo[a]; ok {
			return lp
		}
		lp := path.Join(lowerPath(path.Dir(a)), path.Base(a))
		for _, x := range []string{"trusted.overlay.redirect", "user.overlay.redirect"} {
			buf := make([]byte, 4096)
			if n, err := unix.Lgetxattr(filepath.Join(root, a), x, buf); err == nil {
				if v := string(buf[:n]); strings.HasPrefix(v, "/") {
					lp = path.Clean(v[1:])
				} else {
					lp = path.Join(lowerPath(path.Dir(a)), v)
				}
				break
			}
		}
		memo[a] = lp
		return lp
	}
	for p, n := range t {
		if d := path.Dir(p); n.Opaque && d != "." && lowerPath(d) != d {
			n.Opaque = false
		}
	}
}
