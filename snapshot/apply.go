package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	bolt "go.etcd.io/bbolt"

	"github.com/strata-fs/strata/snapshot/layer"
)

// ApplyOptions tune Apply.
type ApplyOptions struct {
	// DiffID, when known (an image config lists every layer's), lets
	// Apply find a layer already stored without reading r, and is
	// checked against what r holds.
	DiffID digest.Digest
	// Labels are set on the new committed snapshot.
	Labels map[string]string
	// Warn is told of entries skipped (devices when not root).
	Warn func(string)
	// Lease, if set, keeps the layer (new or found) from garbage
	// collection from the moment it is published or found.
	Lease *Lease
	// MaxApparentSize bounds the sizes of the layer's files added up,
	// holes of sparse files included (layer.ApplyOptions); 0 means
	// layer.DefaultMaxApparentSize.
	MaxApparentSize int64
}

// ChainID returns the chain ID of the committed snapshot key: the
// identity of its layer stacked on its parents (image-spec identity).
func (s *Store) ChainID(ctx context.Context, key string) (digest.Digest, error) {
	var id digest.Digest
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		id, err = chainID(tx, key)
		return err
	})
	return id, err
}

func chainID(tx *bolt.Tx, key string) (digest.Digest, error) {
	var diffIDs []digest.Digest
	for k := key; k != ""; {
		r, err := getRecord(tx, k)
		if err != nil {
			return "", err
		}
		if r.Layer == nil || r.Layer.DiffID == "" {
			return "", errorf(ErrPrecondition, "snapshot %q has no layer diff ID: only layers from Apply or CommitLayer have one, not snapshots committed with Commit", k)
		}
		diffIDs = append(diffIDs, r.Layer.DiffID)
		k = r.Parent
	}
	for i, j := 0, len(diffIDs)-1; i < j; i, j = i+1, j-1 {
		diffIDs[i], diffIDs[j] = diffIDs[j], diffIDs[i]
	}
	return identity.ChainID(diffIDs), nil
}

// nextChainID returns the chain ID of diffID stacked on parent.
func nextChainID(tx *bolt.Tx, parent string, diffID digest.Digest) (digest.Digest, error) {
	if parent == "" {
		return diffID, nil
	}
	pc, err := chainID(tx, parent)
	if err != nil {
		return "", err
	}
	return identity.ChainID([]digest.Digest{pc, diffID}), nil
}

// Apply extracts the OCI layer read from r (tar, gzip or zstd) onto the
// committed snapshot parent ("" for a base layer) into a new committed
// snapshot named by its chain ID, and keeps the blob as read under
// blobs/. A layer already stored is not stored again: with
// opts.DiffID it is found without reading r. On error nothing is left
// behind.
func (s *Store) Apply(ctx context.Context, r io.Reader, parent string, opts ApplyOptions) (Info, error) {
	if info, found, err := s.beforeApply(ctx, parent, opts); err != nil || found {
		return info, err
	}
	o, err := s.beginOp("apply")
	if err != nil {
		return Info{}, fmt.Errorf("apply layer: %w", err)
	}
	info, err := s.apply(ctx, o, r, parent, opts)
	return info, errors.Join(err, o.end())
}

// beforeApply finds the layer opts.DiffID on parent if it is stored
// (found), and otherwise checks that parent can take a chain ID,
// before anything is unpacked.
func (s *Store) beforeApply(ctx context.Context, parent string, opts ApplyOptions) (info Info, found bool, err error) {
	if opts.DiffID != "" {
		if info, ok, err := s.findLayer(parent, opts.DiffID, opts.Lease); err != nil || ok {
			return info, ok, err
		}
	}
	if parent != "" {
		if _, err := s.ChainID(ctx, parent); err != nil {
			return Info{}, false, fmt.Errorf("apply layer: %w", err)
		}
	}
	return Info{}, false, nil
}

// findLayer looks up the layer diffID on parent, leasing it to l (if
// set) when found.
func (s *Store) findLayer(parent string, diffID digest.Digest, l *Lease) (Info, bool, error) {
	var (
		info Info
		ok   bool
	)
	run := s.view
	if l != nil {
		run = s.update
	}
	err := run(func(tx *bolt.Tx) error {
		name, err := nextChainID(tx, parent, diffID)
		if err != nil {
			return err
		}
		r, err := getRecord(tx, name.String())
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := isLayer(r, parent, diffID); err != nil {
			return err
		}
		info, ok = r.Info, true
		return l.addTx(tx, r.Name)
	})
	return info, ok, err
}

// isLayer checks that the record r, found by chain ID, is that layer.
func isLayer(r record, parent string, diffID digest.Digest) error {
	if r.Kind != KindCommitted || r.op != "" || r.Layer == nil || r.Layer.DiffID != diffID || r.Parent != parent {
		return errorf(ErrExists, "snapshot %q is named as layer %s on %q but is not that layer: remove it", r.Name, diffID, parent)
	}
	return nil
}

func (s *Store) apply(ctx context.Context, o *op, r io.Reader, parent string, opts ApplyOptions) (Info, error) {
	blobPath := filepath.Join(o.dir, "blob")
	blob, err := os.OpenFile(blobPath, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return Info{}, fmt.Errorf("apply layer: %w", err)
	}
	defer blob.Close()
	return s.extract(ctx, o, io.TeeReader(r, blob), blob.Sync, blobPath, parent, opts)
}

// extract applies the layer r onto parent in a snapshot of the op o and
// publishes it with the blob at blobPath; syncBlob makes that durable.
func (s *Store) extract(ctx context.Context, o *op, r io.Reader, syncBlob func() error, blobPath, parent string, opts ApplyOptions) (Info, error) {
	key := "apply/" + o.name
	m, err := s.create(ctx, KindActive, key, parent, nil, o.name)
	if err != nil {
		return Info{}, fmt.Errorf("apply layer: %w", err)
	}
	lowers := m.Lowers
	if parent == "" {
		lowers = nil
	}
	res, err := layer.Apply(ctx, m.Upper, r, layer.ApplyOptions{
		Lowers: lowers, Warn: opts.Warn, MaxApparentSize: opts.MaxApparentSize,
	})
	if err == nil && opts.DiffID != "" && res.DiffID != opts.DiffID {
		err = fmt.Errorf("apply layer: diff ID mismatch: the layer is %s, want %s: the blob is corrupt or not this layer", res.DiffID, opts.DiffID)
	}
	if err == nil {
		err = syncBlob()
	}
	if err == nil {
		err = syncDir(m.Upper)
	}
	var usage Usage
	if err == nil {
		usage, err = diskUsage(ctx, m.Upper)
	}
	if err != nil {
		return Info{}, errors.Join(err, s.dropOpSnapshot(o, key))
	}
	desc := &layer.Descriptor{
		MediaType:        res.Compression.MediaType(),
		Digest:           res.Digest,
		Size:             res.BlobSize,
		DiffID:           res.DiffID,
		UncompressedSize: res.Size,
	}
	return s.publish(o, key, desc, usage, blobPath, opts.Labels, opts.Lease)
}

// publish turns the op's active snapshot key into the committed layer
// desc, named by its chain ID, and moves the blob at blobPath into
// blobs/, in one transaction. If another process stored the same layer
// meanwhile, that one is kept and the op's is dropped.
func (s *Store) publish(o *op, key string, desc *layer.Descriptor, usage Usage, blobPath string, labels map[string]string, l *Lease) (Info, error) {
	var (
		info Info
		d    detached
	)
	err := s.update(func(tx *bolt.Tx) error {
		cur, err := getRecord(tx, key)
		if err != nil {
			return err
		}
		name, err := nextChainID(tx, cur.Parent, desc.DiffID)
		if err != nil {
			return err
		}
		if existing, err := getRecord(tx, name.String()); err == nil {
			if err := isLayer(existing, cur.Parent, desc.DiffID); err != nil {
				return err
			}
			info = existing.Info
			if d, err = s.detachRecord(tx, cur, o); err != nil {
				return err
			}
			return l.addTx(tx, existing.Name)
		}
		if err := deleteRecord(tx, key); err != nil {
			return err
		}
		if err := setChild(tx, cur.Parent, key, false); err != nil {
			return err
		}
		now := time.Now().UTC()
		nr := record{Info: Info{
			Kind: KindCommitted, Name: name.String(), Parent: cur.Parent, Labels: labels,
			Created: now, Updated: now, ID: cur.ID, Layer: desc,
		}, usage: usage}
		if err := putRecord(tx, nr); err != nil {
			return err
		}
		if err := setChild(tx, cur.Parent, nr.Name, true); err != nil {
			return err
		}
		if err := addBlobRef(tx, desc.Digest, blobOwner(nr.Name)); err != nil {
			return err
		}
		if err := s.putBlob(blobPath, desc.Digest); err != nil {
			return err
		}
		info = nr.Info
		return l.addTx(tx, nr.Name)
	})
	if err != nil {
		return Info{}, errors.Join(fmt.Errorf("apply layer: %w", err), d.undo(), s.dropOpSnapshot(o, key))
	}
	// The op's work dir is scratch; a layer needs none.
	_ = os.RemoveAll(filepath.Join(s.snapshotDir(info.ID), workDir))
	return info, nil
}

// dropOpSnapshot removes the op's temporary snapshot key, if recorded.
func (s *Store) dropOpSnapshot(o *op, key string) error {
	var d detached
	err := s.update(func(tx *bolt.Tx) error {
		r, err := getRecord(tx, key)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		d, err = s.detachRecord(tx, r, o)
		return err
	})
	if err != nil {
		return errors.Join(err, d.undo())
	}
	return nil
}

// BlobPath returns where the blob dgst is kept, whether or not it is.
func (s *Store) BlobPath(dgst digest.Digest) (string, error) {
	if err := dgst.Validate(); err != nil {
		return "", errorf(ErrInvalid, "blob %q: not a valid digest", dgst)
	}
	if dgst.Algorithm() != digest.SHA256 {
		return "", errorf(ErrInvalid, "blob %s: only sha256 blobs are kept", dgst)
	}
	return filepath.Join(s.root, blobsDir, dgst.Encoded()), nil
}

// putBlob moves the file at src to the blob dgst, unless that blob is
// already kept. Called inside a transaction.
func (s *Store) putBlob(src string, dgst digest.Digest) error {
	dst, err := s.BlobPath(dgst)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(dst); err == nil {
		return nil
	}
	return os.Rename(src, dst)
}

// Resolve finds a snapshot by key, or a committed one by a unique prefix
// of its chain ID's hex digits (at least 4, with or without "sha256:").
func (s *Store) Resolve(ctx context.Context, ref string) (Info, error) {
	var info Info
	err := s.view(func(tx *bolt.Tx) error {
		if r, err := getRecord(tx, ref); err == nil && r.op == "" {
			info = r.Info
			return nil
		}
		hex := strings.TrimPrefix(ref, "sha256:")
		if len(hex) < 4 || strings.Trim(hex, "0123456789abcdef") != "" {
			return errorf(ErrNotFound, "no snapshot %q", ref)
		}
		sb, _ := snapshotsBucket(tx)
		var found []record
		c := sb.Cursor()
		prefix := []byte("sha256:" + hex)
		for k, _ := c.Seek(prefix); k != nil && strings.HasPrefix(string(k), string(prefix)); k, _ = c.Next() {
			found = append(found, decodeRecord(string(k), sb.Bucket(k)))
		}
		switch len(found) {
		case 0:
			return errorf(ErrNotFound, "no snapshot %q", ref)
		case 1:
			info = found[0].Info
			return nil
		}
		return errorf(ErrInvalid, "%q names %d layers: give more digits", ref, len(found))
	})
	return info, err
}
