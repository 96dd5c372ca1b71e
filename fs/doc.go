//go:build linux

// Package fs serves a cow.Stack over FUSE with go-fuse's node API.
//
// Each FUSE method decodes its request, calls the engine (package cow)
// and fills the reply; fs opens no layer directory itself. Most methods
// make one engine call. Those that make more: Open for writing (of a
// lower file, an open of its data and, at the first change or close, a
// copy-up and a reopen; otherwise a copy-up, then the open), Link (a
// copy-up of the source, then the link), Unlink, Rmdir and Rename (a
// lookup of the child first when the kernel has not made it, and an
// O_PATH fd of a file losing its last name, kept so that the node can
// still be opened through /proc/self/fd), and Getattr of an open file,
// which fstats the file's fd. docs/design.md lists them.
//
// A node caches what its name resolved to (cow.Entry); the engine keeps
// the upper layer as the source of truth and the node's entry is
// refreshed by every lookup. All names of a lower hard link are one node:
// a copy-up keeps the inode number, and joins the names.
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
// Lock order: a node's lock before the locks of its open files; node
// locks are not nested, except in rename, which locks the source and the
// target by ascending inode number. The engine holds only leaf locks of
// its caches.
package fs
