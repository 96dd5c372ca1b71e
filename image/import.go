package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/strata-fs/strata/image/oci"
	"github.com/strata-fs/strata/image/reference"
	"github.com/strata-fs/strata/snapshot"
	"github.com/strata-fs/strata/snapshot/layer"
)

// ImportOptions tune Import.
type ImportOptions struct {
	// Tag names the imported image (NAME[:TAG]); with a source of
	// several images it is refused.
	Tag string
	// Platform picks an image of a multi-platform index (nil: the host's).
	Platform *v1.Platform
	// Progress, if set, wraps each layer's reader to report progress:
	// layer i of n, the blob's descriptor.
	Progress func(r io.Reader, i, n int, d v1.Descriptor) io.Reader
	// Report, if set, is told of each layer's progress, from one
	// goroutine at a time: Loading with the bytes of its blob read so
	// far, then Loaded, or AlreadyExists for a layer the store had. The
	// layers of the images of one source are numbered on from one image
	// to the next.
	Report func(LayerProgress)
	// Warn is told of entries skipped while applying layers.
	Warn func(string)
	// Transport, when set, is the kind of source the path must be:
	// oci.TransportLayout (a directory), oci.TransportArchive or
	// oci.TransportDockerArchive (a file).
	Transport string
	// Pick, when set, imports only the image of that name: for an OCI
	// layout or archive its ref name (a tag like "v2", or the full name
	// it gives), for a docker archive a reference matched against its
	// RepoTags ("busybox" is busybox:latest).
	Pick string
}

// ImportResult describes one imported image.
type ImportResult struct {
	Image
	Tags            []string // the tags this import set (full references)
	Applied, Reused int      // layers unpacked, layers found in the store
}

// Import imports every image of path: an OCI image layout directory, an
// OCI archive, a `docker save` archive, or (as `docker import` takes) a
// root filesystem tarball. Every blob is verified before use; layers are
// applied through the snapshot store by chain ID, so a layer already
// stored is not unpacked again. On error no image is recorded and the
// layers this import unpacked are removed.
func (s *Store) Import(ctx context.Context, path string, opts ImportOptions) ([]ImportResult, error) {
	var tags []reference.Reference
	if opts.Tag != "" {
		r, err := reference.Parse(opts.Tag)
		if err != nil {
			return nil, err
		}
		if r.Digest != "" {
			return nil, fmt.Errorf("name %q: a tag cannot hold a digest: give NAME[:TAG]", opts.Tag)
		}
		tags = append(tags, r)
	}
	if err := checkTransport(path, opts.Transport); err != nil {
		return nil, err
	}
	src, err := oci.OpenWith(path, oci.OpenOptions{TempDir: filepath.Join(s.snaps.Root(), "tmp")})
	if errors.Is(err, oci.ErrUnknownFormat) && opts.Transport == "" {
		fi, serr := os.Stat(path)
		if serr == nil && fi.Mode().IsRegular() {
			r, err := s.importRootfs(ctx, path, tags, opts)
			if err != nil {
				return nil, err
			}
			return []ImportResult{r}, nil
		}
	}
	if err != nil {
		return nil, err
	}
	defer src.Close()
	images, err := src.Images(opts.Platform)
	if err != nil {
		return nil, err
	}
	if len(images) == 0 {
		return nil, fmt.Errorf("%s holds no image", path)
	}
	if opts.Pick != "" {
		if images, err = pick(images, path, opts); err != nil {
			return nil, err
		}
	}
	if len(tags) > 0 && len(images) > 1 {
		return nil, fmt.Errorf("%s holds %d images: pick one (oci:DIR:TAG, oci-archive:FILE:TAG, docker-archive:FILE:REF), or import them all without a name and tag the one you want", path, len(images))
	}
	var out []ImportResult
	count, base := 0, 0
	for _, im := range images {
		count += len(im.Manifest.Layers)
	}
	for _, im := range images {
		itags := tags
		if len(itags) == 0 {
			if r, ok := nameFromSource(im.RefName, path); ok {
				itags = []reference.Reference{r}
			}
		}
		res, err := s.importImage(ctx, im, itags, opts, base, count)
		base += len(im.Manifest.Layers)
		if err != nil {
			return out, err
		}
		out = append(out, res)
	}
	return out, nil
}

// checkTransport checks that path is what the transport reads.
func checkTransport(path, transport string) error {
	if transport == "" {
		return nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	switch {
	case transport == oci.TransportLayout && !fi.IsDir():
		return fmt.Errorf("oci:%s: not a directory: an OCI layout is a directory (for an archive, use oci-archive:%s)", path, path)
	case transport != oci.TransportLayout && fi.IsDir():
		return fmt.Errorf("%s:%s: a directory, not an archive file (for an OCI layout, use oci:%s)", transport, path, path)
	}
	return nil
}

// pick keeps the images of images that opts.Pick names.
func pick(images []oci.Image, path string, opts ImportOptions) ([]oci.Image, error) {
	var want string // a normalized reference, for docker archives
	if opts.Transport == oci.TransportDockerArchive {
		r, err := reference.Parse(opts.Pick)
		if err != nil {
			return nil, err
		}
		want = r.String()
	}
	var out []oci.Image
	var names []string
	for _, im := range images {
		name := im.RefName
		if im.Tag != "" && opts.Transport != oci.TransportDockerArchive {
			name = im.Tag
		}
		if name != "" {
			names = append(names, name)
		}
		switch {
		case im.Tag == opts.Pick || im.RefName == opts.Pick:
		case want != "" && im.RefName != "":
			r, err := reference.Parse(im.RefName)
			if err != nil || r.String() != want {
				continue
			}
		default:
			continue
		}
		out = append(out, im)
	}
	if len(out) == 0 {
		has := "no named image"
		if len(names) > 0 {
			has = "only " + quoteList(names)
		}
		return nil, fmt.Errorf("%s has no image named %q: it has %s", path, opts.Pick, has)
	}
	return out, nil
}

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, x := range s {
		q[i] = fmt.Sprintf("%q", x)
	}
	return strings.Join(q, ", ")
}

// nameFromSource turns a source's name for an image into a reference:
// a full reference as it is; a bare tag ("latest", as skopeo writes to
// oci:DIR:TAG) under the source's base name.
func nameFromSource(refName, path string) (reference.Reference, bool) {
	if refName == "" {
		return reference.Reference{}, false
	}
	if strings.ContainsAny(refName, "/@") || strings.Contains(refName, ":") {
		r, err := reference.Parse(refName)
		return r, err == nil && r.Digest == ""
	}
	base := strings.ToLower(strings.TrimSuffix(filepath.Base(path), filepath.Ext(path)))
	r, err := reference.Parse(base + ":" + refName)
	return r, err == nil
}

// lazyReader opens its source at the first Read, so a layer found in
// the store is never opened.
type lazyReader struct {
	open func() (io.Reader, error)
	r    io.Reader
}

func (l *lazyReader) Read(p []byte) (int, error) {
	if l.r == nil {
		r, err := l.open()
		if err != nil {
			return 0, err
		}
		l.r = r
	}
	return l.r.Read(p)
}

// countingReader tells report of the bytes read through it.
type countingReader struct {
	r      io.Reader
	p      LayerProgress
	report func(LayerProgress)
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	if n > 0 {
		c.p.Done += int64(n)
		c.report(c.p)
	}
	return n, err
}

// report tells opts.Report, if set, of p.
func (opts ImportOptions) report(p LayerProgress) {
	if opts.Report != nil {
		opts.Report(p)
	}
}

// importImage imports im; its layers are base+1... of count for Report.
func (s *Store) importImage(ctx context.Context, im oci.Image, tags []reference.Reference, opts ImportOptions, base, count int) (res ImportResult, err error) {
	lease, err := s.snaps.BeginLease()
	if err != nil {
		return res, err
	}
	var created []string
	defer func() {
		err = errors.Join(err, lease.End())
		if err != nil {
			// Nothing half-imported: drop the layers this import made.
			for i := len(created) - 1; i >= 0; i-- {
				_, _ = s.snaps.RemoveIf(ctx, created[i], func(tx *snapshot.Tx) (bool, error) {
					return s.layerNeeded(tx, created[i])
				})
			}
		}
	}()
	if len(im.Config.RootFS.DiffIDs) != len(im.Manifest.Layers) {
		return res, fmt.Errorf("image %s: config lists %d layers, manifest %d", ShortID(im.ConfigDigest), len(im.Config.RootFS.DiffIDs), len(im.Manifest.Layers))
	}
	parent := ""
	var extra []blobFile // layer blobs to keep that Apply did not store
	for i, ld := range im.Manifest.Layers {
		diffID := im.Config.RootFS.DiffIDs[i]
		_, statErr := s.snaps.Stat(ctx, chainAfter(parent, diffID))
		existed := statErr == nil
		var rc io.ReadCloser
		lp := LayerProgress{Index: base + i, Count: count, Digest: ld.Digest, State: Loading, Total: ld.Size}
		lr := &lazyReader{open: func() (io.Reader, error) {
			var err error
			if rc, err = im.Open(ld); err != nil {
				return nil, err
			}
			var r io.Reader = rc
			if opts.Progress != nil {
				r = opts.Progress(r, i, len(im.Manifest.Layers), ld)
			}
			if opts.Report != nil {
				opts.Report(lp)
				r = &countingReader{r: r, p: lp, report: opts.Report}
			}
			return r, nil
		}}
		info, err := s.snaps.Apply(ctx, lr, parent, snapshot.ApplyOptions{
			DiffID: diffID,
			Labels: map[string]string{LabelGC: "image"},
			Warn:   opts.Warn,
			Lease:  lease,
		})
		if rc != nil {
			rc.Close()
		}
		if err != nil {
			return res, fmt.Errorf("layer %d of %d (%s): %w", i+1, len(im.Manifest.Layers), ld.Digest, err)
		}
		lp.State, lp.Done = Loaded, lp.Total
		if existed {
			lp.State, lp.Done = AlreadyExists, 0
		}
		opts.report(lp)
		if existed {
			res.Reused++
		} else {
			res.Applied++
			created = append(created, info.Name)
		}
		parent = info.Name
		// The layer may be stored from another blob (other compression):
		// keep this one too, so that export gives back these digests.
		if p, _ := s.snaps.BlobPath(ld.Digest); !exists(p) {
			bf, err := copyBlob(lease.Dir(), im, ld)
			if err != nil {
				return res, err
			}
			extra = append(extra, bf)
		}
	}
	cpath, err := writeTemp(lease.Dir(), "config", im.ConfigBytes)
	if err != nil {
		return res, err
	}
	mpath, err := writeTemp(lease.Dir(), "manifest", im.ManifestBytes)
	if err != nil {
		return res, err
	}
	extra = append(extra, blobFile{cpath, im.ConfigDigest}, blobFile{mpath, im.ManifestDigest})
	var repoDigests []string
	for _, t := range tags {
		repoDigests = append(repoDigests, t.Name()+"@"+im.ManifestDigest.String())
	}
	man := im.Manifest
	man.Config.Digest = im.ConfigDigest
	err = s.snaps.UpdateTx(ctx, func(tx *snapshot.Tx) error {
		// An image stored already keeps its blobs: this import's copies
		// go with the lease.
		if !imageExists(tx, im.ConfigDigest) {
			for _, b := range extra {
				if err := tx.PutBlob(b.path, b.digest); err != nil {
					return err
				}
			}
		}
		if err := putImage(tx, man, im.ManifestDigest, repoDigests, tags); err != nil {
			return err
		}
		// Read back in the same transaction: a prune may delete the
		// image as soon as it commits.
		res.Image, err = s.load(tx, im.ConfigDigest)
		return err
	})
	for _, t := range tags {
		res.Tags = append(res.Tags, t.String())
	}
	return res, err
}

type blobFile struct {
	path   string
	digest digest.Digest
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// copyBlob copies the verified blob d of im into dir.
func copyBlob(dir string, im oci.Image, d v1.Descriptor) (blobFile, error) {
	rc, err := im.Open(d)
	if err != nil {
		return blobFile{}, err
	}
	defer rc.Close()
	p := filepath.Join(dir, "blob-"+d.Digest.Encoded())
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return blobFile{}, err
	}
	_, err = io.Copy(f, rc)
	if err == nil {
		err = f.Sync()
	}
	if err := errors.Join(err, f.Close()); err != nil {
		return blobFile{}, fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	return blobFile{p, d.Digest}, nil
}

// chainAfter is the chain ID of diffID on the layer named parent (a
// chain ID itself, or "").
func chainAfter(parent string, diffID digest.Digest) string {
	if parent == "" {
		return diffID.String()
	}
	return digest.FromString(parent + " " + diffID.String()).String()
}

// importRootfs imports a root filesystem tarball as a one-layer image,
// as `docker import` does.
func (s *Store) importRootfs(ctx context.Context, path string, tags []reference.Reference, opts ImportOptions) (ImportResult, error) {
	f, err := os.Open(path)
	if err != nil {
		return ImportResult{}, err
	}
	defer f.Close()
	diffID, _, err := layer.DiffID(f)
	if err != nil {
		return ImportResult{}, fmt.Errorf("%s is not an OCI layout, an OCI or docker archive, nor a root filesystem tarball: %w", path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return ImportResult{}, err
	}
	lease, err := s.snaps.BeginLease()
	if err != nil {
		return ImportResult{}, err
	}
	defer lease.End()
	_, statErr := s.snaps.Stat(ctx, diffID.String())
	var r io.Reader = f
	fi, _ := f.Stat()
	lp := LayerProgress{Count: 1, Digest: diffID, State: Loading, Total: fi.Size()}
	if opts.Progress != nil {
		r = opts.Progress(f, 0, 1, v1.Descriptor{Size: fi.Size()})
	}
	if opts.Report != nil && statErr != nil {
		opts.Report(lp)
		r = &countingReader{r: r, p: lp, report: opts.Report}
	}
	info, err := s.snaps.Apply(ctx, r, "", snapshot.ApplyOptions{
		DiffID: diffID, Labels: map[string]string{LabelGC: "image"}, Warn: opts.Warn, Lease: lease,
	})
	if err != nil {
		return ImportResult{}, err
	}
	lp.State, lp.Done = Loaded, lp.Total
	if statErr == nil {
		lp.State, lp.Done = AlreadyExists, 0
	}
	opts.report(lp)
	now := time.Now().UTC()
	cfg := v1.Image{
		Created:  &now,
		Platform: v1.Platform{OS: "linux", Architecture: runtime.GOARCH},
		RootFS:   v1.RootFS{Type: "layers", DiffIDs: []digest.Digest{diffID}},
		History:  []v1.History{{Created: &now, CreatedBy: "strata import " + filepath.Base(path), Comment: "Imported from " + filepath.Base(path)}},
	}
	im, err := s.store(ctx, lease, cfg, []v1.Descriptor{{MediaType: info.Layer.MediaType, Digest: info.Layer.Digest, Size: info.Layer.Size}}, tags)
	res := ImportResult{Image: im}
	for _, t := range tags {
		res.Tags = append(res.Tags, t.String())
	}
	if statErr == nil {
		res.Reused = 1
	} else {
		res.Applied = 1
	}
	return res, err
}
