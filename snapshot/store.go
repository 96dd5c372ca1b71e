package snapshot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/ovl"
)

// Names under the store root.
const (
	dbFile       = "metadata.db"
	snapshotsDir = "snapshots"
	blobsDir     = "blobs/sha256"
	tmpDir       = "tmp"
	emptyDir     = "empty"
	fsDir        = "fs"
	workDir      = "work"

	newPrefix = "new-" // snapshots/new-*: being created
	opPrefix  = "op-"  // tmp/op-*: an operation in progress
)

// DefaultRoot is the store's default location.
const DefaultRoot = "/var/lib/strata"

// Store is a layer store under one root directory. Its methods are safe
// for concurrent use, from one process or many.
type Store struct {
	root    string
	timeout time.Duration
	mu      sync.Mutex // serialises this process's openings of the database
}

// Options tune Open.
type Options struct {
	// LockTimeout bounds the wait for the database held by another
	// process; 0 means one minute.
	LockTimeout time.Duration
}

// Open opens the store at root, creating it if needed.
func Open(root string, opts Options) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	s := &Store{root: abs, timeout: opts.LockTimeout}
	if s.timeout == 0 {
		s.timeout = time.Minute
	}
	for _, d := range []string{"", snapshotsDir, blobsDir, tmpDir, emptyDir} {
		if err := os.MkdirAll(filepath.Join(abs, d), 0o700); err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
	}
	// The empty lower must be readable by everyone who may read a mount.
	if err := os.Chmod(filepath.Join(abs, emptyDir), 0o755); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	// An existing store needs no write (and no fsync) to be opened.
	ready := false
	if _, err := os.Stat(filepath.Join(abs, dbFile)); err == nil {
		err = s.view(func(tx *bolt.Tx) error {
			if err := checkSchema(tx); err != nil {
				return err
			}
			v1 := tx.Bucket(bucketV1)
			ready = v1 != nil && v1.Bucket(bucketSnapshots) != nil && v1.Bucket(bucketMounts) != nil
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("open store %s: %w", abs, err)
		}
	}
	if ready {
		return s, nil
	}
	err = s.update(func(tx *bolt.Tx) error {
		if err := checkSchema(tx); err != nil {
			return err
		}
		v1, err := tx.CreateBucketIfNotExists(bucketV1)
		if err != nil {
			return err
		}
		if _, err := v1.CreateBucketIfNotExists(bucketSnapshots); err != nil {
			return err
		}
		_, err = v1.CreateBucketIfNotExists(bucketMounts)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}
	return s, nil
}

// checkSchema refuses a store written by a newer strata.
func checkSchema(tx *bolt.Tx) error {
	var newer []string
	_ = tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
		if n := string(name); n != schemaVersion && len(n) > 1 && n[0] == 'v' {
			newer = append(newer, n)
		}
		return nil
	})
	if len(newer) > 0 {
		return fmt.Errorf("store schema %s is newer than this strata reads (%s): upgrade strata", newer[0], schemaVersion)
	}
	return nil
}

// Root returns the store's root directory.
func (s *Store) Root() string { return s.root }

// Close releases the store. The database is not held between calls, so
// there is nothing to release today.
func (s *Store) Close() error { return nil }

func (s *Store) openDB(readOnly bool) (*bolt.DB, error) {
	db, err := bolt.Open(filepath.Join(s.root, dbFile), 0o600, &bolt.Options{
		Timeout:  s.timeout,
		ReadOnly: readOnly,
	})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("the store's metadata is locked by another strata process for over %v: %w", s.timeout, err)
	}
	return db, err
}

// update runs fn in a read-write transaction, holding the database
// (and so every other strata process's writes) only for fn.
func (s *Store) update(fn func(tx *bolt.Tx) error) error {
	return s.withDB(false, func(db *bolt.DB) error { return db.Update(fn) })
}

// get reads the record of the snapshot key.
func (s *Store) get(key string) (record, error) {
	var r record
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		r, err = getRecord(tx, key)
		return err
	})
	return r, err
}

// view runs fn in a read-only transaction, beside other readers.
func (s *Store) view(fn func(tx *bolt.Tx) error) error {
	return s.withDB(true, func(db *bolt.DB) error { return db.View(fn) })
}

// withDB opens the database for fn and closes it after.
func (s *Store) withDB(readOnly bool, fn func(*bolt.DB) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	db, err := s.openDB(readOnly)
	if err != nil {
		return err
	}
	return errors.Join(fn(db), db.Close())
}

func (s *Store) snapshotDir(id string) string { return filepath.Join(s.root, snapshotsDir, id) }

func randomName() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// chain returns the layer directories of key and its ancestors, top
// first.
func (s *Store) chain(tx *bolt.Tx, key string) ([]string, error) {
	var dirs []string
	for key != "" {
		r, err := getRecord(tx, key)
		if err != nil {
			return nil, err
		}
		dirs = append(dirs, filepath.Join(s.snapshotDir(r.ID), fsDir))
		key = r.Parent
		if len(dirs) > 4096 {
			return nil, fmt.Errorf("snapshot %q: parent chain loops or exceeds 4096 layers", key)
		}
	}
	return dirs, nil
}

// mounts computes the union mount of the record r.
func (s *Store) mounts(tx *bolt.Tx, r record) (Mount, error) {
	lowers, err := s.chain(tx, r.Parent)
	if err != nil {
		return Mount{}, err
	}
	dir := s.snapshotDir(r.ID)
	switch r.Kind {
	case KindActive:
		if len(lowers) == 0 {
			lowers = []string{filepath.Join(s.root, emptyDir)}
		}
		return Mount{Lowers: lowers, Upper: filepath.Join(dir, fsDir), Work: filepath.Join(dir, workDir)}, nil
	case KindView:
		if len(lowers) == 0 {
			lowers = []string{filepath.Join(dir, fsDir)}
		}
	default: // a committed snapshot is viewed as its own layer on its parents
		lowers = append([]string{filepath.Join(dir, fsDir)}, lowers...)
	}
	// Kernel overlayfs takes no fewer than two lowers without an upper.
	if len(lowers) == 1 {
		lowers = append(lowers, filepath.Join(s.root, emptyDir))
	}
	return Mount{Lowers: lowers}, nil
}

// Stat returns the snapshot key's metadata.
func (s *Store) Stat(ctx context.Context, key string) (Info, error) {
	var info Info
	err := s.view(func(tx *bolt.Tx) error {
		r, err := getRecord(tx, key)
		info = r.Info
		return err
	})
	return info, err
}

// Mounts returns the union mount that serves the snapshot key.
func (s *Store) Mounts(ctx context.Context, key string) (Mount, error) {
	var m Mount
	err := s.view(func(tx *bolt.Tx) error {
		r, err := getRecord(tx, key)
		if err != nil {
			return err
		}
		m, err = s.mounts(tx, r)
		return err
	})
	return m, err
}

// Prepare makes an active snapshot key over parent ("" for none) and
// returns its mount.
func (s *Store) Prepare(ctx context.Context, key, parent string, labels map[string]string) (Mount, error) {
	return s.create(ctx, KindActive, key, parent, labels, "")
}

// View makes a read-only view key of parent and returns its mount.
func (s *Store) View(ctx context.Context, key, parent string, labels map[string]string) (Mount, error) {
	return s.create(ctx, KindView, key, parent, labels, "")
}

// layerKeyPrefix starts the names of layers from Apply and CommitLayer,
// which are their chain IDs.
const layerKeyPrefix = "sha256:"

// checkKey refuses keys the metadata cannot hold.
func checkKey(key string) error {
	if key == "" {
		return errorf(ErrInvalid, "empty snapshot key")
	}
	if len(key) > 1024 {
		return errorf(ErrInvalid, "snapshot key longer than 1024 bytes")
	}
	if strings.HasPrefix(key, layerKeyPrefix) {
		return errorf(ErrInvalid, "snapshot key %q: names starting %q are chain IDs, kept for layers from Apply and CommitLayer", key, layerKeyPrefix)
	}
	return nil
}

// create makes a snapshot of kind (active or view). Its directory is
// built under a temporary name and renamed into place while the
// transaction that records it holds the database.
func (s *Store) create(ctx context.Context, kind Kind, key, parent string, labels map[string]string, op string) (Mount, error) {
	return s.createIf(ctx, kind, key, parent, labels, op, nil)
}

// PrepareIf is Prepare that first runs check in the creating
// transaction: a store built on this one (images) can make the snapshot
// depend on its own records, with no moment between the two.
func (s *Store) PrepareIf(ctx context.Context, key, parent string, labels map[string]string, check func(*Tx) error) (Mount, error) {
	return s.createIf(ctx, KindActive, key, parent, labels, "", check)
}

// createIf is create, after check (if set) passes in its transaction.
func (s *Store) createIf(ctx context.Context, kind Kind, key, parent string, labels map[string]string, op string, check func(*Tx) error) (Mount, error) {
	if err := checkKey(key); err != nil {
		return Mount{}, err
	}
	if err := ctx.Err(); err != nil {
		return Mount{}, err
	}
	// The directory is built and renamed into place while the
	// transaction holds the database, so Cleanup, which holds it too,
	// never mistakes it for a leftover.
	tmp := filepath.Join(s.root, snapshotsDir, newPrefix+randomName())
	var m Mount
	renamed := ""
	err := s.update(func(tx *bolt.Tx) error {
		sb, err := snapshotsBucket(tx)
		if err != nil {
			return err
		}
		if sb.Bucket([]byte(key)) != nil {
			return errorf(ErrExists, "snapshot %q already exists", key)
		}
		if check != nil {
			if err := check(&Tx{s: s, tx: tx}); err != nil {
				return err
			}
		}
		if parent != "" {
			p, err := getRecord(tx, parent)
			if err != nil {
				return fmt.Errorf("parent: %w", err)
			}
			if p.Kind != KindCommitted {
				return errorf(ErrPrecondition, "parent %q is %s, not committed", parent, p.Kind)
			}
		}
		if err := makeSnapshotDir(tmp, kind); err != nil {
			return err
		}
		if parent != "" {
			// The merged root is the upper's root: give it the parent's
			// owner, mode and times, as a copy-up would.
			p, _ := getRecord(tx, parent)
			if err := copyRootMeta(filepath.Join(s.snapshotDir(p.ID), fsDir), filepath.Join(tmp, fsDir)); err != nil {
				return err
			}
		}
		seq, err := sb.NextSequence()
		if err != nil {
			return err
		}
		now := time.Now().UTC()
		r := record{Info: Info{
			Kind: kind, Name: key, Parent: parent, Labels: labels,
			Created: now, Updated: now, ID: strconv.FormatUint(seq, 10),
		}, op: op}
		if err := putRecord(tx, r); err != nil {
			return err
		}
		if err := setChild(tx, parent, key, true); err != nil {
			return err
		}
		if m, err = s.mounts(tx, r); err != nil {
			return err
		}
		dst := s.snapshotDir(r.ID)
		if err := os.Rename(tmp, dst); err != nil {
			return err
		}
		renamed = dst
		return nil
	})
	if err != nil {
		// The transaction did not commit: nothing records the directory.
		dir := tmp
		if renamed != "" {
			dir = renamed
		}
		return Mount{}, errors.Join(fmt.Errorf("prepare %q: %w", key, err), os.RemoveAll(dir))
	}
	return m, nil
}

// copyRootMeta gives the directory dst the owner, mode and times of src.
func copyRootMeta(src, dst string) error {
	var st unix.Stat_t
	if err := unix.Stat(src, &st); err != nil {
		return err
	}
	if err := unix.Chown(dst, int(st.Uid), int(st.Gid)); err != nil && !errors.Is(err, unix.EPERM) {
		return err
	}
	if err := unix.Chmod(dst, st.Mode&0o7777); err != nil {
		return err
	}
	return unix.UtimesNano(dst, []unix.Timespec{st.Atim, st.Mtim})
}

func makeSnapshotDir(dir string, kind Kind) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	// The upper's root must be as readable as a container root is.
	if err := os.Mkdir(filepath.Join(dir, fsDir), 0o755); err != nil {
		return err
	}
	if kind == KindActive {
		return os.Mkdir(filepath.Join(dir, workDir), 0o700)
	}
	return nil
}

// Commit turns the active snapshot key into the committed snapshot name.
// The upper's data is synced to disk first. A mounted snapshot is
// refused: unmount it, or commit a layer of it with CommitLayer.
func (s *Store) Commit(ctx context.Context, name, key string, labels map[string]string) error {
	return s.commit(ctx, name, key, labels, nil)
}

func (s *Store) commit(ctx context.Context, name, key string, labels map[string]string, desc *record) error {
	if err := checkKey(name); err != nil {
		return err
	}
	r, err := s.get(key)
	if err != nil {
		return fmt.Errorf("commit %q: %w", key, err)
	}
	if r.Kind != KindActive {
		return errorf(ErrPrecondition, "commit %q: snapshot is %s, not active", key, r.Kind)
	}
	upper := filepath.Join(s.snapshotDir(r.ID), fsDir)
	usage, err := diskUsage(ctx, upper)
	if err != nil {
		return fmt.Errorf("commit %q: %w", key, err)
	}
	if _, err := ovl.MarkMetacopies(upper); err != nil {
		return fmt.Errorf("commit %q: %w", key, err)
	}
	if err := syncDir(upper); err != nil {
		return fmt.Errorf("commit %q: sync: %w", key, err)
	}
	err = s.update(func(tx *bolt.Tx) error {
		cur, err := getRecord(tx, key)
		if err != nil {
			return err
		}
		if cur.ID != r.ID || cur.Kind != KindActive {
			return errorf(ErrPrecondition, "snapshot changed during commit")
		}
		if m, ok := getMount(tx, key); ok && mountAlive(m) {
			return errorf(ErrPrecondition, "snapshot is mounted at %s (unmount it first)", m.Dir)
		}
		sb, _ := snapshotsBucket(tx)
		if sb.Bucket([]byte(name)) != nil {
			return errorf(ErrExists, "snapshot %q already exists", name)
		}
		if err := deleteRecord(tx, key); err != nil {
			return err
		}
		if err := deleteMount(tx, key); err != nil {
			return err
		}
		if err := setChild(tx, cur.Parent, key, false); err != nil {
			return err
		}
		now := time.Now().UTC()
		nr := record{Info: Info{
			Kind: KindCommitted, Name: name, Parent: cur.Parent, Labels: labels,
			Created: now, Updated: now, ID: cur.ID,
		}, usage: usage}
		if labels == nil {
			nr.Labels = cur.Labels
		}
		if desc != nil {
			nr.Layer = desc.Layer
		}
		if err := putRecord(tx, nr); err != nil {
			return err
		}
		return setChild(tx, cur.Parent, name, true)
	})
	if err != nil {
		return fmt.Errorf("commit %q as %q: %w", key, name, err)
	}
	// The work dir is the kernel's scratch space; a layer needs none.
	_ = os.RemoveAll(filepath.Join(s.snapshotDir(r.ID), workDir))
	return nil
}

// Remove removes the snapshot key. A committed snapshot with children
// and a mounted snapshot are refused.
func (s *Store) Remove(ctx context.Context, key string) error {
	_, err := s.RemoveIf(ctx, key, nil)
	return err
}

// RemoveIf is Remove for garbage collection: it removes key only if it
// has no children, no live op holds a lease on it and keep (if set),
// asked within the removing transaction, says no. It reports whether it
// removed key.
func (s *Store) RemoveIf(ctx context.Context, key string, keep func(*Tx) (bool, error)) (bool, error) {
	removed := false
	err := s.remove(ctx, key, func(tx *bolt.Tx) (bool, error) {
		if keep == nil {
			removed = true
			return false, nil
		}
		t := &Tx{s: s, tx: tx}
		if len(children(tx, key)) > 0 || t.Leased()[key] {
			return true, nil
		}
		k, err := keep(t)
		removed = !k && err == nil
		return k, err
	})
	return removed, err
}

func (s *Store) remove(ctx context.Context, key string, keep func(*bolt.Tx) (bool, error)) error {
	o, err := s.beginOp("rm")
	if err != nil {
		return fmt.Errorf("remove %q: %w", key, err)
	}
	var d, b detached
	err = s.update(func(tx *bolt.Tx) error {
		r, err := getRecord(tx, key)
		if err != nil {
			return err
		}
		if k, err := keep(tx); err != nil || k {
			return err
		}
		if kids := children(tx, key); len(kids) > 0 {
			return errorf(ErrPrecondition, "snapshot has %d children (%q first): remove them first", len(kids), kids[0])
		}
		if m, ok := getMount(tx, key); ok && mountAlive(m) {
			return errorf(ErrPrecondition, "snapshot is mounted at %s (unmount it first)", m.Dir)
		}
		if d, err = s.detachRecord(tx, r, o); err != nil {
			return err
		}
		if r.Layer != nil {
			if b, err = s.dropBlobRef(tx, r.Layer.Digest, blobOwner(r.Name), o); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return errors.Join(fmt.Errorf("remove %q: %w", key, err), d.undo(), b.undo(), o.end())
	}
	return o.end()
}

// detached is a snapshot directory or a blob that a transaction moved
// into an op's scratch directory, while holding the database, so no
// other process sees it half-removed. If the transaction fails it is
// moved back (undo); if the process dies before the transaction
// commits, Cleanup finds it in the dead op, still recorded, and moves
// it back (restoreFromOp); once the transaction commits it goes with
// the op.
type detached struct{ from, to string }

func (d detached) move() (detached, error) {
	if err := os.Rename(d.from, d.to); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return detached{}, nil
		}
		return detached{}, err
	}
	return d, nil
}

func (d detached) undo() error {
	if d.to == "" {
		return nil
	}
	return os.Rename(d.to, d.from)
}

// detachRecord deletes r's record, its mount record and its place among
// its parent's children, and moves its directory into the op o.
func (s *Store) detachRecord(tx *bolt.Tx, r record, o *op) (detached, error) {
	if err := deleteRecord(tx, r.Name); err != nil {
		return detached{}, err
	}
	if err := deleteMount(tx, r.Name); err != nil {
		return detached{}, err
	}
	if err := setChild(tx, r.Parent, r.Name, false); err != nil && !errors.Is(err, ErrNotFound) {
		return detached{}, err
	}
	return detached{from: s.snapshotDir(r.ID), to: filepath.Join(o.dir, r.ID)}.move()
}

// Update changes the snapshot's labels: every label when fieldpaths is
// empty or names "labels", else those named "labels.<name>".
func (s *Store) Update(ctx context.Context, info Info, fieldpaths ...string) (Info, error) {
	var out Info
	err := s.update(func(tx *bolt.Tx) error {
		r, err := getRecord(tx, info.Name)
		if err != nil {
			return err
		}
		if len(fieldpaths) == 0 {
			fieldpaths = []string{"labels"}
		}
		for _, fp := range fieldpaths {
			switch {
			case fp == "labels":
				r.Labels = info.Labels
			case len(fp) > len("labels.") && fp[:len("labels.")] == "labels.":
				name := fp[len("labels."):]
				if r.Labels == nil {
					r.Labels = map[string]string{}
				}
				if v, ok := info.Labels[name]; ok {
					r.Labels[name] = v
				} else {
					delete(r.Labels, name)
				}
			default:
				return errorf(ErrInvalid, "cannot update field %q (only labels)", fp)
			}
		}
		r.Updated = time.Now().UTC()
		if err := putRecord(tx, r); err != nil {
			return err
		}
		out = r.Info
		return nil
	})
	return out, err
}

// Walk calls fn for every snapshot, in key order. Snapshots that belong
// to an operation in progress are skipped.
func (s *Store) Walk(ctx context.Context, fn func(context.Context, Info) error) error {
	var infos []Info
	err := s.view(func(tx *bolt.Tx) error {
		return forEachRecord(tx, func(r record) error {
			infos = append(infos, r.Info)
			return nil
		})
	})
	if err != nil {
		return err
	}
	// fn runs outside the transaction, so it may call the store.
	for _, info := range infos {
		if err := fn(ctx, info); err != nil {
			return err
		}
	}
	return nil
}

// Usage returns the disk space of the snapshot's own directory: recorded
// at commit for a committed snapshot, measured now for an active one.
func (s *Store) Usage(ctx context.Context, key string) (Usage, error) {
	r, err := s.get(key)
	if err != nil {
		return Usage{}, err
	}
	if r.Kind == KindCommitted {
		return r.usage, nil
	}
	return diskUsage(ctx, filepath.Join(s.snapshotDir(r.ID), fsDir))
}

// syncDir flushes the filesystem that holds dir.
func syncDir(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Syncfs(fd)
}

// Daemon is a process serving an active snapshot's mount.
type Daemon struct {
	Dir    string // the mountpoint
	Pid    int
	Socket string // its control socket
}

// SetMounted records that d serves the snapshot key. Another live daemon
// serving it is refused.
func (s *Store) SetMounted(ctx context.Context, key string, d Daemon) error {
	return s.update(func(tx *bolt.Tx) error {
		r, err := getRecord(tx, key)
		if err != nil {
			return err
		}
		if r.Kind != KindActive && r.Kind != KindView {
			return errorf(ErrPrecondition, "snapshot %q is %s: only stacks and views are mounted", key, r.Kind)
		}
		if cur, ok := getMount(tx, key); ok && mountAlive(cur) && cur.Pid != d.Pid {
			return errorf(ErrExists, "snapshot %q is already mounted at %s", key, cur.Dir)
		}
		return putMount(tx, key, d)
	})
}

// Mounted returns the live daemon serving key, if any.
func (s *Store) Mounted(ctx context.Context, key string) (Daemon, bool, error) {
	d, state, err := s.MountRecord(ctx, key)
	if err != nil || state != MountLive {
		return Daemon{}, false, err
	}
	return d, true, nil
}

// MountRecord returns what the store records of key's mount daemon, and
// the state of that mount now.
func (s *Store) MountRecord(ctx context.Context, key string) (Daemon, MountState, error) {
	var (
		d  Daemon
		ok bool
	)
	err := s.view(func(tx *bolt.Tx) error {
		d, ok = getMount(tx, key)
		return nil
	})
	if err != nil || !ok {
		return Daemon{}, MountNone, err
	}
	return d, mountState(d), nil
}

// SetUnmounted forgets the daemon of key.
func (s *Store) SetUnmounted(ctx context.Context, key string) error {
	return s.update(func(tx *bolt.Tx) error { return deleteMount(tx, key) })
}

// Listing is one snapshot as List shows it.
type Listing struct {
	Info
	// Usage is the recorded usage of a committed snapshot; zero for
	// others (measure them with Usage).
	Usage Usage
	// Daemon serves the snapshot, when it is mounted.
	Daemon *Daemon
	// DeadMount is the record of a daemon that died and left its FUSE
	// mount behind (every access to it fails with ENOTCONN) until
	// 'strata unmount' or the repair step detaches it.
	DeadMount *Daemon
}

// List returns every snapshot, in key order, with what one reading of
// the metadata tells of its usage and mount.
func (s *Store) List(ctx context.Context) ([]Listing, error) {
	var out []Listing
	err := s.view(func(tx *bolt.Tx) error {
		return forEachRecord(tx, func(r record) error {
			l := Listing{Info: r.Info, Usage: r.usage}
			if d, ok := getMount(tx, r.Name); ok {
				switch mountState(d) {
				case MountLive:
					l.Daemon = &d
				case MountDead:
					l.DeadMount = &d
				}
			}
			out = append(out, l)
			return nil
		})
	})
	return out, err
}
