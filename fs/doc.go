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
// Passthrough: an open file is handed to the kernel as a FUSE passthrough
// backing file when the kernel offers it, so reads and writes bypass the
// daemon. go-fuse registers one backing file per inode. A file opened
// read-only from a lower layer keeps reading the lower file after another
// open copies it up, as in kernel overlayfs (the open file refers to the
// lower inode). While such a lower backing is live, an open of the
// copied-up file gets no passthrough and direct I/O through the daemon,
// so it can never be served from the lower file.
//
// Lock order: node.mu of a parent before node.mu of a child; when two
// unrelated nodes are locked (rename), by ascending inode number. The
// engine takes no locks of its own.
package fs
