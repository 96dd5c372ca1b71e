package image

import (
	"context"
	"fmt"
	"sort"

	"github.com/opencontainers/go-digest"

	"github.com/strata-fs/strata/image/reference"
	"github.com/strata-fs/strata/snapshot"
)

// Container is a writable stack created from an image.
type Container struct {
	snapshot.Listing
	Image    digest.Digest // "" when the image is gone
	ImageRef string        // what it was created from, as given
}

// CreateContainer prepares the writable stack name on the image ref.
// extra, when not nil, returns more labels for the stack from the image
// found, so that they are recorded in the transaction that creates it.
func (s *Store) CreateContainer(ctx context.Context, name, ref string, extra func(Image) (map[string]string, error)) (Image, error) {
	im, err := s.Get(ctx, ref)
	if err != nil {
		return Image{}, err
	}
	labels := map[string]string{}
	if extra != nil {
		more, err := extra(im)
		if err != nil {
			return Image{}, err
		}
		for k, v := range more {
			labels[k] = v
		}
	}
	labels[LabelImage], labels[LabelImageRef] = im.ID.String(), ref
	// The image must still be there when the container is recorded: a
	// prune deleting it checks for containers in its own transaction.
	_, err = s.snaps.PrepareIf(ctx, name, im.Top(), labels, func(tx *snapshot.Tx) error {
		if !imageExists(tx, im.ID) {
			return fmt.Errorf("image %s was removed meanwhile: %w", ShortID(im.ID), ErrNotFound)
		}
		return nil
	})
	if err != nil {
		return Image{}, err
	}
	return im, nil
}

// repositories counts the distinct repositories among full references.
func repositories(tags []string) int {
	seen := map[string]bool{}
	for _, t := range tags {
		if r, err := reference.Parse(t); err == nil {
			seen[r.Name()] = true
		}
	}
	return len(seen)
}

// Containers lists the stacks created from images, newest first.
func (s *Store) Containers(ctx context.Context) ([]Container, error) {
	ls, err := s.snaps.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []Container
	for _, l := range ls {
		if l.Kind != snapshot.KindActive || l.Labels[LabelImage] == "" {
			continue
		}
		out = append(out, Container{
			Listing:  l,
			Image:    digest.Digest(l.Labels[LabelImage]),
			ImageRef: l.Labels[LabelImageRef],
		})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, nil
}

// usedBy returns the containers of the image id.
func usedBy(cs []Container, id digest.Digest) []string {
	var names []string
	for _, c := range cs {
		if c.Image == id {
			names = append(names, c.Name)
		}
	}
	return names
}

// Remove removes the image ref as `docker rmi` does: a tag names one of
// several tags, it is only untagged; else the image is deleted, unless a
// container uses it and force is false. It returns what it did, in
// docker's words ("Untagged: ...", "Deleted: sha256:...").
func (s *Store) Remove(ctx context.Context, ref string, force bool) ([]string, error) {
	im, err := s.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	byTag := false
	for _, t := range im.RepoTags {
		if r, err := parseRef(ref); err == nil && r == t {
			byTag = true
		}
	}
	if byTag && len(im.RepoTags) > 1 {
		if _, err := s.Untag(ctx, ref); err != nil {
			return nil, err
		}
		return []string{"Untagged: " + familiar(ref)}, nil
	}
	if !byTag && !force && repositories(im.RepoTags) > 1 {
		return nil, fmt.Errorf("image %s is referenced in multiple repositories: remove it by tag, or use -f", ShortID(im.ID))
	}
	var out []string
	for _, t := range im.RepoTags {
		out = append(out, "Untagged: "+familiar(t))
	}
	if err := s.Delete(ctx, im.ID, force); err != nil {
		return nil, err
	}
	return append(out, "Deleted: "+im.ID.String()), nil
}
