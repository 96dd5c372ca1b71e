//go:build linux

package fs

import (
	"context"
	"log"
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

// node is one inode of the merged tree.
type node struct {
	gofs.Inode
	root *Root

	mu sync.Mutex
	e  cow.Entry
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
	unlinked      bool // its last name was removed while it was open
	tmpfile       int  // for an O_TMPFILE file without a name: an fd of it, else 0
	// For a regular file whose last name was removed: an O_PATH fd of it
	// taken before, else 0. The kernel still opens it by its node (exec
	// of /proc/PID/exe, open of /proc/PID/fd/N), and its path is gone.
	orphan int
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
	return &node{root: r, e: e}, &gofs.StableAttr{Ino: e.Ino}, nil
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

// entry returns a copy of the node's entry.
func (n *node) entry() cow.Entry {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.e
}

// entryOrphan returns a copy of the node's entry and, if its file has
// lost its last name, the orphan fd that still reaches it, else 0.
func (n *node) entryOrphan() (cow.Entry, int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.unlinked {
		return n.e, n.orphan
	}
	return n.e, 0
}

func owner(ctx context.Context) cow.Owner {
	if c, ok := fuse.FromContext(ctx); ok {
		return cow.Owner{Uid: c.Uid, Gid: c.Gid}
	}
	return cow.Owner{}
}

// fillEntryAttr fills out from the entry e: as kernel overlayfs does, a
// merged directory reports one link, its real count being unknowable.
func fillEntryAttr(out *fuse.Attr, e *cow.Entry) {
	fillAttr(out, &e.Stat, e.Ino)
	out.Nlink = uint32(e.Nlink())
	if e.IsDir() && (len(e.Lowers) > 1 || (e.InUpper() && len(e.Lowers) > 0)) {
		out.Nlink = 1
	}
}

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
	fresh := &node{root: n.root, e: e}
	// The names of a lower hard link are one node, as they stay one
	// inode through copy-up (see cow.Stack.JoinsLinks).
	attr := gofs.StableAttr{Mode: e.Stat.Mode & unix.S_IFMT, Ino: e.Ino}
	attr.Gen ^= n.root.respawnGen(e.Ino)
	ch := n.NewInode(ctx, fresh, attr)
	if old, ok := ch.Operations().(*node); ok && old != fresh {
		old.mu.Lock()
		old.e = e
		old.unlinked = false
		old.mu.Unlock()
	}
	fillEntryAttr(&out.Attr, &e)
	return ch
}

// fileFd returns the fd of an open file handle if it is a file of layer
// li.
func fileFd(fh gofs.FileHandle, li int) (int, bool) {
	var f *file
	switch h := fh.(type) {
	case *file:
		f = h
	case *passFile:
		f = h.file
	default:
		return -1, false
	}
	fd, layer := f.fdLayer()
	return fd, layer == li
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if strings.HasPrefix(name, ovl.WhiteoutPrefix) {
		return nil, syscall.ENOENT
	}
	pe := n.entry()
	e, err := n.root.Stack.Lookup(n.rel(), &pe, name)
	if err != nil {
		return nil, n.errno("lookup", err)
	}
	return n.newChild(ctx, name, e, out), 0
}

// statLocked refreshes the node's entry from its layer.
func (n *node) statLocked() error { return n.root.Stack.Stat(n.rel(), &n.e) }

func (n *node) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.mu.Lock()
	defer n.mu.Unlock()
	if fd, ok := fileFd(fh, n.e.Layer); ok {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return n.errno("getattr", err)
		}
		fillAttr(&out.Attr, &st, n.e.Ino)
		out.Nlink = uint32(int64(out.Nlink) + int64(n.e.NlinkAdjust))
	} else {
		if err := n.statLocked(); err != nil {
			if _, parent := n.Parent(); n.unlinked || (parent == nil && !n.IsRoot()) {
				// Removed while open: the kernel still asks about it.
				fillAttr(&out.Attr, &n.e.Stat, n.e.Ino)
				out.Nlink = 0
				return 0
			}
			return n.errno("getattr", err)
		}
		fillEntryAttr(&out.Attr, &n.e)
	}
	if n.unlinked {
		out.Nlink = 0
	}
	return 0
}

// copyUpLocked copies the node up if it is not in the upper yet, or
// gives a metacopy file its data. A copy-up keeps the inode number, so
// the kernel's view of the node stays true.
func (n *node) copyUpLocked(dataLen int64) error {
	if n.e.InUpper() && !n.e.Metacopy() {
		return nil
	}
	return n.root.Stack.CopyUp(n.rel(), &n.e, dataLen)
}

func (n *node) Setattr(ctx context.Context, fh gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	defer n.root.changing()()
	n.mu.Lock()
	defer n.mu.Unlock()
	fd := -1
	if ffd, ok := fileFd(fh, cow.UpperIndex); ok {
		fd = ffd
	}
	if err := n.root.Stack.Setattr(n.rel(), &n.e, setattrRequest(in), fd); err != nil {
		return n.errno("setattr", err)
	}
	fillEntryAttr(&out.Attr, &n.e)
	return 0
}

const writeFlags = syscall.O_WRONLY | syscall.O_RDWR | syscall.O_TRUNC

func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&writeFlags != 0 {
		defer n.root.changing()()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	oflags := backingOpenFlags(flags)
	if n.unlinked && n.orphan > 0 && (n.e.InUpper() || flags&writeFlags == 0) {
		fd, err := unix.Open(ovl.ProcPath(n.orphan), oflags|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, 0, n.errno("open", err)
		}
		return n.newFileLocked(fd, n.e.Layer, oflags)
	}
	if flags&writeFlags != 0 && !n.e.InUpper() && !n.lowerPassMode {
		// Copy up at the first change rather than now: without
		// FUSE_ATOMIC_O_TRUNC (go-fuse does not negotiate it) an
		// open(O_TRUNC) arrives as this open and a truncate to 0,
		// which then copies no data. The file is copied up by the
		// time the open is closed, as with kernel overlayfs.
		fd, li, err := n.root.Stack.Open(n.rel(), &n.e, syscall.O_RDONLY)
		if err != nil {
			return nil, 0, n.errno("open", err)
		}
		f := &file{node: n, fd: fd, layer: li, flags: oflags &^ syscall.O_TRUNC, pending: true,
			lf: gofs.NewLoopbackFile(fd).(*gofs.LoopbackFile)}
		n.cacheMode = true
		n.root.opened(f)
		return f, fuse.FOPEN_KEEP_CACHE, 0
	}
	if flags&writeFlags != 0 {
		dataLen := int64(-1)
		if flags&syscall.O_TRUNC != 0 {
			dataLen = 0
		}
		if err := n.copyUpLocked(dataLen); err != nil {
			return nil, 0, n.errno("open", err)
		}

	}
	fd, li, err := n.root.Stack.Open(n.rel(), &n.e, oflags)
	if err != nil {
		return nil, 0, n.errno("open", err)
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
		n.root.bumpGen(n.e.Ino)
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
	fd, e, err := n.root.Stack.Create(n.rel(), name, backingOpenFlags(flags), mode, owner(ctx))
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
	e, err := n.root.Stack.Mkdir(n.rel(), name, mode, owner(ctx))
	if err != nil {
		return nil, n.errno("mkdir", err)
	}
	return n.newChild(ctx, name, e, out), 0
}

func (n *node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	defer n.root.changing()()
	e, err := n.root.Stack.Mknod(n.rel(), name, mode, uint64(dev), owner(ctx))
	if err != nil {
		return nil, n.errno("mknod", err)
	}
	return n.newChild(ctx, name, e, out), 0
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	defer n.root.changing()()
	e, err := n.root.Stack.Symlink(n.rel(), name, target, owner(ctx))
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
	tn.mu.Lock()
	var e cow.Entry
	var err error
	if tn.tmpfile > 0 {
		// linkat of an O_TMPFILE file: give it its first name.
		e, err = n.root.Stack.LinkFd(tn.tmpfile, n.rel(), name)
		if err == nil {
			e.Ino = tn.e.Ino
			unix.Close(tn.tmpfile)
			tn.tmpfile = 0
		}
	} else {
		if err = tn.copyUpLocked(-1); err == nil {
			e, err = n.root.Stack.Link(tn.rel(), &tn.e, n.rel(), name)
		}
	}
	tn.mu.Unlock()
	if err != nil {
		return nil, n.errno("link", err)
	}
	return n.newChild(ctx, name, e, out), 0
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	e := n.entry()
	t, err := n.root.Stack.Readlink(n.rel(), &e)
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
	pe := n.entry()
	cn.mu.Lock()
	defer cn.mu.Unlock()
	cn.holdOrphanLocked(n.rel(), name)
	if err := n.root.Stack.Remove(n.rel(), &pe, name, &cn.e); err != nil {
		cn.dropOrphanLocked()
		return n.errno("remove", err)
	}
	if !cn.e.IsDir() && cn.e.Nlink() <= 1 {
		cn.unlinked = true
	} else if cn.e.Nlink() > 1 {
		cn.e.Stat.Nlink--
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
	// Lock the two entries by ascending inode number.
	a, b := src, dst
	if b != nil && b.e.Ino < a.e.Ino {
		a, b = b, a
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var dstE *cow.Entry
	if b != nil {
		b.mu.Lock()
		defer b.mu.Unlock()
		dstE = &dst.e
	}
	ope, npe := n.entry(), np.entry()
	// The engine copies up what it renames, once the rename is known to
	// be allowed.
	if dst != nil && flags&unix.RENAME_EXCHANGE == 0 {
		dst.holdOrphanLocked(np.rel(), newName)
	}
	err := n.root.Stack.Rename(n.rel(), &ope, name, &src.e, np.rel(), &npe, newName, dstE, uint(flags))
	if err != nil {
		if dst != nil {
			dst.dropOrphanLocked()
		}
		return n.errno("rename", err)
	}
	if dst != nil && flags&unix.RENAME_EXCHANGE == 0 && !dst.e.IsDir() {
		if dst.e.Nlink() <= 1 {
			dst.unlinked = true
		} else {
			dst.e.Stat.Nlink--
		}
	}
	for _, m := range []*node{src, dst} {
		if m != nil && m.e.IsDir() {
			// A directory of the lowers renamed is now merged in the
			// upper, and reports one link: the kernel's cached
			// attributes must go. Invalidating them takes no lock.
			m.NotifyContent(-1, 0)
		}
	}
	return 0
}

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	e, orphan := n.entryOrphan()
	v, err := n.root.Stack.Getxattr(n.rel(), &e, orphan, attr)
	if err != nil {
		return 0, n.errno("getxattr", err)
	}
	return fillBuf(dest, v)
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	e, orphan := n.entryOrphan()
	names, err := n.root.Stack.Listxattr(n.rel(), &e, orphan)
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
	n.mu.Lock()
	defer n.mu.Unlock()
	orphan := 0
	if n.unlinked {
		orphan = n.orphan
	}
	err := n.root.Stack.Setxattr(n.rel(), &n.e, orphan, attr, data, int(flags))
	return n.errno("setxattr", err)
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	defer n.root.changing()()
	n.mu.Lock()
	defer n.mu.Unlock()
	orphan := 0
	if n.unlinked {
		orphan = n.orphan
	}
	err := n.root.Stack.Removexattr(n.rel(), &n.e, orphan, attr)
	return n.errno("removexattr", err)
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	s, err := n.root.Stack.Statfs()
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
	fd, e, err := n.root.Stack.Tmpfile(n.rel(), backingOpenFlags(flags)&^unix.O_TRUNC, mode, owner(ctx))
	if err != nil {
		return nil, nil, 0, n.errno("tmpfile", err)
	}
	// A second fd keeps the file linkable after this open is closed.
	keep, err := unix.Open(ovl.ProcPath(fd), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		keep, err = unix.Dup(fd)
		if err != nil {
			unix.Close(fd)
			return nil, nil, 0, n.errno("tmpfile", err)
		}
	}
	cn := &node{root: n.root, e: e, tmpfile: keep}
	ch := n.NewInode(ctx, cn, gofs.StableAttr{Mode: unix.S_IFREG, Ino: e.Ino})
	fillAttr(&out.Attr, &e.Stat, e.Ino)
	cn.mu.Lock()
	defer cn.mu.Unlock()
	fh, fl, errno := cn.newFileLocked(fd, cow.UpperIndex, unix.O_RDWR)
	return ch, fh, fl, errno
}

// holdOrphanLocked takes an O_PATH fd of the node's file, dir/name, if
// it is a regular file about to lose its last name (see orphan).
func (n *node) holdOrphanLocked(dir, name string) {
	n.dropOrphanLocked() // of a name it had lost before
	if n.e.Stat.Mode&unix.S_IFMT != unix.S_IFREG || n.e.Nlink() > 1 {
		return
	}
	rel := name
	if dir != "" {
		rel = dir + "/" + name
	}
	if fd, err := n.root.Stack.OpenPath(rel, &n.e); err == nil {
		n.orphan = fd
	}
}

// dropOrphanLocked closes the orphan fd, if any.
func (n *node) dropOrphanLocked() {
	if n.orphan > 0 {
		unix.Close(n.orphan)
		n.orphan = 0
	}
}

// OnForget closes what a forgotten node still holds.
func (n *node) OnForget() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.tmpfile > 0 {
		unix.Close(n.tmpfile)
		n.tmpfile = 0
	}
	n.dropOrphanLocked()
}
