//go:build linux

package fs

import (
	"context"
	"hash/fnv"
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
	// retired marks a name of a lower hard link copied up while the
	// kernel held its parent (a link within the directory): its node
	// still has the lower inode number, which go-fuse puts in every
	// GETATTR reply, so a GETATTR without an open file gets ESTALE,
	// after which the kernel looks the name up again (LOOKUP_REVAL) and
	// finds the copy's node.
	retired bool
	tmpfile int // for an O_TMPFILE file without a name: an fd of it, else 0
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
	attr := gofs.StableAttr{Mode: e.Stat.Mode & unix.S_IFMT, Ino: e.Ino}
	if lowerHardlink(&e) {
		// Each name of a lower hard link is its own node (same st_ino):
		// copy-up breaks the link, and FUSE requests name only the node.
		attr.Gen = nameGen(n.rel(), name)
	}
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

// lowerHardlink reports whether e is a lower file with more names.
func lowerHardlink(e *cow.Entry) bool {
	return !e.InUpper() && !e.IsDir() && e.Stat.Nlink > 1
}

// nameGen derives a node generation from a name.
func nameGen(dir, name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(dir))
	h.Write([]byte{0})
	h.Write([]byte(name))
	return h.Sum64() | 1
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if strings.HasPrefix(name, cow.WhiteoutPrefix) {
		return nil, syscall.ENOENT
	}
	pe := n.entry()
	e, err := n.root.Stack.Lookup(n.rel(), pe.Lowers, name)
	if err != nil {
		return nil, n.errno("lookup", err)
	}
	return n.newChild(ctx, name, e, out), 0
}

// stat refreshes the node's entry from its layer. A directory that a
// child's copy-up created in the upper is found there.
func (n *node) statLocked() error {
	st := n.root.Stack
	rel := n.rel()
	if n.e.IsDir() && !n.e.InUpper() && st.Writable() {
		var ust unix.Stat_t
		if err := st.Layer(cow.UpperIndex).Lstat(rel, &ust); err == nil {
			n.e.Layer, n.e.Stat = cow.UpperIndex, ust
			return nil
		}
	}
	return st.Layer(n.e.Layer).Lstat(rel, &n.e.Stat)
}

func (n *node) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.retired && fh == nil {
		return syscall.ESTALE
	}
	if fd, ok := fileFd(fh, n.e.Layer); ok {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return n.errno("getattr", err)
		}
		fillAttr(&out.Attr, &st, n.e.Ino)
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

// copyUpLocked copies the node up if it is not in the upper yet. Once
// the caller has released the node's lock it calls relooked (see
// copiedUpLocked).
func (n *node) copyUpLocked(dataLen int64) (relooked func(), err error) {
	if n.e.InUpper() {
		return noWait, nil
	}
	broke := lowerHardlink(&n.e)
	if err := n.root.Stack.CopyUp(n.rel(), &n.e, dataLen); err != nil {
		return noWait, err
	}
	return n.copiedUpLocked(broke), nil
}

func noWait() {}

// notifyWait bounds how long a request waits for the kernel to drop the
// name of a node that a copy-up gave a new inode number.
const notifyWait = 50 * time.Millisecond

// copiedUpLocked follows a copy-up of the node; broke reports that it was
// a name of a lower hard link. The copy is then a file of its own, with
// its own inode number, and the kernel must look the name up again to
// get the node of that number: go-fuse reports a node's first number in
// every GETATTR. The notification cannot be sent from within the
// request, whose caller may hold the locks the kernel takes for it (the
// parent directory's, for a link within it), so it goes from a goroutine,
// and the request waits for it, briefly, once it has released the node's
// lock (a lookup in the parent may be waiting for that lock while the
// kernel holds the parent). Within the wait, a stat right after the
// change sees the new number and link count, as on kernel overlayfs.
func (n *node) copiedUpLocked(broke bool) (relooked func()) {
	if !broke || !n.e.InUpper() {
		return noWait
	}
	name, parent := n.Parent()
	if parent == nil {
		return noWait
	}
	done := make(chan struct{})
	go func() {
		parent.NotifyEntry(name)
		close(done)
	}()
	return func() {
		t := time.NewTimer(notifyWait)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
		}
	}
}

// retireLocked retires a node that a copy-up gave a new inode number
// while the kernel holds its parent (see node.retired). Invalidating its
// attributes takes no lock in the kernel.
func (n *node) retireLocked() {
	n.retired = true
	n.NotifyContent(-1, 0)
}

func (n *node) Setattr(ctx context.Context, fh gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	defer n.root.changing()()
	relooked := noWait
	defer func() { relooked() }() // after the unlock below
	n.mu.Lock()
	defer n.mu.Unlock()
	fd := -1
	if ffd, ok := fileFd(fh, cow.UpperIndex); ok {
		fd = ffd
	}
	broke := lowerHardlink(&n.e)
	err := n.root.Stack.Setattr(n.rel(), &n.e, setattrRequest(in), fd)
	relooked = n.copiedUpLocked(broke)
	if err != nil {
		return n.errno("setattr", err)
	}
	// The reply's inode number is the one stat shows until the next
	// GETATTR: the copy's own, if the copy-up gave it one.
	fillAttr(&out.Attr, &n.e.Stat, n.e.Ino)
	return 0
}

const writeFlags = syscall.O_WRONLY | syscall.O_RDWR | syscall.O_TRUNC

func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&writeFlags != 0 {
		defer n.root.changing()()
	}
	relooked := noWait
	defer func() { relooked() }() // after the unlock below
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
		fd, err := n.root.Stack.Layer(n.e.Layer).Open(n.rel(), syscall.O_RDONLY, 0)
		if err != nil {
			return nil, 0, n.errno("open", err)
		}
		f := &file{node: n, fd: fd, layer: n.e.Layer, flags: oflags &^ syscall.O_TRUNC, pending: true,
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
		var err error
		if relooked, err = n.copyUpLocked(dataLen); err != nil {
			return nil, 0, n.errno("open", err)
		}

	}
	fd, err := n.root.Stack.Layer(n.e.Layer).Open(n.rel(), oflags, 0)
	if err != nil {
		return nil, 0, n.errno("open", err)
	}
	return n.newFileLocked(fd, n.e.Layer, oflags)
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
	relooked := noWait
	if tn.tmpfile > 0 {
		// linkat of an O_TMPFILE file: give it its first name.
		e, err = n.root.Stack.LinkFd(tn.tmpfile, n.rel(), name)
		if err == nil {
			e.Ino = tn.e.Ino
			unix.Close(tn.tmpfile)
			tn.tmpfile = 0
		}
	} else {
		broke := lowerHardlink(&tn.e)
		if relooked, err = tn.copyUpLocked(-1); err == nil {
			e, err = n.root.Stack.Link(tn.rel(), &tn.e, n.rel(), name)
		}
		if _, tp := tn.Parent(); broke && tn.e.InUpper() && tp == n.EmbeddedInode() {
			// The kernel holds this directory, which the target's
			// name is in, until the reply: retire the node instead of
			// waiting. Invalidating its attributes takes no lock.
			tn.retireLocked()
			relooked = noWait
		}
	}
	tn.mu.Unlock()
	relooked()
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
	if strings.HasPrefix(name, cow.WhiteoutPrefix) {
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
	if err := n.root.Stack.Remove(n.rel(), pe.Lowers, name, &cn.e); err != nil {
		cn.dropOrphanLocked()
		return n.errno("remove", err)
	}
	if !cn.e.IsDir() && cn.e.Stat.Nlink <= 1 {
		cn.unlinked = true
	} else if cn.e.Stat.Nlink > 1 {
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
	if strings.HasPrefix(name, cow.WhiteoutPrefix) {
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
	// be allowed (kernel overlayfs checks EXDEV first too).
	srcBroke := lowerHardlink(&src.e)
	dstBroke := dst != nil && flags&unix.RENAME_EXCHANGE != 0 && lowerHardlink(&dst.e)
	if dst != nil && flags&unix.RENAME_EXCHANGE == 0 {
		dst.holdOrphanLocked(np.rel(), newName)
	}
	err := n.root.Stack.Rename(n.rel(), ope.Lowers, name, &src.e, np.rel(), npe.Lowers, newName, dstE, uint(flags))
	// The kernel holds both parents until the reply: a name of a lower
	// hard link that the rename copied up is retired, not waited for.
	if srcBroke && src.e.InUpper() {
		src.retireLocked()
	}
	if dstBroke && dst.e.InUpper() {
		dst.retireLocked()
	}
	if err != nil {
		if dst != nil {
			dst.dropOrphanLocked()
		}
		return n.errno("rename", err)
	}
	if dst != nil && flags&unix.RENAME_EXCHANGE == 0 && !dst.e.IsDir() {
		if dst.e.Stat.Nlink <= 1 {
			dst.unlinked = true
		} else {
			dst.e.Stat.Nlink--
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
	relooked := noWait
	defer func() { relooked() }() // after the unlock below
	n.mu.Lock()
	defer n.mu.Unlock()
	orphan := 0
	if n.unlinked {
		orphan = n.orphan
	}
	broke := lowerHardlink(&n.e)
	err := n.root.Stack.Setxattr(n.rel(), &n.e, orphan, attr, data, int(flags))
	relooked = n.copiedUpLocked(broke)
	return n.errno("setxattr", err)
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	defer n.root.changing()()
	relooked := noWait
	defer func() { relooked() }() // after the unlock below
	n.mu.Lock()
	defer n.mu.Unlock()
	orphan := 0
	if n.unlinked {
		orphan = n.orphan
	}
	broke := lowerHardlink(&n.e)
	err := n.root.Stack.Removexattr(n.rel(), &n.e, orphan, attr)
	relooked = n.copiedUpLocked(broke)
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
	if n.e.Stat.Mode&unix.S_IFMT != unix.S_IFREG || n.e.Stat.Nlink > 1 {
		return
	}
	rel := name
	if dir != "" {
		rel = dir + "/" + name
	}
	if fd, err := n.root.Stack.Layer(n.e.Layer).Open(rel, unix.O_PATH, 0); err == nil {
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
