//go:build linux

package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/cow"
	"github.com/strata-fs/strata/ovl"
)

// The round trip of a snapshot through its layer: applying the layer that
// Write makes of an upper, over the parent's layers, reproduces the merged
// tree of the upper over those layers exactly. The upper is changed the
// way the FUSE mount changes it, through a writable cow.Stack (rtFS
// follows fs/node.go); both merged trees are read through read-only cow
// stacks, and in TestRoundTrip through kernel overlayfs mounts as well.
//
// Compared for every path (rtDescribe, rtListing): type, permission and
// set-ID bits, owner, size and SHA-256 of file data, symlink target,
// device number, xattrs but the overlay's own (ovl.IsHiddenXattr), mtime
// to the nanosecond (of directories too), the link count of
// non-directories and which paths share an inode; through cow, also
// which layer each entry comes from (the diff or a parent layer) and
// which layers a directory merges (its opacity).
//
// Not compared, by design:
//   - atime and ctime (reading and applying change them), and inode and
//     device numbers themselves (only which paths share an inode).
//   - The size and link count of directories: filesystem bookkeeping
//     (tmpfs counts entries, ext4 keeps the largest size a directory had).
//   - Sockets: Write leaves them out (a tar cannot hold them); no step
//     makes one.

// ---------------------------------------------------------------------
// Parent layers, built directly on disk.

// rtWhiteoutKind marks an rtNode that is a kernel whiteout (char 0/0).
const rtWhiteoutKind = 1

// rtNode is one entry of a lower layer.
type rtNode struct {
	path     string
	kind     uint32 // S_IFDIR, S_IFREG, S_IFLNK, S_IFIFO, S_IFCHR, S_IFBLK, rtWhiteoutKind
	data     string // file data, symlink target, or the path a hard link links to
	hard     bool   // a hard link to data
	dev      uint64
	mode     uint32 // permission and set-ID bits; 0: 0644, 0755 for a directory
	uid, gid int
	xattrs   [][2]string
}

func rtLDir(p string) rtNode          { return rtNode{path: p, kind: unix.S_IFDIR} }
func rtLFile(p, data string) rtNode   { return rtNode{path: p, kind: unix.S_IFREG, data: data} }
func rtLSym(p, target string) rtNode  { return rtNode{path: p, kind: unix.S_IFLNK, data: target} }
func rtLFifo(p string) rtNode         { return rtNode{path: p, kind: unix.S_IFIFO} }
func rtLWh(p string) rtNode           { return rtNode{path: p, kind: rtWhiteoutKind} }
func rtLHard(p, target string) rtNode { return rtNode{path: p, data: target, hard: true} }
func rtLChar(p string, major, minor uint32) rtNode {
	return rtNode{path: p, kind: unix.S_IFCHR, dev: unix.Mkdev(major, minor)}
}

func (n rtNode) perm(m uint32) rtNode      { n.mode = m; return n }
func (n rtNode) owner(uid, gid int) rtNode { n.uid, n.gid = uid, gid; return n }
func (n rtNode) xattr(k, v string) rtNode {
	n.xattrs = append(slices.Clone(n.xattrs), [2]string{k, v})
	return n
}
func (n rtNode) opaque() rtNode { return n.xattr(ovl.XattrOpaque, "y") }

// rtLowerTime is the mtime of every entry of the lowers, in nanoseconds.
const rtLowerTime = 1500000000_111111111

// rtBuildLowers builds the layers, top first, in dir/lower1, dir/lower2...
// and returns their paths. Each root is 0755 root:root, as the store
// makes an upper's.
func rtBuildLowers(t testing.TB, dir string, layers [][]rtNode) []string {
	t.Helper()
	var out []string
	for i, nodes := range layers {
		root := filepath.Join(dir, fmt.Sprintf("lower%d", i+1))
		if err := os.Mkdir(root, 0o755); err != nil {
			t.Fatal(err)
		}
		rtBuild(t, root, nodes)
		out = append(out, root)
	}
	return out
}

func rtBuild(t testing.TB, root string, nodes []rtNode) {
	t.Helper()
	dirs := []rtNode{{path: "", kind: unix.S_IFDIR}}
	for _, n := range nodes {
		p := filepath.Join(root, n.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case n.hard:
			err = os.Link(filepath.Join(root, n.data), p)
		case n.kind == unix.S_IFDIR:
			err = os.Mkdir(p, 0o755)
			dirs = append(dirs, n)
		case n.kind == unix.S_IFREG:
			err = os.WriteFile(p, []byte(n.data), 0o600)
		case n.kind == unix.S_IFLNK:
			err = os.Symlink(n.data, p)
		case n.kind == rtWhiteoutKind:
			err = unix.Mknod(p, unix.S_IFCHR, ovl.WhiteoutDev)
		default:
			err = unix.Mknod(p, n.kind|0o600, int(n.dev))
		}
		if err != nil {
			t.Fatalf("build %s: %v", p, err)
		}
		if n.kind != unix.S_IFDIR && !n.hard && n.kind != rtWhiteoutKind {
			rtSetMeta(t, p, n)
		}
	}
	// Directories last, deepest first: their mtimes must stay.
	for _, n := range slices.Backward(dirs) {
		rtSetMeta(t, filepath.Join(root, n.path), n)
	}
	// Implicit parents too.
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		ts := unix.NsecToTimespec(rtLowerTime)
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, 0)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func rtSetMeta(t testing.TB, p string, n rtNode) {
	t.Helper()
	if err := os.Lchown(p, n.uid, n.gid); err != nil {
		t.Fatal(err)
	}
	for _, x := range n.xattrs {
		if err := unix.Lsetxattr(p, x[0], []byte(x[1]), 0); err != nil {
			t.Fatalf("build %s: xattr %s: %v", p, x[0], err)
		}
	}
	if n.kind != unix.S_IFLNK {
		mode := n.mode
		if mode == 0 {
			mode = 0o644
			if n.kind == unix.S_IFDIR {
				mode = 0o755
			}
		}
		if err := unix.Fchmodat(unix.AT_FDCWD, p, mode, 0); err != nil {
			t.Fatal(err)
		}
	}
	ts := unix.NsecToTimespec(rtLowerTime)
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}
}

// File capabilities (security.capability, VFS_CAP_REVISION_2):
// cap_net_raw effective, and cap_net_bind_service permitted only.
const (
	rtCapNetRaw  = "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
	rtCapBindSvc = "\x00\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
)

// rtScratch makes a directory for a test's layers: in memory where there
// is a tmpfs, as an iteration of the fuzzer must be quick.
func rtScratch(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/dev/shm", "strata-roundtrip-")
	if err != nil {
		return t.TempDir()
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Error(err)
		}
	})
	return dir
}

// rtNewUpper makes dir/upper and dir/work and opens a writable stack of
// them over lowers.
func rtNewUpper(t testing.TB, dir string, lowers []string) (upper string, f *rtFS) {
	t.Helper()
	upper, work := filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	for _, d := range []string{upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Volatile: no fsync, which nothing here could see.
	s, err := cow.New(cow.Options{Lower: lowers, Upper: upper, Work: work, Volatile: true})
	if err != nil {
		t.Fatal(err)
	}
	if !s.KernelFormat() {
		t.Fatalf("the upper on %s cannot hold kernel whiteouts and trusted.* xattrs", dir)
	}
	return upper, &rtFS{s: s}
}

// ---------------------------------------------------------------------
// Changes made as the FUSE mount makes them.

// rtFS changes a writable stack as fs/node.go does: the checks the kernel
// makes before asking the filesystem (the parent is a directory, the name
// exists or not), then the engine's call (setattr and xattrs included:
// the engine copies up itself), or for an open for writing the copy-up
// fs makes and an open on the upper layer. Paths are relative to the
// root and do not cross symlinks (the kernel would follow them).
type rtFS struct {
	s *cow.Stack
}

func (f *rtFS) upper() *cow.Layer { return f.s.Layer(cow.UpperIndex) }

func rtSplit(p string) (dir, name string) {
	dir, name = path.Split(p)
	return strings.TrimSuffix(dir, "/"), name
}

func (f *rtFS) lookup(p string) (cow.Entry, error) {
	e, err := f.s.Root()
	if err != nil || p == "" {
		return e, err
	}
	dir := ""
	for c := range strings.SplitSeq(p, "/") {
		if !e.IsDir() {
			return e, unix.ENOTDIR
		}
		if e, err = f.s.Lookup(dir, &e, c); err != nil {
			return e, err
		}
		dir = path.Join(dir, c)
	}
	return e, nil
}

// resolve looks up p's parent, which must be a directory, and p in it: e
// is nil where p is absent.
func (f *rtFS) resolve(p string) (dir string, de cow.Entry, name string, e *cow.Entry, err error) {
	dir, name = rtSplit(p)
	if de, err = f.lookup(dir); err != nil {
		return
	}
	if !de.IsDir() {
		err = unix.ENOTDIR
		return
	}
	x, lerr := f.s.Lookup(dir, &de, name)
	switch {
	case lerr == nil:
		e = &x
	case !errors.Is(lerr, unix.ENOENT):
		err = lerr
	}
	return
}

// existing resolves p, which must exist.
func (f *rtFS) existing(p string) (dir string, de cow.Entry, name string, e *cow.Entry, err error) {
	dir, de, name, e, err = f.resolve(p)
	if err == nil && e == nil {
		err = unix.ENOENT
	}
	return
}

func rtType(e *cow.Entry) uint32 { return e.Stat.Mode & unix.S_IFMT }

// write opens p for writing with flags (O_TRUNC or O_APPEND), creating it
// with mode and owner o where it is absent, and writes data: fs's Create,
// or Open (a copy-up, of no data with O_TRUNC) and write.
func (f *rtFS) write(p string, flags int, mode uint32, o cow.Owner, data []byte) error {
	dir, _, name, e, err := f.resolve(p)
	if err != nil {
		return err
	}
	var fd int
	switch {
	case e == nil:
		if fd, _, err = f.s.Create(dir, name, unix.O_WRONLY, mode, o); err != nil {
			return err
		}
	case e.IsDir():
		return unix.EISDIR
	case rtType(e) != unix.S_IFREG:
		return unix.EINVAL // not opened here: a fifo would block, a device act
	default:
		dataLen := int64(-1)
		if flags&unix.O_TRUNC != 0 {
			dataLen = 0
		}
		if err := f.s.CopyUp(p, e, dataLen); err != nil {
			return err
		}
		if fd, err = f.upper().Open(p, unix.O_WRONLY|flags, 0); err != nil {
			return err
		}
	}
	file := os.NewFile(uintptr(fd), p)
	_, err = file.Write(data)
	return errors.Join(err, file.Close())
}

// truncate is a setattr of the size, through the engine as fs's
// Setattr calls it.
func (f *rtFS) truncate(p string, size int64) error {
	_, _, _, e, err := f.existing(p)
	if err != nil {
		return err
	}
	if rtType(e) != unix.S_IFREG {
		return unix.EINVAL
	}
	return f.s.Setattr(p, e, cow.SetAttr{Size: &size}, -1)
}

// setattr copies p up and changes its attributes, through the engine as
// fs's Setattr calls it.
func (f *rtFS) setattr(p string, a cow.SetAttr) error {
	_, _, _, e, err := f.existing(p)
	if err != nil {
		return err
	}
	return f.s.Setattr(p, e, a, -1)
}

func (f *rtFS) chmod(p string, mode uint32) error {
	return f.setattr(p, cow.SetAttr{Mode: &mode})
}

func (f *rtFS) chown(p string, uid, gid int) error {
	u, g := uint32(uid), uint32(gid)
	return f.setattr(p, cow.SetAttr{Uid: &u, Gid: &g})
}

func (f *rtFS) utimes(p string, mtime unix.Timespec) error {
	return f.setattr(p, cow.SetAttr{Mtime: &mtime})
}

func (f *rtFS) setxattr(p, attr string, value []byte) error {
	_, _, _, e, err := f.existing(p)
	if err != nil {
		return err
	}
	if strings.HasPrefix(attr, "user.") && rtType(e) != unix.S_IFREG && !e.IsDir() {
		return unix.EPERM // the VFS refuses before the filesystem is asked
	}
	return f.s.Setxattr(p, e, 0, attr, value, 0)
}

func (f *rtFS) removexattr(p, attr string) error {
	_, _, _, e, err := f.existing(p)
	if err != nil {
		return err
	}
	return f.s.Removexattr(p, e, 0, attr)
}

func (f *rtFS) mkdir(p string, mode uint32, o cow.Owner) error {
	dir, _, name, e, err := f.resolve(p)
	if err == nil && e != nil {
		err = unix.EEXIST
	}
	if err != nil {
		return err
	}
	// mkdir(2) takes permission bits and the sticky bit only.
	_, err = f.s.Mkdir(dir, name, mode&0o1777, o)
	return err
}

func (f *rtFS) mknod(p string, mode uint32, dev uint64, o cow.Owner) error {
	dir, _, name, e, err := f.resolve(p)
	if err == nil && e != nil {
		err = unix.EEXIST
	}
	if err != nil {
		return err
	}
	_, err = f.s.Mknod(dir, name, mode, dev, o)
	return err
}

func (f *rtFS) symlink(p, target string, o cow.Owner) error {
	dir, _, name, e, err := f.resolve(p)
	if err == nil && e != nil {
		err = unix.EEXIST
	}
	if err != nil {
		return err
	}
	_, err = f.s.Symlink(dir, name, target, o)
	return err
}

func (f *rtFS) link(oldp, newp string) error {
	oe, err := f.lookup(oldp)
	if err != nil {
		return err
	}
	if oe.IsDir() {
		return unix.EPERM
	}
	dir, _, name, e, err := f.resolve(newp)
	if err == nil && e != nil {
		err = unix.EEXIST
	}
	if err != nil {
		return err
	}
	if err := f.s.CopyUp(oldp, &oe, -1); err != nil {
		return err
	}
	_, err = f.s.Link(oldp, &oe, dir, name)
	return err
}

// remove is unlink (dir false) or rmdir.
func (f *rtFS) remove(p string, dir bool) error {
	pdir, de, name, e, err := f.existing(p)
	switch {
	case err != nil:
		return err
	case dir && !e.IsDir():
		return unix.ENOTDIR
	case !dir && e.IsDir():
		return unix.EISDIR
	}
	return f.s.Remove(pdir, &de, name, e)
}

// removeAll is rm -r.
func (f *rtFS) removeAll(p string) error {
	_, _, _, e, err := f.existing(p)
	if err != nil {
		return err
	}
	if !e.IsDir() {
		return f.remove(p, false)
	}
	ents, err := f.s.ReadDir(p, e)
	if err != nil {
		return err
	}
	for _, d := range ents {
		if err := f.removeAll(path.Join(p, d.Name)); err != nil {
			return err
		}
	}
	return f.remove(p, true)
}

func (f *rtFS) rename(oldp, newp string, flags uint) error {
	odir, ode, oname, oe, err := f.existing(oldp)
	if err != nil {
		return err
	}
	ndir, nde, nname, ne, err := f.resolve(newp)
	switch {
	case err != nil:
		return err
	case oldp == newp || ne != nil && ne.Ino == oe.Ino:
		return nil // one inode: rename(2) does nothing
	case strings.HasPrefix(newp, oldp+"/"):
		return unix.EINVAL
	case strings.HasPrefix(oldp, newp+"/"):
		return unix.ENOTEMPTY
	}
	if !oe.IsDir() {
		if err := f.s.CopyUp(oldp, oe, -1); err != nil {
			return err
		}
	}
	if ne != nil && flags&unix.RENAME_EXCHANGE != 0 && !ne.IsDir() {
		if err := f.s.CopyUp(newp, ne, -1); err != nil {
			return err
		}
	}
	return f.s.Rename(odir, &ode, oname, oe, ndir, &nde, nname, ne, flags)
}

// rtStep is one change, described for the log.
type rtStep struct {
	desc string
	do   func(f *rtFS) error
}

var rtRoot = cow.Owner{}

func rtWrite(p string, mode uint32, o cow.Owner, data string) rtStep {
	return rtStep{fmt.Sprintf("write %s (%d bytes; if new: mode %#o, owner %d:%d)", p, len(data), mode, o.Uid, o.Gid),
		func(f *rtFS) error { return f.write(p, unix.O_TRUNC, mode, o, []byte(data)) }}
}

func rtCreate(p string, mode uint32, data string) rtStep { return rtWrite(p, mode, rtRoot, data) }

func rtAppend(p, data string) rtStep {
	return rtStep{fmt.Sprintf("append %d bytes to %s", len(data), p),
		func(f *rtFS) error { return f.write(p, unix.O_APPEND, 0o644, rtRoot, []byte(data)) }}
}

func rtTruncate(p string, size int64) rtStep {
	return rtStep{fmt.Sprintf("truncate %s to %d", p, size), func(f *rtFS) error { return f.truncate(p, size) }}
}

func rtChmod(p string, mode uint32) rtStep {
	return rtStep{fmt.Sprintf("chmod %#o %s", mode, p), func(f *rtFS) error { return f.chmod(p, mode) }}
}

func rtChown(p string, uid, gid int) rtStep {
	return rtStep{fmt.Sprintf("chown %d:%d %s", uid, gid, p), func(f *rtFS) error { return f.chown(p, uid, gid) }}
}

func rtUtimes(p string, sec, nsec int64) rtStep {
	return rtStep{fmt.Sprintf("touch -h -m %s at %d.%09d", p, sec, nsec),
		func(f *rtFS) error { return f.utimes(p, unix.Timespec{Sec: sec, Nsec: nsec}) }}
}

func rtSetxattr(p, attr, value string) rtStep {
	return rtStep{fmt.Sprintf("setxattr %s %s=%.20q", p, attr, value),
		func(f *rtFS) error { return f.setxattr(p, attr, []byte(value)) }}
}

func rtRemovexattr(p, attr string) rtStep {
	return rtStep{fmt.Sprintf("removexattr %s %s", p, attr), func(f *rtFS) error { return f.removexattr(p, attr) }}
}

func rtMkdir(p string, mode uint32) rtStep { return rtMkdirAs(p, mode, rtRoot) }

func rtMkdirAs(p string, mode uint32, o cow.Owner) rtStep {
	return rtStep{fmt.Sprintf("mkdir %s mode %#o owner %d:%d", p, mode, o.Uid, o.Gid),
		func(f *rtFS) error { return f.mkdir(p, mode, o) }}
}

func rtMknod(p string, mode uint32, major, minor uint32) rtStep {
	return rtStep{fmt.Sprintf("mknod %s mode %#o dev %d,%d", p, mode, major, minor),
		func(f *rtFS) error { return f.mknod(p, mode, unix.Mkdev(major, minor), rtRoot) }}
}

func rtSymlink(p, target string) rtStep {
	return rtStep{fmt.Sprintf("symlink %s -> %.40q", p, target), func(f *rtFS) error { return f.symlink(p, target, rtRoot) }}
}

func rtLink(oldp, newp string) rtStep {
	return rtStep{fmt.Sprintf("link %s %s", oldp, newp), func(f *rtFS) error { return f.link(oldp, newp) }}
}

func rtUnlink(p string) rtStep {
	return rtStep{"unlink " + p, func(f *rtFS) error { return f.remove(p, false) }}
}

func rtRmdir(p string) rtStep {
	return rtStep{"rmdir " + p, func(f *rtFS) error { return f.remove(p, true) }}
}

func rtRemoveAll(p string) rtStep {
	return rtStep{"rm -r " + p, func(f *rtFS) error { return f.removeAll(p) }}
}

func rtRename(oldp, newp string, flags uint) rtStep {
	return rtStep{fmt.Sprintf("rename %s %s flags %#x", oldp, newp, flags),
		func(f *rtFS) error { return f.rename(oldp, newp, flags) }}
}

// rtFails expects step to fail with want.
func rtFails(want error, step rtStep) rtStep {
	return rtStep{step.desc + " (fails: " + want.Error() + ")", func(f *rtFS) error {
		err := step.do(f)
		if !errors.Is(err, want) {
			return fmt.Errorf("got %v, want %v", err, want)
		}
		return nil
	}}
}

// rtRun runs steps on f and returns the log of what each did.
func rtRun(f *rtFS, steps []rtStep) (log []string) {
	for i, st := range steps {
		res := "ok"
		if err := st.do(f); err != nil {
			res = err.Error()
		}
		log = append(log, fmt.Sprintf("%d: %s = %s", i, st.desc, res))
	}
	return log
}

// ---------------------------------------------------------------------
// Merged trees, read through cow or kernel overlayfs.

// rtEntry is what is compared of one path of a merged tree.
type rtEntry struct {
	st     unix.Stat_t
	sum    string   // SHA-256 of a regular file's data
	target string   // of a symlink
	xattrs []string // name="value", sorted, the overlay's own left out
	inode  string   // which inode a non-directory is (for the hard-link structure)
	where  string   // through cow: the layer it comes from, a directory's merge
}

// rtCowTree walks the merged tree of top over lowers with a read-only
// stack: every name ReadDir lists, as Lookup resolves it.
func rtCowTree(top string, lowers []string) (map[string]*rtEntry, error) {
	s, err := cow.New(cow.Options{Lower: append([]string{top}, lowers...)})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	tree := make(map[string]*rtEntry)
	var walk func(dir string, de cow.Entry) error
	walk = func(dir string, de cow.Entry) error {
		ents, err := s.ReadDir(dir, &de)
		if err != nil {
			return fmt.Errorf("ReadDir %q: %w", dir, err)
		}
		for _, d := range ents {
			rel := path.Join(dir, d.Name)
			if _, ok := tree[rel]; ok {
				return fmt.Errorf("ReadDir %q lists %q twice", dir, d.Name)
			}
			e, err := s.Lookup(dir, &de, d.Name)
			if err != nil {
				return fmt.Errorf("ReadDir %q lists %q, but Lookup: %w", dir, d.Name, err)
			}
			if d.Type != rtType(&e) {
				return fmt.Errorf("%s: ReadDir type %#o, Lookup type %#o", rel, d.Type, rtType(&e))
			}
			if tree[rel], err = rtCowEntry(s, rel, e); err != nil {
				return err
			}
			if e.IsDir() {
				if err := walk(rel, e); err != nil {
					return err
				}
			}
		}
		return nil
	}
	root, err := s.Root()
	if err != nil {
		return nil, err
	}
	if tree[""], err = rtCowEntry(s, "", root); err != nil {
		return nil, err
	}
	return tree, walk("", root)
}

// rtLayerName names layer i of a read-only stack of top over lowers.
func rtLayerName(i int) string {
	if i == 1 {
		return "diff"
	}
	return fmt.Sprintf("parent%d", i-1)
}

func rtCowEntry(s *cow.Stack, rel string, e cow.Entry) (*rtEntry, error) {
	l, lp := s.Layer(e.Layer), e.LayerPath(rel) // where a redirect put it
	x := &rtEntry{st: e.Stat, where: "in=" + rtLayerName(e.Layer)}
	switch rtType(&e) {
	case unix.S_IFDIR:
		var names []string
		for _, l := range e.Lowers {
			names = append(names, rtLayerName(l.Layer))
		}
		x.where += " merges=" + strings.Join(names, ",")
	case unix.S_IFREG:
		fd, _, err := s.Open(rel, &e, unix.O_RDONLY) // a metacopy file's data
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", rel, err)
		}
		file := os.NewFile(uintptr(fd), rel)
		x.sum, err = rtHash(file)
		if err = errors.Join(err, file.Close()); err != nil {
			return nil, fmt.Errorf("read %s: %w", rel, err)
		}
	case unix.S_IFLNK:
		var err error
		if x.target, err = l.Readlink(lp); err != nil {
			return nil, fmt.Errorf("readlink %s: %w", rel, err)
		}
	}
	if !e.IsDir() {
		x.inode = fmt.Sprintf("%d:%d", e.Layer, e.Stat.Ino)
	}
	names, err := l.Listxattr(lp)
	if err != nil && !errors.Is(err, unix.ENOTSUP) {
		return nil, fmt.Errorf("listxattr %s: %w", rel, err)
	}
	for _, n := range names {
		if ovl.IsHiddenXattr(n) {
			continue
		}
		v, err := l.Getxattr(lp, n)
		if err != nil {
			return nil, fmt.Errorf("getxattr %s %s: %w", rel, n, err)
		}
		x.xattrs = append(x.xattrs, fmt.Sprintf("%s=%q", n, v))
	}
	slices.Sort(x.xattrs)
	return x, nil
}

func rtHash(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// rtKernelTree walks the tree mounted at mnt with plain system calls.
func rtKernelTree(mnt string) (map[string]*rtEntry, error) {
	tree := make(map[string]*rtEntry)
	var walk func(rel string) error
	walk = func(rel string) error {
		p := filepath.Join(mnt, rel)
		x := &rtEntry{}
		if err := unix.Lstat(p, &x.st); err != nil {
			return err
		}
		tree[rel] = x
		var err error
		switch x.st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			var file *os.File
			if file, err = os.Open(p); err == nil {
				x.sum, err = rtHash(file)
				err = errors.Join(err, file.Close())
			}
		case unix.S_IFLNK:
			x.target, err = os.Readlink(p)
		}
		if err != nil {
			return err
		}
		if x.st.Mode&unix.S_IFMT != unix.S_IFDIR {
			x.inode = fmt.Sprint(x.st.Ino)
		}
		if x.xattrs, err = rtPathXattrs(p); err != nil {
			return err
		}
		if x.st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return nil
		}
		ents, err := os.ReadDir(p)
		if err != nil {
			return err
		}
		for _, d := range ents {
			if err := walk(path.Join(rel, d.Name())); err != nil {
				return err
			}
		}
		return nil
	}
	return tree, walk("")
}

// rtPathXattrs lists p's xattrs (not following a symlink) as rtEntry does.
func rtPathXattrs(p string) ([]string, error) {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz == 0 {
		if errors.Is(err, unix.ENOTSUP) {
			err = nil
		}
		return nil, err
	}
	buf := make([]byte, sz)
	if sz, err = unix.Llistxattr(p, buf); err != nil {
		return nil, err
	}
	var out []string
	for n := range strings.SplitSeq(string(buf[:sz]), "\x00") {
		if n == "" || ovl.IsHiddenXattr(n) {
			continue
		}
		v := make([]byte, 64<<10)
		k, err := unix.Lgetxattr(p, n, v)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", p, n, err)
		}
		out = append(out, fmt.Sprintf("%s=%q", n, v[:k]))
	}
	slices.Sort(out)
	return out, nil
}

func rtTypeName(typ uint32) string {
	switch typ {
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFREG:
		return "file"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFCHR:
		return "char"
	case unix.S_IFBLK:
		return "block"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "socket"
	}
	return fmt.Sprintf("type%#o", typ)
}

// rtDescribe is what is compared of the entry e (see the top of the file).
func rtDescribe(e *rtEntry, root bool) string {
	var b strings.Builder
	typ := e.st.Mode & unix.S_IFMT
	fmt.Fprintf(&b, "%s %04o %d:%d", rtTypeName(typ), e.st.Mode&0o7777, e.st.Uid, e.st.Gid)
	switch typ {
	case unix.S_IFREG:
		fmt.Fprintf(&b, " size=%d sha256=%s", e.st.Size, e.sum)
	case unix.S_IFLNK:
		fmt.Fprintf(&b, " -> %q", e.target)
	case unix.S_IFCHR, unix.S_IFBLK:
		fmt.Fprintf(&b, " dev=%d,%d", unix.Major(e.st.Rdev), unix.Minor(e.st.Rdev))
	}
	fmt.Fprintf(&b, " mtime=%d.%09d", e.st.Mtim.Sec, e.st.Mtim.Nsec)
	if typ != unix.S_IFDIR {
		fmt.Fprintf(&b, " nlink=%d", e.st.Nlink)
	}
	for _, x := range e.xattrs {
		b.WriteString(" " + x)
	}
	return b.String()
}

// rtListing describes every path of tree ("/a/b"), with the paths that
// share its inode, and with where (cow's trees) the layers it comes from.
func rtListing(tree map[string]*rtEntry, where bool) map[string]string {
	links := make(map[string][]string)
	for rel, e := range tree {
		if e.inode != "" {
			links[e.inode] = append(links[e.inode], "/"+rel)
		}
	}
	out := make(map[string]string, len(tree))
	for rel, e := range tree {
		d := rtDescribe(e, rel == "")
		if l := links[e.inode]; e.inode != "" && len(l) > 1 {
			slices.Sort(l)
			d += " hardlinks=" + strings.Join(l, ",")
		}
		if where {
			d += " " + e.where
		}
		out["/"+rel] = d
	}
	return out
}

func rtCowListing(t testing.TB, top string, lowers []string, where bool) map[string]string {
	t.Helper()
	tree, err := rtCowTree(top, lowers)
	if err != nil {
		t.Fatalf("merged tree of %s over the parent: %v", top, err)
	}
	return rtListing(tree, where)
}

func rtDump(m map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, "  %s: %s\n", k, m[k])
	}
	return b.String()
}

// rtCompare fails t if the listings differ, printing both.
func rtCompare(t testing.TB, what, wantName, gotName string, want, got map[string]string, details func() string) {
	t.Helper()
	if maps.Equal(want, got) {
		return
	}
	keys := slices.Collect(maps.Keys(want))
	for k := range got {
		if _, ok := want[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var diff strings.Builder
	for _, k := range keys {
		w, wok := want[k]
		g, gok := got[k]
		switch {
		case !gok:
			fmt.Fprintf(&diff, "  missing %s: %s\n", k, w)
		case !wok:
			fmt.Fprintf(&diff, "  extra   %s: %s\n", k, g)
		case w != g:
			fmt.Fprintf(&diff, "  changed %s:\n    %-7s %s\n    %-7s %s\n", k, wantName, w, gotName, g)
		}
	}
	t.Errorf("%s differ (%s: want, %s: got):\n%s%s:\n%s%s:\n%s%s",
		what, wantName, gotName, diff.String(), wantName, rtDump(want), gotName, rtDump(got), details())
}

// rtTarListing describes each entry of an uncompressed layer.
func rtTarListing(blob []byte) []string {
	tr := tar.NewReader(bytes.NewReader(blob))
	var out []string
	for {
		hdr, err := tr.Next()
		if err != nil {
			if err != io.EOF {
				out = append(out, "error: "+err.Error())
			}
			return out
		}
		s := fmt.Sprintf("%q %c %04o %d:%d size=%d mtime=%d.%09d", hdr.Name, hdr.Typeflag, hdr.Mode, hdr.Uid, hdr.Gid,
			hdr.Size, hdr.ModTime.Unix(), hdr.ModTime.Nanosecond())
		if hdr.Linkname != "" {
			s += fmt.Sprintf(" link=%q", hdr.Linkname)
		}
		if hdr.Typeflag == tar.TypeChar || hdr.Typeflag == tar.TypeBlock {
			s += fmt.Sprintf(" dev=%d,%d", hdr.Devmajor, hdr.Devminor)
		}
		for _, k := range slices.Sorted(maps.Keys(hdr.PAXRecords)) {
			if x, ok := strings.CutPrefix(k, applyXattrPrefix); ok {
				s += fmt.Sprintf(" %s=%q", x, hdr.PAXRecords[k])
			}
		}
		out = append(out, s)
	}
}

// rtHasRedirect reports whether any directory of upper has a redirect.
func rtHasRedirect(t testing.TB, upper string) bool {
	t.Helper()
	found := false
	err := filepath.WalkDir(upper, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if _, err := unix.Lgetxattr(p, ovl.XattrRedirect, nil); err == nil {
				found = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

func rtWriteLayer(t testing.TB, dir string, lowers []string, c Compression) (Descriptor, []byte) {
	t.Helper()
	var buf bytes.Buffer
	desc, err := Write(context.Background(), &buf, dir, WriteOptions{Compression: c, Lowers: lowers})
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	return desc, buf.Bytes()
}

// rtCheck checks the round trip of the upper directory upper over lowers,
// changed by the steps of log: Write is deterministic; Apply of its layer
// into dir/applied gives the same diff ID, and that layer over lowers the
// same merged tree as upper over lowers; Write of the applied layer gives
// the same diff ID again. It returns the applied layer, and details: the
// steps and the layer, for messages.
func rtCheck(t testing.TB, dir, upper string, lowers []string, log []string) (applied string, details func() string) {
	t.Helper()
	// As a commit does, drop the work dir's links to copied-up lower hard
	// links: the upper's link counts are then its names'.
	if err := os.RemoveAll(filepath.Join(filepath.Dir(upper), "work", "strata.links")); err != nil {
		t.Fatal(err)
	}
	desc, blob := rtWriteLayer(t, upper, lowers, Uncompressed)
	details = func() string {
		return fmt.Sprintf("steps:\n  %s\nlayer:\n  %s\n", strings.Join(log, "\n  "), strings.Join(rtTarListing(blob), "\n  "))
	}
	if again, blob2 := rtWriteLayer(t, upper, lowers, Uncompressed); again != desc || !bytes.Equal(blob, blob2) {
		t.Errorf("Write is not deterministic: %+v, then %+v\n%s", desc, again, details())
	}

	applied = filepath.Join(dir, "applied")
	if err := os.Mkdir(applied, 0o755); err != nil {
		t.Fatal(err)
	}
	var warnings []string
	res, err := Apply(context.Background(), applied, bytes.NewReader(blob), ApplyOptions{
		Lowers: lowers,
		Warn:   func(msg string) { warnings = append(warnings, msg) },
	})
	if err != nil {
		t.Fatalf("Apply: %v\n%s", err, details())
	}
	if len(warnings) > 0 {
		t.Errorf("Apply warned, as root: %q\n%s", warnings, details())
	}
	if res.DiffID != desc.DiffID || res.Size != desc.UncompressedSize {
		t.Errorf("Apply read diff ID %s (%d bytes), Write wrote %s (%d bytes)", res.DiffID, res.Size, desc.DiffID, desc.UncompressedSize)
	}

	// Where each entry comes from is compared too, unless the upper
	// holds a redirect: OCI has none, so the layer carries a renamed
	// directory's contents, which the upper finds in the lowers.
	where := !rtHasRedirect(t, upper)
	want := rtCowListing(t, upper, lowers, where)
	got := rtCowListing(t, applied, lowers, where)
	rtCompare(t, "merged trees through cow", "upper", "applied", want, got, details)

	if again, blob3 := rtWriteLayer(t, applied, lowers, Uncompressed); again.DiffID != desc.DiffID {
		t.Errorf("Write of the applied layer: diff ID %s, want %s (Write of the upper)\nlayer of the applied layer:\n  %s\n%s",
			again.DiffID, desc.DiffID, strings.Join(rtTarListing(blob3), "\n  "), details())
	}
	return applied, details
}

// rtMountOverlay mounts kernel overlayfs read-only at mnt over layers (top
// first) and returns its unmount.
func rtMountOverlay(t testing.TB, mnt string, layers []string) (func(), error) {
	t.Helper()
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("overlay", mnt, "overlay", unix.MS_RDONLY, "lowerdir="+strings.Join(layers, ":")+",redirect_dir=on,metacopy=on"); err != nil {
		return nil, err
	}
	done := false
	unmount := func() {
		if !done {
			done = true
			if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
				t.Errorf("unmount %s: %v", mnt, err)
			}
		}
	}
	t.Cleanup(unmount)
	return unmount, nil
}

// rtKernelListing mounts top over lowers with kernel overlayfs and lists
// the merged tree.
func rtKernelListing(t testing.TB, mnt, top string, lowers []string) map[string]string {
	t.Helper()
	unmount, err := rtMountOverlay(t, mnt, append([]string{top}, lowers...))
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENODEV) {
		t.Skipf("needs kernel overlayfs: mount: %v", err)
	}
	if err != nil {
		t.Fatalf("mount overlay of %s: %v", top, err)
	}
	defer unmount()
	tree, err := rtKernelTree(mnt)
	if err != nil {
		t.Fatalf("walk the overlay of %s: %v", top, err)
	}
	return rtListing(tree, false)
}

// rtCheckKernel checks the round trip with kernel overlayfs as the
// oracle: the merged trees of upper and of the applied layer, each
// mounted over lowers, are the same, and the same as cow's.
func rtCheckKernel(t *testing.T, dir, upper, applied string, lowers []string, details func() string) {
	want := rtKernelListing(t, filepath.Join(dir, "mnt-upper"), upper, lowers)
	got := rtKernelListing(t, filepath.Join(dir, "mnt-applied"), applied, lowers)
	rtCompare(t, "merged trees through kernel overlayfs", "upper", "applied", want, got, details)
	rtCompare(t, "merged trees of the upper", "kernel", "cow", want, rtCowListing(t, upper, lowers, false), details)
}

// ---------------------------------------------------------------------
// TestRoundTrip

// rtTestLowers is the parent of TestRoundTrip's snapshots: two layers
// with whiteouts, an opaque directory, hard links, set-ID bits, file
// capabilities, xattrs, devices and fifos.
func rtTestLowers() [][]rtNode {
	return [][]rtNode{{
		rtLDir("etc"),
		rtLFile("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
		rtLFile("etc/shadow", "root:*::0:::::\n").perm(0o640).owner(0, 42),
		rtLWh("etc/gone"),
		rtLDir("bin"),
		rtLFile("bin/ping", "ELF ping").perm(0o755).xattr("security.capability", rtCapNetRaw),
		rtLFile("bin/su", "ELF su").perm(0o4755),
		rtLDir("opq").opaque(),
		rtLFile("opq/kept", "kept"),
		rtLDir("data").perm(0o750).owner(1000, 1000).xattr("user.dir", "1"),
		rtLFile("data/keep", "keep"),
		rtLDir("data/sub"),
		rtLFile("data/sub/f", "f"),
		rtLSym("ln", "etc/passwd"),
		rtLDir("dev"),
		rtLChar("dev/null", 1, 3).perm(0o666),
		rtLFifo("dev/fifo"),
		rtLFile("hard1", "shared"),
		rtLHard("hard2", "hard1"),
		rtLWh("old"),
		// One inode with names inside and outside pkg/lib, deep outside.
		rtLFile("pkg/lib/a.so", "so").perm(0o755),
		rtLHard("pkg/lib/b.so", "pkg/lib/a.so"),
		rtLHard("links/deep/a.so", "pkg/lib/a.so"),
		rtLHard("pkg.so", "pkg/lib/a.so"),
		rtLHard("etc/a.so", "pkg/lib/a.so"),
	}, {
		rtLDir("etc"),
		rtLFile("etc/gone", "gone"),
		rtLFile("etc/hosts", "127.0.0.1 localhost\n"),
		rtLDir("opq"),
		rtLFile("opq/hidden", "hidden"),
		rtLDir("old"),
		rtLFile("old/x", "x"),
		rtLFile("usr/lib/libc.so", "libc").perm(0o755),
		rtLFile("usr/share/doc/README", "readme"),
		rtLFile("var/log/messages", "boot\n").perm(0o640),
		rtLDir("data"),
		rtLFile("data/lower2only", "l2").xattr("user.f", "2"),
	}}
}

// rtPattern is n bytes of text that is not all zeros.
func rtPattern(seed, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + (seed+i)%26)
	}
	return string(b)
}

func TestRoundTrip(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: kernel whiteouts, trusted.* xattrs, owners and devices in the layers")
	}
	base := rtScratch(t)
	lowers := rtBuildLowers(t, base, rtTestLowers())
	long := strings.Repeat("long-name-", 15)           // 150 bytes
	target := strings.Repeat("../target/", 30) + "end" // 303 bytes
	for i, tc := range []struct {
		name  string
		steps []rtStep
	}{
		{name: "no change"},
		{name: "new files and directories", steps: []rtStep{
			rtCreate("new", 0o644, "hello"),
			rtCreate("empty", 0o600, ""),
			rtMkdir("newdir", 0o755),
			rtMkdir("newdir/sub", 0o700),
			rtCreate("newdir/sub/f", 0o640, "deep"),
			rtCreate("etc/new.conf", 0o644, "x=1\n"),
			rtWrite("data/mine", 0o644, cow.Owner{Uid: 1000, Gid: 1000}, "mine"),
			rtMkdir("usr/share/doc/more", 0o755),
		}},
		{name: "overwrite, append and truncate lower files", steps: []rtStep{
			rtCreate("etc/passwd", 0o644, "root:x:0:0::/root:/bin/bash\n"),
			rtAppend("etc/hosts", "::1 localhost\n"),
			rtTruncate("usr/lib/libc.so", 0),
			rtTruncate("var/log/messages", 1<<20),
			rtAppend("var/log/messages", "after a hole"),
			rtCreate("usr/share/doc/README", 0o644, rtPattern(1, 200<<10)),
			rtCreate("zeros", 0o644, strings.Repeat("\x00", 3*4096+5)),
			rtAppend("bin/ping", "!"), // the write drops the capability
			rtAppend("hard1", "+"),    // copy-up breaks the lower's hard link
		}},
		{name: "copy-up by metadata", steps: []rtStep{
			rtChmod("etc/shadow", 0o600),
			rtChown("usr/share/doc/README", 1000, 1000),
			rtUtimes("var/log/messages", 1234567890, 123456789),
			rtChmod("usr/lib/libc.so", 0o4755),
			rtChmod("bin/su", 0o755),
			rtChmod("etc/passwd", 0o644), // no change but the copy-up
			rtChmod("usr", 0o700),
			rtChown("var", 5, 6),
			rtUtimes("var/log", 1000000000, 1),
			rtChown("dev/null", 0, 5),
			rtUtimes("dev/fifo", 2000000000, 2),
			rtChmod("data", 0o2770),
			rtChown("ln", 7, 8),
			rtUtimes("ln", 3, 4),
		}},
		{name: "xattrs", steps: []rtStep{
			rtSetxattr("etc/hosts", "user.a", "1"),
			rtSetxattr("etc/hosts", "user.long", rtPattern(2, 4000)),
			rtCreate("tool", 0o755, "tool"),
			rtSetxattr("tool", "security.capability", rtCapNetRaw),
			rtCreate("tool2", 0o755, "tool2"),
			rtSetxattr("tool2", "security.capability", rtCapBindSvc),
			rtChown("tool2", 1, 1), // drops the capability
			rtRemovexattr("bin/ping", "security.capability"),
			rtRemovexattr("data", "user.dir"),
			rtSetxattr("data/sub", "user.empty", ""),
			rtSetxattr("data/sub/f", "user.bin", "\x00\x01\xff"),
			rtSetxattr("data/lower2only", "trusted.t", "T"),
			rtRemovexattr("data/lower2only", "user.f"),
			rtSetxattr("ln", "trusted.sym", "s"),
			rtSetxattr("dev/null", "trusted.dev", "d"),
			rtFails(unix.EPERM, rtSetxattr("etc/passwd", ovl.XattrFuseOverlayfsOpaque, "y")),
			rtFails(unix.ENODATA, rtRemovexattr("etc/shadow", "user.none")),
			rtFails(unix.EPERM, rtSetxattr("ln", "user.x", "no")),
		}},
		{name: "unlink and rmdir", steps: []rtStep{
			rtUnlink("etc/hosts"),
			rtUnlink("etc/passwd"),
			rtUnlink("usr/share/doc/README"),
			rtRmdir("usr/share/doc"),
			rtUnlink("ln"),
			rtUnlink("dev/fifo"),
			rtUnlink("dev/null"),
			rtUnlink("hard2"),
			rtUnlink("data/lower2only"),
			rtCreate("tmp", 0o644, "tmp"),
			rtUnlink("tmp"),
			rtFails(unix.ENOENT, rtRmdir("old")),
			rtFails(unix.ENOTEMPTY, rtRmdir("etc")),
			rtFails(unix.ENOENT, rtUnlink("etc/gone")),
		}},
		{name: "rm -r and re-create", steps: []rtStep{
			rtRemoveAll("usr"),
			rtMkdir("usr", 0o755),
			rtCreate("usr/new", 0o644, "new usr"),
			rtRemoveAll("data"),
			rtMkdir("data", 0o700),
			rtMkdir("data/sub", 0o755),
			rtRemoveAll("opq"),
			rtMkdir("opq", 0o755),
			rtRemoveAll("etc"),
			rtCreate("etc", 0o644, "a file over a directory of the parent"),
			rtRemoveAll("var"),
			rtSymlink("var", "usr"),
			rtRemoveAll("bin"),
			rtMkdir("bin", 0o755),
			rtRemoveAll("bin"),
		}},
		{name: "renames", steps: []rtStep{
			rtCreate("a", 0o644, "a"),
			rtRename("a", "b", 0),
			rtCreate("c", 0o600, "c"),
			rtRename("b", "c", 0),
			rtRename("etc/passwd", "etc/passwd.bak", 0),
			rtRename("etc/hosts", "hosts", 0),
			rtMkdir("nd", 0o755),
			rtCreate("nd/f", 0o644, "f"),
			rtMkdir("nd/sub", 0o755),
			rtRename("nd", "moved", 0),
			rtRemoveAll("usr"),
			rtRename("moved", "usr", 0), // onto a name the parent holds: opaque
			rtRename("bin/su", "bin/ping", 0),
			rtRename("c", "data/keep", unix.RENAME_EXCHANGE),
			rtRename("usr/f", "etc/gone", unix.RENAME_NOREPLACE),
			rtMkdir("x", 0o711),
			rtMkdir("y", 0o755),
			rtCreate("y/in-y", 0o644, "y"),
			rtRename("x", "y", unix.RENAME_EXCHANGE),
			rtRename("var", "var2", 0), // a lower directory: a redirect
			rtRename("data/sub", "sub2", 0),
			rtCreate("sub2/new", 0o644, "new"),
			rtFails(unix.EEXIST, rtRename("hosts", "c", unix.RENAME_NOREPLACE)),
		}},
		// A renamed lower directory is written whole: a lower hard
		// link in it keeps its names outside it, which the upper does not
		// hold (links/deep in no upper directory, etc in a changed one).
		{name: "rename splits lower hard links", steps: []rtStep{
			rtCreate("etc/new", 0o644, "n"),
			rtRename("pkg", "moved", 0),
		}},
		{name: "rename splits lower hard links, some names gone", steps: []rtStep{
			rtRename("pkg/lib", "lib2", 0),
			rtUnlink("pkg.so"),
			rtRename("links", "links2", 0),
			rtRename("etc/a.so", "a.so", 0), // a copy-up: one inode still
		}},
		{name: "hard links", steps: []rtStep{
			rtLink("etc/hosts", "hosts.link"),
			rtCreate("n1", 0o640, "n"),
			rtLink("n1", "data/n2"),
			rtLink("n1", "etc/n3"),
			rtUnlink("n1"), // the first path in the layer is another now
			rtAppend("etc/n3", "+"),
			rtLink("hard1", "hard3"),
			rtChmod("data/n2", 0o4711),
			rtSetxattr("etc/n3", "user.l", "v"),
			rtLink("dev/fifo", "fifo2"),
			rtLink("ln", "ln2"),
			rtLink("dev/null", "null2"),
			rtUtimes("hosts.link", 42, 42),
			rtCreate("zz", 0o644, "last"),
			rtLink("zz", "aa"), // the later name sorts first
			rtFails(unix.EPERM, rtLink("etc", "etc2")),
		}},
		{name: "symlinks, fifos and devices", steps: []rtStep{
			rtSymlink("rel", "etc/passwd"),
			rtSymlink("abs", "/etc/passwd"),
			rtSymlink("dangling", "nowhere/at/all"),
			rtSymlink("long", target),
			rtChown("rel", 1000, 1000),
			rtUtimes("abs", 1, 2),
			rtSetxattr("abs", "trusted.sym", "s"),
			rtMknod("dev/tty", unix.S_IFCHR|0o620, 5, 0),
			rtMknod("dev/sda", unix.S_IFBLK|0o660, 8, 0),
			rtMknod("fifo", unix.S_IFIFO|0o644, 0, 0),
			rtMknod("blk00", unix.S_IFBLK|0o600, 0, 0),
			rtMknod("bigdev", unix.S_IFCHR|0o600, 1<<12-1, 1<<20-1),
			rtChmod("fifo", 0o1666),
			rtChown("dev/tty", 0, 5),
			rtFails(unix.EPERM, rtMknod("wh", unix.S_IFCHR, 0, 0)),
		}},
		{name: "whiteouts and opaque directories of the parent", steps: []rtStep{
			rtCreate("opq/new", 0o644, "in an opaque directory"),
			rtUnlink("opq/kept"),
			rtCreate("etc/gone", 0o644, "back"),
			rtMkdir("old", 0o755),
			rtCreate("old/x", 0o644, "not the parent's"),
			rtChmod("opq", 0o700),
			rtMkdir("opq/d", 0o755),
			rtRemoveAll("opq/d"),
		}},
		{name: "names", steps: []rtStep{
			rtMkdir(long, 0o755),
			rtMkdir(long+"/"+long, 0o755),
			rtCreate(long+"/"+long+"/"+strings.Repeat("f", 255), 0o644, "deep and long"),
			rtCreate("with space", 0o644, "s"),
			rtCreate("ümlaut", 0o644, "u"),
			rtCreate("new\nline", 0o644, "n"),
			rtCreate("bad\xffutf8", 0o644, "b"),
			rtCreate("-dash", 0o644, "d"),
			rtCreate("...", 0o644, "dots"),
			rtCreate(".hidden", 0o644, "h"),
			rtCreate(".wh", 0o644, "not a whiteout"),
			rtLink(long+"/"+long+"/"+strings.Repeat("f", 255), "short"),
			rtLink("with space", long+"/z"),
			rtFails(cow.ErrReservedName, rtCreate(".wh.x", 0o644, "reserved")),
		}},
		{name: "owners and set-ID bits", steps: []rtStep{
			rtMkdir("g", 0o755),
			rtChown("g", 0, 1000),
			rtChmod("g", 0o2775),
			rtWrite("g/f", 0o644, cow.Owner{Uid: 7, Gid: 8}, "inherits the group"),
			rtMkdirAs("g/sub", 0o755, cow.Owner{Uid: 7, Gid: 8}),
			rtChown("g/f", 2097152, 2097153),
			rtWrite("big", 0o600, cow.Owner{Uid: 4294967294, Gid: 4294967294}, "max id"),
			rtChmod("big", 0o6755),
			rtMkdir("sticky", 0o1777),
			rtCreate("suid-then-write", 0o4755, "x"),
			rtAppend("suid-then-write", "y"),
		}},
		{name: "times", steps: []rtStep{
			rtCreate("t0", 0o644, "epoch"),
			rtUtimes("t0", 0, 0),
			rtCreate("tneg", 0o644, "before 1970"),
			rtUtimes("tneg", -2, 500000000),
			rtCreate("tfar", 0o644, "after 2242"),
			rtUtimes("tfar", 1<<33, 999999999),
			rtMkdir("td", 0o755),
			rtCreate("td/f", 0o644, "f"),
			rtUtimes("td", 1000000000, 999999999),
			rtUtimes("etc", 1, 0),
			rtUtimes("data/sub", -1000, 1),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(base, fmt.Sprint(i))
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			upper, f := rtNewUpper(t, dir, lowers)
			log := rtRun(f, tc.steps)
			if err := f.s.Close(); err != nil {
				t.Fatal(err)
			}
			for i, l := range log {
				if !strings.HasSuffix(l, " = ok") {
					t.Fatalf("step %s\nsteps:\n  %s", l, strings.Join(log[:i+1], "\n  "))
				}
			}
			applied, details := rtCheck(t, dir, upper, lowers, log)

			// The layer is the same whatever its compression.
			plain, _ := rtWriteLayer(t, upper, lowers, Uncompressed)
			for _, c := range []Compression{Gzip, Zstd} {
				d1, _ := rtWriteLayer(t, upper, lowers, c)
				d2, _ := rtWriteLayer(t, upper, lowers, c)
				if d1 != d2 || d1.DiffID != plain.DiffID {
					t.Errorf("Write %s: %+v, then %+v; diff ID uncompressed %s", c, d1, d2, plain.DiffID)
				}
			}
			t.Run("kernel overlayfs", func(t *testing.T) {
				rtCheckKernel(t, dir, upper, applied, lowers, details)
			})
		})
	}
}

// ---------------------------------------------------------------------
// FuzzRoundTrip

// rtFuzzLowers is FuzzRoundTrip's parent: a whiteout of a file and one of
// a directory, an opaque directory, a lower hard link, a capability.
func rtFuzzLowers() [][]rtNode {
	return [][]rtNode{{
		rtLFile("a", "a1").xattr("user.k", "v1"),
		rtLDir("d").owner(1, 1).xattr("user.d", "1"),
		rtLFile("d/e", "de1"),
		rtLWh("d/g"),
		rtLDir("o").opaque(),
		rtLFile("o/a", "oa1"),
		rtLWh("c"),
		rtLSym("s", "a"),
		rtLChar("p", 1, 3),
	}, {
		rtLFile("a", "a2"),
		rtLFile("b", "b2").perm(0o755).xattr("security.capability", rtCapNetRaw),
		rtLDir("c"),
		rtLFile("c/x", "cx2"),
		rtLDir("d"),
		rtLFile("d/f", "df2"),
		rtLFile("d/g", "dg2"),
		rtLHard("d/h", "b"),
		rtLDir("o"),
		rtLFile("o/b", "ob2"),
		rtLFifo("p"),
	}}
}

// The operand tables of FuzzRoundTrip's operations.
var (
	// rtFuzzPaths: every path of the parent, and new ones.
	rtFuzzPaths = [16]string{"a", "b", "c", "d", "d/e", "d/f", "d/g", "d/h", "o", "o/a", "o/b", "c/x", "s", "p", "n", "n/m"}
	rtFuzzSizes = [8]int{0, 1, 7, 100, 4096, 4097, 12288, 70000}
	rtFuzzModes = [8]uint32{0o644, 0o600, 0o755, 0o4755, 0o2755, 0o1777, 0, 0o6711}
	// rtFuzzOwners: -1 leaves an ID as it is (creating, 0).
	rtFuzzOwners = [8][2]int{{0, 0}, {1, 2}, {1000, 1000}, {65534, 65534}, {1 << 21, 1<<21 + 1}, {1<<32 - 2, 1<<32 - 2}, {-1, 5}, {6, -1}}
	rtFuzzTimes  = [8]unix.Timespec{{}, {Sec: 1, Nsec: 1}, {Sec: 1e9, Nsec: 123456789}, {Sec: -2, Nsec: 5e8},
		{Sec: 1 << 33, Nsec: 999999999}, {Sec: 1700000000}, {Sec: 2e9, Nsec: 1}, {Sec: 4102444800, Nsec: 5}}
	rtFuzzTargets = [8]string{"a", "../x", "/abs/path", "d/e", "", ".", strings.Repeat("t/", 80), "n/m"}
	rtFuzzXattrs  = [4]string{"user.x", "user.y", "security.capability", "trusted.t"}
	rtFuzzValues  = [4]string{"", "v", "\x00\xffbin", strings.Repeat("w", 300)}
	rtFuzzRenames = [3]uint{0, unix.RENAME_NOREPLACE, unix.RENAME_EXCHANGE}
	rtFuzzNodes   = [4]struct {
		mode         uint32
		major, minor uint32
	}{{unix.S_IFIFO | 0o644, 0, 0}, {unix.S_IFCHR | 0o620, 1, 5}, {unix.S_IFBLK | 0o660, 7, 3}, {unix.S_IFBLK | 0o600, 0, 0}}
)

// The operations of FuzzRoundTrip.
const (
	rtOpWrite = iota
	rtOpAppend
	rtOpTruncate
	rtOpMkdir
	rtOpRmdir
	rtOpRemoveAll
	rtOpUnlink
	rtOpRename
	rtOpSymlink
	rtOpLink
	rtOpChmod
	rtOpChown
	rtOpSetxattr
	rtOpRemovexattr
	rtOpUtimes
	rtOpMknod
)

// Indexes into rtFuzzPaths, for seeds.
const (
	rtA, rtB, rtC, rtD, rtDE, rtDF, rtDG, rtDH = 0, 1, 2, 3, 4, 5, 6, 7
	rtO, rtOA, rtOB, rtCX, rtS, rtP, rtN, rtNM = 8, 9, 10, 11, 12, 13, 14, 15
)

// rtMaxOps bounds an input, to keep an iteration at a few milliseconds.
const rtMaxOps = 32

// rtOp encodes one operation of FuzzRoundTrip: op and its argument arg
// (4 bits each), then two paths, indexes into rtFuzzPaths, each with 4
// bits more (x1: the mode of a new file; x2: the owner of a new entry).
func rtOp(op, arg, p1, p2, x1, x2 int) []byte {
	return []byte{byte(op | arg<<4), byte(p1 | x1<<4), byte(p2 | x2<<4)}
}

func rtOwner(i int) (uid, gid int) { return rtFuzzOwners[i&7][0], rtFuzzOwners[i&7][1] }

// rtNewOwner is the owner of an entry made with owner index i.
func rtNewOwner(i int) cow.Owner {
	uid, gid := rtOwner(i)
	return cow.Owner{Uid: uint32(max(uid, 0)), Gid: uint32(max(gid, 0))}
}

// rtFuzzData is the data of operation i of the given size index; arg&8
// makes it zeros, which Apply leaves as holes.
func rtFuzzData(i, arg int) string {
	n := rtFuzzSizes[arg&7]
	if arg&8 != 0 {
		return strings.Repeat("\x00", n)
	}
	return rtPattern(i, n)
}

// rtDecode turns a fuzz input into steps, three bytes each (see rtOp).
func rtDecode(data []byte) []rtStep {
	var steps []rtStep
	for i := 0; i+3 <= len(data) && len(steps) < rtMaxOps; i += 3 {
		b0, b1, b2 := data[i], data[i+1], data[i+2]
		op, arg := int(b0&15), int(b0>>4)
		p1, x1 := rtFuzzPaths[b1&15], int(b1>>4)
		p2, x2 := rtFuzzPaths[b2&15], int(b2>>4)
		n := len(steps)
		var st rtStep
		switch op {
		case rtOpWrite:
			st = rtWrite(p1, rtFuzzModes[x1&7], rtNewOwner(x2), rtFuzzData(n, arg))
		case rtOpAppend:
			st = rtAppend(p1, rtFuzzData(n, arg))
		case rtOpTruncate:
			st = rtTruncate(p1, int64(rtFuzzSizes[arg&7]))
		case rtOpMkdir:
			st = rtMkdirAs(p1, rtFuzzModes[arg&7], rtNewOwner(x2))
		case rtOpRmdir:
			st = rtRmdir(p1)
		case rtOpRemoveAll:
			st = rtRemoveAll(p1)
		case rtOpUnlink:
			st = rtUnlink(p1)
		case rtOpRename:
			st = rtRename(p1, p2, rtFuzzRenames[arg%3])
		case rtOpSymlink:
			target, o := rtFuzzTargets[arg&7], rtNewOwner(x2)
			st = rtStep{fmt.Sprintf("symlink %s -> %.20q owner %d:%d", p1, target, o.Uid, o.Gid),
				func(f *rtFS) error { return f.symlink(p1, target, o) }}
		case rtOpLink:
			st = rtLink(p1, p2)
		case rtOpChmod:
			st = rtChmod(p1, rtFuzzModes[arg&7])
		case rtOpChown:
			uid, gid := rtOwner(arg)
			st = rtChown(p1, uid, gid)
		case rtOpSetxattr:
			attr, value := rtFuzzXattrs[arg&3], rtFuzzValues[arg>>2]
			if attr == "security.capability" {
				value = [...]string{rtCapNetRaw, rtCapBindSvc}[arg>>2&1]
			}
			st = rtSetxattr(p1, attr, value)
		case rtOpRemovexattr:
			st = rtRemovexattr(p1, rtFuzzXattrs[arg&3])
		case rtOpUtimes:
			ts := rtFuzzTimes[arg&7]
			st = rtUtimes(p1, ts.Sec, ts.Nsec)
		case rtOpMknod:
			nd, o := rtFuzzNodes[arg&3], rtNewOwner(x2)
			st = rtStep{fmt.Sprintf("mknod %s mode %#o dev %d,%d owner %d:%d", p1, nd.mode, nd.major, nd.minor, o.Uid, o.Gid),
				func(f *rtFS) error { return f.mknod(p1, nd.mode, unix.Mkdev(nd.major, nd.minor), o) }}
		}
		steps = append(steps, st)
	}
	return steps
}

// rtFuzzSeeds are inputs to start from: each kind of operation on each
// kind of entry of the parent.
func rtFuzzSeeds() [][]byte {
	seq := func(ops ...[]byte) []byte { return bytes.Join(ops, nil) }
	const none = 0
	return [][]byte{
		// Writes to lower files, new files, sparse ones.
		seq(rtOp(rtOpWrite, 3, rtA, none, 0, 0), rtOp(rtOpAppend, 1, rtDE, none, 0, 0), rtOp(rtOpTruncate, 0, rtDF, none, 0, 0),
			rtOp(rtOpWrite, 7, rtN, none, 1, 2), rtOp(rtOpWrite, 8|6, rtB, none, 0, 0), rtOp(rtOpTruncate, 7, rtDH, none, 0, 0)),
		// A new directory, renamed over a name whited out in the parent.
		seq(rtOp(rtOpMkdir, 2, rtN, none, 0, 3), rtOp(rtOpWrite, 2, rtNM, none, 4, 5), rtOp(rtOpRename, 0, rtN, rtC, 0, 0),
			rtOp(rtOpMkdir, 0, rtN, none, 0, 0), rtOp(rtOpRename, 2, rtN, rtC, 0, 0)),
		// rm -r of a merged directory and again.
		seq(rtOp(rtOpRemoveAll, 0, rtD, none, 0, 0), rtOp(rtOpMkdir, 2, rtD, none, 0, 1), rtOp(rtOpWrite, 1, rtDE, none, 0, 0)),
		// rm -r of an opaque directory and again.
		seq(rtOp(rtOpRemoveAll, 0, rtO, none, 0, 0), rtOp(rtOpMkdir, 1, rtO, none, 0, 0), rtOp(rtOpWrite, 1, rtOA, none, 0, 0),
			rtOp(rtOpWrite, 1, rtOB, none, 0, 0)),
		// Unlinks of every kind of lower entry.
		seq(rtOp(rtOpUnlink, 0, rtA, none, 0, 0), rtOp(rtOpUnlink, 0, rtB, none, 0, 0), rtOp(rtOpUnlink, 0, rtDH, none, 0, 0),
			rtOp(rtOpUnlink, 0, rtS, none, 0, 0), rtOp(rtOpUnlink, 0, rtP, none, 0, 0), rtOp(rtOpRmdir, 0, rtO, none, 0, 0),
			rtOp(rtOpUnlink, 0, rtOA, none, 0, 0), rtOp(rtOpRmdir, 0, rtO, none, 0, 0)),
		// Hard links: of a lower hard link, of links.
		seq(rtOp(rtOpLink, 0, rtB, rtN, 0, 0), rtOp(rtOpLink, 0, rtN, rtDG, 0, 0), rtOp(rtOpUnlink, 0, rtN, none, 0, 0),
			rtOp(rtOpAppend, 2, rtDG, none, 0, 0), rtOp(rtOpLink, 0, rtDH, rtOB, 0, 0)),
		// Metadata copy-ups.
		seq(rtOp(rtOpChmod, 3, rtA, none, 0, 0), rtOp(rtOpChown, 2, rtB, none, 0, 0), rtOp(rtOpUtimes, 2, rtDF, none, 0, 0),
			rtOp(rtOpChmod, 1, rtD, none, 0, 0), rtOp(rtOpChown, 6, rtD, none, 0, 0), rtOp(rtOpUtimes, 3, rtD, none, 0, 0),
			rtOp(rtOpChown, 7, rtP, none, 0, 0), rtOp(rtOpUtimes, 4, rtS, none, 0, 0)),
		// xattrs, the capability among them.
		seq(rtOp(rtOpSetxattr, 0, rtA, none, 0, 0), rtOp(rtOpSetxattr, 2|4, rtB, none, 0, 0), rtOp(rtOpRemovexattr, 2, rtB, none, 0, 0),
			rtOp(rtOpRemovexattr, 0, rtA, none, 0, 0), rtOp(rtOpSetxattr, 1, rtD, none, 0, 0), rtOp(rtOpSetxattr, 3|8, rtS, none, 0, 0),
			rtOp(rtOpSetxattr, 1|12, rtDE, none, 0, 0)),
		// Symlinks.
		seq(rtOp(rtOpSymlink, 0, rtN, none, 0, 0), rtOp(rtOpSymlink, 6, rtDG, none, 0, 2), rtOp(rtOpSymlink, 2, rtCX, none, 0, 0),
			rtOp(rtOpLink, 0, rtS, rtOB, 0, 0), rtOp(rtOpChown, 1, rtN, none, 0, 0)),
		// Special files, a block device 0,0 among them.
		seq(rtOp(rtOpMknod, 0, rtN, none, 0, 0), rtOp(rtOpMknod, 1, rtDG, none, 0, 1), rtOp(rtOpMknod, 2, rtOB, none, 0, 0),
			rtOp(rtOpMknod, 3, rtC, none, 0, 0), rtOp(rtOpChmod, 3, rtN, none, 0, 0)),
		// Renames of files: lower over lower, exchange.
		seq(rtOp(rtOpRename, 0, rtA, rtN, 0, 0), rtOp(rtOpRename, 0, rtN, rtB, 0, 0), rtOp(rtOpRename, 2, rtDE, rtDF, 0, 0),
			rtOp(rtOpRename, 1, rtDH, rtOA, 0, 0), rtOp(rtOpRename, 0, rtS, rtDG, 0, 0)),
		// Renames of directories within the upper.
		seq(rtOp(rtOpMkdir, 2, rtN, none, 0, 0), rtOp(rtOpWrite, 1, rtNM, none, 0, 0), rtOp(rtOpRemoveAll, 0, rtO, none, 0, 0),
			rtOp(rtOpRename, 0, rtN, rtO, 0, 0), rtOp(rtOpRename, 0, rtO, rtN, 0, 0), rtOp(rtOpRename, 0, rtN, rtDG, 0, 0)),
		// Zeros, truncates up and down.
		seq(rtOp(rtOpWrite, 8|7, rtN, none, 0, 0), rtOp(rtOpAppend, 3, rtN, none, 0, 0), rtOp(rtOpTruncate, 5, rtN, none, 0, 0),
			rtOp(rtOpTruncate, 7, rtA, none, 0, 0), rtOp(rtOpWrite, 8|4, rtDE, none, 0, 0)),
		// Owners and times at the limits of the tar header's fields.
		seq(rtOp(rtOpWrite, 1, rtN, none, 0, 4), rtOp(rtOpChown, 5, rtA, none, 0, 0), rtOp(rtOpUtimes, 3, rtN, none, 0, 0),
			rtOp(rtOpUtimes, 4, rtA, none, 0, 0), rtOp(rtOpUtimes, 0, rtB, none, 0, 0), rtOp(rtOpMkdir, 0, rtNM, none, 0, 0)),
		// rmdir of a non-empty directory, then emptied.
		seq(rtOp(rtOpRmdir, 0, rtD, none, 0, 0), rtOp(rtOpUnlink, 0, rtDE, none, 0, 0), rtOp(rtOpUnlink, 0, rtDF, none, 0, 0),
			rtOp(rtOpUnlink, 0, rtDH, none, 0, 0), rtOp(rtOpRmdir, 0, rtD, none, 0, 0), rtOp(rtOpWrite, 0, rtD, none, 2, 0)),
		// A hard link across directories, the first name removed.
		seq(rtOp(rtOpWrite, 2, rtOA, none, 3, 0), rtOp(rtOpLink, 0, rtOA, rtDG, 0, 0), rtOp(rtOpLink, 0, rtOA, rtA, 0, 0),
			rtOp(rtOpUnlink, 0, rtA, none, 0, 0), rtOp(rtOpLink, 0, rtOA, rtA, 0, 0), rtOp(rtOpUnlink, 0, rtOA, none, 0, 0),
			rtOp(rtOpChmod, 3, rtDG, none, 0, 0)),
		// Metadata of a symlink.
		seq(rtOp(rtOpChown, 1, rtS, none, 0, 0), rtOp(rtOpUtimes, 2, rtS, none, 0, 0), rtOp(rtOpSetxattr, 3, rtS, none, 0, 0),
			rtOp(rtOpChmod, 0, rtS, none, 0, 0)),
		// An upper directory onto a merged one, after emptying it.
		seq(rtOp(rtOpMkdir, 2, rtN, none, 0, 0), rtOp(rtOpRename, 0, rtN, rtD, 0, 0), rtOp(rtOpRemoveAll, 0, rtD, none, 0, 0),
			rtOp(rtOpRename, 0, rtN, rtD, 0, 0), rtOp(rtOpWrite, 1, rtDE, none, 0, 0)),
		// Exchange of an upper directory with a lower file.
		seq(rtOp(rtOpMkdir, 2, rtN, none, 0, 0), rtOp(rtOpWrite, 1, rtNM, none, 0, 0), rtOp(rtOpRename, 2, rtN, rtA, 0, 0),
			rtOp(rtOpRename, 2, rtA, rtB, 0, 0)),
		// A lower directory renamed: its file d/h is a hard link of b,
		// which stays in the lowers.
		seq(rtOp(rtOpRename, 0, rtD, rtC, 0, 0)),
		// Everything on one name.
		seq(rtOp(rtOpWrite, 1, rtA, none, 0, 0), rtOp(rtOpLink, 0, rtA, rtN, 0, 0), rtOp(rtOpSetxattr, 0, rtN, none, 0, 0),
			rtOp(rtOpChmod, 4, rtA, none, 0, 0), rtOp(rtOpUnlink, 0, rtA, none, 0, 0), rtOp(rtOpMkdir, 5, rtA, none, 0, 0),
			rtOp(rtOpRename, 0, rtN, rtA, 0, 0), rtOp(rtOpMknod, 0, rtA, none, 0, 0), rtOp(rtOpUtimes, 6, rtA, none, 0, 0)),
	}
}

// FuzzRoundTrip changes an upper over a fixed parent with a sequence of
// operations decoded from the input (errors are part of the game), and
// checks the round trip of its layer (rtCheck): Apply(Write(upper)) over
// the parent is the upper over the parent, Write is deterministic, and
// writing the applied layer gives the same diff ID.
func FuzzRoundTrip(f *testing.F) {
	if os.Geteuid() != 0 {
		f.Skip("needs root: kernel whiteouts, trusted.* xattrs, owners and devices in the layers")
	}
	for _, seed := range rtFuzzSeeds() {
		f.Add(seed)
	}
	// The parent is built once per process and only read.
	base := rtScratch(f)
	lowers := rtBuildLowers(f, base, rtFuzzLowers())
	f.Fuzz(func(t *testing.T, data []byte) {
		dir, err := os.MkdirTemp(base, "run-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		upper, fs := rtNewUpper(t, dir, lowers)
		log := rtRun(fs, rtDecode(data))
		if err := fs.s.Close(); err != nil {
			t.Fatal(err)
		}
		rtCheck(t, dir, upper, lowers, log)
	})
}
