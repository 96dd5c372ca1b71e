//go:build linux

package cow

import (
	"sync"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/ovl"
)

// A Node is one inode of the merged view, as an adapter (fs) holds it:
// the entry it resolves to, the lock that serialises what changes it
// (copy-ups among them: see CopyUp), and what keeps a file reachable
// once its last name is gone. Its methods take rel, the node's path in
// the merged view as the adapter knows it, for what needs a name (a
// copy-up, the upper entry of a file with one name); an inode of several
// names is reached by the links directory instead (see links.go), and a
// lower one by its path in its layer, which does not change.
//
// Lock order: a Node's lock is taken before its Stack's (linksMu, the
// caches), never inside them. Rename takes the two children's locks, by
// ascending inode number (read unlocked: it is the entry's merged
// number, fixed for the node's life), and reads the parents' entries
// inside them; nothing takes a child's lock inside its parent's.
type Node struct {
	s *Stack

	mu       sync.Mutex
	e        Entry
	unlinked bool // its last name was removed while the kernel held it
	// For a regular file about to lose, or that lost, its last name: an
	// O_PATH fd of it taken before, else 0. The kernel still opens it by
	// its node (exec of /proc/PID/exe, open of /proc/PID/fd/N). An fd
	// is a C int: int32 keeps the node, of which there are millions,
	// small.
	orphan  int32
	tmpfile int32 // for an O_TMPFILE file without a name: an fd of it, else 0
}

// InitNode makes n, a Node an adapter keeps in its own node (one
// allocation per kernel inode), the node of the entry e.
func (s *Stack) InitNode(n *Node, e Entry) { n.s, n.e = s, e }

// Entry returns a copy of the node's entry.
func (n *Node) Entry() Entry {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.e
}

// Ino is the node's merged inode number, which never changes.
func (n *Node) Ino() uint64 { return n.e.Ino }

// Resolved records that a lookup found the node again, as e.
func (n *Node) Resolved(e Entry) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.e = e
	n.unlinked = false
}

// Attr is what the node reports to stat.
type Attr struct {
	Stat  unix.Stat_t
	Ino   uint64
	Nlink int64
}

// AttrOf is what stat reports of the entry e, with the stat st of its
// file: a merged directory reports one link, as kernel overlayfs does,
// its real count being unknowable.
func AttrOf(e *Entry, st *unix.Stat_t) Attr {
	a := Attr{Stat: *st, Ino: e.Ino, Nlink: int64(st.Nlink) + int64(e.NlinkAdjust)}
	if e.IsDir() && (len(e.Lowers) > 1 || (e.InUpper() && len(e.Lowers) > 0)) {
		a.Nlink = 1
	}
	return a
}

// attrLocked is the node's Attr: a file whose last name is gone reports
// no link.
func (n *Node) attrLocked(st *unix.Stat_t) Attr {
	a := AttrOf(&n.e, st)
	if n.unlinked {
		a.Nlink = 0
	}
	return a
}

// Getattr refreshes the node from its layer and reports it. fd, if not
// -1, is an open file of the node's, of layer fdLayer, to stat instead.
// A node the kernel still holds after its last name is gone (unlinked,
// or detached: the adapter knows no parent of it) reports what it was,
// with no link.
func (n *Node) Getattr(rel string, fd, fdLayer int, detached bool) (Attr, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if fd >= 0 && fdLayer == n.e.Layer {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return Attr{}, err
		}
		return n.attrLocked(&st), nil
	}
	if err := n.s.Stat(rel, &n.e); err != nil {
		if n.unlinked || detached {
			a := n.attrLocked(&n.e.Stat)
			a.Nlink = 0
			return a, nil
		}
		return Attr{}, err
	}
	return n.attrLocked(&n.e.Stat), nil
}

// Setattr changes the node's attributes (Stack.Setattr); fd, if not -1,
// is an open upper file of it to truncate through.
func (n *Node) Setattr(rel string, a SetAttr, fd int) (Attr, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.s.Setattr(rel, &n.e, a, fd); err != nil {
		return Attr{}, err
	}
	return n.attrLocked(&n.e.Stat), nil
}

// CopyUp copies the node up (Stack.CopyUp), or gives a metacopy file its
// data, unless it is in the upper with its data already.
func (n *Node) CopyUp(rel string, dataLen int64) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.copyUpLocked(rel, dataLen)
}

func (n *Node) copyUpLocked(rel string, dataLen int64) error {
	if n.e.InUpper() && !n.e.Metacopy() {
		return nil
	}
	return n.s.CopyUp(rel, &n.e, dataLen)
}

// OpenWrite is an open for writing, O_WRONLY, O_RDWR or O_TRUNC in flags.
func OpenWrite(flags int) bool { return flags&(unix.O_WRONLY|unix.O_RDWR|unix.O_TRUNC) != 0 }

// Open opens the node for I/O with flags (Stack.Open), a file whose last
// name is gone by the fd kept of it, and returns the fd and its layer.
// With defer, an open for writing of a lower file opens the lower file
// read-only and copies nothing yet: pending reports it, and the caller
// copies up at the first change (CopyUp), then reopens.
func (n *Node) Open(rel string, flags int, deferCopy bool) (fd, layer int, pending bool, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	write := OpenWrite(flags)
	if n.unlinked && n.orphan > 0 && (n.e.InUpper() || !write) {
		fd, err := unix.Open(ovl.ProcPath(int(n.orphan)), flags|unix.O_CLOEXEC, 0)
		return fd, n.e.Layer, false, err
	}
	if write && deferCopy && !n.e.InUpper() {
		fd, layer, err := n.s.Open(rel, &n.e, unix.O_RDONLY)
		return fd, layer, true, err
	}
	if write {
		dataLen := int64(-1)
		if flags&unix.O_TRUNC != 0 {
			dataLen = 0
		}
		if err := n.copyUpLocked(rel, dataLen); err != nil {
			return -1, 0, false, err
		}
	}
	fd, layer, err = n.s.Open(rel, &n.e, flags)
	return fd, layer, false, err
}

// orphanLocked is the fd that still reaches a file whose last name is
// gone, else 0.
func (n *Node) orphanLocked() int {
	if n.unlinked {
		return int(n.orphan)
	}
	return 0
}

// Getxattr reads an xattr of the node (Stack.Getxattr).
func (n *Node) Getxattr(rel, name string) ([]byte, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.s.Getxattr(rel, &n.e, n.orphanLocked(), name)
}

// Listxattr lists the node's xattrs (Stack.Listxattr).
func (n *Node) Listxattr(rel string) ([]string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.s.Listxattr(rel, &n.e, n.orphanLocked())
}

// Setxattr sets an xattr of the node (Stack.Setxattr).
func (n *Node) Setxattr(rel, name string, val []byte, flags int) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.s.Setxattr(rel, &n.e, n.orphanLocked(), name, val, flags)
}

// Removexattr removes an xattr of the node (Stack.Removexattr).
func (n *Node) Removexattr(rel, name string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.s.Removexattr(rel, &n.e, n.orphanLocked(), name)
}

// Readlink reads the node's symlink target.
func (n *Node) Readlink(rel string) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.s.Readlink(rel, &n.e)
}

// Lookup resolves name in the node's directory, at rel.
func (n *Node) Lookup(rel, name string) (Entry, error) {
	pe := n.Entry()
	return n.s.Lookup(rel, &pe, name)
}

// holdOrphanLocked takes an O_PATH fd of the node's file, at rel, if it
// is a regular file about to lose its last name (see orphan).
func (n *Node) holdOrphanLocked(rel string) {
	n.dropOrphanLocked() // of a name it had lost before
	if n.e.Stat.Mode&unix.S_IFMT != unix.S_IFREG || n.e.Nlink() > 1 {
		return
	}
	if fd, err := n.s.OpenPath(rel, &n.e); err == nil {
		n.orphan = int32(fd)
	}
}

// dropOrphanLocked closes the orphan fd, if any.
func (n *Node) dropOrphanLocked() {
	if n.orphan > 0 {
		unix.Close(int(n.orphan))
		n.orphan = 0
	}
}

// lostNameLocked counts a name of the node removed (by unlink, or a
// rename over it): the last one leaves it unlinked.
func (n *Node) lostNameLocked() {
	switch {
	case !n.e.IsDir() && n.e.Nlink() <= 1:
		n.unlinked = true
	case n.e.Nlink() > 1:
		n.e.Stat.Nlink--
	}
}

// Remove removes name, the node child, from the directory n at dir.
func (n *Node) Remove(dir, name string, child *Node) error {
	pe := n.Entry()
	child.mu.Lock()
	defer child.mu.Unlock()
	child.holdOrphanLocked(joinRel(dir, name))
	if err := n.s.Remove(dir, &pe, name, &child.e); err != nil {
		child.dropOrphanLocked()
		return err
	}
	child.lostNameLocked()
	return nil
}

// Rename moves name, the node src, of the directory n at dir to newName
// of the directory np at newDir, over dst (nil if there is none), with
// renameat2's flags (Stack.Rename). It reports the directories renamed,
// whose attributes a cache may hold stale (a lower directory becomes a
// merged one, with one link).
func (n *Node) Rename(dir, name string, src *Node, np *Node, newDir, newName string, dst *Node, flags uint) (moved []*Node, err error) {
	// Lock the two children by ascending inode number, then read the
	// parents' entries.
	a, b := src, dst
	if b != nil && b.e.Ino < a.e.Ino {
		a, b = b, a
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var dstE *Entry
	if b != nil {
		b.mu.Lock()
		defer b.mu.Unlock()
		dstE = &dst.e
	}
	ope, npe := n.Entry(), np.Entry()
	exchange := flags&unix.RENAME_EXCHANGE != 0
	if dst != nil && !exchange {
		dst.holdOrphanLocked(joinRel(newDir, newName))
	}
	if err := n.s.Rename(dir, &ope, name, &src.e, newDir, &npe, newName, dstE, flags); err != nil {
		if dst != nil {
			dst.dropOrphanLocked()
		}
		return nil, err
	}
	if dst != nil && !exchange && !dst.e.IsDir() {
		dst.lostNameLocked()
	}
	for _, m := range []*Node{src, dst} {
		if m != nil && m.e.IsDir() {
			moved = append(moved, m)
		}
	}
	return moved, nil
}

// Link gives the node, at rel, the new name name in the directory dir:
// its first name, for an O_TMPFILE file.
func (n *Node) Link(rel, dir, name string) (Entry, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.tmpfile > 0 {
		e, err := n.s.LinkFd(int(n.tmpfile), dir, name)
		if err == nil {
			e.Ino = n.e.Ino
			unix.Close(int(n.tmpfile))
			n.tmpfile = 0
		}
		return e, err
	}
	if err := n.copyUpLocked(rel, -1); err != nil {
		return Entry{}, err
	}
	return n.s.Link(rel, &n.e, dir, name)
}

// TmpfileNode makes an unnamed regular file in the directory dir
// (Stack.Tmpfile) and n its node (see InitNode), which keeps it
// linkable; it returns an fd of it opened with flags.
func (s *Stack) TmpfileNode(n *Node, dir string, flags int, mode uint32, o Owner) (int, error) {
	fd, e, err := s.Tmpfile(dir, flags, mode, o)
	if err != nil {
		return -1, err
	}
	// A second fd keeps the file linkable after this open is closed.
	keep, err := unix.Open(ovl.ProcPath(fd), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		if keep, err = unix.Dup(fd); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	s.InitNode(n, e)
	n.tmpfile = int32(keep)
	return fd, nil
}

// Forget closes what a node the kernel forgot still holds.
func (n *Node) Forget() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.tmpfile > 0 {
		unix.Close(int(n.tmpfile))
		n.tmpfile = 0
	}
	n.dropOrphanLocked()
}

// Create creates and opens the regular file name in the node's
// directory, at rel (Stack.Create).
func (n *Node) Create(rel, name string, flags int, mode uint32, o Owner) (int, Entry, error) {
	return n.s.Create(rel, name, flags, mode, o)
}

// Mkdir creates the directory name in the node's directory, at rel.
func (n *Node) Mkdir(rel, name string, mode uint32, o Owner) (Entry, error) {
	return n.s.Mkdir(rel, name, mode, o)
}

// Mknod creates the special file name in the node's directory, at rel.
func (n *Node) Mknod(rel, name string, mode uint32, dev uint64, o Owner) (Entry, error) {
	return n.s.Mknod(rel, name, mode, dev, o)
}

// Symlink creates the symlink name, to target, in the node's directory,
// at rel.
func (n *Node) Symlink(rel, name, target string, o Owner) (Entry, error) {
	return n.s.Symlink(rel, name, target, o)
}

// ReadDir lists the node's directory, at rel (Stack.ReadDir), and gives
// the namespace generation the listing was taken at (Stack.Gen), for
// LookupListed.
func (n *Node) ReadDir(rel string) ([]DirEntry, uint64, error) {
	gen := n.s.Gen()
	e := n.Entry()
	ents, err := n.s.ReadDir(rel, &e)
	return ents, gen, err
}

// Statfs reports on the filesystem that changes through the node go to.
func (n *Node) Statfs() (unix.Statfs_t, error) { return n.s.Statfs() }

// Fsyncdir flushes the node's directory, at rel, to disk (Stack.Fsyncdir).
func (n *Node) Fsyncdir(rel string) error {
	e := n.Entry()
	return n.s.Fsyncdir(rel, &e)
}
