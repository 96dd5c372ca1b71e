package image

import (
	"context"
	"sort"

	"github.com/opencontainers/go-digest"

	"github.com/strata-fs/strata/snapshot"
)

// ImageUsage is one image's disk space. Size counts every layer of the
// image; SharedSize the layers another image also has; UniqueSize the
// rest, which removing the image (and pruning) would free.
type ImageUsage struct {
	Image
	Size, SharedSize, UniqueSize int64
	Containers                   int
}

// ContainerUsage is one container's own disk space (its upper).
type ContainerUsage struct {
	Container
	Size int64
}

// DiskUsage is what `strata system df` reports. Layers shared by images
// are counted once in LayersSize.
type DiskUsage struct {
	Images     []ImageUsage
	Containers []ContainerUsage
	// LayersSize is the space of every layer of every image, each
	// counted once; ReclaimableImages the part no container's image
	// needs.
	LayersSize, ReclaimableImages int64
}

// DiskUsage measures the images and containers.
func (s *Store) DiskUsage(ctx context.Context) (DiskUsage, error) {
	var du DiskUsage
	images, err := s.List(ctx)
	if err != nil {
		return du, err
	}
	cs, err := s.Containers(ctx)
	if err != nil {
		return du, err
	}
	ls, err := s.snaps.List(ctx)
	if err != nil {
		return du, err
	}
	size := map[string]int64{}
	for _, l := range ls {
		size[l.Name] = l.Usage.Size
	}
	users := map[digest.Digest]int{} // chain ID -> images using it
	for _, im := range images {
		for _, id := range uniq(im.ChainIDs()) {
			users[id]++
		}
	}
	inUse := map[digest.Digest]bool{} // layers of images containers use
	for _, im := range images {
		u := ImageUsage{Image: im, Containers: len(usedBy(cs, im.ID))}
		for _, id := range uniq(im.ChainIDs()) {
			n := size[id.String()]
			u.Size += n
			if users[id] > 1 {
				u.SharedSize += n
			} else {
				u.UniqueSize += n
			}
			if u.Containers > 0 {
				inUse[id] = true
			}
		}
		du.Images = append(du.Images, u)
	}
	for id := range users {
		du.LayersSize += size[id.String()]
		if !inUse[id] {
			du.ReclaimableImages += size[id.String()]
		}
	}
	for _, c := range cs {
		u, err := s.snaps.Usage(ctx, c.Name)
		if err != nil {
			u = snapshot.Usage{} // a damaged container: counted as empty
		}
		du.Containers = append(du.Containers, ContainerUsage{Container: c, Size: u.Size})
	}
	sort.SliceStable(du.Images, func(i, j int) bool { return du.Images[i].Created().After(du.Images[j].Created()) })
	return du, nil
}

func uniq(ids []digest.Digest) []digest.Digest {
	seen := map[digest.Digest]bool{}
	var out []digest.Digest
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}
