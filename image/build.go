package image

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-fs/strata/image/reference"
	"github.com/strata-fs/strata/snapshot"
)

// The build cache: each step of a build that made an image is recorded
// under its cache key (what the step depends on: its parent image, its
// instruction, the build args it sees, the content of what it copies),
// in the store's database, so it survives a kill. The images of cached
// steps are intermediate: listed only by `images -a`, kept by image
// prune, and freed by PruneBuildCache (`strata builder prune`).
const bucketBuildCache = "buildcache"

// CachedStep returns the image of the build step key, if recorded and
// still stored.
func (s *Store) CachedStep(ctx context.Context, key string) (Image, bool, error) {
	var (
		im Image
		ok bool
	)
	err := s.snaps.ViewTx(ctx, func(tx *snapshot.Tx) error {
		b, err := tx.Bucket(bucketBuildCache)
		if err != nil || b == nil {
			return err
		}
		v := b.Get([]byte(key))
		if v == nil || !imageExists(tx, digest.Digest(v)) {
			return nil
		}
		im, err = s.load(tx, digest.Digest(v))
		ok = err == nil
		return err
	})
	return im, ok, err
}

// RecordStep records the image id as the result of build step key.
func (s *Store) RecordStep(ctx context.Context, key string, id digest.Digest) error {
	return s.snaps.UpdateTx(ctx, func(tx *snapshot.Tx) error {
		if !imageExists(tx, id) {
			return fmt.Errorf("build step: image %s: %w", ShortID(id), ErrNotFound)
		}
		b, err := tx.Bucket(bucketBuildCache)
		if err != nil {
			return err
		}
		return b.Put([]byte(key), []byte(id))
	})
}

// BuildCacheImages returns the images that build cache records hold.
func (s *Store) BuildCacheImages(ctx context.Context) (map[digest.Digest]int, error) {
	out := map[digest.Digest]int{}
	err := s.snaps.ViewTx(ctx, func(tx *snapshot.Tx) error {
		b, err := tx.Bucket(bucketBuildCache)
		if err != nil || b == nil {
			return err
		}
		return b.ForEach(func(_, v []byte) error {
			out[digest.Digest(v)]++
			return nil
		})
	})
	return out, err
}

// PruneBuildCache drops every build cache record and then removes the
// intermediate images that nothing else holds (no tag, no container),
// and the layers nothing needs any more.
func (s *Store) PruneBuildCache(ctx context.Context) (records int, rep PruneReport, err error) {
	held, err := s.BuildCacheImages(ctx)
	if err != nil {
		return 0, rep, err
	}
	err = s.snaps.UpdateTx(ctx, func(tx *snapshot.Tx) error {
		b, err := tx.Bucket(bucketBuildCache)
		if err != nil {
			return err
		}
		records = b.Stats().KeyN
		return deleteAll(b)
	})
	if err != nil {
		return records, rep, err
	}
	images, err := s.List(ctx)
	if err != nil {
		return records, rep, err
	}
	cs, err := s.Containers(ctx)
	if err != nil {
		return records, rep, err
	}
	for _, im := range images {
		if held[im.ID] == 0 || len(im.RepoTags) > 0 || len(usedBy(cs, im.ID)) > 0 {
			continue
		}
		if err := s.Delete(ctx, im.ID, false); err == nil {
			rep.Deleted = append(rep.Deleted, im.ID)
		}
	}
	layers, reclaimed, err := s.CollectLayers(ctx)
	rep.Layers, rep.Reclaimed = layers, reclaimed
	return records, rep, err
}

func deleteAll(b interface {
	ForEach(func(k, v []byte) error) error
	Delete(k []byte) error
}) error {
	var keys [][]byte
	if err := b.ForEach(func(k, _ []byte) error {
		keys = append(keys, append([]byte(nil), k...))
		return nil
	}); err != nil {
		return err
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// Derive stores a new image on the layers of from (the zero Image for
// scratch) with its config changed by edit and hist added to its
// history as an empty layer: a build step that changes only the config.
func (s *Store) Derive(ctx context.Context, from Image, edit func(*v1.Image, *DockerExtras) error, hist v1.History, tags []reference.Reference) (Image, error) {
	ex, err := s.Extras(from)
	if err != nil {
		return Image{}, err
	}
	cfg := from.Config
	if from.ID == "" {
		cfg = v1.Image{Platform: v1.Platform{OS: "linux", Architecture: runtime.GOARCH}, RootFS: v1.RootFS{Type: "layers"}}
		from.Manifest = v1.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageManifest}
	}
	cfg.RootFS.DiffIDs = append([]digest.Digest{}, cfg.RootFS.DiffIDs...)
	cfg.History = append([]v1.History(nil), cfg.History...)
	if err := edit(&cfg, &ex); err != nil {
		return Image{}, err
	}
	if hist.Created == nil {
		now := time.Now().UTC()
		hist.Created = &now
	}
	hist.EmptyLayer = true
	cfg.History = append(cfg.History, hist)
	cfg.Created = hist.Created
	lease, err := s.snaps.BeginLease()
	if err != nil {
		return Image{}, err
	}
	defer lease.End()
	return s.storeWith(ctx, lease, cfg, ex, append([]v1.Descriptor{}, from.Manifest.Layers...), tags)
}
