//go:build linux

// Package fs serves a cow.Stack over FUSE with go-fuse's node API.
//
// Each FUSE method decodes its request, calls one method of the engine
// (package cow: the merged inode is a cow.Node, which holds the entry,
// its lock and its copy-up) and fills the reply; fs opens no file and no
// layer directory itself. A node here adds only what is the adapter's:
// the go-fuse inode and the kernel io mode it has set. docs/design.md
// lists the methods and the few that make a second call (a lookup of a
// child the kernel has not looked up; the reopen after a postponed
// copy-up).
//
// All names of a lower hard link are one node: a copy-up keeps the inode
// number, and joins the names.
//
// Caching: lower layers are immutable and every change to the upper goes
// through the mount, so entries and attributes are given long timeouts
// and the kernel's page cache is kept across opens.
//
// Open files: upper files are handed to the kernel as FUSE passthrough
// backing files, so reads and writes bypass the daemon. Lower files are
// served through the page cache, so that an open file of a lower file can
// follow its copy-up as in kernel overlayfs (see newFileLocked and
// docs/design.md).
//
// Lock order: a node's io-mode lock, then its cow.Node's lock, then the
// locks of its open files; the cow.Node locks are not nested, except in
// rename, which locks the source and the target by ascending inode number
// (see cow.Node). The engine holds only leaf locks of its caches.
package fs
