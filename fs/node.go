//go:build linux

package fs

import (
	"context"
	"log"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/cow"
	"github.com/strata-fs/strata/ovl"
)

// Root is the shared state of one mount.
type Root struct {
	Stack  *cow.Stack
	Logger *log.Logger
	// LowerPassthrough serves lower files by passthrough too (see
	// newFileLocked).
	LowerPassthrough bool

	// frozen holds changes while a consistent copy of the upper is
	// taken (Freeze): every request that changes the upper holds it for
	// reading, taken before any node lock.
	frozen sync.RWMutex
	// writers counts the open files opened for writing.
	writers atomic.Int64

	respawned atomic.Bool // respawn is not empty
	respawnMu sync.Mutex
	respawn   map[uint64]uint64 // inode number -> generation of its next node
}

// Freeze holds every change made through the mount until thaw is
// called: requests that would change the upper layer, opens for writing
// among them, wait. Writes to files already open for writing by
// passthrough reach the upper without the daemon, so Freeze then waits,
// up to wait, for those files to be closed; open is how many are still
// open for writing when it returns (their writes race with the copy).
func (r *Root) Freeze(wait time.Duration) (thaw func(), open int64) {
	r.frozen.Lock()
	deadline := time.Now().Add(wait)
	for r.writers.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	return r.frozen.Unlock, r.writers.Load()
}

// opened counts f among the files open for writing, if it is one.
func (r *Root) opened(f *file) {
	if f.flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0 {
		f.writer = true
		r.writers.Add(1)
	}
}

// changing is held by each request that changes the upper.
func (r *Root) changing() func() {
	r.frozen.RLock()
	return r.frozen.RUnlock
}

// respawnGen is the node generation for inode number ino. Every lookup
// asks, so the common case (no node ever retired) takes no lock.
func (r *Root) respawnGen(ino uint64) uint64 {
	if !r.respawned.Load() {
		return 0
	}
	r.respawnMu.Lock()
	defer r.respawnMu.Unlock()
	return r.respawn[ino]
}

// bumpGen makes the next lookup of inode number ino a new node.
func (r *Root) bumpGen(ino uint64) {
	r.respawnMu.Lock()
	defer r.respawnMu.Unlock()
	if r.respawn == nil {
		r.respawn = make(map[uint64]uint64)
	}
	r.respawn[ino] += 1 << 32
	r.respawned.Store(true)
}

// node is one inode of the merged tree: the engine's node (cow.Node),
// which holds the entry, its lock and its copy-up, and the kernel inode's
// io mode, which is the adapter's business.
type node struct {
	gofs.Inode
	root *Root
	cn   cow.Node

	// mu guards the io mode. It is taken before cn's lock, never
	// inside it.
	mu sync.Mutex
	// The kernel inode's io mode, as this node has set it. The kernel
	// leaves an inode's mode only when it gets the reply to the last
	// RELEASE of a file in that mode, after this daemon has seen the
	// release: an open in another mode in between fails with EIO
	// (fs/fuse/iomode.c, "incorrect open mode"). So a node keeps its
	// mode until the kernel forgets it: cacheMode, once a file was
	// served through the page cache; lowerPassMode, once a lower file
	// was served by passthrough (an upper open then needs a new node).
	cacheMode     bool
	lowerPassMode bool
}

var (
	_ gofs.NodeLookuper       = (*node)(nil)
	_ gofs.NodeGetattrer      = (*node)(nil)
	_ gofs.NodeSetattrer      = (*node)(nil)
	_ gofs.NodeOpener         = (*node)(nil)
	_ gofs.NodeCreater        = (*node)(nil)
	_ gofs.NodeOpendirHandler = (*node)(nil)
	_ gofs.NodeMkdirer        = (*node)(nil)
	_ gofs.NodeMknoder        = (*node)(nil)
	_ gofs.NodeSymlinker      = (*node)(nil)
	_ gofs.NodeLinker         = (*node)(nil)
	_ gofs.NodeReadlinker     = (*node)(nil)
	_ gofs.NodeUnlinker       = (*node)(nil)
	_ gofs.NodeRmdirer        = (*node)(nil)
	_ gofs.NodeRenamer        = (*node)(nil)
	_ gofs.NodeGetxattrer     = (*node)(nil)
	_ gofs.NodeSetxattrer     = (*node)(nil)
	_ gofs.NodeRemovexattrer  = (*node)(nil)
	_ gofs.NodeListxattrer    = (*node)(nil)
	_ gofs.NodeStatfser       = (*node)(nil)
)

// NewRoot resolves the root of stack and returns its node.
func NewRoot(r *Root) (gofs.InodeEmbedder, *gofs.StableAttr, error) {
	e, err := r.Stack.Root()
	if err != nil {
		return nil, nil, err
	}
	n := &node{root: r}
	r.Stack.InitNode(&n.cn, e)
	return n, &gofs.StableAttr{Ino: e.Ino}, nil
}

func (n *node) errno(op string, err error) syscall.Errno {
	return toErrno(n.root.Logger, op, err)
}

// rel is the node's path in the stack.
func (n *node) rel() string {
	p := n.Path(n.Root())
	if p == "." {
		return ""
	}
	return p
}

func owner(ctx context.Context) cow.Owner {
	if c, ok := fuse.FromContext(ctx); ok {
		return cow.Owner{Uid: c.Uid, Gid: c.Gid}
	}
	return cow.Owner{}
}

// fillNodeAttr fills out from what the engine's node reports.
func fillNodeAttr(out *fuse.Attr, a cow.Attr) {
	fillAttr(out, &a.Stat, a.Ino)
	out.Nlink = uint32(a.Nlink)
}

// fillEntryAttr fills out from the entry e (cow.AttrOf).
func fillEntryAttr(out *fuse.Attr, e *cow.Entry) { fillNodeAttr(out, cow.AttrOf(e, &e.Stat)) }

func fillAttr(out *fuse.Attr, st *unix.Stat_t, ino uint64) {
	out.Ino = ino
	out.Size = uint64(st.Size)
	out.Blocks = uint64(st.Blocks)
	out.Atime, out.Atimensec = uint64(st.Atim.Sec), uint32(st.Atim.Nsec)
	out.Mtime, out.Mtimensec = uint64(st.Mtim.Sec), uint32(st.Mtim.Nsec)
	out.Ctime, out.Ctimensec = uint64(st.Ctim.Sec), uint32(st.Ctim.Nsec)
	out.Mode = st.Mode
	out.Nlink = uint32(st.Nlink)
	out.Uid, out.Gid = st.Uid, st.Gid
	out.Rdev = uint32(st.Rdev)
	out.Blksize = uint32(st.Blksize)
}

// newChild makes (or finds, for a known inode number) the node for e.
func (n *node) newChild(ctx context.Context, name string, e cow.Entry, out *fuse.EntryOut) *gofs.Inode {
	fresh := &node{root: n.root}
	n.root.Stack.InitNode(&fresh.cn, e)
	// The names of a lower hard link are one node, as they stay one
	// inode through copy-up (see cow.Stack.JoinsLinks).
	attr := gofs.StableAttr{Mode: e.Stat.Mode & unix.S_IFMT, Ino: e.Ino}
	attr.Gen ^= n.root.respawnGen(e.Ino)
	ch := n.NewInode(ctx, fresh, attr)
	if old, ok := ch.Operations().(*node); ok && old != fresh {
		old.cn.Resolved(e)
	}
	fillEntryAttr(&out.Attr, &e)
	return ch
}

// fileFd returns the fd of an open file handle and its layer, or -1.
func fileFd(fh gofs.FileHandle) (fd, layer int) {
	var f *file
	switch h := fh.(type) {
	case *file:
		f = h
	case *passFile:
		f = h.file
	default:
		return -1, 0
	}
	return f.fdLayer()
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if strings.HasPrefix(name, ovl.WhiteoutPrefix) {
		return nil, syscall.ENOENT
	}
	e, err := n.cn.Lookup(n.rel(), name)
	if err != nil {
		return nil, n.errno("lookup", err)
	}
	return n.newChild(ctx, name, e, out), 0
}

func (n *node) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	fd, layer := fileFd(fh)
	_, parent := n.Parent()
	a, err := n.cn.Getattr(n.rel(), fd, layer, parent == nil && !n.IsRoot())
	if err != nil {
		return n.errno("getattr", err)
	}
	fillNodeAttr(&out.Attr, a)
	return 0
}

func (n *node) Setattr(ctx context.Context, fh gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	defer n.root.changing()()
	fd, layer := fileFd(fh)
	if layer != cow.UpperIndex {
		fd = -1
	}
	a, err := n.cn.Setattr(n.rel(), setattrRequest(in), fd)
	if err != nil {
		return n.errno("setattr", err)
	}
	fillNodeAttr(&out.Attr, a)
	return 0
}

func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	oflags := backingOpenFlags(flags)
	if cow.OpenWrite(oflags) {
		defer n.root.changing()()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	// Copy up at the first change rather than now: without
	// FUSE_ATOMIC_O_TRUNC (go-fuse does not negotiate it) an open(O_TRUNC)
	// arrives as this open and a truncate to 0, which then copies no
	// data. The file is copied up by the time the open is closed, as with
	// kernel overlayfs. Not once the kernel inode serves a lower file by
	// passthrough: the upper open must then retire the node (see
	// newFileLocked), now.
	fd, li, pending, err := n.cn.Open(n.rel(), oflags, !n.lowerPassMode)
	if err != nil {
		return nil, 0, n.errno("open", err)
	}
	if pending {
		f := &file{node: n, fd: fd, layer: li, flags: oflags &^ syscall.O_TRUNC, pending: true,
			lf: gofs.NewLoopbackFile(fd).(*gofs.LoopbackFile)}
		n.cacheMode = true
		n.root.opened(f)
		return f, fuse.FOPEN_KEEP_CACHE, 0
	}
	return n.newFileLocked(fd, li, oflags)
}

// newFileLocked wraps an open fd of layer li into a file handle.
//
// The kernel allows one passthrough backing file per inode and refuses
// to mix passthrough and cached opens of one inode. A lower file may be
// copied up while open, and its open files must then follow the copy, so
// lower files are served through the page cache (kept across opens:
// lower layers do not change) and only upper files by passthrough; an
// upper file of a node ever opened cached is cached too (see cacheMode).
func (n *node) newFileLocked(fd, li, flags int) (gofs.FileHandle, uint32, syscall.Errno) {
	if li == cow.UpperIndex && n.lowerPassMode {
		// The kernel inode's passthrough backing is the lower file,
		// which this open must not use. Retire the node: the next
		// lookup of the name makes a new one, and ESTALE makes the
		// kernel look the name up again and retry the open on it.
		// Files opened before keep reading the lower file.
		unix.Close(fd)
		n.root.bumpGen(n.cn.Ino())
		return nil, 0, syscall.ESTALE
	}
	// The loopback file owns fd from here on: it closes it.
	f := &file{node: n, fd: fd, layer: li, flags: flags &^ (syscall.O_TRUNC | syscall.O_CREAT | syscall.O_EXCL), lf: gofs.NewLoopbackFile(fd).(*gofs.LoopbackFile)}
	n.root.opened(f)
	switch {
	case li != cow.UpperIndex && n.root.LowerPassthrough && !n.cacheMode:
		f.lowerPass = true
		n.lowerPassMode = true
		return &passFile{f}, 0, 0
	case li != cow.UpperIndex || n.cacheMode:
		n.cacheMode = true
		return f, fuse.FOPEN_KEEP_CACHE, 0
	}
	return &passFile{f}, 0, 0
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	defer n.root.changing()()
	fd, e, err := n.cn.Create(n.rel(), name, backingOpenFlags(flags), mode, owner(ctx))
	if err != nil {
		return nil, nil, 0, n.errno("create", err)
	}
	ch := n.newChild(ctx, name, e, out)
	cn := ch.Operations().(*node)
	cn.mu.Lock()
	defer cn.mu.Unlock()
	fh, fl, errno := cn.newFileLocked(fd, cow.UpperIndex, backingOpenFlags(flags))
	return ch, fh, fl, errno
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	defer n.root.changing()()
	e, err := n.cn.Mkdir(n.rel(), name, mode, owner(ctx))
	if err != nil {
		return nil, n.errno("mkdir", err)
	}
	return n.newChild(ctx, name, e, out), 0
}

func (n *node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	defer n.root.changing()()
	e, err := n.cn.Mknod(n.rel(), name, mode, uint64(dev), owner(ctx))
	if err != nil {
		return nil, n.errno("mknod", err)
	}
	return n.newChild(ctx, name, e, out), 0
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	defer n.root.changing()()
	e, err := n.cn.Symlink(n.rel(), name, target, owner(ctx))
	if err != nil {
		return nil, n.errno("symlink", err)
	}
	return n.newChild(ctx, name, e, out), 0
}

func (n *node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	defer n.root.changing()()
	tn, ok := target.(*node)
	if !ok {
		return nil, syscall.EXDEV
	}
	e, err := tn.cn.Link(tn.rel(), n.rel(), name)
	if err != nil {
		return nil, n.errno("link", err)
	}
	return n.newChild(ctx, name, e, out), 0
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	t, err := n.cn.Readlink(n.rel())
	if err != nil {
		return nil, n.errno("readlink", err)
	}
	return []byte(t), 0
}

// child returns the node of name in n, looking it up if the kernel has
// not.
func (n *node) child(ctx context.Context, name string) (*node, syscall.Errno) {
	if ch := n.GetChild(name); ch != nil {
		if cn, ok := ch.Operations().(*node); ok {
			return cn, 0
		}
	}
	var out fuse.EntryOut
	ch, errno := n.Lookup(ctx, name, &out)
	if errno != 0 {
		return nil, errno
	}
	return ch.Operations().(*node), 0
}

func (n *node) remove(ctx context.Context, name string) syscall.Errno {
	defer n.root.changing()()
	if strings.HasPrefix(name, ovl.WhiteoutPrefix) {
		return syscall.ENOENT
	}
	cn, errno := n.child(ctx, name)
	if errno != 0 {
		return errno
	}
	if err := n.cn.Remove(n.rel(), name, &cn.cn); err != nil {
		return n.errno("remove", err)
	}
	return 0
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno { return n.remove(ctx, name) }
func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno  { return n.remove(ctx, name) }

func (n *node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	defer n.root.changing()()
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	if flags&^(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 {
		return syscall.EINVAL // RENAME_WHITEOUT is the overlay's own business
	}
	if strings.HasPrefix(name, ovl.WhiteoutPrefix) {
		return syscall.ENOENT
	}
	src, errno := n.child(ctx, name)
	if errno != 0 {
		return errno
	}
	dst, errno := np.child(ctx, newName)
	if errno == syscall.ENOENT {
		dst = nil
	} else if errno != 0 {
		return errno
	}
	if dst == src {
		return 0 // two names of one inode: rename(2) does nothing
	}
	var dcn *cow.Node
	if dst != nil {
		dcn = &dst.cn
	}
	moved, err := n.cn.Rename(n.rel(), name, &src.cn, &np.cn, np.rel(), newName, dcn, uint(flags))
	if err != nil {
		return n.errno("rename", err)
	}
	for _, m := range []*node{src, dst} {
		if m != nil && slices.Contains(moved, &m.cn) {
			// A directory of the lowers renamed is now merged in the
			// upper, and reports one link: the kernel's cached
			// attributes must go. Invalidating them takes no lock.
			m.NotifyContent(-1, 0)
		}
	}
	return 0
}

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	v, err := n.cn.Getxattr(n.rel(), attr)
	if err != nil {
		return 0, n.errno("getxattr", err)
	}
	return fillBuf(dest, v)
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	names, err := n.cn.Listxattr(n.rel())
	if err != nil {
		return 0, n.errno("listxattr", err)
	}
	var b []byte
	for _, x := range names {
		b = append(append(b, x...), 0)
	}
	return fillBuf(dest, b)
}

// fillBuf answers a request for v with a buffer dest: its size when
// dest is empty, ERANGE when v does not fit.
func fillBuf(dest, v []byte) (uint32, syscall.Errno) {
	if len(dest) == 0 {
		return uint32(len(v)), 0
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	defer n.root.changing()()
	err := n.cn.Setxattr(n.rel(), attr, data, int(flags))
	return n.errno("setxattr", err)
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	defer n.root.changing()()
	err := n.cn.Removexattr(n.rel(), attr)
	return n.errno("removexattr", err)
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	s, err := n.cn.Statfs()
	if err != nil {
		return n.errno("statfs", err)
	}
	out.Blocks, out.Bfree, out.Bavail = s.Blocks, s.Bfree, s.Bavail
	out.Files, out.Ffree = s.Files, s.Ffree
	out.Bsize, out.Frsize = uint32(s.Bsize), uint32(s.Frsize)
	out.NameLen = uint32(s.Namelen)
	return 0
}

// Timeouts for entries and attributes: lower layers never change and all
// changes to the upper go through the mount, where the kernel sees them.
const cacheTimeout = time.Hour

func (n *node) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	defer n.root.changing()()
	cn := &node{root: n.root}
	fd, err := n.root.Stack.TmpfileNode(&cn.cn, n.rel(), backingOpenFlags(flags)&^unix.O_TRUNC, mode, owner(ctx))
	if err != nil {
		return nil, nil, 0, n.errno("tmpfile", err)
	}
	e := cn.cn.Entry()
	ch := n.NewInode(ctx, cn, gofs.StableAttr{Mode: unix.S_IFREG, Ino: e.Ino})
	fillAttr(&out.Attr, &e.Stat, e.Ino)
	cn.mu.Lock()
	defer cn.mu.Unlock()
	fh, fl, errno := cn.newFileLocked(fd, cow.UpperIndex, unix.O_RDWR)
	return ch, fh, fl, errno
}

// OnForget closes what a forgotten node still holds.
func (n *node) OnForget() { n.cn.Forget() }
