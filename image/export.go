package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-fs/strata/image/oci"
	"github.com/strata-fs/strata/image/reference"
)

// AnnotationImageName is containerd's annotation for an image's full
// name in an OCI layout (org.opencontainers.image.ref.name holds only
// the tag, which is what skopeo and umoci look up).
const AnnotationImageName = "io.containerd.image.name"

// Export writes the image ref to dest: an OCI archive when dest ends in
// ".tar", else an OCI image layout directory (added to if it exists).
// The blobs are the stored ones, so every digest is kept.
func (s *Store) Export(ctx context.Context, ref, dest string) error {
	im, err := s.Get(ctx, ref)
	if err != nil {
		return err
	}
	// The ref name: the tag the user named, or the image's first tag.
	name := ""
	if r, err := reference.Parse(ref); err == nil && !reference.IsDigestID(ref) && r.Digest == "" {
		for _, t := range im.RepoTags {
			if t == r.String() {
				name = t
			}
		}
	}
	if name == "" && len(im.RepoTags) > 0 {
		name = im.RepoTags[0]
	}
	if !strings.HasSuffix(dest, ".tar") {
		return s.exportLayout(im, name, dest)
	}
	dir, err := os.MkdirTemp(filepath.Dir(dest), ".strata-export-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := s.exportLayout(im, name, dir); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dest), ".strata-export-*.tar")
	if err != nil {
		return err
	}
	err = oci.WriteArchive(dir, tmp)
	if err == nil {
		err = tmp.Sync()
	}
	err = errors.Join(err, tmp.Close())
	if err == nil {
		err = os.Rename(tmp.Name(), dest)
	}
	if err != nil {
		return errors.Join(err, os.Remove(tmp.Name()))
	}
	return nil
}

func (s *Store) exportLayout(im Image, name, dir string) error {
	w, err := oci.NewLayout(dir)
	if err != nil {
		return err
	}
	descs := append([]v1.Descriptor{im.Manifest.Config}, im.Manifest.Layers...)
	for _, d := range descs {
		if err := s.copyBlobTo(w, d); err != nil {
			return errors.Join(err, w.Close())
		}
	}
	mb, err := s.readBlob(im.ManifestDigest)
	if err != nil {
		return errors.Join(err, w.Close())
	}
	md := v1.Descriptor{MediaType: im.Manifest.MediaType, Digest: im.ManifestDigest, Size: int64(len(mb))}
	if md.MediaType == "" {
		md.MediaType = v1.MediaTypeImageManifest
	}
	if err := s.copyBlobTo(w, md); err != nil {
		return errors.Join(err, w.Close())
	}
	refName := ""
	if name != "" {
		r, _ := reference.Parse(name)
		refName = r.Tag
		md.Annotations = map[string]string{AnnotationImageName: r.String()}
	}
	if err := w.AddManifest(md, refName); err != nil {
		return errors.Join(err, w.Close())
	}
	return w.Close()
}

func (s *Store) copyBlobTo(w *oci.LayoutWriter, d v1.Descriptor) error {
	p, err := s.snaps.BlobPath(d.Digest)
	if err != nil {
		return err
	}
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("blob %s of the image is missing from the store (run 'strata check'): %w", d.Digest, err)
	}
	defer f.Close()
	return w.WriteBlob(d, f)
}
