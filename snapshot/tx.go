package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// Blob references and leases (schema v1):
//
//	v1/blobrefs/<hex>/<owner>   a blob is kept while it has an owner:
//	                            "snapshot/<key>" for a layer's blob,
//	                            "image/<id>" for an image's blobs
//	v1/leases/<op>/<key>        snapshot key is in use by the live op
//	                            <op> (an import that has applied it and
//	                            not yet recorded its image): garbage
//	                            collection keeps it
var (
	bucketBlobRefs = []byte("blobrefs")
	bucketLeases   = []byte("leases")
)

// Tx is a transaction on the store's metadata for packages built on the
// store (images): their own buckets under v1/, blob references, and
// blobs moved in or out with the transaction.
type Tx struct {
	s     *Store
	tx    *bolt.Tx
	o     *op        // scratch for blobs moved out (Update only)
	moved []detached // moved back if the transaction fails
}

// UpdateTx runs fn in a read-write transaction.
func (s *Store) UpdateTx(ctx context.Context, fn func(*Tx) error) error {
	o, err := s.beginOp("tx")
	if err != nil {
		return err
	}
	t := &Tx{s: s, o: o}
	err = s.update(func(tx *bolt.Tx) error {
		t.tx = tx
		return fn(t)
	})
	if err != nil {
		for _, d := range t.moved {
			err = errors.Join(err, d.undo())
		}
	}
	return errors.Join(err, o.end())
}

// ViewTx runs fn in a read-only transaction.
func (s *Store) ViewTx(ctx context.Context, fn func(*Tx) error) error {
	return s.view(func(tx *bolt.Tx) error { return fn(&Tx{s: s, tx: tx}) })
}

// Bucket returns the bucket v1/<name>, created if missing in a
// read-write transaction; nil if missing in a read-only one.
func (t *Tx) Bucket(name string) (*bolt.Bucket, error) {
	v1 := t.tx.Bucket(bucketV1)
	if v1 == nil {
		return nil, fmt.Errorf("metadata has no %s bucket: not a strata store", schemaVersion)
	}
	if !t.tx.Writable() {
		return v1.Bucket([]byte(name)), nil
	}
	return v1.CreateBucketIfNotExists([]byte(name))
}

// Stat returns the snapshot key, as Store.Stat.
func (t *Tx) Stat(key string) (Info, error) {
	r, err := getRecord(t.tx, key)
	return r.Info, err
}

// Usage returns the recorded usage of the committed snapshot key.
func (t *Tx) Usage(key string) (Usage, error) {
	r, err := getRecord(t.tx, key)
	return r.usage, err
}

// Ref records that owner keeps the blob dgst.
func (t *Tx) Ref(dgst digest.Digest, owner string) error {
	return addBlobRef(t.tx, dgst, owner)
}

// Unref drops owner's reference to dgst; a blob left without owners is
// removed when the transaction commits.
func (t *Tx) Unref(dgst digest.Digest, owner string) error {
	d, err := t.s.dropBlobRef(t.tx, dgst, owner, t.o)
	if d.to != "" {
		t.moved = append(t.moved, d)
	}
	return err
}

// PutBlob moves the file src, which holds the blob dgst, into the store
// (unless it is there already). src must be on the store's filesystem
// (under a TempDir of the store).
func (t *Tx) PutBlob(src string, dgst digest.Digest) error {
	return t.s.putBlob(src, dgst)
}

// HasBlob reports whether the blob dgst is kept.
func (t *Tx) HasBlob(dgst digest.Digest) bool {
	p, err := t.s.BlobPath(dgst)
	if err != nil {
		return false
	}
	_, err = os.Lstat(p)
	return err == nil
}

// Leased returns the snapshots that live ops hold leases on.
func (t *Tx) Leased() map[string]bool {
	out := map[string]bool{}
	lb := t.tx.Bucket(bucketV1).Bucket(bucketLeases)
	if lb == nil {
		return out
	}
	_ = lb.ForEachBucket(func(op []byte) error {
		if !t.s.opAlive(string(op)) {
			return nil
		}
		return lb.Bucket(op).ForEach(func(k, _ []byte) error {
			out[string(k)] = true
			return nil
		})
	})
	return out
}

// blobOwner names the snapshot key as the owner of its layer's blob.
func blobOwner(key string) string { return "snapshot/" + key }

func addBlobRef(tx *bolt.Tx, dgst digest.Digest, owner string) error {
	if err := dgst.Validate(); err != nil {
		return errorf(ErrInvalid, "blob %q: not a valid digest", dgst)
	}
	rb, err := tx.Bucket(bucketV1).CreateBucketIfNotExists(bucketBlobRefs)
	if err != nil {
		return err
	}
	b, err := rb.CreateBucketIfNotExists([]byte(dgst.Encoded()))
	if err != nil {
		return err
	}
	return b.Put([]byte(owner), nil)
}

// blobOwners returns the set of blobs (by hex) that have owners.
func blobOwners(tx *bolt.Tx) map[string]bool {
	out := map[string]bool{}
	rb := tx.Bucket(bucketV1).Bucket(bucketBlobRefs)
	if rb == nil {
		return out
	}
	out = map[string]bool{}
	_ = rb.ForEachBucket(func(k []byte) error {
		if first, _ := rb.Bucket(k).Cursor().First(); first != nil {
			out[string(k)] = true
		}
		return nil
	})
	return out
}

// dropBlobRef drops owner's reference to dgst and, when no owner is
// left, moves the blob into the op o.
func (s *Store) dropBlobRef(tx *bolt.Tx, dgst digest.Digest, owner string, o *op) (detached, error) {
	if dgst.Validate() != nil {
		return detached{}, nil
	}
	rb := tx.Bucket(bucketV1).Bucket(bucketBlobRefs)
	if rb == nil {
		return detached{}, nil
	}
	b := rb.Bucket([]byte(dgst.Encoded()))
	if b == nil {
		return detached{}, nil
	}
	if err := b.Delete([]byte(owner)); err != nil {
		return detached{}, err
	}
	if k, _ := b.Cursor().First(); k != nil {
		return detached{}, nil // still owned
	}
	if err := rb.DeleteBucket([]byte(dgst.Encoded())); err != nil {
		return detached{}, err
	}
	p, err := s.BlobPath(dgst)
	if err != nil || o == nil {
		return detached{}, err
	}
	return detached{from: p, to: filepath.Join(o.dir, blobPrefix+dgst.Encoded())}.move()
}

// A Lease keeps snapshots from garbage collection while an operation
// that needs them (an import) runs: it is an op, and its leases end
// when it ends or its process dies.
type Lease struct {
	s *Store
	o *op
}

// BeginLease starts a lease.
func (s *Store) BeginLease() (*Lease, error) {
	o, err := s.beginOp("lease")
	if err != nil {
		return nil, err
	}
	return &Lease{s: s, o: o}, nil
}

// Add leases the snapshot key.
func (l *Lease) Add(ctx context.Context, key string) error {
	return l.s.update(func(tx *bolt.Tx) error { return l.addTx(tx, key) })
}

// addTx leases key in tx; a nil lease does nothing.
func (l *Lease) addTx(tx *bolt.Tx, key string) error {
	if l == nil {
		return nil
	}
	lb, err := tx.Bucket(bucketV1).CreateBucketIfNotExists(bucketLeases)
	if err != nil {
		return err
	}
	b, err := lb.CreateBucketIfNotExists([]byte(l.o.name))
	if err != nil {
		return err
	}
	return b.Put([]byte(key), nil)
}

// End drops every lease of l.
func (l *Lease) End() error {
	err := l.s.update(func(tx *bolt.Tx) error {
		lb := tx.Bucket(bucketV1).Bucket(bucketLeases)
		if lb == nil || lb.Bucket([]byte(l.o.name)) == nil {
			return nil
		}
		return lb.DeleteBucket([]byte(l.o.name))
	})
	return errors.Join(err, l.o.end())
}

// dropDeadLeases removes the leases of ops no longer alive.
func (s *Store) dropDeadLeases(tx *bolt.Tx) ([]string, error) {
	lb := tx.Bucket(bucketV1).Bucket(bucketLeases)
	if lb == nil {
		return nil, nil
	}
	var dead []string
	_ = lb.ForEachBucket(func(op []byte) error {
		if !s.opAlive(string(op)) && strings.HasPrefix(string(op), opPrefix) {
			dead = append(dead, string(op))
		}
		return nil
	})
	for _, op := range dead {
		if tx.Writable() {
			if err := lb.DeleteBucket([]byte(op)); err != nil {
				return nil, err
			}
		}
	}
	return dead, nil
}

// Dir returns the lease's scratch directory, on the store's filesystem:
// files made there can be moved in with Tx.PutBlob.
func (l *Lease) Dir() string { return l.o.dir }

// Walk calls fn for every snapshot (but those of operations in
// progress), in key order, inside the transaction.
func (t *Tx) Walk(fn func(Info) error) error {
	return forEachRecord(t.tx, func(r record) error { return fn(r.Info) })
}
