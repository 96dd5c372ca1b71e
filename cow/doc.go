//go:build linux

// Package cow is strata's union filesystem engine: it resolves names
// through a stack of layers as kernel overlayfs does and makes every
// change in the one writable layer, copying entries up from the layers
// beneath first. It knows nothing of FUSE (package fs is its adapter),
// so it is tested and fuzzed on plain directories.
//
// # Vocabulary
//
//   - Stack: a union of layers, at most one writable upper over one or
//     more read-only lowers (Stack, Options). Its methods take paths
//     relative to the stack root: "" is the root, no leading slash,
//     already split and clean.
//   - Layer: one directory of a stack, held open as an O_PATH fd for the
//     stack's life; every access to it is resolved beneath that fd and
//     never crosses a symlink (Layer). Layers are numbered: UpperIndex (0)
//     is the upper, 1..N the lowers, top first as in lowerdir.
//   - Upper: the writable layer, the only one the engine changes; absent
//     in a read-only stack.
//   - Lower: a read-only layer. Lowers never change while mounted, so
//     their directories are read once and cached (index.go).
//   - Work: the scratch directory beside the upper, on its filesystem,
//     where copy-ups, whiteouts and removed directories are built or
//     taken apart under "#strata.<pid>.<n>" names and renamed into place.
//     A crash leaves only such names there; New removes them.
//   - Entry: what a name resolves to in the merged view: the topmost
//     layer that holds it, its stat there, its merged inode number and,
//     for a directory, the lower layers merged beneath it (Entry.Lowers,
//     cut at the first opaque one). Callers keep Entries (the fs node
//     caches one) and pass them back; the methods that change an entry
//     update it.
//   - Merged inode number (Entry.Ino): the st_ino the mount shows. The
//     layer's own when all layers share one filesystem, else mapped with
//     the layer index in the high bits (as overlayfs's xino). A directory
//     has the number of the topmost lower directory it merges; a file
//     keeps its number across copy-up through its origin.
//   - Copy-up: making an entry of a lower layer exist in the upper, with
//     its parents, data, xattrs, owner, mode and times, before a change
//     (CopyUp). Built in work, fsynced unless volatile, renamed into place
//     with RENAME_NOREPLACE: a crash leaves the old state or the new one.
//   - Whiteout: an upper (or lower) entry that deletes the name from the
//     layers beneath: a 0/0 character device (kernel), a ".wh.<name>" file
//     (OCI), or an empty file with an overlay whiteout xattr (Linux 6.7).
//   - Opaque: a directory that hides the directories of the same path
//     beneath it (trusted.overlay.opaque=y and the other dialects, or an
//     OCI ".wh..wh..opq" marker).
//   - Redirect: an xattr on an upper directory (or metacopy file) naming
//     the path where the layers beneath find it, so that a lower
//     directory can be renamed (kernel overlayfs redirect_dir=on).
//   - Metacopy: an upper file that holds only metadata, its data still
//     the lower file's (kernel overlayfs metacopy=on).
//   - Origin: strata's own xattr on a copied-up file recording the merged
//     inode number it had before, so st_ino survives copy-up and remounts.
//   - Escaped xattr: a user's xattr in the overlay's namespace,
//     "trusted.overlay.X", stored as "trusted.overlay.overlay.X" (Linux
//     6.7), which is user data, not bookkeeping (see ovl.StoredXattr).
//
// The on-disk names of these are package ovl's; docs/design.md says
// which of them the engine writes and which it reads.
//
// # Concurrency
//
// A Stack is safe for concurrent use: it has no lock per entry, and its
// own locks (the lower directory cache, the set of directories absent
// from the upper) are leaves, never held across a call out or a system
// call that can block on another request. The namespace generation
// (Stack.Gen) is atomic.
//
// What the engine does not serialise, its caller does:
//
//   - Changes of one entry: the caller serialises copy-ups of one entry,
//     and every change of it (Setattr, Setxattr, Removexattr, Link,
//     Remove, Rename), with a lock of its own for the entry: fs's node
//     lock, held across the engine call, which updates the Entry the
//     caller passes by pointer. Two racing copy-ups of one entry are
//     still safe (the second rename into place finds EEXIST and its copy
//     is discarded) but waste the work. Reads (Lookup, ReadDir,
//     Getxattr, Listxattr, Readlink) take a copy of the Entry and need no
//     lock.
//   - Namespace changes within one directory: the kernel's directory
//     locks (i_rwsem), and for renames across directories its
//     per-filesystem rename lock, order them before a request reaches
//     the daemon. The engine relies on that and does not lock
//     directories.
//   - Rename: fs locks the two children, source and target, ordered by
//     their merged inode numbers (ascending). That ordering key is read
//     without the nodes' locks: it changes only under a node's lock (a
//     lookup refreshing the node's Entry, a copy-up that gives a name of
//     a lower hard link a number of its own), and the nodes whose
//     numbers can change are names of lower hard links, which are never
//     shared. Inside the children's locks fs takes each parent's lock,
//     one at a time, to copy the parent's Entry; the parents' locks are
//     never held together, nor across the engine call.
//   - Lower hard links: every name of a lower file with more than one
//     link is its own fs node (a node generation derived from the name),
//     all with the same merged inode number, because a copy-up through
//     one name breaks the link (no index joins them, as overlayfs with
//     index=off) and FUSE requests name only the node. Their locks are
//     therefore distinct, and copy-ups through two names of one lower
//     inode are not serialised against each other; each makes a copy of
//     its own name.
//
// # Lock order
//
// From the outside in:
//
//  1. fs.Root's freeze lock, held for reading by every request that
//     changes the upper, taken before any node lock.
//  2. Node locks (fs.node.mu). Not nested, except in rename: the two
//     children by ascending merged inode number, then each parent
//     briefly inside them.
//  3. An open file's lock (fs.file.mu), taken inside its node's lock,
//     never the other way round.
//  4. go-fuse's own inode tree locks (Path, Parent, NewInode), taken
//     inside node locks; go-fuse calls no node method while holding
//     them.
//  5. The engine's cache locks (leaves).
package cow
