//go:build linux

package fs

import (
	"context"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/cow"
)

// file is an open regular file of some layer. Its I/O is go-fuse's
// loopback file over the fd; attributes go through the node, which maps
// inode numbers.
//
// A file opened read-only from a lower layer follows the copy-up of its
// node, as an open file of kernel overlayfs does: the next read reopens
// the copy in the upper layer.
type file struct {
	node      *node
	flags     int  // open flags, for reopening after copy-up
	lowerPass bool // a lower file served by passthrough
	writer    bool // opened for writing: counted in Root.writers

	mu      sync.Mutex // guards what follows
	pending bool       // opened for writing, copy-up not yet done
	fd      int
	layer   int
	lf      *gofs.LoopbackFile
	stale   []*gofs.LoopbackFile // replaced by a copy-up, closed on release
}

// passFile is a file the kernel serves by passthrough.
type passFile struct{ *file }

var (
	_ gofs.FileReader          = (*file)(nil)
	_ gofs.FileWriter          = (*file)(nil)
	_ gofs.FileFlusher         = (*file)(nil)
	_ gofs.FileFsyncer         = (*file)(nil)
	_ gofs.FileReleaser        = (*file)(nil)
	_ gofs.FileLseeker         = (*file)(nil)
	_ gofs.FileAllocater       = (*file)(nil)
	_ gofs.FileGetlker         = (*file)(nil)
	_ gofs.FileSetlker         = (*file)(nil)
	_ gofs.FileSetlkwer        = (*file)(nil)
	_ gofs.FilePassthroughFder = (*passFile)(nil)
)

// current returns the loopback file to use, first switching a lower
// file whose node has been copied up to the copy.
func (f *file) current() *gofs.LoopbackFile {
	f.mu.Lock()
	lf, layer := f.lf, f.layer
	f.mu.Unlock()
	if layer == cow.UpperIndex || f.lowerPass {
		// A passthrough file keeps its backing file.
		return lf
	}
	// The node's lock is taken before a file's, never inside it.
	n := f.node
	if e := n.cn.Entry(); e.DataLayer() != cow.UpperIndex { // a metacopy file's data is not
		return lf
	}
	fd, _, _, err := n.cn.Open(n.rel(), f.flags, false)
	if err != nil {
		return lf // keep serving what was open
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.layer == cow.UpperIndex { // another request switched first
		unix.Close(fd)
		return f.lf
	}
	f.stale = append(f.stale, f.lf)
	f.fd, f.layer = fd, cow.UpperIndex
	f.lf = gofs.NewLoopbackFile(fd).(*gofs.LoopbackFile)
	return f.lf
}

// fdLayer returns the fd and its layer.
func (f *file) fdLayer() (int, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fd, f.layer
}

func (f *file) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return f.current().Read(ctx, dest, off)
}

// materialize makes the copy-up that an open for writing postponed.
func (f *file) materialize() syscall.Errno {
	f.mu.Lock()
	pending := f.pending
	f.mu.Unlock()
	if !pending {
		return 0
	}
	n := f.node
	err := n.cn.CopyUp(n.rel(), -1)
	if err != nil {
		return n.errno("copy up", err)
	}
	f.mu.Lock()
	f.pending = false
	f.mu.Unlock()
	return 0
}

func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	defer f.node.root.changing()()
	if errno := f.materialize(); errno != 0 {
		return 0, errno
	}
	return f.current().Write(ctx, data, off)
}

// Flush, at every close, completes a postponed copy-up: an open for
// writing leaves the file copied up, written or not.
func (f *file) Flush(ctx context.Context) syscall.Errno {
	// Only a pending copy-up is a change: a plain close must pass a
	// freeze, which waits for files open for writing to be closed.
	f.mu.Lock()
	pending := f.pending
	f.mu.Unlock()
	if pending {
		defer f.node.root.changing()()
	}
	if errno := f.materialize(); errno != 0 {
		return errno
	}
	return f.current().Flush(ctx)
}

func (f *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if errno := f.materialize(); errno != 0 {
		return errno
	}
	return f.current().Fsync(ctx, flags)
}

func (f *file) Release(ctx context.Context) syscall.Errno {
	if f.writer {
		f.node.root.writers.Add(-1)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.stale {
		s.Release(ctx)
	}
	return f.lf.Release(ctx)
}

func (f *file) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return f.current().Lseek(ctx, off, whence)
}

func (f *file) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	defer f.node.root.changing()()
	if errno := f.materialize(); errno != 0 {
		return errno
	}
	return f.current().Allocate(ctx, off, size, mode)
}

func (f *file) Getlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	return f.current().Getlk(ctx, owner, lk, flags, out)
}

func (f *file) Setlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return f.current().Setlk(ctx, owner, lk, flags)
}

func (f *file) Setlkw(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return f.current().Setlkw(ctx, owner, lk, flags)
}

// PassthroughFd hands the fd to the kernel as the backing file.
func (f *passFile) PassthroughFd() (int, bool) {
	fd, _ := f.fdLayer()
	return fd, true
}

// dirHandle is an open merged directory. The listing is taken at open
// (and at rewind), so seeks within one open stay consistent.
type dirHandle struct {
	node   *node
	ents   []cow.DirEntry
	byName map[string]int // index in ents
	gen    uint64         // the stack's generation when ents was read
	pos    int
}

var (
	_ gofs.FileReaddirenter = (*dirHandle)(nil)
	_ gofs.FileSeekdirer    = (*dirHandle)(nil)
	_ gofs.FileReleasedirer = (*dirHandle)(nil)
	_ gofs.FileFsyncdirer   = (*dirHandle)(nil)
	_ gofs.FileLookuper     = (*dirHandle)(nil)
)

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	d := &dirHandle{node: n}
	if errno := d.load(); errno != 0 {
		return nil, 0, errno
	}
	return d, fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_CACHE_DIR, 0
}

func (d *dirHandle) load() syscall.Errno {
	n := d.node
	ents, gen, err := n.cn.ReadDir(n.rel())
	d.gen = gen
	if err != nil {
		return n.errno("readdir", err)
	}
	ino := n.cn.Ino()
	pino := ino
	if _, p := n.Parent(); p != nil {
		pino = p.StableAttr().Ino
	}
	d.ents = append([]cow.DirEntry{{Name: ".", Type: unix.S_IFDIR, Ino: ino}, {Name: "..", Type: unix.S_IFDIR, Ino: pino}}, ents...)
	d.byName = make(map[string]int, len(d.ents))
	for i, de := range d.ents {
		d.byName[de.Name] = i
	}
	d.pos = 0
	return 0
}

// Lookup serves READDIRPLUS: a lower file listed while the upper has not
// changed since is resolved from the listing with one stat; anything
// else takes the ordinary lookup.
func (d *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	n := d.node
	st := n.root.Stack
	if i, ok := d.byName[name]; ok && st.Gen() == d.gen {
		if e, ok := st.LookupListed(n.rel(), d.ents[i]); ok {
			return n.newChild(ctx, name, e, out), 0
		}
	}
	return n.Lookup(ctx, name, out)
}

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if d.pos >= len(d.ents) {
		return nil, 0
	}
	e := d.ents[d.pos]
	d.pos++
	return &fuse.DirEntry{Name: e.Name, Mode: e.Type, Ino: e.Ino, Off: uint64(d.pos)}, 0
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off == 0 {
		return d.load()
	}
	if off > uint64(len(d.ents)) {
		off = uint64(len(d.ents))
	}
	d.pos = int(off)
	return 0
}

func (d *dirHandle) Releasedir(ctx context.Context, flags uint32) {}

func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	n := d.node
	return n.errno("fsyncdir", n.cn.Fsyncdir(n.rel()))
}
