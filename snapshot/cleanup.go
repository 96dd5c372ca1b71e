package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// An op is a long operation in progress (apply, commit): a directory
// tmp/op-<kind>-<random> for its scratch files, held under an exclusive
// flock for the op's lifetime. The kernel drops the flock when the
// process dies, however it dies, which is how Cleanup tells a dead op
// from a live one, in this process or another.
type op struct {
	name string // "op-..."
	dir  string
	lock *os.File
}

func (s *Store) beginOp(kind string) (*op, error) {
	name := opPrefix + kind + "-" + randomName()
	dir := filepath.Join(s.root, tmpDir, name)
	// The directory is locked under a staging name and only then given
	// its op- name, so Cleanup never sees an op that is not yet held.
	staging := filepath.Join(s.root, tmpDir, stagingPrefix+name)
	if err := os.Mkdir(staging, 0o700); err != nil {
		return nil, err
	}
	f, err := os.Open(staging)
	if err != nil {
		return nil, errors.Join(err, os.Remove(staging))
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return nil, errors.Join(err, f.Close(), os.Remove(staging))
	}
	if err := os.Rename(staging, dir); err != nil {
		return nil, errors.Join(err, f.Close(), os.Remove(staging))
	}
	return &op{name: name, dir: dir, lock: f}, nil
}

// stagingPrefix names an op directory not yet locked; one older than
// stagingGrace is a leftover.
const (
	stagingPrefix = "staging-"
	stagingGrace  = time.Minute
)

// end removes the op's scratch directory and releases it.
func (o *op) end() error {
	err := os.RemoveAll(o.dir)
	return errors.Join(err, o.lock.Close())
}

// opAlive reports whether the op named name is held by a live process.
func (s *Store) opAlive(name string) bool {
	state := s.opState(name)
	return state == opLive
}

type opStateKind int

const (
	opLive  opStateKind = iota // held by a live process
	opDead                     // left by a dead one
	opEnded                    // gone: it ended while we looked
)

// opState tells whether the op named name is live, dead, or ended just
// now (an op removes its directory, then drops its lock).
func (s *Store) opState(name string) opStateKind {
	f, err := os.Open(filepath.Join(s.root, tmpDir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return opEnded
	}
	if err != nil {
		return opDead
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return opLive
	}
	_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) == nil && st.Nlink == 0 {
		return opEnded
	}
	return opDead
}

// Report lists what Check found or Cleanup repaired.
type Report struct {
	// Problems found, one line each.
	Problems []string
	// Repaired is true when the problems were fixed.
	Repaired bool
	// Unrepairable lists damage no repair can undo (a snapshot whose
	// directory is gone), one line each, with what to do about it.
	Unrepairable []string
}

// Cleanup is the store's repair step, run by the CLI before every
// command that changes the store and by `strata check --repair`. It
// removes what crashed or killed processes left: snapshots of dead
// operations, directories no record names, scratch files of dead
// operations, and records of mount daemons that are gone (detaching
// their dead FUSE mounts). Committed snapshots are never touched, and
// neither is anything of a live operation.
func (s *Store) Cleanup(ctx context.Context) (Report, error) {
	return s.check(ctx, true)
}

// Check reports what Cleanup would repair, and records whose directory
// is missing (which Cleanup cannot repair: the data is gone), without
// changing anything.
func (s *Store) Check(ctx context.Context) (Report, error) {
	return s.check(ctx, false)
}

func (s *Store) check(ctx context.Context, repair bool) (Report, error) {
	var (
		rep      = Report{Repaired: repair}
		dirs     []string
		unmounts []string
	)
	run := s.view
	var o *op
	if repair {
		run = s.update
		var err error
		if o, err = s.beginOp("cleanup"); err != nil {
			return rep, fmt.Errorf("check store: %w", err)
		}
		defer func() { _ = o.end() }()
	}
	err := run(func(tx *bolt.Tx) error {
		sb, err := snapshotsBucket(tx)
		if err != nil {
			return err
		}
		ids := map[string]bool{}
		missing := map[string]string{} // id -> name of snapshots without their directory
		blobs := blobOwners(tx)
		var dead []record
		err = sb.ForEachBucket(func(k []byte) error {
			r := decodeRecord(string(k), sb.Bucket(k))
			ids[r.ID] = true
			if r.op != "" && !s.opAlive(r.op) {
				dead = append(dead, r)
				return nil
			}
			if _, err := os.Lstat(filepath.Join(s.snapshotDir(r.ID), fsDir)); err != nil {
				missing[r.ID] = r.Name
			}
			return nil
		})
		if err != nil {
			return err
		}
		// A process killed inside a removing transaction leaves the
		// data in its dead op, still recorded: move it back.
		restored, err := s.restoreFromOps(missing, blobs, repair)
		if err != nil {
			return err
		}
		rep.Problems = append(rep.Problems, restored...)
		for id, name := range missing {
			rep.Unrepairable = append(rep.Unrepairable, fmt.Sprintf("snapshot %q: directory %s missing: its data is lost; remove it with 'strata rm'", name, filepath.Join(snapshotsDir, id)))
		}
		// Children of a dead op's snapshot cannot exist: an op's
		// snapshot is active, and only committed snapshots have children.
		for _, r := range dead {
			rep.Problems = append(rep.Problems, fmt.Sprintf("snapshot %q of an interrupted operation (%s)", r.Name, r.op))
			if repair {
				if _, err := s.detachRecord(tx, r, o); err != nil {
					return err
				}
			}
		}
		ents, err := os.ReadDir(filepath.Join(s.root, snapshotsDir))
		if err != nil {
			return err
		}
		for _, e := range ents {
			if ids[e.Name()] {
				continue
			}
			rep.Problems = append(rep.Problems, fmt.Sprintf("directory %s belongs to no snapshot", filepath.Join(snapshotsDir, e.Name())))
			dirs = append(dirs, filepath.Join(s.root, snapshotsDir, e.Name()))
		}
		tents, err := os.ReadDir(filepath.Join(s.root, tmpDir))
		if err != nil {
			return err
		}
		for _, e := range tents {
			if o != nil && e.Name() == o.name {
				continue
			}
			if strings.HasPrefix(e.Name(), opPrefix) && s.opState(e.Name()) != opDead {
				continue
			}
			if strings.HasPrefix(e.Name(), stagingPrefix) {
				if fi, err := e.Info(); err != nil || time.Since(fi.ModTime()) < stagingGrace {
					continue
				}
			}
			rep.Problems = append(rep.Problems, fmt.Sprintf("scratch %s of an interrupted operation", filepath.Join(tmpDir, e.Name())))
			dirs = append(dirs, filepath.Join(s.root, tmpDir, e.Name()))
		}
		bents, err := os.ReadDir(filepath.Join(s.root, blobsDir))
		if err != nil {
			return err
		}
		for _, e := range bents {
			if blobs[e.Name()] {
				continue
			}
			rep.Problems = append(rep.Problems, fmt.Sprintf("blob sha256:%s is used by no layer or image", e.Name()))
			if repair {
				// An Apply publishes a blob and its owner in one
				// transaction, so this one stays ownerless.
				d := detached{from: filepath.Join(s.root, blobsDir, e.Name()), to: filepath.Join(o.dir, blobPrefix+e.Name())}
				if _, err := d.move(); err != nil {
					return err
				}
			}
		}
		deadLeases, err := s.dropDeadLeases(tx)
		if err != nil {
			return err
		}
		for _, l := range deadLeases {
			rep.Problems = append(rep.Problems, fmt.Sprintf("leases of an interrupted operation (%s)", l))
		}
		mb := mountsBucket(tx)
		var stale []string
		err = mb.ForEachBucket(func(k []byte) error {
			m, _ := getMount(tx, string(k))
			if !mountAlive(m) {
				stale = append(stale, string(k))
				rep.Problems = append(rep.Problems, fmt.Sprintf("%q: mount daemon (pid %d) at %s is gone", k, m.Pid, m.Dir))
				if ok, _ := isFuseMount(m.Dir); ok {
					unmounts = append(unmounts, m.Dir)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if repair {
			for _, k := range stale {
				if err := deleteMount(tx, k); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("check store: %w", err)
	}
	sort.Strings(rep.Problems)
	sort.Strings(rep.Unrepairable)
	if !repair {
		return rep, nil
	}
	var errs []error
	for _, d := range dirs {
		errs = append(errs, os.RemoveAll(d))
	}
	for _, mp := range unmounts {
		// The daemon is dead: the mount only answers ENOTCONN.
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount dead mount %s: %w", mp, err))
		}
	}
	return rep, errors.Join(errs...)
}

// blobPrefix names a blob moved into an op's directory.
const blobPrefix = "blob-"

// restoreFromOps moves back, from the directories of dead ops, the
// snapshot directories (by id, in missing) and blobs (by hex, in owned)
// that are still recorded: a process killed inside a removing
// transaction moved them there before its transaction could commit.
// Called while the transaction holds the database; it deletes the
// restored ids from missing and reports what it restored (or, without
// repair, would).
func (s *Store) restoreFromOps(missing map[string]string, owned map[string]bool, repair bool) ([]string, error) {
	tents, err := os.ReadDir(filepath.Join(s.root, tmpDir))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, t := range tents {
		if !strings.HasPrefix(t.Name(), opPrefix) || s.opState(t.Name()) != opDead {
			continue
		}
		opDir := filepath.Join(s.root, tmpDir, t.Name())
		ents, err := os.ReadDir(opDir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			var dst, what string
			if name, ok := missing[e.Name()]; ok {
				dst, what = s.snapshotDir(e.Name()), fmt.Sprintf("snapshot %q", name)
			} else if hex, ok := strings.CutPrefix(e.Name(), blobPrefix); ok && owned[hex] {
				dst, what = filepath.Join(s.root, blobsDir, hex), "blob sha256:"+hex
				if _, err := os.Lstat(dst); err == nil {
					continue // the blob is back already
				}
			} else {
				continue
			}
			out = append(out, fmt.Sprintf("%s was left by an interrupted removal (%s): restored", what, t.Name()))
			delete(missing, e.Name())
			if repair {
				if err := os.Rename(filepath.Join(opDir, e.Name()), dst); err != nil {
					return out, err
				}
			}
		}
	}
	return out, nil
}
