package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/strata-fs/strata/internal/iox"
	"github.com/strata-fs/strata/snapshot/layer"
)

// LayerOptions tune CommitLayer.
type LayerOptions struct {
	Compression layer.Compression
	// SourceDateEpoch clamps the layer's times (reproducible builds).
	SourceDateEpoch *time.Time
	Labels          map[string]string
	// Freeze, if set, is called before the upper is read; the function
	// it returns is called once it has been read. A mounted stack's
	// daemon holds every change meanwhile, so the layer is one moment of
	// the stack.
	Freeze func() (thaw func() error, err error)
	// Lease, if set, keeps the new layer from garbage collection.
	Lease *Lease
	// Progress, if set, is told of the bytes of the layer blob written
	// so far, after each write.
	Progress func(written int64)
}

// CommitLayer writes the changes of the active snapshot key as an OCI
// layer and stores that layer as a committed snapshot on key's parent,
// named by its chain ID, as `docker commit` does: key stays as it is,
// mounted or not. It returns the committed snapshot, whose Layer
// describes the blob.
func (s *Store) CommitLayer(ctx context.Context, key string, opts LayerOptions) (Info, error) {
	r, err := s.get(key)
	if err != nil {
		return Info{}, fmt.Errorf("commit %q: %w", key, err)
	}
	if r.Kind != KindActive {
		return Info{}, errorf(ErrPrecondition, "commit %q: snapshot is %s, not active", key, r.Kind)
	}
	o, err := s.beginOp("commit")
	if err != nil {
		return Info{}, fmt.Errorf("commit %q: %w", key, err)
	}
	info, err := s.commitLayer(ctx, o, r, opts)
	if err != nil {
		err = fmt.Errorf("commit %q: %w", key, err)
	}
	return info, errors.Join(err, o.end())
}

func (s *Store) commitLayer(ctx context.Context, o *op, r record, opts LayerOptions) (Info, error) {
	blobPath := filepath.Join(o.dir, "blob")
	blob, err := os.OpenFile(blobPath, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return Info{}, err
	}
	defer blob.Close()
	thaw := func() error { return nil }
	if opts.Freeze != nil {
		if thaw, err = opts.Freeze(); err != nil {
			return Info{}, fmt.Errorf("freeze the mounted stack: %w", err)
		}
	}
	upper := filepath.Join(s.snapshotDir(r.ID), fsDir)
	lowers, err := s.parentLayers(r)
	if err != nil {
		return Info{}, errors.Join(err, thaw())
	}
	var w io.Writer = blob
	if opts.Progress != nil {
		w = &iox.CountingWriter{W: blob, Progress: opts.Progress}
	}
	desc, err := layer.Write(ctx, w, upper, layer.WriteOptions{
		Compression:     opts.Compression,
		SourceDateEpoch: opts.SourceDateEpoch,
		Lowers:          lowers,
	})
	if err := errors.Join(err, thaw()); err != nil {
		return Info{}, err
	}
	if info, ok, err := s.findLayer(r.Parent, desc.DiffID, opts.Lease); err != nil || ok {
		return info, err
	}
	if _, err := blob.Seek(0, io.SeekStart); err != nil {
		return Info{}, err
	}
	return s.extract(ctx, o, blob, blob.Sync, blobPath, r.Parent, ApplyOptions{DiffID: desc.DiffID, Labels: opts.Labels, Lease: opts.Lease})
}

// ExportLayer writes the layer of the committed snapshot key to w: the
// blob as stored when there is one, else the layer encoded afresh
// (gzip). It returns the layer's descriptor.
func (s *Store) ExportLayer(ctx context.Context, key string, w io.Writer) (layer.Descriptor, error) {
	r, err := s.get(key)
	if err != nil {
		return layer.Descriptor{}, fmt.Errorf("export %q: %w", key, err)
	}
	if r.Kind != KindCommitted {
		return layer.Descriptor{}, errorf(ErrPrecondition, "export %q: snapshot is %s, not a committed layer (commit it first)", key, r.Kind)
	}
	if r.Layer != nil {
		p, err := s.BlobPath(r.Layer.Digest)
		if err != nil {
			return layer.Descriptor{}, err
		}
		f, err := os.Open(p)
		if err == nil {
			defer f.Close()
			if _, err := io.Copy(w, f); err != nil {
				return layer.Descriptor{}, fmt.Errorf("export %q: %w", key, err)
			}
			return *r.Layer, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return layer.Descriptor{}, fmt.Errorf("export %q: %w", key, err)
		}
	}
	lowers, err := s.parentLayers(r)
	if err != nil {
		return layer.Descriptor{}, fmt.Errorf("export %q: %w", key, err)
	}
	desc, err := layer.Write(ctx, w, filepath.Join(s.snapshotDir(r.ID), fsDir), layer.WriteOptions{Compression: layer.Gzip, Lowers: lowers})
	if err != nil {
		return layer.Descriptor{}, fmt.Errorf("export %q: %w", key, err)
	}
	return desc, nil
}

// parentLayers returns the layer directories beneath the snapshot r, top
// first: what its upper's redirects and metacopy files refer to.
func (s *Store) parentLayers(r record) ([]string, error) {
	var lowers []string
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		lowers, err = s.chain(tx, r.Parent)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("parent layers: %w", err)
	}
	return lowers, nil
}
