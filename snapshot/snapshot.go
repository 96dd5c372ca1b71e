// Package snapshot is strata's layer store: committed layers stored once
// and shared, writable stacks ("active" snapshots) prepared on top of
// them, and read-only views, with containerd's vocabulary and lifecycle
// (containerd core/snapshots/snapshotter.go):
//
//   - Prepare(key, parent) makes an active snapshot: an empty upper
//     directory over the parent's layers. Mounts describes the union
//     mount that serves it; mounting is a separate step (package fs, or
//     kernel overlayfs, can serve the same description).
//   - View(key, parent) makes a read-only view of the parent.
//   - Commit(name, key) turns an active snapshot into a committed one
//     named name: its upper directory becomes a layer that children can
//     stack on. The active key is gone afterwards.
//   - Remove(key) removes a snapshot that has no children and is not
//     mounted.
//
// Apply extracts an OCI layer into a new committed snapshot named by its
// chain ID (image-spec identity), so a layer applied twice is stored once.
//
// # Store layout
//
// Under the root directory (docs/store.md has the full description):
//
//	metadata.db          bbolt: schema v1, see meta.go
//	snapshots/<id>/fs    the snapshot's layer (committed) or upper (active)
//	snapshots/<id>/work  overlay work dir of an active snapshot
//	blobs/sha256/<hex>   layer blobs, as in an OCI image layout
//	tmp/op-*             in-progress operations, each held by a flock
//	empty/               the lower of a stack with no parent
//
// # Concurrency and crashes
//
// The metadata database is opened for each transaction and closed after
// it, so a long operation (apply, commit) holds it only for its short
// first and last steps; bbolt's flock serialises writers across
// processes and lets readers share. Every change is one bbolt
// transaction plus directory renames made while that transaction holds
// the database, so another process never sees one without the other. A
// long operation works in tmp/op-* under an exclusive flock that the
// kernel drops when its process dies; Cleanup removes what dead
// operations left, and only theirs.
//
// Lock order: a process's Store.mu, then an operation's flock (taken
// before the database, never waited for while it is open), then the
// database's flock.
package snapshot

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/strata-fs/strata/snapshot/layer"
)

// Kind is a snapshot's kind.
type Kind uint8

const (
	KindUnknown Kind = iota
	KindView
	KindActive
	KindCommitted
)

// String returns the kind's name as containerd prints it.
func (k Kind) String() string {
	switch k {
	case KindView:
		return "view"
	case KindActive:
		return "active"
	case KindCommitted:
		return "committed"
	}
	return "unknown"
}

// Info describes a snapshot.
type Info struct {
	Kind    Kind
	Name    string
	Parent  string // "" when the snapshot has no parent
	Labels  map[string]string
	Created time.Time
	Updated time.Time

	// ID names the snapshot's directory under snapshots/.
	ID string
	// Layer describes the layer a committed snapshot was applied from or
	// committed as, when known.
	Layer *layer.Descriptor
}

// Usage is the disk space a snapshot's own directory takes: its layer
// for a committed snapshot, its upper for an active one. The layers
// beneath are shared and not counted.
type Usage struct {
	Size   int64 // bytes allocated, each inode counted once
	Inodes int64
}

// Mount describes the union mount that serves a snapshot: the overlayfs
// arguments, which fs (strata-fuse) and kernel overlayfs both take.
type Mount struct {
	Lowers []string // top first
	Upper  string   // "" for a read-only view
	Work   string
}

// ReadOnly reports whether the mount has no upper layer.
func (m Mount) ReadOnly() bool { return m.Upper == "" }

// Options returns the overlayfs mount options: "lowerdir=A:B",
// "upperdir=U", "workdir=W", and "redirect_dir=on" and "metacopy=on":
// strata's engine renames lower directories with redirects and copies
// metadata alone, as the kernel does with those options, and a committed
// snapshot keeps its upper as a layer, so a kernel mount of a snapshot
// strata (or the kernel) changed needs them. They trust the lower layers:
// the store's are its own uppers, or applied from tars, which never
// carry an overlay xattr.
func (m Mount) Options() []string {
	o := []string{"lowerdir=" + strings.Join(m.Lowers, ":")}
	if m.Upper != "" {
		o = append(o, "upperdir="+m.Upper, "workdir="+m.Work)
	}
	return append(o, "redirect_dir=on", "metacopy=on")
}

// Errors, checked with errors.Is.
var (
	ErrNotFound     = errors.New("not found")
	ErrExists       = errors.New("already exists")
	ErrPrecondition = errors.New("failed precondition")
	ErrInvalid      = errors.New("invalid argument")
)

// kindError is an error of one of the kinds above whose message does
// not repeat the kind's name.
type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string        { return e.msg }
func (e *kindError) Is(target error) bool { return target == e.kind }

// errorf formats an error of kind (ErrNotFound, ...).
func errorf(kind error, format string, a ...any) error {
	return &kindError{kind: kind, msg: fmt.Sprintf(format, a...)}
}
