//go:build linux

// Package fs serves a cow.Stack over FUSE with go-fuse's node API.
//
// Each FUSE method decodes its request, makes one call into the engine
// (package cow) and fills the reply. A node caches what its name resolved
// to (cow.Entry); the engine keeps the upper layer as the source of truth
// and the node's entry is refreshed by every lookup.
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
