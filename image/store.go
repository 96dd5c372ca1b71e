// Package image keeps OCI images in strata's store: each image is its
// manifest and config (blobs), its layers (committed snapshots named by
// chain ID, shared by every image and container that uses them), and its
// tags. It imports and exports OCI image layouts, OCI archives and
// `docker save` archives, commits containers as new images, and collects
// garbage.
//
// Metadata lives in the snapshot store's database, in buckets of its own
// (schema v1):
//
//	v1/images/<config digest>/   one image; its ID is its config digest
//	  manifest     the manifest's digest
//	  stored       when it was added (time, MarshalBinary)
//	  repodigests/ "name@sha256:..." -> ""
//	v1/tags/<full reference>     -> config digest
//
// An image owns its manifest, config and layer blobs in v1/blobrefs as
// "image/<config digest>", so a blob stays while some image or layer
// needs it.
//
// Containers are the snapshot store's active snapshots labelled with the
// image they were created from (LabelImage).
package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"

	"github.com/strata-fs/strata/image/reference"
	"github.com/strata-fs/strata/snapshot"
)

// Labels strata puts on snapshots.
const (
	// LabelImage marks a container (active snapshot) with the ID of the
	// image it was created from.
	LabelImage = "strata.image"
	// LabelImageRef keeps the reference the container was created with.
	LabelImageRef = "strata.image.ref"
	// LabelGC marks a layer stored for an image: prune removes it once
	// no image, container or layer needs it. Layers applied by hand
	// (strata layer apply) have no such label and stay until removed.
	LabelGC = "strata.gc"
)

const (
	bucketImages      = "images"
	bucketTags        = "tags"
	keyManifest       = "manifest"
	keyStored         = "stored"
	bucketRepoDigests = "repodigests"
)

// Errors, checked with errors.Is.
var (
	ErrNotFound = errors.New("image not found")
	ErrInUse    = errors.New("image in use")
)

// Store keeps images on a snapshot store.
type Store struct {
	snaps *snapshot.Store
}

// New returns the image store on snaps.
func New(snaps *snapshot.Store) *Store { return &Store{snaps: snaps} }

// Snapshots returns the snapshot store under s.
func (s *Store) Snapshots() *snapshot.Store { return s.snaps }

// Image is an image in the store.
type Image struct {
	ID             digest.Digest // the config's digest
	ManifestDigest digest.Digest
	Manifest       v1.Manifest
	Config         v1.Image
	RepoTags       []string // full references, sorted
	RepoDigests    []string
	Stored         time.Time
}

// ChainIDs returns the chain IDs of the image's layers, bottom first:
// the names of its layers in the snapshot store.
func (im Image) ChainIDs() []digest.Digest {
	return identity.ChainIDs(append([]digest.Digest(nil), im.Config.RootFS.DiffIDs...))
}

// Top returns the chain ID of the image's top layer, "" for an image
// without layers.
func (im Image) Top() string {
	ids := im.ChainIDs()
	if len(ids) == 0 {
		return ""
	}
	return ids[len(ids)-1].String()
}

// Created returns the config's creation time (zero when absent).
func (im Image) Created() time.Time {
	if im.Config.Created == nil {
		return time.Time{}
	}
	return *im.Config.Created
}

// ShortID is the 12 hex digits docker shows of an image ID.
func ShortID(d digest.Digest) string {
	e := d.Encoded()
	if len(e) > 12 {
		return e[:12]
	}
	return e
}

// readBlob reads a small blob (manifest, config) of the store.
func (s *Store) readBlob(d digest.Digest) ([]byte, error) {
	p, err := s.snaps.BlobPath(d)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w (run 'strata check')", d, err)
	}
	if got := digest.FromBytes(b); got != d {
		return nil, fmt.Errorf("blob %s is corrupt: its content has digest %s", d, got)
	}
	return b, nil
}

// load reads the image id from its bucket.
func (s *Store) load(tx *snapshot.Tx, id digest.Digest) (Image, error) {
	ib, err := tx.Bucket(bucketImages)
	if err != nil {
		return Image{}, err
	}
	var b *bolt.Bucket
	if ib != nil {
		b = ib.Bucket([]byte(id))
	}
	if b == nil {
		return Image{}, fmt.Errorf("no image %s: %w", ShortID(id), ErrNotFound)
	}
	im := Image{ID: id, ManifestDigest: digest.Digest(b.Get([]byte(keyManifest)))}
	if v := b.Get([]byte(keyStored)); v != nil {
		_ = im.Stored.UnmarshalBinary(v)
	}
	if rb := b.Bucket([]byte(bucketRepoDigests)); rb != nil {
		_ = rb.ForEach(func(k, _ []byte) error {
			im.RepoDigests = append(im.RepoDigests, string(k))
			return nil
		})
	}
	mb, err := s.readBlob(im.ManifestDigest)
	if err != nil {
		return Image{}, err
	}
	if err := json.Unmarshal(mb, &im.Manifest); err != nil {
		return Image{}, fmt.Errorf("manifest %s: %w", im.ManifestDigest, err)
	}
	cb, err := s.readBlob(id)
	if err != nil {
		return Image{}, err
	}
	if err := json.Unmarshal(cb, &im.Config); err != nil {
		return Image{}, fmt.Errorf("config %s: %w", id, err)
	}
	return im, nil
}

// tagsByImage maps image IDs to their tags.
func tagsByImage(tx *snapshot.Tx) (map[digest.Digest][]string, error) {
	tb, err := tx.Bucket(bucketTags)
	if err != nil || tb == nil {
		return map[digest.Digest][]string{}, err
	}
	out := map[digest.Digest][]string{}
	err = tb.ForEach(func(k, v []byte) error {
		out[digest.Digest(v)] = append(out[digest.Digest(v)], string(k))
		return nil
	})
	return out, err
}

// List returns every image, newest first.
func (s *Store) List(ctx context.Context) ([]Image, error) {
	var out []Image
	err := s.snaps.ViewTx(ctx, func(tx *snapshot.Tx) error {
		ib, err := tx.Bucket(bucketImages)
		if err != nil || ib == nil {
			return err
		}
		tags, err := tagsByImage(tx)
		if err != nil {
			return err
		}
		return ib.ForEachBucket(func(k []byte) error {
			im, err := s.load(tx, digest.Digest(k))
			if err != nil {
				return err
			}
			im.RepoTags = tags[im.ID]
			sort.Strings(im.RepoTags)
			out = append(out, im)
			return nil
		})
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created().After(out[j].Created()) })
	return out, err
}

// Get finds an image by reference ("nginx", "user/repo:tag",
// "name@sha256:..."), by ID ("sha256:<hex>") or by a unique prefix of its
// ID's hex digits (at least 4).
func (s *Store) Get(ctx context.Context, ref string) (Image, error) {
	var im Image
	err := s.snaps.ViewTx(ctx, func(tx *snapshot.Tx) error {
		id, err := s.resolve(tx, ref)
		if err != nil {
			return err
		}
		if im, err = s.load(tx, id); err != nil {
			return err
		}
		tags, err := tagsByImage(tx)
		im.RepoTags = tags[id]
		sort.Strings(im.RepoTags)
		return err
	})
	return im, err
}

// DisplayRef is ref as messages show it: with the ":latest" that a
// lookup assumed when ref has no tag ("mybase" is "mybase:latest"), and
// otherwise as the user typed it.
func DisplayRef(ref string) string {
	r, err := reference.Parse(ref)
	if err != nil || r.Digest != "" || reference.IsDigestID(ref) || r.Tag != "latest" || strings.HasSuffix(ref, ":latest") {
		return ref
	}
	return ref + ":latest"
}

// resolve finds the ID of the image ref names.
func (s *Store) resolve(tx *snapshot.Tx, ref string) (digest.Digest, error) {
	ib, err := tx.Bucket(bucketImages)
	if err != nil {
		return "", err
	}
	notFound := fmt.Errorf("no image %q: %w (see 'strata images')", DisplayRef(ref), ErrNotFound)
	hex := strings.TrimPrefix(ref, "sha256:")
	if ib != nil && len(hex) >= 4 && len(hex) <= 64 && strings.Trim(hex, "0123456789abcdef") == "" {
		var found []digest.Digest
		c := ib.Cursor()
		p := []byte("sha256:" + hex)
		for k, _ := c.Seek(p); k != nil && strings.HasPrefix(string(k), string(p)); k, _ = c.Next() {
			found = append(found, digest.Digest(k))
		}
		if len(found) == 1 {
			return found[0], nil
		}
		if len(found) > 1 {
			return "", fmt.Errorf("%q names %d images: give more digits", ref, len(found))
		}
		if reference.IsDigestID(ref) || strings.HasPrefix(ref, "sha256:") {
			return "", notFound
		}
	}
	r, err := reference.Parse(ref)
	if err != nil {
		return "", err
	}
	if r.Digest != "" {
		want := r.Name() + "@" + r.Digest.String()
		if ib == nil {
			return "", notFound
		}
		var id digest.Digest
		_ = ib.ForEachBucket(func(k []byte) error {
			if rb := ib.Bucket(k).Bucket([]byte(bucketRepoDigests)); rb != nil && rb.Get([]byte(want)) != nil {
				id = digest.Digest(k)
			}
			return nil
		})
		if id == "" {
			return "", notFound
		}
		return id, nil
	}
	tb, err := tx.Bucket(bucketTags)
	if err != nil {
		return "", err
	}
	if tb != nil {
		if v := tb.Get([]byte(r.String())); v != nil {
			return digest.Digest(v), nil
		}
	}
	return "", notFound
}

// Tag gives the image ref (any form Get takes) the tag dst, moving dst
// from another image if it had it.
func (s *Store) Tag(ctx context.Context, ref, dst string) (reference.Reference, error) {
	r, err := reference.Parse(dst)
	if err != nil {
		return r, err
	}
	if r.Digest != "" {
		return r, fmt.Errorf("tag %q: a tag cannot hold a digest", dst)
	}
	err = s.snaps.UpdateTx(ctx, func(tx *snapshot.Tx) error {
		id, err := s.resolve(tx, ref)
		if err != nil {
			return err
		}
		tb, err := tx.Bucket(bucketTags)
		if err != nil {
			return err
		}
		return tb.Put([]byte(r.String()), []byte(id))
	})
	return r, err
}

// Untag removes the tag ref and returns the image it named.
func (s *Store) Untag(ctx context.Context, ref string) (digest.Digest, error) {
	r, err := reference.Parse(ref)
	if err != nil {
		return "", err
	}
	var id digest.Digest
	err = s.snaps.UpdateTx(ctx, func(tx *snapshot.Tx) error {
		tb, err := tx.Bucket(bucketTags)
		if err != nil {
			return err
		}
		v := tb.Get([]byte(r.String()))
		if v == nil {
			return fmt.Errorf("no tag %q: %w", ref, ErrNotFound)
		}
		id = digest.Digest(v)
		return tb.Delete([]byte(r.String()))
	})
	return id, err
}

// blobOwner names an image as the owner of its blobs.
func blobOwner(id digest.Digest) string { return "image/" + id.String() }

// imageBlobs lists the blobs an image keeps.
func imageBlobs(m v1.Manifest, manifestDigest digest.Digest) []digest.Digest {
	out := []digest.Digest{manifestDigest, m.Config.Digest}
	for _, l := range m.Layers {
		out = append(out, l.Digest)
	}
	return out
}

// containerOf returns a container of the image id, "" if none.
func containerOf(tx *snapshot.Tx, id digest.Digest) (string, error) {
	user := ""
	err := tx.Walk(func(info snapshot.Info) error {
		if user == "" && info.Kind == snapshot.KindActive && info.Labels[LabelImage] == id.String() {
			user = info.Name
		}
		return nil
	})
	return user, err
}

// imageExists reports whether the image id is recorded.
func imageExists(tx *snapshot.Tx, id digest.Digest) bool {
	ib, err := tx.Bucket(bucketImages)
	return err == nil && ib != nil && ib.Bucket([]byte(id)) != nil
}

// putImage records an image whose blobs (manifest, config, layers) are
// in the store, in the transaction tx, and tags it.
func putImage(tx *snapshot.Tx, m v1.Manifest, manifestDigest digest.Digest, repoDigests []string, tags []reference.Reference) error {
	id := m.Config.Digest
	ib, err := tx.Bucket(bucketImages)
	if err != nil {
		return err
	}
	b, err := ib.CreateBucketIfNotExists([]byte(id))
	if err != nil {
		return err
	}
	// Re-importing an image keeps its first manifest: one ID, one
	// manifest, as docker keeps it.
	if b.Get([]byte(keyManifest)) == nil {
		if err := b.Put([]byte(keyManifest), []byte(manifestDigest)); err != nil {
			return err
		}
		now, _ := time.Now().UTC().MarshalBinary()
		if err := b.Put([]byte(keyStored), now); err != nil {
			return err
		}
		for _, d := range imageBlobs(m, manifestDigest) {
			if !tx.HasBlob(d) {
				return fmt.Errorf("image %s: blob %s is missing from the store", ShortID(id), d)
			}
			if err := tx.Ref(d, blobOwner(id)); err != nil {
				return err
			}
		}
	}
	rb, err := b.CreateBucketIfNotExists([]byte(bucketRepoDigests))
	if err != nil {
		return err
	}
	for _, rd := range repoDigests {
		if err := rb.Put([]byte(rd), nil); err != nil {
			return err
		}
	}
	tb, err := tx.Bucket(bucketTags)
	if err != nil {
		return err
	}
	for _, t := range tags {
		if err := tb.Put([]byte(t.String()), []byte(id)); err != nil {
			return err
		}
	}
	return nil
}

// Delete removes the image id (its tags, record and blob references),
// unless a container uses it and force is false: checked in the
// deleting transaction, so a container created meanwhile is seen. Its
// layers stay until garbage collection (Prune).
func (s *Store) Delete(ctx context.Context, id digest.Digest, force bool) error {
	return s.snaps.UpdateTx(ctx, func(tx *snapshot.Tx) error {
		im, err := s.load(tx, id)
		if err != nil {
			return err
		}
		if !force {
			if user, err := containerOf(tx, id); err != nil {
				return err
			} else if user != "" {
				return fmt.Errorf("image %s is used by container %q: remove the container first ('strata rm %s'), or use -f: %w", ShortID(id), user, user, ErrInUse)
			}
		}
		tb, err := tx.Bucket(bucketTags)
		if err != nil {
			return err
		}
		var doomed [][]byte
		_ = tb.ForEach(func(k, v []byte) error {
			if digest.Digest(v) == id {
				doomed = append(doomed, append([]byte(nil), k...))
			}
			return nil
		})
		for _, k := range doomed {
			if err := tb.Delete(k); err != nil {
				return err
			}
		}
		for _, d := range imageBlobs(im.Manifest, im.ManifestDigest) {
			if err := tx.Unref(d, blobOwner(id)); err != nil {
				return err
			}
		}
		ib, err := tx.Bucket(bucketImages)
		if err != nil {
			return err
		}
		return ib.DeleteBucket([]byte(id))
	})
}

// chainIDsOf returns the chain IDs of the layers of a config's JSON.
func chainIDsOf(config []byte) []digest.Digest {
	var c v1.Image
	if json.Unmarshal(config, &c) != nil {
		return nil
	}
	return identity.ChainIDs(append([]digest.Digest(nil), c.RootFS.DiffIDs...))
}
