package snapshot

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"github.com/strata-fs/strata/snapshot/layer"
)

// The bbolt schema, version 1 (compare containerd
// core/snapshots/storage/bolt.go). Every name is a constant here.
//
//	v1/                      schema version 1; a newer store has v2/...
//	  snapshots/<key>/       one bucket per snapshot, by key or name
//	    id        decimal directory id under snapshots/
//	    kind      one byte, Kind
//	    parent    parent's key ("" absent)
//	    created   time, MarshalBinary
//	    updated   time, MarshalBinary
//	    size      uvarint, committed snapshots' usage
//	    inodes    uvarint
//	    op        in-progress operation that owns the snapshot (tmp/<op>)
//	    layer/    the layer a committed snapshot holds, when known:
//	      mediatype, digest, size (uvarint), diffid, usize (uvarint)
//	    labels/   label name -> value
//	    children/ child key -> ""
//	  mounts/<key>/          a stack served by a daemon
//	    dir       the mountpoint
//	    pid       decimal pid of the daemon
//	    socket    the daemon's control socket
var (
	bucketV1        = []byte("v1")
	bucketSnapshots = []byte("snapshots")
	bucketMounts    = []byte("mounts")
	bucketLabels    = []byte("labels")
	bucketChildren  = []byte("children")
	bucketLayer     = []byte("layer")

	keyID        = []byte("id")
	keyKind      = []byte("kind")
	keyParent    = []byte("parent")
	keyCreated   = []byte("created")
	keyUpdated   = []byte("updated")
	keySize      = []byte("size")
	keyInodes    = []byte("inodes")
	keyOp        = []byte("op")
	keyMediaType = []byte("mediatype")
	keyDigest    = []byte("digest")
	keyDiffID    = []byte("diffid")
	keyUSize     = []byte("usize")
	keyDir       = []byte("dir")
	keyPid       = []byte("pid")
	keySocket    = []byte("socket")
)

// schemaVersion is the name of the newest schema bucket this code reads.
const schemaVersion = "v1"

// record is a snapshot's metadata as stored.
type record struct {
	Info
	usage Usage
	op    string
}

func putUvarint(b *bolt.Bucket, k []byte, v int64) error {
	buf := binary.AppendUvarint(nil, uint64(v))
	return b.Put(k, buf)
}

func getUvarint(b *bolt.Bucket, k []byte) int64 {
	v, _ := binary.Uvarint(b.Get(k))
	return int64(v)
}

func putTime(b *bolt.Bucket, k []byte, t time.Time) error {
	buf, err := t.MarshalBinary()
	if err != nil {
		return err
	}
	return b.Put(k, buf)
}

func getTime(b *bolt.Bucket, k []byte) time.Time {
	var t time.Time
	if v := b.Get(k); v != nil {
		_ = t.UnmarshalBinary(v)
	}
	return t
}

// snapshotsBucket returns v1/snapshots (and v1/mounts) of tx.
func snapshotsBucket(tx *bolt.Tx) (*bolt.Bucket, error) {
	v1 := tx.Bucket(bucketV1)
	if v1 == nil {
		return nil, fmt.Errorf("metadata has no %s bucket: not a strata store", schemaVersion)
	}
	return v1.Bucket(bucketSnapshots), nil
}

func mountsBucket(tx *bolt.Tx) *bolt.Bucket {
	return tx.Bucket(bucketV1).Bucket(bucketMounts)
}

// getRecord reads the snapshot key; ErrNotFound when absent.
func getRecord(tx *bolt.Tx, key string) (record, error) {
	sb, err := snapshotsBucket(tx)
	if err != nil {
		return record{}, err
	}
	b := sb.Bucket([]byte(key))
	if b == nil {
		return record{}, errorf(ErrNotFound, "no snapshot %q", key)
	}
	return decodeRecord(key, b), nil
}

func decodeRecord(key string, b *bolt.Bucket) record {
	r := record{Info: Info{
		Name:    key,
		ID:      string(b.Get(keyID)),
		Parent:  string(b.Get(keyParent)),
		Created: getTime(b, keyCreated),
		Updated: getTime(b, keyUpdated),
	}}
	if k := b.Get(keyKind); len(k) == 1 {
		r.Kind = Kind(k[0])
	}
	r.usage = Usage{Size: getUvarint(b, keySize), Inodes: getUvarint(b, keyInodes)}
	r.op = string(b.Get(keyOp))
	if lb := b.Bucket(bucketLabels); lb != nil {
		r.Labels = map[string]string{}
		_ = lb.ForEach(func(k, v []byte) error {
			r.Labels[string(k)] = string(v)
			return nil
		})
	}
	if lb := b.Bucket(bucketLayer); lb != nil {
		r.Layer = &layer.Descriptor{
			MediaType:        string(lb.Get(keyMediaType)),
			Digest:           digest.Digest(lb.Get(keyDigest)),
			Size:             getUvarint(lb, keySize),
			DiffID:           digest.Digest(lb.Get(keyDiffID)),
			UncompressedSize: getUvarint(lb, keyUSize),
		}
	}
	return r
}

// forEachRecord calls fn for every snapshot in key order, but those of
// operations in progress.
func forEachRecord(tx *bolt.Tx, fn func(record) error) error {
	sb, err := snapshotsBucket(tx)
	if err != nil {
		return err
	}
	return sb.ForEachBucket(func(k []byte) error {
		if r := decodeRecord(string(k), sb.Bucket(k)); r.op == "" {
			return fn(r)
		}
		return nil
	})
}

// putRecord writes r as the snapshot r.Name, replacing any record of
// that name but keeping its children.
func putRecord(tx *bolt.Tx, r record) error {
	sb, err := snapshotsBucket(tx)
	if err != nil {
		return err
	}
	b, err := sb.CreateBucketIfNotExists([]byte(r.Name))
	if err != nil {
		return err
	}
	if _, err := b.CreateBucketIfNotExists(bucketChildren); err != nil {
		return err
	}
	puts := []struct{ k, v []byte }{
		{keyID, []byte(r.ID)},
		{keyKind, []byte{byte(r.Kind)}},
		{keyParent, []byte(r.Parent)},
	}
	for _, p := range puts {
		if err := b.Put(p.k, p.v); err != nil {
			return err
		}
	}
	if r.op != "" {
		err = b.Put(keyOp, []byte(r.op))
	} else {
		err = b.Delete(keyOp)
	}
	if err != nil {
		return err
	}
	for _, t := range []struct {
		k []byte
		v time.Time
	}{{keyCreated, r.Created}, {keyUpdated, r.Updated}} {
		if err := putTime(b, t.k, t.v); err != nil {
			return err
		}
	}
	if err := putUvarint(b, keySize, r.usage.Size); err != nil {
		return err
	}
	if err := putUvarint(b, keyInodes, r.usage.Inodes); err != nil {
		return err
	}
	if err := putLabels(b, r.Labels); err != nil {
		return err
	}
	if b.Bucket(bucketLayer) != nil {
		if err := b.DeleteBucket(bucketLayer); err != nil {
			return err
		}
	}
	if r.Layer != nil {
		lb, err := b.CreateBucket(bucketLayer)
		if err != nil {
			return err
		}
		for _, p := range []struct{ k, v []byte }{
			{keyMediaType, []byte(r.Layer.MediaType)},
			{keyDigest, []byte(r.Layer.Digest)},
			{keyDiffID, []byte(r.Layer.DiffID)},
		} {
			if err := lb.Put(p.k, p.v); err != nil {
				return err
			}
		}
		if err := putUvarint(lb, keySize, r.Layer.Size); err != nil {
			return err
		}
		if err := putUvarint(lb, keyUSize, r.Layer.UncompressedSize); err != nil {
			return err
		}
	}
	return nil
}

func putLabels(b *bolt.Bucket, labels map[string]string) error {
	if b.Bucket(bucketLabels) != nil {
		if err := b.DeleteBucket(bucketLabels); err != nil {
			return err
		}
	}
	if len(labels) == 0 {
		return nil
	}
	lb, err := b.CreateBucket(bucketLabels)
	if err != nil {
		return err
	}
	for k, v := range labels {
		if err := lb.Put([]byte(k), []byte(v)); err != nil {
			return err
		}
	}
	return nil
}

// children returns the keys of key's children.
func children(tx *bolt.Tx, key string) []string {
	sb, _ := snapshotsBucket(tx)
	b := sb.Bucket([]byte(key))
	if b == nil {
		return nil
	}
	cb := b.Bucket(bucketChildren)
	if cb == nil {
		return nil
	}
	var out []string
	_ = cb.ForEach(func(k, _ []byte) error {
		out = append(out, string(k))
		return nil
	})
	return out
}

// setChild adds (or, with add false, removes) child under parent.
func setChild(tx *bolt.Tx, parent, child string, add bool) error {
	if parent == "" {
		return nil
	}
	sb, err := snapshotsBucket(tx)
	if err != nil {
		return err
	}
	b := sb.Bucket([]byte(parent))
	if b == nil {
		return errorf(ErrNotFound, "no parent %q", parent)
	}
	cb, err := b.CreateBucketIfNotExists(bucketChildren)
	if err != nil {
		return err
	}
	if add {
		return cb.Put([]byte(child), nil)
	}
	return cb.Delete([]byte(child))
}

// deleteRecord removes the snapshot key's record.
func deleteRecord(tx *bolt.Tx, key string) error {
	sb, err := snapshotsBucket(tx)
	if err != nil {
		return err
	}
	return sb.DeleteBucket([]byte(key))
}

func getMount(tx *bolt.Tx, key string) (Daemon, bool) {
	b := mountsBucket(tx).Bucket([]byte(key))
	if b == nil {
		return Daemon{}, false
	}
	pid, _ := strconv.Atoi(string(b.Get(keyPid)))
	return Daemon{Dir: string(b.Get(keyDir)), Pid: pid, Socket: string(b.Get(keySocket))}, true
}

func putMount(tx *bolt.Tx, key string, m Daemon) error {
	mb := mountsBucket(tx)
	if mb.Bucket([]byte(key)) != nil {
		if err := mb.DeleteBucket([]byte(key)); err != nil {
			return err
		}
	}
	b, err := mb.CreateBucket([]byte(key))
	if err != nil {
		return err
	}
	for _, p := range []struct{ k, v []byte }{
		{keyDir, []byte(m.Dir)},
		{keyPid, []byte(strconv.Itoa(m.Pid))},
		{keySocket, []byte(m.Socket)},
	} {
		if err := b.Put(p.k, p.v); err != nil {
			return err
		}
	}
	return nil
}

func deleteMount(tx *bolt.Tx, key string) error {
	mb := mountsBucket(tx)
	if mb.Bucket([]byte(key)) == nil {
		return nil
	}
	return mb.DeleteBucket([]byte(key))
}
