//go:build linux

package cow_test

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/cow"
	"github.com/strata-fs/strata/ovl"
)

// Fixture layers are described as data: a layer is a list of entries,
// created in order, parents made as needed. After a layer is built every
// path in it gets the times fixtureAtime/fixtureMtime, so that an
// operation that forgets to keep a time is caught.

type kind int

const (
	kFile kind = iota
	kDir
	kSymlink
	kFifo
	kSock
	kChar
	kBlock
	kWhiteout // character device 0/0
)

var kindNames = [...]string{"file", "dir", "symlink", "fifo", "sock", "chr", "blk", "whiteout"}

func (k kind) String() string { return kindNames[k] }

type fixtureEntry struct {
	path    string // "" is the layer root (only xattrs apply)
	kind    kind
	content string // file data, or symlink target
	mode    uint32 // permission bits; 0 means 0644, 0755 for directories
	xattrs  map[string]string
	dev     uint64 // kChar, kBlock
}

func file(p, content string) fixtureEntry {
	return fixtureEntry{path: p, kind: kFile, content: content}
}
func dir(p string) fixtureEntry { return fixtureEntry{path: p, kind: kDir} }
func symlink(p, target string) fixtureEntry {
	return fixtureEntry{path: p, kind: kSymlink, content: target}
}
func fifo(p string) fixtureEntry     { return fixtureEntry{path: p, kind: kFifo} }
func whiteout(p string) fixtureEntry { return fixtureEntry{path: p, kind: kWhiteout} }

// ociWhiteout is the OCI whiteout file that hides p.
func ociWhiteout(p string) fixtureEntry {
	d, n := path.Split(p)
	return file(d+ovl.WhiteoutPrefix+n, "")
}

// with returns e with the xattr name=value added.
func (e fixtureEntry) with(name, value string) fixtureEntry {
	x := make(map[string]string, len(e.xattrs)+1)
	for k, v := range e.xattrs {
		x[k] = v
	}
	x[name] = value
	e.xattrs = x
	return e
}

func (e fixtureEntry) perm(mode uint32) fixtureEntry { e.mode = mode; return e }

// needsRoot says why creating e needs root, or "".
func (e fixtureEntry) needsRoot() string {
	switch e.kind {
	case kWhiteout, kChar, kBlock:
		return "mknod of a " + e.kind.String()
	}
	for k := range e.xattrs {
		if strings.HasPrefix(k, "trusted.") {
			return "xattr " + k
		}
	}
	return ""
}

var (
	fixtureAtime = time.Date(2001, 2, 3, 4, 5, 6, 7000, time.UTC)
	fixtureMtime = time.Date(2002, 3, 4, 5, 6, 7, 8000, time.UTC)
)

// needRoot skips the test unless it runs as root.
func needRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: " + why)
	}
}

// buildLayer creates the entries in the directory root.
func buildLayer(t testing.TB, root string, entries []fixtureEntry) {
	t.Helper()
	for _, e := range entries {
		if why := e.needsRoot(); why != "" {
			needRoot(t, why)
		}
		p := filepath.Join(root, e.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
			if e.kind == kDir {
				mode = 0o755
			}
		}
		var err error
		switch e.kind {
		case kFile:
			err = os.WriteFile(p, []byte(e.content), 0o600)
		case kDir:
			if e.path != "" {
				err = os.MkdirAll(p, 0o755)
			}
		case kSymlink:
			err = os.Symlink(e.content, p)
		case kFifo:
			err = unix.Mkfifo(p, 0o600)
		case kSock:
			err = unix.Mknod(p, unix.S_IFSOCK|0o600, 0)
		case kChar:
			err = unix.Mknod(p, unix.S_IFCHR|0o600, int(e.dev))
		case kBlock:
			err = unix.Mknod(p, unix.S_IFBLK|0o600, int(e.dev))
		case kWhiteout:
			err = unix.Mknod(p, unix.S_IFCHR, 0)
		}
		if err != nil {
			t.Fatalf("fixture %s %s: %v", e.kind, e.path, err)
		}
		if e.kind != kSymlink && e.kind != kWhiteout && !(e.kind == kDir && e.path == "") {
			if err := unix.Fchmodat(unix.AT_FDCWD, p, mode, 0); err != nil {
				t.Fatalf("fixture chmod %s: %v", e.path, err)
			}
		}
		for k, v := range e.xattrs {
			if err := unix.Lsetxattr(p, k, []byte(v), 0); err != nil {
				t.Fatalf("fixture xattr %s on %s: %v", k, e.path, err)
			}
		}
	}
	setTreeTimes(t, root, fixtureAtime, fixtureMtime)
}

// setTreeTimes sets the times of everything under root, root included.
// Directories are listed first and their times set last, since reading a
// directory may update its atime.
func setTreeTimes(t testing.TB, root string, atime, mtime time.Time) {
	t.Helper()
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	var paths []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		paths = append(paths, p)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range slices.Backward(paths) {
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
	}
}

// fixture is a stack of freshly built layers.
type fixture struct {
	t      testing.TB
	lowers []string // top first
	upper  string
	work   string
	s      *cow.Stack
}

// newFixture builds upper (may be nil) and the lowers (top first) and
// opens them as a stack.
func newFixture(t testing.TB, upper []fixtureEntry, lowers ...[]fixtureEntry) *fixture {
	t.Helper()
	// Not t.TempDir: its name holds the test's, and a comma or colon
	// there would break the overlay mount options.
	root, err := os.MkdirTemp("", "strata-cow-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	f := &fixture{t: t, upper: filepath.Join(root, "upper"), work: filepath.Join(root, "work")}
	for i, l := range lowers {
		d := filepath.Join(root, fmt.Sprintf("lower%d", i+1))
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		buildLayer(t, d, l)
		f.lowers = append(f.lowers, d)
	}
	for _, d := range []string{f.upper, f.work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	buildLayer(t, f.upper, upper)
	s, err := cow.New(cow.Options{Lower: f.lowers, Upper: f.upper, Work: f.work})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	f.s = s
	return f
}

// layerDir is the directory of layer i (0 the upper).
func (f *fixture) layerDir(i int) string {
	if i == cow.UpperIndex {
		return f.upper
	}
	return f.lowers[i-1]
}

// lookup resolves rel from the root, component by component.
func (f *fixture) lookup(rel string) (cow.Entry, error) {
	return lookupPath(f.s, rel)
}

func lookupPath(s *cow.Stack, rel string) (cow.Entry, error) {
	e, err := s.Root()
	if err != nil || rel == "" {
		return e, err
	}
	dir := ""
	for _, name := range strings.Split(rel, "/") {
		if !e.IsDir() {
			return cow.Entry{}, unix.ENOTDIR
		}
		if e, err = s.Lookup(dir, &e, name); err != nil {
			return e, err
		}
		dir = path.Join(dir, name)
	}
	return e, nil
}

// mustLookup resolves rel or fails the test.
func (f *fixture) mustLookup(rel string) cow.Entry {
	f.t.Helper()
	e, err := f.lookup(rel)
	if err != nil {
		f.t.Fatalf("Lookup(%q): %v\nmerged tree:\n%s", rel, err, f.dump())
	}
	return e
}

// parent resolves the directory holding rel and returns it with rel's
// directory and name.
func (f *fixture) parent(rel string) (dir string, de cow.Entry, name string) {
	f.t.Helper()
	dir, name = path.Split(rel)
	dir = strings.TrimSuffix(dir, "/")
	return dir, f.mustLookup(dir), name
}

// upperLstat stats rel in the upper directory itself.
func (f *fixture) upperLstat(rel string) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Lstat(filepath.Join(f.upper, rel), &st)
	return st, err
}

// checkWorkEmpty checks that the work dir holds nothing but the links
// directory (copies of lower hard links, which stay).
//
// checkWorkEmpty fails the test if anything is left in the work dir.
func (f *fixture) checkWorkEmpty() {
	f.t.Helper()
	ents, err := os.ReadDir(f.work)
	if err != nil {
		f.t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if e.Name() != "strata.links" {
			names = append(names, e.Name())
		}
	}
	if len(names) > 0 {
		f.t.Errorf("work dir holds %v, want it empty", names)
	}
}

// treeNode is one entry of a merged tree, as the engine or the kernel
// shows it.
type treeNode struct {
	path   string
	mode   uint32 // st_mode
	uid    uint32
	gid    uint32
	size   int64
	rdev   uint64
	mtime  unix.Timespec
	data   string // file content or symlink target
	xattrs []string
}

// String is the short form used in want lists: "d/", `f "data"`,
// "l -> target", "p fifo", "c chr 1/3".
func (n treeNode) String() string {
	switch n.mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return n.path + "/"
	case unix.S_IFREG:
		return fmt.Sprintf("%s %q", n.path, n.data)
	case unix.S_IFLNK:
		return n.path + " -> " + n.data
	case unix.S_IFIFO:
		return n.path + " fifo"
	case unix.S_IFSOCK:
		return n.path + " sock"
	case unix.S_IFCHR:
		return fmt.Sprintf("%s chr %d/%d", n.path, unix.Major(n.rdev), unix.Minor(n.rdev))
	case unix.S_IFBLK:
		return fmt.Sprintf("%s blk %d/%d", n.path, unix.Major(n.rdev), unix.Minor(n.rdev))
	}
	return fmt.Sprintf("%s mode %o", n.path, n.mode)
}

// detail is the long form used to compare two views of one tree.
func (n treeNode) detail() string {
	s := fmt.Sprintf("%s mode=%o owner=%d:%d mtime=%d.%09d", n, n.mode, n.uid, n.gid, n.mtime.Sec, n.mtime.Nsec)
	if n.mode&unix.S_IFMT != unix.S_IFDIR {
		s += fmt.Sprintf(" size=%d", n.size)
	}
	if len(n.xattrs) > 0 {
		s += " xattrs=" + strings.Join(n.xattrs, ",")
	}
	return s
}

func nodeFromStat(rel string, st *unix.Stat_t) treeNode {
	return treeNode{path: rel, mode: st.Mode, uid: st.Uid, gid: st.Gid, size: st.Size, rdev: st.Rdev, mtime: st.Mtim}
}

// engineTree walks the merged tree with ReadDir and Lookup. It reports,
// as test errors, names that ReadDir lists and Lookup does not find, and
// disagreements between the two on type or inode number.
func engineTree(t testing.TB, s *cow.Stack) []treeNode {
	t.Helper()
	out, errs := walkEngine(s)
	for _, err := range errs {
		t.Error(err)
	}
	return out
}

func walkEngine(s *cow.Stack) ([]treeNode, []error) {
	var out []treeNode
	var errs []error
	var walk func(dir string, de cow.Entry)
	walk = func(dir string, de cow.Entry) {
		ents, err := s.ReadDir(dir, &de)
		if err != nil {
			errs = append(errs, fmt.Errorf("ReadDir(%q): %v", dir, err))
			return
		}
		slices.SortFunc(ents, func(a, b cow.DirEntry) int { return strings.Compare(a.Name, b.Name) })
		for i, d := range ents {
			rel := path.Join(dir, d.Name)
			if i > 0 && ents[i-1].Name == d.Name {
				errs = append(errs, fmt.Errorf("ReadDir(%q) lists %q twice", dir, d.Name))
				continue
			}
			if strings.HasPrefix(d.Name, ovl.WhiteoutPrefix) {
				errs = append(errs, fmt.Errorf("ReadDir(%q) lists the reserved name %q", dir, d.Name))
			}
			e, err := s.Lookup(dir, &de, d.Name)
			if err != nil {
				errs = append(errs, fmt.Errorf("ReadDir(%q) lists %q, but Lookup gives %v", dir, d.Name, err))
				continue
			}
			if got, want := d.Type, e.Stat.Mode&unix.S_IFMT; got != want {
				errs = append(errs, fmt.Errorf("%s: ReadDir type %o, Lookup type %o", rel, got, want))
			}
			if d.Ino != e.Ino {
				errs = append(errs, fmt.Errorf("%s: ReadDir ino %d, Lookup ino %d (layer %d, lowers %v)", rel, d.Ino, e.Ino, e.Layer, e.Lowers))
			}
			n := nodeFromStat(rel, &e.Stat)
			l, lp := s.Layer(e.Layer), rel
			if !e.InUpper() {
				lp = e.Path // where a redirect put it
			}
			switch e.Stat.Mode & unix.S_IFMT {
			case unix.S_IFREG:
				fd, _, err := s.Open(rel, &e, unix.O_RDONLY)
				if err != nil {
					errs = append(errs, fmt.Errorf("open %s: %v", rel, err))
					break
				}
				f := os.NewFile(uintptr(fd), rel)
				b, err := io.ReadAll(f)
				f.Close()
				if err != nil {
					errs = append(errs, fmt.Errorf("read %s: %v", rel, err))
				}
				n.data = string(b)
			case unix.S_IFLNK:
				if n.data, err = l.Readlink(lp); err != nil {
					errs = append(errs, fmt.Errorf("readlink %s: %v", rel, err))
				}
			}
			names, _ := l.Listxattr(lp)
			for _, x := range names {
				if ovl.IsHiddenXattr(x) || strings.HasPrefix(x, "security.") {
					continue
				}
				v, err := l.Getxattr(lp, x)
				if err != nil {
					errs = append(errs, fmt.Errorf("getxattr %s %s: %v", rel, x, err))
				}
				n.xattrs = append(n.xattrs, x+"="+string(v))
			}
			slices.Sort(n.xattrs)
			out = append(out, n)
			if e.IsDir() {
				walk(rel, e)
			}
		}
	}
	root, err := s.Root()
	if err != nil {
		return nil, []error{fmt.Errorf("Root: %v", err)}
	}
	walk("", root)
	return out, errs
}

// dirTree walks a mounted directory (the kernel's view).
func dirTree(t testing.TB, root string) []treeNode {
	t.Helper()
	var out []treeNode
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		n := nodeFromStat(rel, &st)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			n.data = string(b)
		case unix.S_IFLNK:
			if n.data, err = os.Readlink(p); err != nil {
				return err
			}
		}
		sz, err := unix.Llistxattr(p, nil)
		if err == nil && sz > 0 {
			buf := make([]byte, sz)
			sz, err = unix.Llistxattr(p, buf)
			if err != nil {
				return err
			}
			for _, x := range strings.Split(string(buf[:sz]), "\x00") {
				if x == "" || ovl.IsHiddenXattr(x) || strings.HasPrefix(x, "security.") {
					continue
				}
				v := make([]byte, 4096)
				vn, err := unix.Lgetxattr(p, x, v)
				if err != nil {
					return fmt.Errorf("getxattr %s %s: %w", rel, x, err)
				}
				n.xattrs = append(n.xattrs, x+"="+string(v[:vn]))
			}
			slices.Sort(n.xattrs)
		}
		out = append(out, n)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func short(nodes []treeNode) []string {
	out := make([]string, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, n.String())
	}
	return out
}

func details(nodes []treeNode) []string {
	out := make([]string, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, n.detail())
	}
	return out
}

// dump prints the merged tree for failure messages.
func (f *fixture) dump() string { return dumpStack(f.s) }

func dumpStack(s *cow.Stack) string {
	nodes, errs := walkEngine(s)
	var b strings.Builder
	for _, n := range nodes {
		fmt.Fprintf(&b, "  %s\n", n.detail())
	}
	if len(nodes) == 0 {
		b.WriteString("  (empty)\n")
	}
	for _, err := range errs {
		fmt.Fprintf(&b, "  walk error: %v\n", err)
	}
	return b.String()
}

// checkTree compares the merged tree, in short form, with want.
func (f *fixture) checkTree(want []string) {
	f.t.Helper()
	got := short(engineTree(f.t, f.s))
	if !slices.Equal(got, want) {
		f.t.Errorf("merged tree:\n got  %q\n want %q\nmerged tree:\n%s", got, want, f.dump())
	}
}

// checkGone checks that each path gives ENOENT.
func (f *fixture) checkGone(paths ...string) {
	f.t.Helper()
	for _, p := range paths {
		// ENOTDIR: a component on the way is not a directory.
		if e, err := f.lookup(p); !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR) {
			f.t.Errorf("Lookup(%q) = layer %d, %v; want ENOENT\nmerged tree:\n%s", p, e.Layer, err, f.dump())
		}
	}
}

// mountKernel mounts the fixture's lowers and upper with kernel
// overlayfs and a fresh work dir (on the upper's filesystem), read-only,
// and unmounts it when the test ends.
func (f *fixture) mountKernel() string {
	f.t.Helper()
	needRoot(f.t, "mount of kernel overlayfs")
	if b, err := os.ReadFile("/proc/filesystems"); err != nil || !strings.Contains(string(b), "\toverlay\n") {
		f.t.Skip("needs kernel overlayfs")
	}
	base := filepath.Dir(f.upper)
	work := filepath.Join(base, "kwork")
	mnt := filepath.Join(base, "kmnt")
	for _, d := range []string{work, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			f.t.Fatal(err)
		}
	}
	opts := "lowerdir=" + strings.Join(f.lowers, ":") + ",upperdir=" + f.upper + ",workdir=" + work + ",redirect_dir=on,metacopy=on"
	if err := unix.Mount("overlay", mnt, "overlay", unix.MS_RDONLY, opts); err != nil {
		f.t.Fatalf("mount overlay %s: %v", opts, err)
	}
	f.t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			f.t.Errorf("unmount %s: %v", mnt, err)
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	return mnt
}

// checkKernelAgrees mounts the layers with kernel overlayfs and compares
// its tree with the engine's: names, types, modes, owners, mtimes, sizes,
// data, link targets and visible xattrs.
func (f *fixture) checkKernelAgrees() {
	f.t.Helper()
	engine := details(engineTree(f.t, f.s))
	mnt := f.mountKernel()
	kernel := details(dirTree(f.t, mnt))
	if !slices.Equal(engine, kernel) {
		f.t.Errorf("kernel overlayfs and the engine disagree:\n%s", lineDiff(kernel, engine))
	}
}

// lineDiff lists lines only in want ("-") or only in got ("+").
func lineDiff(want, got []string) string {
	var b strings.Builder
	for _, w := range want {
		if !slices.Contains(got, w) {
			fmt.Fprintf(&b, "  - kernel: %s\n", w)
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			fmt.Fprintf(&b, "  + engine: %s\n", g)
		}
	}
	return b.String()
}

// checkData reads rel through the stack, as the mount would, and checks
// it holds want.
func (f *fixture) checkData(rel, want string) {
	f.t.Helper()
	e := f.mustLookup(rel)
	fd, _, err := f.s.Open(rel, &e, unix.O_RDONLY)
	if err != nil {
		f.t.Errorf("open %s: %v", rel, err)
		return
	}
	file := os.NewFile(uintptr(fd), rel)
	defer file.Close()
	b, err := io.ReadAll(file)
	if err != nil || string(b) != want {
		f.t.Errorf("%s holds %q, %v; want %q", rel, b, err, want)
	}
}

// lowerLayers is the layer of each of e's lower directories.
func lowerLayers(e cow.Entry) []int {
	var out []int
	for _, l := range e.Lowers {
		out = append(out, l.Layer)
	}
	return out
}
