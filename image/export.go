package image

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-fs/strata/image/oci"
	"github.com/strata-fs/strata/image/reference"
	"github.com/strata-fs/strata/snapshot/layer"
)

// AnnotationImageName is containerd's annotation for an image's full
// name in an OCI layout (org.opencontainers.image.ref.name holds only
// the tag, which is what skopeo and umoci look up).
const AnnotationImageName = "io.containerd.image.name"

// ExportOptions tune Export and ExportArchive.
type ExportOptions struct {
	// Format is oci.TransportLayout (an OCI image layout directory, the
	// default), oci.TransportArchive (a tar of one) or
	// oci.TransportDockerArchive (a `docker save` archive).
	Format string
	// Name is the name written: for an OCI layout or archive a tag (the
	// org.opencontainers.image.ref.name), for a docker archive a
	// reference (its RepoTags). "" means the tag the image was named by,
	// or its first tag.
	Name string
	// Gzip compresses an archive.
	Gzip bool
}

// Export writes the image ref to dest as opts.Format says. A layout
// directory is added to if it exists; an archive file is written whole
// and then renamed to dest, with mode 0666 less the umask. The blobs are
// the stored ones, so every digest is kept, except in a docker archive,
// whose layers are uncompressed.
func (s *Store) Export(ctx context.Context, ref, dest string, opts ExportOptions) error {
	if opts.Format == "" || opts.Format == oci.TransportLayout {
		if opts.Gzip {
			return errors.New("an OCI layout directory cannot be compressed: export to an archive (DEST.tar.gz)")
		}
		im, full, tag, err := s.exportNames(ctx, ref, opts)
		if err != nil {
			return err
		}
		return s.exportLayout(im, full, tag, dest)
	}
	// Check the image before a file is made.
	if _, _, _, err := s.exportNames(ctx, ref, opts); err != nil {
		return err
	}
	f, err := createTemp(filepath.Dir(dest), ".strata-export-")
	if err != nil {
		return err
	}
	err = s.ExportArchive(ctx, ref, f, opts)
	if err == nil {
		err = f.Sync()
	}
	err = errors.Join(err, f.Close())
	if err == nil {
		err = os.Rename(f.Name(), dest)
	}
	if err != nil {
		return errors.Join(err, os.Remove(f.Name()))
	}
	return nil
}

// createTemp creates a new file in dir, mode 0666 less the umask (as a
// shell's redirection makes it: os.CreateTemp's is 0600).
func createTemp(dir, prefix string) (*os.File, error) {
	for range 10 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		f, err := os.OpenFile(filepath.Join(dir, prefix+hex.EncodeToString(b[:])), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o666)
		if !errors.Is(err, os.ErrExist) {
			return f, err
		}
	}
	return nil, fmt.Errorf("create a temporary file in %s: too many names taken", dir)
}

// ExportArchive writes the image ref to w as an archive: an OCI archive
// (opts.Format oci.TransportArchive, or "") or a docker archive, gzip
// compressed if opts.Gzip.
func (s *Store) ExportArchive(ctx context.Context, ref string, w io.Writer, opts ExportOptions) (err error) {
	im, full, tag, err := s.exportNames(ctx, ref, opts)
	if err != nil {
		return err
	}
	var zw *gzip.Writer
	if opts.Gzip {
		zw = gzip.NewWriter(w)
		w = zw
	}
	lease, err := s.snaps.BeginLease()
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, lease.End()) }()
	switch opts.Format {
	case "", oci.TransportArchive:
		dir := filepath.Join(lease.Dir(), "layout")
		if err := s.exportLayout(im, full, tag, dir); err != nil {
			return err
		}
		err = oci.WriteArchive(dir, w)
	case oci.TransportDockerArchive:
		err = s.writeDocker(ctx, im, full, lease.Dir(), w)
	default:
		return fmt.Errorf("export: unknown format %q", opts.Format)
	}
	if err == nil && zw != nil {
		err = zw.Close()
	}
	return err
}

// exportNames finds the image ref and the names to write: its full
// reference, and the tag for an OCI ref name.
func (s *Store) exportNames(ctx context.Context, ref string, opts ExportOptions) (im Image, full, tag string, err error) {
	im, err = s.Get(ctx, ref)
	if err != nil {
		return im, "", "", err
	}
	// The name: the tag the user named, or the image's first tag.
	if r, err := reference.Parse(ref); err == nil && !reference.IsDigestID(ref) && r.Digest == "" {
		for _, t := range im.RepoTags {
			if t == r.String() {
				full = t
			}
		}
	}
	if full == "" && len(im.RepoTags) > 0 {
		full = im.RepoTags[0]
	}
	if full != "" {
		r, _ := reference.Parse(full)
		tag = r.Tag
	}
	switch {
	case opts.Name == "":
	case opts.Format == oci.TransportDockerArchive:
		r, err := reference.Parse(opts.Name)
		if err != nil {
			return im, "", "", err
		}
		if r.Digest != "" {
			return im, "", "", fmt.Errorf("name %q: a docker archive names images by tag, not digest: give NAME[:TAG]", opts.Name)
		}
		full, tag = r.String(), r.Tag
	default:
		tag = opts.Name
		if full != "" {
			r, _ := reference.Parse(full)
			full = r.Name() + ":" + tag
			if _, err := reference.Parse(full); err != nil {
				full = "" // a ref name that is no docker tag
			}
		}
	}
	return im, full, tag, nil
}

func (s *Store) exportLayout(im Image, full, tag, dir string) error {
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
	if full != "" {
		md.Annotations = map[string]string{AnnotationImageName: full}
	}
	if err := w.AddManifest(md, tag); err != nil {
		return errors.Join(err, w.Close())
	}
	return w.Close()
}

func (s *Store) copyBlobTo(w *oci.LayoutWriter, d v1.Descriptor) error {
	f, err := s.openBlob(d.Digest)
	if err != nil {
		return err
	}
	defer f.Close()
	return w.WriteBlob(d, f)
}

func (s *Store) openBlob(d digest.Digest) (*os.File, error) {
	p, err := s.snaps.BlobPath(d)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("blob %s of the image is missing from the store (run 'strata check'): %w", d, err)
	}
	return f, nil
}

// writeDocker writes im as a docker save archive named full; layers
// stored compressed are decompressed into tmp first (a tar entry's
// size comes before its content).
func (s *Store) writeDocker(ctx context.Context, im Image, full, tmp string, w io.Writer) error {
	cb, err := s.readBlob(im.ID)
	if err != nil {
		return err
	}
	di := oci.DockerImage{Config: cb, ConfigMediaType: im.Manifest.Config.MediaType, Name: full}
	if di.ConfigMediaType == "application/vnd.docker.container.image.v1+json" {
		di.ConfigMediaType = "" // the OCI manifest written takes the OCI type
	}
	if len(im.Config.RootFS.DiffIDs) != len(im.Manifest.Layers) {
		return fmt.Errorf("image %s: config lists %d layers, manifest %d", ShortID(im.ID), len(im.Config.RootFS.DiffIDs), len(im.Manifest.Layers))
	}
	for i, ld := range im.Manifest.Layers {
		if err := ctx.Err(); err != nil {
			return err
		}
		diffID := im.Config.RootFS.DiffIDs[i]
		if ld.Digest == diffID {
			di.Layers = append(di.Layers, oci.DockerLayer{DiffID: diffID, Size: ld.Size, Open: func() (io.ReadCloser, error) { return s.openBlob(ld.Digest) }})
			continue
		}
		p, size, err := s.decompressBlob(ld.Digest, diffID, tmp)
		if err != nil {
			return fmt.Errorf("layer %d of %d (%s): %w", i+1, len(im.Manifest.Layers), ld.Digest, err)
		}
		di.Layers = append(di.Layers, oci.DockerLayer{DiffID: diffID, Size: size, Open: func() (io.ReadCloser, error) { return os.Open(p) }})
	}
	familiar := ""
	if full != "" {
		r, _ := reference.Parse(full)
		familiar = r.Familiar()
	}
	return oci.WriteDockerArchive(w, di, familiar)
}

// decompressBlob writes the uncompressed content of the blob d into a
// file in dir, checks it is diffID, and returns the file and its size.
func (s *Store) decompressBlob(d, diffID digest.Digest, dir string) (string, int64, error) {
	f, err := s.openBlob(d)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	zr, _, err := layer.Decompress(f)
	if err != nil {
		return "", 0, err
	}
	defer zr.Close()
	p := filepath.Join(dir, "layer-"+diffID.Encoded())
	out, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", 0, err
	}
	h := digest.SHA256.Digester()
	n, err := io.Copy(io.MultiWriter(out, h.Hash()), zr)
	if err := errors.Join(err, out.Close()); err != nil {
		return "", 0, err
	}
	if h.Digest() != diffID {
		return "", 0, fmt.Errorf("%w: uncompressed content is %s, the config says %s (run 'strata check')", oci.ErrDigestMismatch, h.Digest(), diffID)
	}
	return p, n, nil
}
