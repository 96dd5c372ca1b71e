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
	"slices"
	"strings"

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
	// Progress, if set, is told of each layer's progress, from one
	// goroutine at a time: Preparing while an archive is readied, then
	// Exporting with the bytes written so far, then Exported.
	Progress func(LayerProgress)
}

func (opts ExportOptions) report(p LayerProgress) {
	if opts.Progress != nil {
		opts.Progress(p)
	}
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
		return s.exportLayout(im, full, tag, dest, opts.Progress, false)
	}
	// Check the image before a file is made.
	if _, _, _, err := s.exportNames(ctx, ref, opts); err != nil {
		return err
	}
	f, err := createTemp(filepath.Dir(dest), ".strata-export-")
	if err != nil {
		return err
	}
	err = s.ExportArchive(ctx, ref, ctxWriter{ctx, f}, opts)
	if err == nil {
		err = f.Sync()
	}
	err = errors.Join(err, f.Close())
	if err == nil {
		// Interrupted at the end, the export leaves nothing at DEST.
		err = ctx.Err()
	}
	if err == nil {
		err = os.Rename(f.Name(), dest)
	}
	if err != nil {
		return errors.Join(err, os.Remove(f.Name()))
	}
	return nil
}

// ctxWriter fails once ctx is done, so that an interrupted export stops.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(b)
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
		if err := s.exportLayout(im, full, tag, dir, opts.Progress, true); err != nil {
			return err
		}
		var ap *archiveProgress
		if opts.Progress != nil {
			ap = s.newArchiveProgress(w, im, opts.Progress)
			w = ap
		}
		err = oci.WriteArchive(dir, w)
		if err == nil && ap != nil {
			ap.finish()
		}
	case oci.TransportDockerArchive:
		err = s.writeDocker(ctx, im, full, lease.Dir(), w, opts)
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

// exportLayout writes im to the layout dir, telling report (if set) of
// its layers: Exporting and Exported, or only Preparing when the layout
// is to be archived.
func (s *Store) exportLayout(im Image, full, tag, dir string, report func(LayerProgress), preparing bool) error {
	w, err := oci.NewLayout(dir)
	if err != nil {
		return err
	}
	if err := s.copyBlobTo(w, im.Manifest.Config, nil); err != nil {
		return errors.Join(err, w.Close())
	}
	n := len(im.Manifest.Layers)
	for i, d := range im.Manifest.Layers {
		lp := LayerProgress{Index: i, Count: n, Digest: d.Digest, State: Exporting, Total: d.Size}
		var wrap func(io.Reader) io.Reader
		if report != nil {
			if preparing {
				lp.State = Preparing
			} else {
				wrap = func(r io.Reader) io.Reader { return &countingReader{r: r, p: lp, report: report} }
			}
			report(lp)
		}
		if err := s.copyBlobTo(w, d, wrap); err != nil {
			return errors.Join(err, w.Close())
		}
		if report != nil && !preparing {
			lp.State, lp.Done = Exported, d.Size
			report(lp)
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
	if err := s.copyBlobTo(w, md, nil); err != nil {
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

// copyBlobTo copies the blob d to the layout w, read through wrap if set.
func (s *Store) copyBlobTo(w *oci.LayoutWriter, d v1.Descriptor, wrap func(io.Reader) io.Reader) error {
	f, err := s.openBlob(d.Digest)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = f
	if wrap != nil {
		r = wrap(r)
	}
	return w.WriteBlob(d, r)
}

// archiveProgress passes an OCI archive's tar on to w and reports the
// bytes of each layer written. oci.WriteArchive writes the blobs in
// digest order, each a 512-byte header and its content padded to 512
// bytes, after the directories blobs/ and blobs/<alg>/: an entry's
// place in the stream follows from the sizes.
type archiveProgress struct {
	w      io.Writer
	pos    int64
	spans  []layerSpan // by start
	next   int         // the first span not yet written whole
	report func(LayerProgress)
}

type layerSpan struct {
	start int64
	p     LayerProgress
}

func (s *Store) newArchiveProgress(w io.Writer, im Image, report func(LayerProgress)) *archiveProgress {
	type blob struct {
		d     digest.Digest
		size  int64
		layer int // -1 for no layer
	}
	seen := map[digest.Digest]bool{}
	var blobs []blob
	add := func(d digest.Digest, size int64, layer int) {
		if !seen[d] {
			seen[d] = true
			blobs = append(blobs, blob{d, size, layer})
		}
	}
	add(im.Manifest.Config.Digest, im.Manifest.Config.Size, -1)
	for i, l := range im.Manifest.Layers {
		add(l.Digest, l.Size, i)
	}
	if p, err := s.snaps.BlobPath(im.ManifestDigest); err == nil {
		if fi, err := os.Stat(p); err == nil {
			add(im.ManifestDigest, fi.Size(), -1)
		}
	}
	slices.SortFunc(blobs, func(a, b blob) int { return strings.Compare(a.d.Encoded(), b.d.Encoded()) })
	ap := &archiveProgress{w: w, report: report}
	off := int64(2 * 512)
	n := len(im.Manifest.Layers)
	for _, b := range blobs {
		off += 512
		if b.layer >= 0 {
			ap.spans = append(ap.spans, layerSpan{start: off, p: LayerProgress{Index: b.layer, Count: n, Digest: b.d, State: Exporting, Total: b.size}})
		}
		off += (b.size + 511) &^ 511
	}
	return ap
}

// finish reports every layer not reported whole yet Exported: the
// archive is written.
func (a *archiveProgress) finish() {
	for _, sp := range a.spans[a.next:] {
		sp.p.State, sp.p.Done = Exported, sp.p.Total
		a.report(sp.p)
	}
	a.next = len(a.spans)
}

func (a *archiveProgress) Write(b []byte) (int, error) {
	n, err := a.w.Write(b)
	a.pos += int64(n)
	for i := a.next; i < len(a.spans) && a.spans[i].start < a.pos; i++ {
		sp := &a.spans[i]
		sp.p.Done = min(a.pos-sp.start, sp.p.Total)
		if sp.p.Done == sp.p.Total {
			sp.p.State = Exported
			a.next = i + 1
		}
		a.report(sp.p)
	}
	return n, err
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
func (s *Store) writeDocker(ctx context.Context, im Image, full, tmp string, w io.Writer, opts ExportOptions) error {
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
	n := len(im.Manifest.Layers)
	type plainLayer struct {
		path string
		size int64
	}
	plain := map[digest.Digest]plainLayer{} // a layer given twice is decompressed once
	for i, ld := range im.Manifest.Layers {
		if err := ctx.Err(); err != nil {
			return err
		}
		diffID := im.Config.RootFS.DiffIDs[i]
		opts.report(LayerProgress{Index: i, Count: n, Digest: diffID, State: Preparing})
		open := func() (io.ReadCloser, error) { return s.openBlob(ld.Digest) }
		size := ld.Size
		if ld.Digest != diffID {
			pl, ok := plain[diffID]
			if !ok {
				p, sz, err := s.decompressBlob(ld.Digest, diffID, tmp)
				if err != nil {
					return fmt.Errorf("layer %d of %d (%s): %w", i+1, n, ld.Digest, err)
				}
				pl = plainLayer{p, sz}
				plain[diffID] = pl
			}
			open, size = func() (io.ReadCloser, error) { return os.Open(pl.path) }, pl.size
		}
		if opts.Progress != nil {
			lp := LayerProgress{Index: i, Count: n, Digest: diffID, State: Exporting, Total: size}
			unwatched := open
			open = func() (io.ReadCloser, error) {
				rc, err := unwatched()
				if err != nil {
					return nil, err
				}
				opts.Progress(lp)
				return &exportReader{countingReader{r: rc, p: lp, report: opts.Progress}, rc}, nil
			}
		}
		di.Layers = append(di.Layers, oci.DockerLayer{DiffID: diffID, Size: size, Open: open})
	}
	familiar := ""
	if full != "" {
		r, _ := reference.Parse(full)
		familiar = r.Familiar()
	}
	return oci.WriteDockerArchive(w, di, familiar)
}

// exportReader reports a layer Exported once it is read whole.
type exportReader struct {
	countingReader
	io.Closer
}

func (e *exportReader) Read(b []byte) (int, error) {
	n, err := e.countingReader.Read(b)
	if err == io.EOF && e.p.State != Exported {
		e.p.State = Exported
		e.report(e.p)
	}
	return n, err
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
