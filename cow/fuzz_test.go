//go:build linux

package cow_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/cow"
	"github.com/strata-fs/strata/ovl"
)

// Fuzzers of the engine that check invariants after every operation:
// nothing outside the upper and work directories changes, the work
// directory is left empty, ReadDir and Lookup agree, errors are errnos,
// and the merged tree is what a model of the operation predicts (an
// operation that fails changes nothing visible).

// ---------------------------------------------------------------------
// Snapshots of real directories.

// How much fzSnapshot records of an entry.
type fzLevel int

const (
	// fzData: type, file data and symlink target.
	fzData fzLevel = iota
	// fzStat: type and what stat tells that must never change in a
	// read-only layer: inode, mode, owner, links, size, device, mtime
	// and ctime. Any change of data or xattrs moves ctime, so this sees
	// them too, for the price of one lstat.
	fzStat
	// fzFull: fzStat, file data, symlink target and every xattr.
	fzFull
)

// fzSnapshot describes every entry under root, root itself excluded, by
// relative path. Entries for which shallow returns true are described by
// their type only and not descended into.
func fzSnapshot(t testing.TB, root string, level fzLevel, shallow func(rel string) bool) map[string]string {
	t.Helper()
	out := make(map[string]string)
	var walk func(rel string)
	walk = func(rel string) {
		ents, err := os.ReadDir(filepath.Join(root, rel))
		if err != nil {
			t.Fatalf("snapshot %s: %v", filepath.Join(root, rel), err)
		}
		for _, de := range ents {
			r := path.Join(rel, de.Name())
			p := filepath.Join(root, r)
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				t.Fatalf("snapshot %s: %v", p, err)
			}
			typ := st.Mode & unix.S_IFMT
			var b strings.Builder
			fmt.Fprintf(&b, "type=%o", typ)
			if shallow != nil && shallow(r) {
				out[r] = b.String()
				continue
			}
			if level >= fzStat {
				b.WriteString(fzStatDesc(&st))
			}
			if level != fzStat {
				switch typ {
				case unix.S_IFREG:
					data, err := os.ReadFile(p)
					if err != nil {
						t.Fatalf("snapshot %s: %v", p, err)
					}
					fmt.Fprintf(&b, " data=%q", data)
				case unix.S_IFLNK:
					target, err := os.Readlink(p)
					if err != nil {
						t.Fatalf("snapshot %s: %v", p, err)
					}
					fmt.Fprintf(&b, " target=%q", target)
				}
			}
			if level == fzFull {
				for _, x := range fzXattrs(p) {
					fmt.Fprintf(&b, " xattr:%s", x)
				}
			}
			out[r] = b.String()
			if typ == unix.S_IFDIR {
				walk(r)
			}
		}
	}
	walk("")
	return out
}

// fzStatDesc is what fzStat records of st after the type.
func fzStatDesc(st *unix.Stat_t) string {
	return fmt.Sprintf(" ino=%d mode=%o owner=%d:%d nlink=%d size=%d rdev=%d mtime=%d.%09d ctime=%d.%09d",
		st.Ino, st.Mode&0o7777, st.Uid, st.Gid, st.Nlink, st.Size, st.Rdev,
		st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
}

// fzXattrs lists p's xattrs (not following a symlink) as name=value,
// sorted.
func fzXattrs(p string) []string {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz == 0 {
		return nil
	}
	buf := make([]byte, sz)
	if sz, err = unix.Llistxattr(p, buf); err != nil {
		return []string{"listxattr error " + err.Error()}
	}
	var out []string
	for _, x := range strings.Split(string(buf[:sz]), "\x00") {
		if x == "" {
			continue
		}
		v := make([]byte, 64<<10)
		n, err := unix.Lgetxattr(p, x, v)
		if err != nil {
			out = append(out, x+" error "+err.Error())
			continue
		}
		out = append(out, fmt.Sprintf("%s=%q", x, v[:n]))
	}
	slices.Sort(out)
	return out
}

// fzDiff describes how got differs from want, "" if not at all.
func fzDiff(want, got map[string]string) string {
	keys := make([]string, 0, len(want)+len(got))
	for k := range want {
		keys = append(keys, k)
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		w, wok := want[k]
		g, gok := got[k]
		switch {
		case !gok:
			fmt.Fprintf(&b, "    missing %s: %s\n", k, w)
		case !wok:
			fmt.Fprintf(&b, "    extra   %s: %s\n", k, g)
		case w != g:
			fmt.Fprintf(&b, "    changed %s:\n      want %s\n      got  %s\n", k, w, g)
		}
	}
	return b.String()
}

// fzErrnoOrReserved reports whether err is what the engine may return: an
// errno (possibly wrapped, as the fs layer's toErrno unwraps it) or
// cow.ErrReservedName.
func fzErrnoOrReserved(err error) bool {
	var errno syscall.Errno
	return errors.As(err, &errno) || errors.Is(err, cow.ErrReservedName)
}

func fzExists(p string) bool {
	var st unix.Stat_t
	return unix.Lstat(p, &st) == nil
}

// fzErrString is err for the operation log.
func fzErrString(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// fzMergedTree walks the merged view as walkEngine does, and checks the
// same: every name ReadDir lists, Lookup finds with the same type and
// inode number; no name is listed twice, none has the ".wh." prefix. It
// returns the tree as path -> type and data (file data, link target).
func fzMergedTree(s *cow.Stack) (map[string]string, []error) {
	out := make(map[string]string)
	var errs []error
	var walk func(dir string, de cow.Entry)
	walk = func(dir string, de cow.Entry) {
		ents, err := s.ReadDir(dir, &de)
		if err != nil {
			errs = append(errs, fmt.Errorf("ReadDir(%q): %w", dir, err))
			return
		}
		seen := make(map[string]bool, len(ents))
		for _, d := range ents {
			rel := path.Join(dir, d.Name)
			if seen[d.Name] {
				errs = append(errs, fmt.Errorf("ReadDir(%q) lists %q twice", dir, d.Name))
				continue
			}
			seen[d.Name] = true
			if strings.HasPrefix(d.Name, ovl.WhiteoutPrefix) {
				errs = append(errs, fmt.Errorf("ReadDir(%q) lists the reserved name %q", dir, d.Name))
			}
			e, err := s.Lookup(dir, &de, d.Name)
			if err != nil {
				errs = append(errs, fmt.Errorf("ReadDir(%q) lists %q, but Lookup gives %w", dir, d.Name, err))
				continue
			}
			if got, want := d.Type, e.Stat.Mode&unix.S_IFMT; got != want {
				errs = append(errs, fmt.Errorf("%s: ReadDir type %o, Lookup type %o", rel, got, want))
			}
			if d.Ino != e.Ino {
				errs = append(errs, fmt.Errorf("%s: ReadDir ino %d, Lookup ino %d (layer %d, lowers %v)", rel, d.Ino, e.Ino, e.Layer, e.Lowers))
			}
			n := treeNode{path: rel, mode: e.Stat.Mode}
			l, lp := s.Layer(e.Layer), rel
			if !e.InUpper() {
				lp = e.Path // where a redirect put it
			}
			switch e.Stat.Mode & unix.S_IFMT {
			case unix.S_IFREG:
				fd, _, err := s.Open(rel, &e, unix.O_RDONLY)
				if err != nil {
					errs = append(errs, fmt.Errorf("open %s: %w", rel, err))
					break
				}
				buf := make([]byte, 256)
				k, err := unix.Read(fd, buf)
				unix.Close(fd)
				if err != nil {
					errs = append(errs, fmt.Errorf("read %s: %w", rel, err))
					break
				}
				n.data = string(buf[:k])
			case unix.S_IFLNK:
				if n.data, err = l.Readlink(lp); err != nil {
					errs = append(errs, fmt.Errorf("readlink %s: %w", rel, err))
				}
			}
			desc := fzNodeDesc(n)
			if x, err := fzEngineXattrs(s, rel, &e); err != nil {
				errs = append(errs, err)
			} else {
				desc = fzDescWith(desc, x)
			}
			out[rel] = desc
			if e.IsDir() {
				walk(rel, e)
			}
		}
	}
	root, err := s.Root()
	if err != nil {
		return nil, []error{fmt.Errorf("Root: %w", err)}
	}
	walk("", root)
	return out, errs
}

func fzNodeDesc(n treeNode) string {
	switch n.mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFREG:
		return fmt.Sprintf("file %q", n.data)
	case unix.S_IFLNK:
		return "symlink -> " + n.data
	case unix.S_IFIFO:
		return "fifo"
	}
	return fmt.Sprintf("mode %o", n.mode)
}

// fzEngineXattrs reads the xattrs of the entry e at rel through the
// engine, as the mount shows them (security.*, an LSM's labels, left out).
func fzEngineXattrs(s *cow.Stack, rel string, e *cow.Entry) (map[string]string, error) {
	names, err := s.Listxattr(rel, e, 0)
	if err != nil {
		return nil, fmt.Errorf("Listxattr(%q): %w", rel, err)
	}
	x := make(map[string]string, len(names))
	for _, n := range names {
		if strings.HasPrefix(n, "security.") {
			continue
		}
		v, err := s.Getxattr(rel, e, 0, n)
		if err != nil {
			return nil, fmt.Errorf("Getxattr(%q, %q) of a listed xattr: %w", rel, n, err)
		}
		x[n] = string(v)
	}
	return x, nil
}

// fzXattrSep starts the xattrs in a tree description.
const fzXattrSep = " xattr:"

// fzDescWith is the description base (fzNodeDesc) with the xattrs x.
func fzDescWith(base string, x map[string]string) string {
	var b strings.Builder
	b.WriteString(base)
	for _, n := range slices.Sorted(maps.Keys(x)) {
		fmt.Fprintf(&b, "%s%s=%q", fzXattrSep, n, x[n])
	}
	return b.String()
}

// fzDescSplit splits a tree description into its fzNodeDesc and its
// xattrs (names and values never hold fzXattrSep in FuzzOps).
func fzDescSplit(desc string) (base string, x map[string]string) {
	parts := strings.Split(desc, fzXattrSep)
	x = make(map[string]string, len(parts)-1)
	for _, kv := range parts[1:] {
		n, v, _ := strings.Cut(kv, "=")
		uv, err := strconv.Unquote(v)
		if err != nil {
			panic("bad xattr in tree description " + desc)
		}
		x[n] = uv
	}
	return parts[0], x
}

// fzSubtree returns the paths of tree at or beneath rel.
func fzSubtree(tree map[string]string, rel string) []string {
	var out []string
	for p := range tree {
		if p == rel || strings.HasPrefix(p, rel+"/") {
			out = append(out, p)
		}
	}
	return out
}

func fzClone(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// fzWorkEntries lists what the work directory holds.
func fzWorkEntries(t testing.TB, work string) []string {
	t.Helper()
	ents, err := os.ReadDir(work)
	if err != nil {
		t.Fatalf("read work dir: %v", err)
	}
	var names []string
	for _, e := range ents {
		if e.Name() != "strata.links" { // the copies of lower hard links, kept
			names = append(names, e.Name())
		}
	}
	return names
}

// ---------------------------------------------------------------------
// FuzzOps

// The pools operations draw their paths from: every name and directory
// exists somewhere in the fixture, or is made by the operations (x), so
// that most operations hit existing entries of every kind.
var (
	fzNames = [8]string{"a", "b", "d", "o", "sl", "w", "x", "sub"}
	// Parents: merged dirs, an opaque dir, a dir merged over a lower
	// non-directory, a dir made later (x), a dir hidden by a whiteout
	// (w), and two non-directories (a symlink out of the layer, a file).
	fzDirs   = [8]string{"", "d", "o", "d/sub", "x", "w", "sl", "a"}
	fzModes  = [8]uint32{0o644, 0o600, 0o755, 0o4755, 0o2775, 0o1777, 0, 0o444}
	fzFlags  = [3]uint{0, unix.RENAME_NOREPLACE, unix.RENAME_EXCHANGE}
	fzOpName = [8]string{"create", "mkdir", "mknod-fifo", "symlink", "link", "remove", "rename", "attr"}

	// Pools of the attr operation (see fzAttr). The xattrs: one of the
	// lower file a, and names in the overlay's own namespaces, which
	// must be stored escaped: raw, user.overlay.whiteout would turn an
	// empty file into a whiteout, trusted.overlay.opaque a directory
	// opaque.
	fzXattrNames  = [4]string{"user.k", "trusted.overlay.opaque", "user.overlay.whiteout", "trusted.t"}
	fzXattrValues = [2]string{"y", ""}
	fzOwners      = [4][2]uint32{{0, 0}, {1000, 1000}, {0, 1000}, {1000, 0}}
	fzMtimes      = [4]unix.Timespec{{Sec: 0}, {Sec: 1e9, Nsec: 1}, {Sec: 2e9, Nsec: 999999999}, {Sec: 12345, Nsec: 500}}
	fzSizes       = [4]int64{0, 1, 5, 200}
)

// The attr operation's argument (5 bits) picks what it changes, through
// the engine's Setattr and xattr methods, as the fs layer calls them:
// below fzAttrSetxattr, chmod to fzModes[arg]; then setxattr of
// fzXattrNames[arg&3] to fzXattrValues[arg>>2&1]; removexattr of
// fzXattrNames[arg&3]; chown to fzOwners[arg&3]; utimes to
// fzMtimes[arg&3]; truncate to fzSizes[arg&3].
const (
	fzAttrSetxattr    = 8
	fzAttrRemovexattr = 16
	fzAttrChown       = 20
	fzAttrUtimes      = 24
	fzAttrTruncate    = 28
)

// fzTargets are symlink targets; fzAbsSentinel is replaced by the
// absolute path of the fixture's sentinel directory.
const fzAbsSentinel = "<sentinel>"

var fzTargets = [...]string{"a", "../sentinel", "../../sentinel/secret", "/", "x/y", fzAbsSentinel, "..", ""}

const fzMaxOps = 40

// fzOp encodes one operation of FuzzOps for seeds: three bytes, the
// operation and its argument (mode, flags, target), then two paths as a
// parent index in fzDirs and a name index in fzNames. (Path bytes of 64
// and more pick from the merged tree instead: see pick.)
func fzOp(op, arg int, dirName ...int) []byte {
	p := make([]int, 4)
	copy(p, dirName)
	return []byte{byte(op | arg<<3), byte(p[0]<<3 | p[1]), byte(p[2]<<3 | p[3])}
}

func fzSeq(ops ...[]byte) []byte { return bytes.Join(ops, nil) }

// Indexes into the pools, for readable seeds.
const (
	nA, nB, nD, nO, nSl, nW, nX, nSub                = 0, 1, 2, 3, 4, 5, 6, 7
	dRoot, dD, dO, dDSub, dX, dW, dSl, dA            = 0, 1, 2, 3, 4, 5, 6, 7
	opCreate, opMkdir, opFifo, opSymlink, opLink     = 0, 1, 2, 3, 4
	opRemove, opRename, opChmod                      = 5, 6, 7
	flNone, flNoReplace, flExchange                  = 0, 1, 2
	mode644, mode600, mode755, mode4755, mode2775    = 0, 1, 2, 3, 4
	tgtA, tgtSentinel, tgtSecret, tgtRoot, tgtDangle = 0, 1, 2, 3, 4
)

// fzOpsLowers are the two lower layers of FuzzOps, top first.
func fzOpsLowers() [2][]fixtureEntry {
	return [2][]fixtureEntry{{
		file("a", "a1").with("user.k", "v1"),
		dir("d"),
		file("d/a", "da1"),
		dir("d/sub"),
		file("d/sub/b", "dsb1"),
		whiteout("d/w"),
		ociWhiteout("d/b"),
		dir("o").with(ovl.XattrOpaque, "y"),
		file("o/a", "oa1"),
		symlink("sl", "../sentinel"),
		whiteout("w"),
	}, {
		file("a", "a2"),
		file("b", "b2"),
		// sub: a hard link of b, made after the layer
		file("d/b", "db2"),
		file("d/w", "dw2"),
		file("d/sub", "dsub2"), // beneath lower1's directory d/sub
		file("d/x/a", "dxa2"),
		file("o/b", "ob2"),
		dir("o/sub"),
		file("w/a", "wa2"),
		file("sl/a", "sla2"),
	}}
}

// fzOpsFixture is the state of one FuzzOps run.
type fzOpsFixture struct {
	t           *testing.T
	root        string // everything of the run is in here
	upper, work string
	lowers      []string
	s           *cow.Stack
	outside     map[string]string // snapshot of root but upper and work (fzStat)
	outsideSt   map[string]string // fzStatDesc of root and of each non-shallow path of outside
	outsideFull map[string]string // the same, fzFull
	tree        map[string]string // the merged tree after the last op
	log         []string
}

func newFzOpsFixture(t *testing.T) *fzOpsFixture {
	root, err := os.MkdirTemp("", "strata-fuzz-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	z := &fzOpsFixture{t: t, root: root, upper: filepath.Join(root, "upper"), work: filepath.Join(root, "work")}
	lowers := fzOpsLowers()
	for i, entries := range lowers {
		d := filepath.Join(root, fmt.Sprintf("lower%d", i+1))
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		buildLayer(t, d, entries)
		z.lowers = append(z.lowers, d)
	}
	if err := os.Link(filepath.Join(z.lowers[1], "b"), filepath.Join(z.lowers[1], "sub")); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{z.upper, z.work, filepath.Join(root, "sentinel")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The upper starts with a merged directory holding an OCI whiteout.
	buildLayer(t, z.upper, []fixtureEntry{dir("d"), ociWhiteout("d/a")})
	buildLayer(t, filepath.Join(root, "sentinel"), []fixtureEntry{file("secret", "s"), file("inner/f", "f")})
	z.s, err = cow.New(cow.Options{Lower: z.lowers, Upper: z.upper, Work: z.work})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { z.s.Close() })
	z.outside = z.snapOutside()
	z.outsideSt = z.statOutside()
	z.outsideFull = fzSnapshot(t, root, fzFull, fzUpperOrWork)
	var errs []error
	z.tree, errs = fzMergedTree(z.s)
	if len(errs) > 0 {
		t.Fatalf("fixture: %v\n%s", errs, dumpStack(z.s))
	}
	return z
}

func (z *fzOpsFixture) snapOutside() map[string]string {
	return fzSnapshot(z.t, z.root, fzStat, fzUpperOrWork)
}

// statOutside stats root and every path of z.outside but upper and
// work: a quick check that nothing changed outside them, since any change
// of a directory's entries moves its mtime and ctime, and any change of
// an entry's data or xattrs its ctime.
func (z *fzOpsFixture) statOutside() map[string]string {
	out := make(map[string]string, len(z.outside)+1)
	for p := range z.outside {
		if fzUpperOrWork(p) {
			continue
		}
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(z.root, p), &st); err != nil {
			out[p] = err.Error()
			continue
		}
		out[p] = fzStatDesc(&st)
	}
	var st unix.Stat_t
	if err := unix.Lstat(z.root, &st); err != nil {
		out["."] = err.Error()
	} else {
		out["."] = fzStatDesc(&st)
	}
	return out
}

func fzUpperOrWork(rel string) bool { return rel == "upper" || rel == "work" }

// failf stops the run with the operations done so far and the trees.
func (z *fzOpsFixture) failf(format string, args ...any) {
	z.t.Helper()
	msg := fmt.Sprintf(format, args...)
	z.t.Fatalf("%s\noperations:\n  %s\nmerged tree now:\n%supper now:\n%s", msg,
		strings.Join(z.log, "\n  "), dumpStack(z.s), fzDumpSnapshot(fzSnapshot(z.t, z.upper, fzData, nil)))
}

func fzDumpSnapshot(m map[string]string) string {
	keys := slices.Sorted(maps.Keys(m))
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "  %s: %s\n", k, m[k])
	}
	if len(keys) == 0 {
		b.WriteString("  (empty)\n")
	}
	return b.String()
}

// parentOf resolves the merged directory dir as the fs layer would: it
// must exist; ok false means the kernel would not get as far as the
// operation. A non-directory resolves (isDir false): the engine is
// called anyway and must refuse.
func (z *fzOpsFixture) parentOf(dir string) (cow.Entry, bool) {
	de, err := lookupPath(z.s, dir)
	if err != nil {
		z.checkErr("lookup "+dir, err)
		return de, false
	}
	return de, true
}

func (z *fzOpsFixture) checkErr(what string, err error) {
	z.t.Helper()
	if err != nil && !fzErrnoOrReserved(err) {
		z.failf("%s: error %q (%T) is neither an errno nor cow.ErrReservedName", what, err, err)
	}
}

// lookupName resolves name in dir: the entry, or nil if absent.
func (z *fzOpsFixture) lookupName(dir string, de cow.Entry, name string) (*cow.Entry, bool) {
	e, err := z.s.Lookup(dir, &de, name)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return nil, true
	}
	if err != nil {
		z.checkErr("lookup "+path.Join(dir, name), err)
		return nil, false
	}
	return &e, true
}

// pick decodes a path byte into a parent directory and a name. Below 64
// it indexes the pools: parent fzDirs[b>>3], name fzNames[b&7]. From 64
// on it picks from the current merged tree, so that operations keep
// hitting what exists: with entry, any entry of the tree; else a
// directory of the tree (or the root) and a name of the pool.
func (z *fzOpsFixture) pick(b byte, entry bool) (dir, name string) {
	if b < 64 || len(z.tree) == 0 {
		return fzDirs[b>>3&7], fzNames[b&7]
	}
	if entry {
		keys := slices.Sorted(maps.Keys(z.tree))
		d, n := path.Split(keys[int(b-64)%len(keys)])
		return strings.TrimSuffix(d, "/"), n
	}
	dirs := []string{""}
	for _, p := range slices.Sorted(maps.Keys(z.tree)) {
		if base, _ := fzDescSplit(z.tree[p]); base == "dir" {
			dirs = append(dirs, p)
		}
	}
	return dirs[int(b>>3-8)%len(dirs)], fzNames[b&7]
}

// step runs one operation and checks every invariant after it.
func (z *fzOpsFixture) step(i int, b []byte) {
	z.t.Helper()
	op, arg := int(b[0]&7), int(b[0]>>3)
	// The first path is an existing entry for the operations that take
	// one, the second always a name in a directory.
	existing := op == opLink || op == opRemove || op == opRename || op == opChmod
	dir1, name1 := z.pick(b[1], existing)
	dir2, name2 := z.pick(b[2], false)
	rel1, rel2 := path.Join(dir1, name1), path.Join(dir2, name2)
	prev := z.tree
	want := prev // what the merged tree must be after the op
	var post []func()

	desc := fmt.Sprintf("%d: %s", i, fzOpName[op])
	var err error
	ran := false
	switch op {
	case opCreate, opMkdir, opFifo, opSymlink:
		de, ok := z.parentOf(dir1)
		if !ok {
			desc += " " + rel1 + ": parent absent, skipped"
			break
		}
		if e, ok := z.lookupName(dir1, de, name1); !ok || e != nil {
			desc += " " + rel1 + ": exists, skipped"
			break
		}
		ran = true
		var e cow.Entry
		var nodeDesc string
		switch op {
		case opCreate:
			mode := fzModes[arg%len(fzModes)]
			content := fmt.Sprintf("c%d", i)
			desc += fmt.Sprintf(" %s mode %o", rel1, mode)
			var fd int
			fd, e, err = z.s.Create(dir1, name1, unix.O_WRONLY, mode, cow.Owner{})
			if err == nil {
				_, werr := unix.Write(fd, []byte(content))
				unix.Close(fd)
				if werr != nil {
					z.failf("%s: write to the created file: %v", desc, werr)
				}
			}
			nodeDesc = fmt.Sprintf("file %q", content)
		case opMkdir:
			mode := fzModes[arg%len(fzModes)] | 0o700
			desc += fmt.Sprintf(" %s mode %o", rel1, mode)
			e, err = z.s.Mkdir(dir1, name1, mode, cow.Owner{})
			nodeDesc = "dir"
		case opFifo:
			desc += " " + rel1
			e, err = z.s.Mknod(dir1, name1, unix.S_IFIFO|0o644, 0, cow.Owner{})
			nodeDesc = "fifo"
		case opSymlink:
			target := fzTargets[arg%len(fzTargets)]
			if target == fzAbsSentinel {
				target = filepath.Join(z.root, "sentinel")
			}
			desc += fmt.Sprintf(" %s -> %q", rel1, target)
			e, err = z.s.Symlink(dir1, name1, target, cow.Owner{})
			nodeDesc = "symlink -> " + target
		}
		if err == nil {
			if !de.IsDir() {
				z.failf("%s: succeeded in a parent that is not a directory (mode %o)", desc, de.Stat.Mode)
			}
			want = fzClone(prev)
			want[rel1] = nodeDesc
			post = append(post, func() { z.checkSameEntry(desc, rel1, e) })
		}
	case opLink:
		desc += " " + rel1 + " to " + rel2
		oe, err1 := lookupPath(z.s, rel1)
		z.checkErr("lookup "+rel1, err1)
		de, ok := z.parentOf(dir2)
		if err1 != nil || !ok {
			desc += ": absent, skipped"
			break
		}
		if oe.IsDir() {
			desc += ": directory, skipped (EPERM)"
			break
		}
		if e, ok := z.lookupName(dir2, de, name2); !ok || e != nil {
			desc += ": target exists, skipped"
			break
		}
		ran = true
		var e cow.Entry
		e, err = z.s.Link(rel1, &oe, dir2, name2)
		if err == nil {
			if !de.IsDir() {
				z.failf("%s: succeeded in a parent that is not a directory (mode %o)", desc, de.Stat.Mode)
			}
			want = fzClone(prev)
			want[rel2] = prev[rel1]
			post = append(post, func() {
				z.checkSameEntry(desc, rel2, e)
				a, errA := lookupPath(z.s, rel1)
				b, errB := lookupPath(z.s, rel2)
				if errA != nil || errB != nil {
					z.failf("%s: lookup after link: %v, %v", desc, errA, errB)
				}
				if a.Ino != b.Ino || a.Stat.Ino != b.Stat.Ino || a.Layer != b.Layer {
					z.failf("%s: the two names are not one inode: %s ino %d (st_ino %d, layer %d), %s ino %d (st_ino %d, layer %d)",
						desc, rel1, a.Ino, a.Stat.Ino, a.Layer, rel2, b.Ino, b.Stat.Ino, b.Layer)
				}
			})
		}
	case opRemove:
		desc += " " + rel1
		de, ok := z.parentOf(dir1)
		if !ok || !de.IsDir() {
			desc += ": parent absent, skipped"
			break
		}
		e, ok := z.lookupName(dir1, de, name1)
		if !ok || e == nil {
			desc += ": absent, skipped"
			break
		}
		ran = true
		err = z.s.Remove(dir1, &de, name1, e)
		if err == nil {
			if len(fzSubtree(prev, rel1)) > 1 {
				z.failf("%s: removed a non-empty directory", desc)
			}
			want = fzClone(prev)
			delete(want, rel1)
		}
	case opRename:
		flags := fzFlags[arg%len(fzFlags)]
		desc += fmt.Sprintf(" %s to %s flags %#x", rel1, rel2, flags)
		ode, ok1 := z.parentOf(dir1)
		nde, ok2 := z.parentOf(dir2)
		if !ok1 || !ok2 || !ode.IsDir() || !nde.IsDir() {
			desc += ": parent absent, skipped"
			break
		}
		oe, ok := z.lookupName(dir1, ode, name1)
		if !ok || oe == nil {
			desc += ": absent, skipped"
			break
		}
		ne, ok := z.lookupName(dir2, nde, name2)
		if !ok {
			desc += ": skipped"
			break
		}
		// What the VFS decides before the filesystem is asked.
		switch {
		case rel1 == rel2 || (ne != nil && ne.Ino == oe.Ino):
			desc += ": same inode, skipped"
		case strings.HasPrefix(rel2, rel1+"/"), strings.HasPrefix(rel1, rel2+"/"):
			desc += ": into itself, skipped"
		default:
			ran = true
			err = z.s.Rename(dir1, &ode, name1, oe, dir2, &nde, name2, ne, flags)
		}
		if ran && err == nil {
			want = fzClone(prev)
			oldSub := fzSubtree(prev, rel1)
			newSub := fzSubtree(prev, rel2)
			for _, p := range oldSub {
				delete(want, p)
			}
			for _, p := range newSub {
				delete(want, p)
			}
			for _, p := range oldSub {
				want[rel2+strings.TrimPrefix(p, rel1)] = prev[p]
			}
			if flags == unix.RENAME_EXCHANGE {
				for _, p := range newSub {
					want[rel1+strings.TrimPrefix(p, rel2)] = prev[p]
				}
			}
		}
	case opChmod:
		e, err1 := lookupPath(z.s, rel1)
		z.checkErr("lookup "+rel1, err1)
		if err1 != nil {
			desc += " " + rel1 + ": absent, skipped"
			break
		}
		if arg >= fzAttrSetxattr {
			ran, err = z.attr(&desc, arg, rel1, e, prev, &want, &post)
			break
		}
		mode := fzModes[arg%len(fzModes)]
		desc += fmt.Sprintf(" %s mode %o", rel1, mode)
		ran = true
		isLink := e.Stat.Mode&unix.S_IFMT == unix.S_IFLNK
		err = z.s.Setattr(rel1, &e, cow.SetAttr{Mode: &mode}, -1)
		if isLink && err == unix.EOPNOTSUPP {
			err = nil // as lchmod(2); the symlink was copied up
		}
		if err == nil && !e.InUpper() {
			z.failf("%s: Setattr succeeded but the entry is in layer %d", desc, e.Layer)
		}
		if err == nil && !isLink {
			post = append(post, func() {
				got, err := lookupPath(z.s, rel1)
				if err != nil {
					z.failf("%s: lookup after chmod: %v", desc, err)
				}
				if !got.InUpper() || got.Stat.Mode&0o7777 != mode {
					z.failf("%s: after chmod: layer %d, mode %o", desc, got.Layer, got.Stat.Mode&0o7777)
				}
			})
		}
	}
	if ran {
		desc += " = " + fzErrString(err)
	}
	z.log = append(z.log, desc)
	if !ran {
		// Only lookups ran: the merged tree cannot have changed unless
		// something was written, which the cheap checks see.
		z.checkOutside()
		return
	}
	z.checkErr(fzOpName[op], err)
	z.checkInvariants(want)
	for _, fn := range post {
		fn()
	}
}

// attr runs the attr operation arg >= fzAttrSetxattr (see fzAttrSetxattr)
// on the existing entry e at rel. It sets *want to the merged tree the
// operation must leave and adds to *post the checks of what the tree
// does not show (owner, mtime).
func (z *fzOpsFixture) attr(desc *string, arg int, rel string, e cow.Entry, prev map[string]string, want *map[string]string, post *[]func()) (ran bool, err error) {
	z.t.Helper()
	typ := e.Stat.Mode & unix.S_IFMT
	// change applies fn to the description of every name of the entry's
	// inode once the operation has succeeded: upper hard links share the
	// change, the other names of a lower hard link that the copy-up
	// broke do not.
	change := func(fn func(base string, x map[string]string) string) {
		w := fzClone(prev)
		for p := range prev {
			if p != rel {
				pe, err := lookupPath(z.s, p)
				if err != nil || !pe.InUpper() || !e.InUpper() || pe.Stat.Ino != e.Stat.Ino || pe.IsDir() {
					continue
				}
			}
			base, x := fzDescSplit(prev[p])
			w[p] = fn(base, x)
		}
		*want = w
	}
	switch {
	case arg < fzAttrRemovexattr:
		name, value := fzXattrNames[arg&3], fzXattrValues[arg>>2&1]
		*desc += fmt.Sprintf(" setxattr %s %s=%q", rel, name, value)
		err = z.s.Setxattr(rel, &e, 0, name, []byte(value), 0)
		if err == nil {
			change(func(base string, x map[string]string) string {
				x[name] = value
				return fzDescWith(base, x)
			})
		}
	case arg < fzAttrChown:
		name := fzXattrNames[arg&3]
		*desc += fmt.Sprintf(" removexattr %s %s", rel, name)
		wasUpper := e.InUpper()
		err = z.s.Removexattr(rel, &e, 0, name)
		if err == nil {
			change(func(base string, x map[string]string) string {
				if _, ok := x[name]; !ok {
					z.failf("%s: removed an xattr the entry did not show", *desc)
				}
				delete(x, name)
				return fzDescWith(base, x)
			})
		}
		if errors.Is(err, unix.ENODATA) && !wasUpper && e.InUpper() {
			z.failf("%s: ENODATA, yet the entry was copied up", *desc)
		}
	case arg < fzAttrUtimes:
		o := fzOwners[arg&3]
		*desc += fmt.Sprintf(" %s owner %d:%d", rel, o[0], o[1])
		err = z.s.Setattr(rel, &e, cow.SetAttr{Uid: &o[0], Gid: &o[1]}, -1)
		if err == nil {
			*post = append(*post, func() {
				got, err := lookupPath(z.s, rel)
				if err != nil || !got.InUpper() || got.Stat.Uid != o[0] || got.Stat.Gid != o[1] {
					z.failf("%s: after chown: layer %d, owner %d:%d, %v", *desc, got.Layer, got.Stat.Uid, got.Stat.Gid, err)
				}
			})
		}
	case arg < fzAttrTruncate:
		mt := fzMtimes[arg&3]
		*desc += fmt.Sprintf(" %s mtime %d.%09d", rel, mt.Sec, mt.Nsec)
		err = z.s.Setattr(rel, &e, cow.SetAttr{Mtime: &mt}, -1)
		if err == nil {
			*post = append(*post, func() {
				got, err := lookupPath(z.s, rel)
				if err != nil || !got.InUpper() || got.Stat.Mtim != mt {
					z.failf("%s: after utimes: layer %d, mtime %d.%09d, %v", *desc, got.Layer, got.Stat.Mtim.Sec, got.Stat.Mtim.Nsec, err)
				}
			})
		}
	default:
		size := fzSizes[arg&3]
		*desc += fmt.Sprintf(" truncate %s to %d", rel, size)
		if typ != unix.S_IFREG {
			*desc += ": not a file, skipped" // the VFS refuses
			return false, nil
		}
		err = z.s.Setattr(rel, &e, cow.SetAttr{Size: &size}, -1)
		if err == nil {
			change(func(base string, x map[string]string) string {
				data, err := strconv.Unquote(strings.TrimPrefix(base, "file "))
				if err != nil {
					z.failf("%s: bad description %q", *desc, base)
				}
				data += strings.Repeat("\x00", max(0, int(size)-len(data)))
				return fzDescWith(fmt.Sprintf("file %q", data[:size]), x)
			})
		}
	}
	if err == nil && !e.InUpper() {
		z.failf("%s: succeeded but the entry is in layer %d", *desc, e.Layer)
	}
	return true, err
}

// checkSameEntry checks that the entry an operation returned is the one
// a lookup finds.
func (z *fzOpsFixture) checkSameEntry(desc, rel string, e cow.Entry) {
	z.t.Helper()
	got, err := lookupPath(z.s, rel)
	if err != nil {
		z.failf("%s: lookup of the new entry: %v", desc, err)
	}
	if got.Ino != e.Ino || got.Stat.Ino != e.Stat.Ino || got.Layer != e.Layer || got.Stat.Mode&unix.S_IFMT != e.Stat.Mode&unix.S_IFMT {
		z.failf("%s: the operation returned ino %d (st_ino %d, layer %d, mode %o), lookup finds ino %d (st_ino %d, layer %d, mode %o)",
			desc, e.Ino, e.Stat.Ino, e.Layer, e.Stat.Mode, got.Ino, got.Stat.Ino, got.Layer, got.Stat.Mode)
	}
}

// checkOutside checks that nothing outside upper and work changed and
// that work is empty.
func (z *fzOpsFixture) checkOutside() {
	z.t.Helper()
	if st := z.statOutside(); !maps.Equal(st, z.outsideSt) {
		d := fzDiff(z.outside, z.snapOutside())
		if d == "" {
			d = fzDiff(z.outsideSt, st)
		}
		z.failf("something outside the upper and work directories changed (lower layers or sentinel):\n%s", d)
	}
	if w := fzWorkEntries(z.t, z.work); len(w) > 0 {
		z.failf("work dir holds %q", w)
	}
}

// checkInvariants checks, after an operation, what must hold after any:
// nothing outside upper and work changed, work is empty, the merged view
// is consistent and is want.
func (z *fzOpsFixture) checkInvariants(want map[string]string) {
	z.t.Helper()
	z.checkOutside()
	if err := fzCheckUpperFormat(z.upper); err != nil {
		z.failf("upper layer: %v", err)
	}
	tree, errs := fzMergedTree(z.s)
	if len(errs) > 0 {
		z.failf("merged view inconsistent: %v", errors.Join(errs...))
	}
	if d := fzDiff(want, tree); d != "" {
		z.failf("merged tree is not what the last operation should leave:\n%s", d)
	}
	z.tree = tree
}

// checkEnd checks, after the last operation, the data and xattrs of
// everything outside upper and work (which the checks after each
// operation see through ctime), and reopens the stack.
func (z *fzOpsFixture) checkEnd() {
	z.t.Helper()
	if d := fzDiff(z.outsideFull, fzSnapshot(z.t, z.root, fzFull, fzUpperOrWork)); d != "" {
		z.failf("something outside the upper and work directories changed (lower layers or sentinel):\n%s", d)
	}
	z.checkReopen()
}

// fzCheckUpperFormat checks the upper directory for states no operation
// may leave: an OCI whiteout file ".wh.x" beside a real x (the stale
// whiteout would delete x again once x is moved or removed), and an
// entry of the work directory's temporary names.
func fzCheckUpperFormat(upper string) error {
	var errs []error
	var walk func(rel string)
	walk = func(rel string) {
		ents, err := os.ReadDir(filepath.Join(upper, rel))
		if err != nil {
			errs = append(errs, err)
			return
		}
		names := make(map[string]os.DirEntry, len(ents))
		for _, de := range ents {
			names[de.Name()] = de
		}
		for _, de := range ents {
			n := de.Name()
			p := path.Join(rel, n)
			if strings.HasPrefix(n, "#strata.") {
				errs = append(errs, fmt.Errorf("%s: a temporary name of the work directory", p))
			}
			if x, ok := strings.CutPrefix(n, ovl.WhiteoutPrefix); ok && n != ovl.OpaqueMarker {
				if real, ok := names[x]; ok {
					if info, err := real.Info(); err == nil && !(info.Mode()&os.ModeCharDevice != 0) {
						errs = append(errs, fmt.Errorf("%s: an OCI whiteout beside the real entry %s", p, x))
					}
				}
			}
			if de.IsDir() {
				walk(p)
			}
		}
	}
	walk("")
	return errors.Join(errs...)
}

// checkReopen opens the layers again, as a remount does, and checks that
// the new stack shows the same tree with the same inode numbers.
func (z *fzOpsFixture) checkReopen() {
	z.t.Helper()
	inos := make(map[string]uint64, len(z.tree))
	for p := range z.tree {
		e, err := lookupPath(z.s, p)
		if err != nil {
			z.failf("lookup %s: %v", p, err)
		}
		inos[p] = e.Ino
	}
	s, err := cow.New(cow.Options{Lower: z.lowers, Upper: z.upper, Work: z.work})
	if err != nil {
		z.failf("reopen: %v", err)
	}
	defer s.Close()
	tree, errs := fzMergedTree(s)
	if len(errs) > 0 {
		z.failf("after reopening, merged view inconsistent: %v", errors.Join(errs...))
	}
	if d := fzDiff(z.tree, tree); d != "" {
		z.failf("after reopening, another merged tree:\n%s", d)
	}
	for p, ino := range inos {
		e, err := lookupPath(s, p)
		if err != nil {
			z.failf("after reopening, lookup %s: %v", p, err)
		}
		if e.Ino != ino {
			z.failf("after reopening, %s has ino %d, was %d", p, e.Ino, ino)
		}
	}
}

// fzLimitMinimize bounds the time the fuzzing engine spends minimizing
// one input, unless the command line sets -fuzzminimizetime. An execution
// here takes tens of milliseconds (a fixture on disk, a walk of the
// merged tree after every operation), and minimizing an input of a few
// dozen bytes takes thousands of them: with the default of 60s, every new
// interesting input would stall a worker for a minute, longer than a
// whole short run (make fuzz). A second keeps the workers exploring; a
// failure is readable unminimized, since it lists the operations. Must be
// called before f.Fuzz.
func fzLimitMinimize() {
	const name = "test.fuzzminimizetime"
	set := false
	flag.Visit(func(fl *flag.Flag) { set = set || fl.Name == name })
	if !set && flag.Lookup(name) != nil {
		flag.Set(name, "1s")
	}
}

// FuzzOps runs a short sequence of operations on a fixed two-layer
// fixture and checks invariants after each; see step and checkInvariants.
func FuzzOps(f *testing.F) {
	needRoot(f, "kernel whiteouts and trusted.* xattrs in the fixture")
	// Whiteouts: remove lower files and dirs, make dirs over whiteouts.
	f.Add(fzSeq(
		fzOp(opRemove, 0, dRoot, nA),
		fzOp(opCreate, mode600, dRoot, nA),
		fzOp(opMkdir, mode755, dRoot, nW),
		fzOp(opCreate, mode644, dW, nA),
		fzOp(opRemove, 0, dW, nA),
		fzOp(opRemove, 0, dRoot, nW),
		fzOp(opMkdir, mode755, dRoot, nW),
		fzOp(opCreate, mode644, dD, nA), // over an OCI whiteout
		fzOp(opRemove, 0, dD, nA),
		fzOp(opRemove, 0, dDSub, nB),
		fzOp(opRemove, 0, dD, nSub),
		fzOp(opMkdir, mode2775, dD, nSub),
		fzOp(opFifo, 0, dDSub, nA),
		fzOp(opRemove, 0, dO, nA),
		fzOp(opRemove, 0, dRoot, nO),
		fzOp(opCreate, mode644, dRoot, nO),
	))
	// Renames of every flavour, over lower files, whiteouts and dirs.
	f.Add(fzSeq(
		fzOp(opRename, flNone, dD, nA, dRoot, nX),
		fzOp(opRename, flNone, dRoot, nX, dRoot, nB),
		fzOp(opRename, flExchange, dRoot, nA, dRoot, nSub),
		fzOp(opRename, flNoReplace, dRoot, nA, dRoot, nW),
		fzOp(opRename, flNone, dRoot, nD, dRoot, nX),
		fzOp(opMkdir, mode755, dRoot, nX),
		fzOp(opCreate, mode644, dX, nA),
		fzOp(opRename, flNone, dRoot, nX, dRoot, nO),
		fzOp(opRemove, 0, dO, nA),
		fzOp(opRemove, 0, dO, nB),
		fzOp(opRename, flNone, dRoot, nO, dRoot, nX),
		fzOp(opMkdir, mode755, dRoot, nO),
		fzOp(opRename, flExchange, dRoot, nO, dRoot, nX),
		fzOp(opRename, flNone, dD, nW, dRoot, nW),
		fzOp(opRename, flNone, dRoot, nSl, dD, nB),
	))
	// Upper directories moved onto names the lowers hold directories
	// of (they must turn opaque), exchanged with them.
	f.Add(fzSeq(
		fzOp(opRemove, 0, dO, nA),
		fzOp(opMkdir, mode755, dRoot, nX),
		fzOp(opRename, flNone, dRoot, nX, dRoot, nO),
		fzOp(opMkdir, mode755, dRoot, nX),
		fzOp(opRename, flExchange, dRoot, nX, dRoot, nO),
		fzOp(opRemove, 0, dRoot, nW),
		fzOp(opMkdir, mode755, dRoot, nW),
		fzOp(opRemove, 0, dRoot, nW),
		fzOp(opRename, flNone, dRoot, nO, dRoot, nW),
		fzOp(opRemove, 0, dD, nA),
		fzOp(opRemove, 0, dDSub, nB),
		fzOp(opRemove, 0, dD, nSub),
		fzOp(opMkdir, mode755, dRoot, nSub),
		fzOp(opRename, flNone, dRoot, nSub, dD, nSub),
		fzOp(opRename, flNone, dRoot, nX, dD, nSub),
	))
	// Links, copy-ups and chmods, hard links of the lower.
	f.Add(fzSeq(
		fzOp(opLink, 0, dRoot, nB, dD, nB),
		fzOp(opChmod, mode4755, dRoot, nSub),
		fzOp(opLink, 0, dRoot, nSub, dRoot, nX),
		fzOp(opRemove, 0, dRoot, nB),
		fzOp(opChmod, mode600, dD, nSub),
		fzOp(opChmod, mode755, dRoot, nSl),
		fzOp(opLink, 0, dRoot, nSl, dO, nB),
		fzOp(opChmod, mode755, dD, nX),
		fzOp(opRemove, 0, dD, nX),
		fzOp(opRemove, 0, dDSub, nB),
		fzOp(opRename, flNone, dD, nSub, dD, nX),
		fzOp(opLink, 0, dD, nA, dRoot, nW),
	))
	// Everything in non-directories and in a symlink out of the layer.
	f.Add(fzSeq(
		fzOp(opCreate, mode644, dSl, nA),
		fzOp(opMkdir, mode755, dSl, nX),
		fzOp(opFifo, 0, dA, nX),
		fzOp(opSymlink, tgtSentinel, dRoot, nX),
		fzOp(opCreate, mode644, dX, nA),
		fzOp(opChmod, mode755, dRoot, nSl),
		fzOp(opCreate, mode644, dSl, nB),
		fzOp(opSymlink, tgtSecret, dSl, nX),
		fzOp(opRename, flNone, dRoot, nA, dSl, nA),
		fzOp(opLink, 0, dRoot, nB, dSl, nA),
		fzOp(opRemove, 0, dRoot, nSl),
		fzOp(opMkdir, mode755, dRoot, nSl),
		fzOp(opSymlink, tgtDangle, dSl, nX),
	))
	// Attributes and xattrs through the engine: escaped overlay xattrs
	// on a lower file, an empty file, directories and hard links, then
	// moved and removed.
	f.Add(fzSeq(
		fzOp(opChmod, fzAttrSetxattr|2, dRoot, nA), // user.overlay.whiteout
		fzOp(opChmod, fzAttrTruncate|0, dRoot, nA),
		fzOp(opChmod, fzAttrSetxattr|1, dD, nSub), // trusted.overlay.opaque
		fzOp(opChmod, fzAttrSetxattr|1, dRoot, nO),
		fzOp(opChmod, fzAttrRemovexattr|0, dRoot, nB),
		fzOp(opChmod, fzAttrRemovexattr|0, dRoot, nA),
		fzOp(opChmod, fzAttrSetxattr|3|4, dRoot, nSub),
		fzOp(opLink, 0, dRoot, nSub, dD, nX),
		fzOp(opChmod, fzAttrSetxattr|0, dD, nX),
		fzOp(opChmod, fzAttrTruncate|3, dRoot, nSub),
		fzOp(opChmod, fzAttrChown|1, dRoot, nB),
		fzOp(opChmod, fzAttrUtimes|2, dD, nSub),
		fzOp(opChmod, fzAttrUtimes|1, dRoot, nSl),
		fzOp(opRename, flNone, dRoot, nA, dO, nX),
		fzOp(opChmod, fzAttrRemovexattr|2, dO, nX),
		fzOp(opChmod, fzAttrRemovexattr|1, dD, nSub),
	))
	fzLimitMinimize()
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 3*fzMaxOps {
			data = data[:3*fzMaxOps]
		}
		z := newFzOpsFixture(t)
		for i := 0; i+3 <= len(data); i += 3 {
			z.step(i/3, data[i:i+3])
		}
		z.checkEnd()
	})
}

// ---------------------------------------------------------------------
// FuzzNames

// fzNameOps are the operations FuzzNames gives a name to.
var fzNameOps = [...]string{"create", "mkdir", "symlink", "mknod-fifo", "rename upper file", "rename lower file", "link"}

// FuzzNames gives arbitrary names, as the new name in the root, to the
// operations that make names, and checks that names no directory entry
// can have are refused, ".wh." names give cow.ErrReservedName, nothing
// is made anywhere but in the upper's root, and a success makes exactly
// the one entry.
func FuzzNames(f *testing.F) {
	// Names that must be refused, with every operation.
	for _, name := range []string{
		"", ".", "..", "../escape", "../sentinel/x", "ud/x", "/x", "x/", "x\x00y",
		strings.Repeat("../", 40) + "tmp/strata-fuzz-escape", ".wh.x", ".wh..wh..opq", ".wh./x",
	} {
		for op := range len(fzNameOps) {
			f.Add(byte(op), name)
		}
	}
	for i, name := range []string{
		"x", "..x", "...", ".x", "gone", "a", "ud", "usrc", "#strata.1.1",
		strings.Repeat("n", 255), strings.Repeat("n", 256), " ", "x\n", ".wh",
	} {
		f.Add(byte(i), name)
	}
	fzLimitMinimize()
	f.Fuzz(func(t *testing.T, op byte, name string) {
		root, err := os.MkdirTemp("", "strata-fuzz-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(root) })
		lower, upper, work := filepath.Join(root, "lower"), filepath.Join(root, "upper"), filepath.Join(root, "work")
		for _, d := range []string{lower, upper, work, filepath.Join(root, "sentinel")} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		buildLayer(t, lower, []fixtureEntry{file("a", "a"), file("ld/f", "f"), file("gone", "g")})
		buildLayer(t, upper, []fixtureEntry{file("ud/f", "f"), file("usrc", "u"), ociWhiteout("gone")})
		buildLayer(t, filepath.Join(root, "sentinel"), []fixtureEntry{file("secret", "s")})
		s, err := cow.New(cow.Options{Lower: []string{lower}, Upper: upper, Work: work})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		outside := func() map[string]string {
			return fzSnapshot(t, root, fzFull, fzUpperOrWork)
		}
		outsideBefore := outside()
		upperBefore := fzSnapshot(t, upper, fzData, nil)
		rootE, err := s.Root()
		if err != nil {
			t.Fatal(err)
		}
		invalid := name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00")
		reserved := strings.HasPrefix(name, ovl.WhiteoutPrefix)
		// A name the merged root holds: the kernel would not ask to
		// create it, and a rename replaces it.
		var existing *cow.Entry
		if !invalid && !reserved {
			if e, err := s.Lookup("", &rootE, name); err == nil {
				existing = &e
			} else if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENAMETOOLONG) {
				t.Fatalf("Lookup(%q): %v", name, err)
			}
		}
		// Where the name leads if taken as a path from the upper root:
		// an entry appearing there outside root is an escape, found and
		// cleaned up even though the snapshots cannot see it.
		escape := ""
		if strings.Contains(name, "/") && !strings.Contains(name, "\x00") {
			escape = filepath.Join(upper, name)
			if filepath.IsAbs(name) {
				escape = filepath.Clean(name)
			}
			if strings.HasPrefix(escape, root+"/") || fzExists(escape) {
				escape = ""
			}
		}
		if escape != "" {
			defer func() {
				if fzExists(escape) {
					t.Errorf("%s %q made %s, outside the test's directory", fzNameOps[int(op)%len(fzNameOps)], name, escape)
					os.Remove(escape)
				}
			}()
		}
		owner := cow.Owner{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())}
		opName := fzNameOps[int(op)%len(fzNameOps)]
		var src string      // the rename or link source
		var wantType uint32 // of the new entry
		switch opName {
		case "create":
			wantType = unix.S_IFREG
			if existing != nil {
				return
			}
			var fd int
			fd, _, err = s.Create("", name, unix.O_WRONLY, 0o644, owner)
			if err == nil {
				unix.Close(fd)
			}
		case "mkdir":
			wantType = unix.S_IFDIR
			if existing != nil {
				return
			}
			_, err = s.Mkdir("", name, 0o755, owner)
		case "symlink":
			wantType = unix.S_IFLNK
			if existing != nil {
				return
			}
			_, err = s.Symlink("", name, "target", owner)
		case "mknod-fifo":
			wantType = unix.S_IFIFO
			if existing != nil {
				return
			}
			_, err = s.Mknod("", name, unix.S_IFIFO|0o644, 0, owner)
		case "rename upper file", "rename lower file", "link":
			wantType = unix.S_IFREG
			src = "usrc"
			if opName == "rename lower file" {
				src = "a"
			}
			if name == src || (existing != nil && existing.IsDir()) {
				return
			}
			oe, lerr := s.Lookup("", &rootE, src)
			if lerr != nil {
				t.Fatal(lerr)
			}
			if opName == "link" {
				if existing != nil {
					return
				}
				_, err = s.Link(src, &oe, "", name)
			} else {
				err = s.Rename("", &rootE, src, &oe, "", &rootE, name, existing, 0)
			}
		}
		what := fmt.Sprintf("%s %q", opName, name)

		if err != nil && !fzErrnoOrReserved(err) {
			t.Errorf("%s: error %q (%T) is neither an errno nor cow.ErrReservedName", what, err, err)
		}
		if d := fzDiff(outsideBefore, outside()); d != "" {
			t.Errorf("%s = %v: changed something outside the upper and work directories:\n%s", what, err, d)
		}
		if w := fzWorkEntries(t, work); len(w) > 0 {
			t.Errorf("%s = %v: work dir holds %q", what, err, w)
		}
		switch {
		case reserved && !errors.Is(err, cow.ErrReservedName):
			t.Errorf("%s = %v, want cow.ErrReservedName", what, err)
		case invalid && err == nil:
			t.Errorf("%s succeeded, want an error: no directory entry can have that name", what)
		}
		if _, errs := fzMergedTree(s); len(errs) > 0 {
			t.Errorf("%s = %v: merged view inconsistent: %v", what, err, errors.Join(errs...))
		}

		// What the upper must hold now.
		upperAfter := fzSnapshot(t, upper, fzData, nil)
		want := fzClone(upperBefore)
		if err == nil {
			// Exactly one new entry, in the upper's root, replacing
			// what was there (a whiteout) and its OCI whiteout.
			delete(want, ovl.WhiteoutPrefix+name)
			for _, p := range fzSubtree(want, name) {
				delete(want, p)
			}
			got, ok := upperAfter[name]
			if !ok {
				t.Errorf("%s succeeded but the upper root has no entry %q", what, name)
			} else if !strings.HasPrefix(got, fmt.Sprintf("type=%o", wantType)) {
				t.Errorf("%s succeeded but the upper's %q is %s, want type %o", what, name, got, wantType)
			}
			want[name] = got
			switch opName {
			case "rename upper file":
				delete(want, src)
			case "rename lower file":
				// A whiteout is left where the lower file was.
				if w, ok := upperAfter[src]; ok && w == fmt.Sprintf("type=%o", unix.S_IFCHR) {
					want[src] = w
				} else if w, ok := upperAfter[ovl.WhiteoutPrefix+src]; ok {
					want[ovl.WhiteoutPrefix+src] = w
				} else {
					t.Errorf("%s succeeded but left no whiteout at %q", what, src)
				}
			case "link":
				want[src] = upperAfter[src]
			}
			// The merged view shows it.
			if e, lerr := s.Lookup("", &rootE, name); lerr != nil || !e.InUpper() || e.Stat.Mode&unix.S_IFMT != wantType {
				t.Errorf("%s succeeded, then Lookup = layer %d mode %o, %v", what, e.Layer, e.Stat.Mode, lerr)
			}
		} else if opName == "rename lower file" {
			// A failed rename may have copied the source up: not
			// visible, and not an entry of the new name.
			if u, ok := upperAfter[src]; ok {
				want[src] = u
			}
		}
		if d := fzDiff(want, upperAfter); d != "" {
			t.Errorf("%s = %v: the upper holds other changes than the one entry:\n%s", what, err, d)
		}
	})
}
