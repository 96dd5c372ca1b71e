package image

import (
	"context"
	"errors"

	"github.com/opencontainers/go-digest"

	"github.com/strata-fs/strata/snapshot"
)

// PruneReport says what Prune removed.
type PruneReport struct {
	Untagged []string // tags removed
	Deleted  []digest.Digest
	Layers   []string // chain IDs of layers removed
	// Reclaimed is the disk space of the removed layers.
	Reclaimed int64
}

// Prune removes dangling images (no tag, no container) or, with all,
// every image no container uses, then the layers nothing needs any more.
func (s *Store) Prune(ctx context.Context, all bool) (PruneReport, error) {
	var rep PruneReport
	images, err := s.List(ctx)
	if err != nil {
		return rep, err
	}
	cs, err := s.Containers(ctx)
	if err != nil {
		return rep, err
	}
	cached, err := s.BuildCacheImages(ctx)
	if err != nil {
		return rep, err
	}
	for _, im := range images {
		if len(usedBy(cs, im.ID)) > 0 || (!all && len(im.RepoTags) > 0) {
			continue
		}
		if cached[im.ID] > 0 && len(im.RepoTags) == 0 {
			// An intermediate image of the build cache: builder prune's.
			continue
		}
		if err := s.Delete(ctx, im.ID, false); err != nil {
			if errors.Is(err, ErrInUse) || errors.Is(err, ErrNotFound) {
				continue // a container came, or the image went, meanwhile
			}
			return rep, err
		}
		for _, t := range im.RepoTags {
			rep.Untagged = append(rep.Untagged, familiar(t))
		}
		rep.Deleted = append(rep.Deleted, im.ID)
	}
	layers, reclaimed, err := s.CollectLayers(ctx)
	rep.Layers, rep.Reclaimed = layers, reclaimed
	if err != nil {
		return rep, err
	}
	n, err := s.dropDownloads()
	rep.Reclaimed += n
	return rep, err
}

// CollectLayers removes the layers stored for images (LabelGC) that no
// image, snapshot or live import needs, top layers first, and returns
// their names and the space freed. Each removal re-checks, in its own
// transaction, that nothing took the layer meanwhile.
func (s *Store) CollectLayers(ctx context.Context) ([]string, int64, error) {
	var (
		removed   []string
		reclaimed int64
	)
	for {
		ls, err := s.snaps.List(ctx)
		if err != nil {
			return removed, reclaimed, err
		}
		progress := false
		for _, l := range ls {
			if l.Kind != snapshot.KindCommitted || l.Labels[LabelGC] == "" {
				continue
			}
			key := l.Name
			ok, err := s.snaps.RemoveIf(ctx, key, func(tx *snapshot.Tx) (bool, error) {
				return s.layerNeeded(tx, key)
			})
			if err != nil && !errors.Is(err, snapshot.ErrNotFound) {
				return removed, reclaimed, err
			}
			if ok {
				removed = append(removed, key)
				reclaimed += l.Usage.Size
				progress = true
			}
		}
		if !progress {
			return removed, reclaimed, nil
		}
	}
}

// layerNeeded reports whether an image has the layer key among its
// layers. (Children and leases are checked by RemoveIf.)
func (s *Store) layerNeeded(tx *snapshot.Tx, key string) (bool, error) {
	ib, err := tx.Bucket(bucketImages)
	if err != nil || ib == nil {
		return false, err
	}
	needed := false
	err = ib.ForEachBucket(func(k []byte) error {
		if needed {
			return nil
		}
		cb, err := s.readBlob(digest.Digest(k))
		if err != nil {
			// An image whose config cannot be read keeps everything:
			// never free a layer on a guess.
			needed = true
			return nil
		}
		for _, id := range chainIDsOf(cb) {
			if id.String() == key {
				needed = true
			}
		}
		return nil
	})
	return needed, err
}
