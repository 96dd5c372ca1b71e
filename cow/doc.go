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
//     A crash leaves such names there; New removes them. Work also holds
//     the links directory, which is kept.
//   - Links directory: "strata.links" in work, one entry per copied-up
//     lower hard link, named by its merged inode number in hex, a hard
//     link to the copy (links.go). A copy-up of any name of a lower inode
//     with several names copies it there once and links the names the
//     merged view shows at their lower paths into the upper; a lookup of
//     another name of it links that name in. Operations on the inode
//     (open, attributes, xattrs) reach it through its entry there
//     (Stack.inode), so no rename of a name can make them fail.
//   - Entry: what a name resolves to in the merged view: the topmost
//     layer that holds it and its path there (Entry.Path: below a
//     redirect it differs from the merged path), its stat, its merged
//     inode number and, for a directory, the lower layers merged beneath
//     it (Entry.Lowers, cut at the first opaque one) with the
//     directory's path in each (Entry.Lowers), where its children
//     are looked for. Callers keep Entries (the fs node caches one) and
//     pass them back; the methods that change an entry update it.
//   - LowerName (Entry.LowerName): the path by which the lower layers
//     know an entry: its merged path, unless a redirect above it led
//     elsewhere. A rename records it as the moved entry's redirect.
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
//   - Redirect: an xattr (trusted.overlay.redirect, or the user.
//     form where trusted.* cannot be written) on a directory or metacopy
//     file naming where the layers beneath find it: absolute ("/a/b",
//     resolved from the root of the layers beneath, one name at a time,
//     by resolveLower) or a bare name (beside it in the parent's lower
//     directories, as the kernel writes for a rename within a
//     directory). Rename of a lower or merged directory copies the
//     directory itself up and writes "/" + its LowerName (kernel
//     overlayfs redirect_dir=on). Followed in every layer unless
//     Options.NoRedirect; written unless that or RedirectFollowOnly, and
//     a lower directory's rename is then EXDEV.
//   - Metacopy: an upper file that holds only metadata, its data still
//     the lower file's (kernel overlayfs metacopy=on): a sparse file of
//     the data's size with the metacopy xattr, and a redirect when it is
//     not at its LowerName. Made by a change of metadata or a rename of a
//     lower regular file with one name (CopyUp with MetaOnly); its
//     Entry.Data names the data's file. Recognised when sparse, or in a
//     layer whose root carries the metacopies mark or the kernel's
//     overlay uuid (an upper it mounted), or in a lower directory the
//     kernel marked impure. The first open for
//     writing or truncate copies the data in (built in work, fsynced,
//     renamed over it). Options.NoMetacopy: neither made nor followed,
//     and a metacopy file found is EPERM.
//   - Origin: strata's own xattr on a copied-up file, or a renamed
//     directory, recording the merged inode number it had before, so
//     st_ino survives copy-up, rename and remounts; on the copy of a
//     lower hard link it also holds the difference of the copy's link
//     count from the one reported (Entry.NlinkAdjust).
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
// from the upper, linksMu) are leaves, never held across a call out or a
// system call that can block on another request, and none taken inside
// another. linksMu guards the making of the links directory and each
// link into it with the update of its link-count record. The namespace generation
// (Stack.Gen) is atomic.
//
// The merged inode is a Node (node.go), which an adapter keeps per
// kernel inode. The Stack's methods that take an Entry by pointer leave
// its serialisation to their caller; a Node serialises them itself:
//
//   - Changes of one entry: copy-ups of one entry, and every change of
//     it (Setattr, Setxattr, Removexattr, Link, Remove, Rename), hold its
//     Node's lock across the Stack call, which updates the Node's Entry. Two racing copy-ups of one entry are
//     still safe (the second rename into place finds EEXIST and its copy
//     is discarded) but waste the work. Reads (Lookup, ReadDir,
//     Getxattr, Listxattr, Readlink) take a copy of the Entry and need no
//     lock.
//   - Namespace changes within one directory: the kernel's directory
//     locks (i_rwsem), and for renames across directories its
//     per-filesystem rename lock, order them before a request reaches
//     the daemon. The engine relies on that and does not lock
//     directories.
//   - Rename: Node.Rename locks the two children, source and target,
//     ordered by their merged inode numbers (ascending). That ordering key
//     is read without the nodes' locks: a copy-up keeps an entry's number,
//     so it changes only when a lookup finds another entry at the name.
//     Inside the children's locks it takes each parent's lock, one at a
//     time, to copy the parent's Entry; the parents' locks are never held
//     together, nor across the Stack call. A source and target that are
//     one node (two names of one inode) are not renamed: the adapter
//     returns, as rename(2) does nothing then.
//   - Lower hard links: all names of a lower file with more than one
//     link are one Node, with the lower's merged inode number, before
//     and after a copy-up (which joins the names, see the links
//     directory), so their copy-ups are serialised by the one node lock.
//     Two racing copy-ups of one inode are still safe: the links
//     directory's entry is linked with EEXIST meaning another won.
//
// # Lock order
//
// From the outside in:
//
//  1. fs.Root's freeze lock, held for reading by every request that
//     changes the upper, taken before any node lock.
//  2. fs's io-mode lock of a node (fs.node.mu), around its Open.
//  3. Node locks (Node.mu). Not nested, except in rename: the two
//     children by ascending merged inode number, then each parent
//     briefly inside them.
//  4. An open file's lock (fs.file.mu), never held while a Node's is
//     taken.
//  5. go-fuse's own inode tree locks (Path, Parent, NewInode), taken
//     inside node locks; go-fuse calls no node method while holding
//     them.
//  6. The engine's leaf locks: its caches' and linksMu, one at a time.
package cow
