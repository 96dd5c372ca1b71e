package image

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-fs/strata/image/reference"
	"github.com/strata-fs/strata/image/remote"
	"github.com/strata-fs/strata/snapshot"
)

// PushOptions tune Push.
type PushOptions struct {
	// MaxConcurrent bounds the blobs uploading at once (0: 5, as docker).
	MaxConcurrent int
	// Progress, if set, is told of every layer's progress, from one
	// goroutine at a time.
	Progress func(LayerProgress)
}

// PushResult describes a pushed image.
type PushResult struct {
	Ref                        reference.Reference
	Digest                     digest.Digest // the manifest's, as stored: pushing keeps it
	Size                       int64         // the manifest's
	Image                      Image
	Uploaded, Mounted, Existed int
}

// Push uploads the stored image ref to repo as dst (its tag, or none
// for a digest reference). Blobs go as stored, so the manifest keeps
// its digest. A blob the registry has is not sent (HEAD first); one
// this store knows in another repository of the same registry (from
// the image's repo digests) is mounted from there.
func (s *Store) Push(ctx context.Context, repo *remote.Repository, ref string, dst reference.Reference, opts PushOptions) (PushResult, error) {
	res := PushResult{Ref: dst}
	im, err := s.Get(ctx, ref)
	if err != nil {
		return res, err
	}
	res.Image = im
	mb, err := s.readBlob(im.ManifestDigest)
	if err != nil {
		return res, err
	}
	var mt struct {
		MediaType string `json:"mediaType"`
	}
	if err := json.Unmarshal(mb, &mt); err != nil {
		return res, fmt.Errorf("image %s: manifest: %w", ShortID(im.ID), err)
	}
	if mt.MediaType == "" {
		mt.MediaType = v1.MediaTypeImageManifest
	}
	sources, err := s.mountSources(ctx, repo)
	if err != nil {
		return res, err
	}
	layers := im.Manifest.Layers
	var mu sync.Mutex
	report := func(p LayerProgress) {
		mu.Lock()
		defer mu.Unlock()
		switch p.State {
		case Pushed:
			res.Uploaded++
		case Mounted:
			res.Mounted++
		case LayerExists:
			res.Existed++
		}
		if opts.Progress != nil && p.Index >= 0 {
			p.Count = len(layers)
			opts.Progress(p)
		}
	}
	max := opts.MaxConcurrent
	if max <= 0 {
		max = 5
	}
	sem := make(chan struct{}, max)
	errs := make([]error, len(layers))
	var wg sync.WaitGroup
	for i, d := range layers {
		report(LayerProgress{Index: i, Digest: d.Digest, State: Preparing, Total: d.Size})
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			errs[i] = s.pushBlob(ctx, repo, d, sources[d.Digest], func(p LayerProgress) { p.Index = i; report(p) })
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return res, fmt.Errorf("layer %d of %d (%s): %w", i+1, len(layers), layers[i].Digest, err)
		}
	}
	cfg := im.Manifest.Config
	if err := s.pushBlob(ctx, repo, cfg, sources[cfg.Digest], func(p LayerProgress) { p.Index = -1; report(p) }); err != nil {
		return res, fmt.Errorf("config %s: %w", cfg.Digest, err)
	}
	md := v1.Descriptor{MediaType: mt.MediaType, Digest: im.ManifestDigest, Size: int64(len(mb))}
	if err := repo.PushManifest(ctx, md, mb, dst.Tag); err != nil {
		return res, err
	}
	res.Digest, res.Size = md.Digest, md.Size
	// Remember where the image now is, as docker does: later pushes to
	// other repositories of that registry mount its blobs from there.
	err = s.snaps.UpdateTx(ctx, func(tx *snapshot.Tx) error {
		return addRepoDigest(tx, im.ID, dst.Name()+"@"+md.Digest.String())
	})
	return res, err
}

// pushBlob makes the registry hold blob d: found there, mounted from
// one of from, or uploaded from the store.
func (s *Store) pushBlob(ctx context.Context, repo *remote.Repository, d v1.Descriptor, from []string, report func(LayerProgress)) error {
	ok, err := repo.BlobExists(ctx, d)
	if err != nil {
		return err
	}
	if ok {
		report(LayerProgress{Digest: d.Digest, State: LayerExists, Done: d.Size, Total: d.Size})
		return nil
	}
	for _, f := range from {
		ok, err := repo.MountBlob(ctx, d, f)
		if err != nil {
			return err
		}
		if ok {
			report(LayerProgress{Digest: d.Digest, State: Mounted, From: f, Done: d.Size, Total: d.Size})
			return nil
		}
	}
	p, err := s.snaps.BlobPath(d.Digest)
	if err != nil {
		return err
	}
	err = repo.PushBlob(ctx, d, func() (io.ReadCloser, error) {
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("blob %s is missing from the store (run 'strata check'): %w", d.Digest, err)
		}
		report(LayerProgress{Digest: d.Digest, State: Pushing, Total: d.Size})
		return &progressFile{File: f, report: func(n int64) {
			report(LayerProgress{Digest: d.Digest, State: Pushing, Done: n, Total: d.Size})
		}}, nil
	})
	if err != nil {
		return err
	}
	report(LayerProgress{Digest: d.Digest, State: Pushed, Done: d.Size, Total: d.Size})
	return nil
}

type progressFile struct {
	*os.File
	n      int64
	report func(int64)
}

func (f *progressFile) Read(p []byte) (int, error) {
	n, err := f.File.Read(p)
	f.n += int64(n)
	f.report(f.n)
	return n, err
}

// mountSources maps each blob of a stored image that has a repo
// digest in repo's registry, but another repository, to those
// repositories (paths).
func (s *Store) mountSources(ctx context.Context, repo *remote.Repository) (map[digest.Digest][]string, error) {
	images, err := s.List(ctx)
	if err != nil {
		return nil, err
	}
	out := map[digest.Digest][]string{}
	for _, im := range images {
		seen := map[string]bool{}
		for _, rd := range im.RepoDigests {
			r, err := reference.Parse(rd)
			if err != nil || remote.APIHost(r.Domain) != repo.Host() || r.Name() == repo.Name || seen[r.Path] {
				continue
			}
			seen[r.Path] = true
			for _, d := range append([]v1.Descriptor{im.Manifest.Config}, im.Manifest.Layers...) {
				out[d.Digest] = append(out[d.Digest], r.Path)
			}
		}
	}
	return out, nil
}

// addRepoDigest records rd (NAME@DIGEST) as where image id is.
func addRepoDigest(tx *snapshot.Tx, id digest.Digest, rd string) error {
	ib, err := tx.Bucket(bucketImages)
	if err != nil {
		return err
	}
	b := ib.Bucket([]byte(id))
	if b == nil {
		return fmt.Errorf("image %s: %w", ShortID(id), ErrNotFound)
	}
	rb, err := b.CreateBucketIfNotExists([]byte(bucketRepoDigests))
	if err != nil {
		return err
	}
	return rb.Put([]byte(rd), nil)
}
