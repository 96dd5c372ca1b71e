// Package oci reads images out of the three formats `strata import`
// accepts, and writes OCI image layouts:
//
//   - an OCI image layout directory (image-spec image-layout.md): an
//     oci-layout file, index.json, and content-addressed blobs under
//     blobs/<alg>/<hex>;
//   - an OCI archive: a tar of such a layout (as `skopeo copy ...
//     oci-archive:` writes it), plain or gzip-compressed;
//   - a `docker save` archive: manifest.json listing, per image, a config
//     file and layer tars, in the old style ("<id>/layer.tar",
//     "<hex>.json") or the newer one ("blobs/sha256/<hex>").
//
// Nothing read is trusted before it is verified. Every blob, JSON or
// layer, is read through a reader that checks its size and digest
// against the descriptor that names it, and fails at the end of the
// content (or as soon as it grows past the size) otherwise. Paths of
// blobs are made only from validated digests, so an index cannot name a
// file outside blobs/; directories are read through an os.Root. Archives
// are not extracted: their headers are indexed (name to offset and size)
// and blobs are read in place, so an entry's name is only ever a key,
// never a path on disk.
//
// There is no store here: the caller copies what it needs out of a
// Source, or into a LayoutWriter.
package oci

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	_ "crypto/sha512" // sha384 and sha512 digests, for go-digest
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Media types of the Docker image format (distribution's
// docs/spec/manifest-v2-2.md), which OCI layouts written by Docker and
// skopeo may hold besides the OCI ones.
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerConfig       = "application/vnd.docker.container.image.v1+json"
	MediaTypeDockerLayer        = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	MediaTypeDockerLayerTar     = "application/vnd.docker.image.rootfs.diff.tar"
	MediaTypeDockerForeignLayer = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
)

// AnnotationContainerdImageName is the annotation containerd (and so
// `docker save` since Docker 25) puts beside the OCI ref name on
// index.json's descriptors: the image's full name, where the OCI
// annotation has only its tag.
const AnnotationContainerdImageName = "io.containerd.image.name"

// Names of the files of a docker save archive (moby
// image/tarexport/tarexport.go).
const dockerManifestFile = "manifest.json"

// Limits of what is read into memory.
const (
	// metaMaxSize bounds a JSON document: index.json, a manifest, an
	// index, a config, a docker manifest.json. Registries refuse
	// manifests above 4 MiB; configs with a long history are larger.
	metaMaxSize = 16 << 20
	// layoutFileMaxSize bounds the oci-layout file.
	layoutFileMaxSize = 4 << 10
	// indexMaxDepth bounds indexes nested in indexes.
	indexMaxDepth = 8
	// tarMaxEntries bounds the entries of an archive indexed in memory.
	tarMaxEntries = 1 << 20
	// linkMaxHops bounds the symlinks followed to find one layer of a
	// docker save archive.
	linkMaxHops = 16
)

var (
	// ErrUnknownFormat is returned by Open for a path that is none of
	// the formats read here; the caller may treat it as a root
	// filesystem tarball instead.
	ErrUnknownFormat = errors.New("not an OCI layout, OCI archive or docker save archive")
	// ErrDigestMismatch is returned when a blob's content does not have
	// the digest its descriptor gives.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrSizeMismatch is returned when a blob's content does not have
	// the size its descriptor gives.
	ErrSizeMismatch = errors.New("size mismatch")
)

// Source is an image source opened for reading: an OCI image layout
// directory, an OCI archive (tar of a layout), or a `docker save`
// archive.
type Source interface {
	// Images lists the images in the source, resolved for platform
	// (nil: the host's, runtime.GOOS/GOARCH, plus the variant for arm):
	// a multi-platform index picks the matching manifest.
	Images(platform *v1.Platform) ([]Image, error)
	// Close releases the source; the Open functions of its images fail
	// afterwards.
	Close() error
}

var (
	_ Source = (*layoutSource)(nil)
	_ Source = (*dockerSource)(nil)
)

// Image is one image of a Source, its manifest and config read and
// verified.
type Image struct {
	// RefName is the name the source gives the image: the OCI
	// "org.opencontainers.image.ref.name" annotation (a bare tag like
	// "latest", or a full reference), or the full name in
	// "io.containerd.image.name" if the OCI one is only a tag, or a
	// docker RepoTags entry; "" if none.
	RefName string
	// Tag is the OCI "org.opencontainers.image.ref.name" annotation as it
	// is (an OCI layout or archive only; "" if none).
	Tag string
	// Manifest is the image manifest. For a docker save archive it is
	// synthesized: an OCI manifest with an OCI config media type, and
	// layers of media type application/vnd.oci.image.layer.v1.tar, or
	// +gzip or +zstd when the layer file is compressed (by its magic).
	Manifest       v1.Manifest
	ManifestBytes  []byte // as stored, or the synthesized manifest's JSON
	ManifestDigest digest.Digest
	Config         v1.Image
	ConfigBytes    []byte
	ConfigDigest   digest.Digest
	// Open returns the content of the blob d names (a layer, the config,
	// the manifest), verified: reading to EOF returns an error naming
	// the blob if its size or digest does not match d, and reading past
	// d.Size is an error too.
	Open func(d v1.Descriptor) (io.ReadCloser, error)
}

// OpenOptions tune OpenWith.
type OpenOptions struct {
	// TempDir is where a gzip-compressed archive is decompressed, to be
	// read in place; "" means os.TempDir().
	TempDir string
}

// Open opens path as a Source: a directory holding an oci-layout file
// (OCI image layout), or a tar, plain or gzip-compressed, that holds
// oci-layout and index.json (OCI archive) or manifest.json (docker save
// archive). For anything else it returns an error wrapping
// ErrUnknownFormat.
func Open(path string) (Source, error) {
	return OpenWith(path, OpenOptions{})
}

// OpenWith is Open with options.
func OpenWith(path string, opts OpenOptions) (Source, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	unknown := fmt.Errorf("%q is %w", path, ErrUnknownFormat)
	switch {
	case fi.IsDir():
		return openLayoutDir(path, unknown)
	case fi.Mode().IsRegular():
		return openArchive(path, opts, unknown)
	}
	return nil, unknown
}

// openLayoutDir opens the OCI layout directory dir.
func openLayoutDir(dir string, unknown error) (Source, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	if _, err := root.Lstat(v1.ImageLayoutFile); errors.Is(err, fs.ErrNotExist) {
		return nil, errors.Join(unknown, root.Close())
	}
	s := &layoutSource{blobs: dirBlobs{root}, close: root.Close}
	if err := s.checkLayoutFile(); err != nil {
		return nil, errors.Join(fmt.Errorf("OCI layout %q: %w", dir, err), root.Close())
	}
	return s, nil
}

// openArchive opens the tar (or gzip-compressed tar) at name.
func openArchive(name string, opts OpenOptions, unknown error) (_ Source, err error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	var tempName string // set while a temporary file is to be removed
	defer func() {
		if err != nil {
			err = errors.Join(err, f.Close())
			if tempName != "" {
				err = errors.Join(err, os.Remove(tempName))
			}
		}
	}()
	var magic [2]byte
	if n, _ := f.ReadAt(magic[:], 0); n == 2 && magic == [2]byte{0x1f, 0x8b} {
		tf, tn, err := gunzipToTemp(f, opts.TempDir)
		if err != nil {
			return nil, fmt.Errorf("decompress %q: %w", name, err)
		}
		orig := f
		f, tempName = tf, tn
		if err := orig.Close(); err != nil {
			return nil, err
		}
		// Unlinked now, the file cannot be left behind by a crash; where
		// that is not allowed (Windows), Close removes it.
		if os.Remove(tempName) == nil {
			tempName = ""
		}
	}
	ix, err := indexTar(f)
	if err != nil {
		// A tar that breaks before it showed an image archive's files
		// may be a root filesystem tarball: its reader says what is
		// wrong with it.
		if errors.Is(err, errNotTar) || !ix.isImageArchive() {
			return nil, unknown
		}
		return nil, fmt.Errorf("archive %q: %w", name, err)
	}
	closeFn := func() error {
		err := f.Close()
		if tempName != "" {
			err = errors.Join(err, os.Remove(tempName))
		}
		return err
	}
	_, hasLayout := ix.files[v1.ImageLayoutFile]
	_, hasIndex := ix.files[v1.ImageIndexFile]
	_, hasManifest := ix.files[dockerManifestFile]
	switch {
	case hasLayout && (hasIndex || !hasManifest):
		// Docker 25 writes both an OCI layout and manifest.json: the
		// layout has the manifests as they were.
		if ix.bad != nil {
			return nil, fmt.Errorf("OCI archive %q: %w", name, ix.bad)
		}
		if ix.firstLink != "" {
			return nil, fmt.Errorf("OCI archive %q: entry %q: a link (to %q), which an OCI archive must not hold", name, ix.firstLink, ix.links[ix.firstLink])
		}
		s := &layoutSource{blobs: tarBlobs{ix}, close: closeFn}
		if err := s.checkLayoutFile(); err != nil {
			return nil, fmt.Errorf("OCI archive %q: %w", name, err)
		}
		return s, nil
	case hasManifest:
		if ix.bad != nil {
			return nil, fmt.Errorf("docker archive %q: %w", name, ix.bad)
		}
		return &dockerSource{ix: ix, close: closeFn, layers: map[string]dockerLayer{}}, nil
	}
	return nil, unknown
}

// gunzipToTemp decompresses r into a new file in dir.
func gunzipToTemp(r io.Reader, dir string) (*os.File, string, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, "", err
	}
	tf, err := os.CreateTemp(dir, "strata-oci-*.tar")
	if err != nil {
		return nil, "", err
	}
	if _, err := io.Copy(tf, zr); err != nil {
		return nil, "", errors.Join(err, tf.Close(), removeTemp(tf.Name()))
	}
	if err := zr.Close(); err != nil {
		return nil, "", errors.Join(err, tf.Close(), removeTemp(tf.Name()))
	}
	return tf, tf.Name(), nil
}

// removeTemp removes a temporary file that may already be gone.
func removeTemp(name string) error {
	if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// HostPlatform returns the platform Images resolves for when given nil:
// runtime.GOOS and GOARCH, and for arm the GOARM the binary was built
// for (v7 if unknown).
func HostPlatform() v1.Platform {
	p := v1.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}
	if p.Architecture == "arm" {
		p.Variant = "v7"
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "GOARM" && s.Value != "" && s.Value[0] >= '5' && s.Value[0] <= '7' {
					p.Variant = "v" + s.Value[:1]
				}
			}
		}
	}
	return p
}

// --- OCI image layout, as a directory or an archive ---

// blobStore is the files of a layout, by slash-separated names made here
// (never taken from the content as they are).
type blobStore interface {
	// open opens the regular file name and returns its size.
	open(name string) (io.ReadCloser, int64, error)
}

// dirBlobs is a layout directory.
type dirBlobs struct{ root *os.Root }

func (b dirBlobs) open(name string) (io.ReadCloser, int64, error) {
	f, fi, err := openRegular(b.root, name)
	if err != nil {
		return nil, 0, err
	}
	return f, fi.Size(), nil
}

// openRegular opens the regular file name in root. Anything else is
// refused, and before it is opened: opening a FIFO would block.
func openRegular(root *os.Root, name string) (*os.File, fs.FileInfo, error) {
	fi, err := root.Stat(name)
	if err != nil {
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s: not a regular file", name)
	}
	f, err := root.Open(name)
	if err != nil {
		return nil, nil, err
	}
	// Replaced since the Stat?
	if fi, err = f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, nil, errors.Join(fmt.Errorf("%s: not a regular file", name), err, f.Close())
	}
	return f, fi, nil
}

// tarBlobs is an OCI archive, read in place.
type tarBlobs struct{ ix *tarIndex }

func (b tarBlobs) open(name string) (io.ReadCloser, int64, error) {
	e, ok := b.ix.files[name]
	if !ok {
		return nil, 0, fmt.Errorf("%s: not in the archive: %w", name, fs.ErrNotExist)
	}
	return io.NopCloser(io.NewSectionReader(b.ix.f, e.off, e.size)), e.size, nil
}

// layoutSource reads an OCI image layout.
type layoutSource struct {
	blobs blobStore
	close func() error
	once  sync.Once
}

func (s *layoutSource) Close() error {
	err := fs.ErrClosed
	s.once.Do(func() { err = s.close() })
	return err
}

// checkLayoutFile checks that the oci-layout file names a version of
// the layout this package reads.
func (s *layoutSource) checkLayoutFile() error {
	b, err := s.readFile(v1.ImageLayoutFile, layoutFileMaxSize)
	if err != nil {
		return err
	}
	var l v1.ImageLayout
	if err := json.Unmarshal(b, &l); err != nil {
		return fmt.Errorf("%s: %w", v1.ImageLayoutFile, err)
	}
	if l.Version != v1.ImageLayoutVersion {
		return fmt.Errorf("%s: imageLayoutVersion %q, want %q", v1.ImageLayoutFile, l.Version, v1.ImageLayoutVersion)
	}
	return nil
}

// readFile reads a file of the layout that no descriptor names
// (oci-layout, index.json).
func (s *layoutSource) readFile(name string, limit int64) ([]byte, error) {
	rc, size, err := s.blobs.open(name)
	if err != nil {
		return nil, err
	}
	if size > limit {
		return nil, errors.Join(fmt.Errorf("%s: %d bytes, more than the %d allowed", name, size, limit), rc.Close())
	}
	b, err := io.ReadAll(io.LimitReader(rc, limit))
	if err != nil {
		err = fmt.Errorf("%s: %w", name, err)
	}
	return b, errors.Join(err, rc.Close())
}

// openBlob opens the blob d names, verified.
func (s *layoutSource) openBlob(d v1.Descriptor) (io.ReadCloser, error) {
	name, err := blobPath(d)
	if err != nil {
		return nil, err
	}
	rc, _, err := s.blobs.open(name)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	return newVerifiedReader(rc, d, "blob "+string(d.Digest)), nil
}

// readBlob reads the JSON blob d names, verified.
func (s *layoutSource) readBlob(d v1.Descriptor) ([]byte, error) {
	if d.Size > metaMaxSize {
		return nil, fmt.Errorf("blob %s: %d bytes, more than the %d allowed for %s", d.Digest, d.Size, metaMaxSize, d.MediaType)
	}
	rc, err := s.openBlob(d)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(rc)
	return b, errors.Join(err, rc.Close())
}

// statBlob checks that the blob d names is there, with d's size.
func (s *layoutSource) statBlob(d v1.Descriptor) error {
	name, err := blobPath(d)
	if err != nil {
		return err
	}
	rc, size, err := s.blobs.open(name)
	if err != nil {
		return fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	if err := rc.Close(); err != nil {
		return err
	}
	if size != d.Size {
		return fmt.Errorf("blob %s: %w: %d bytes, descriptor says %d", d.Digest, ErrSizeMismatch, size, d.Size)
	}
	return nil
}

func (s *layoutSource) Images(platform *v1.Platform) ([]Image, error) {
	want := HostPlatform()
	if platform != nil {
		want = *platform
	}
	b, err := s.readFile(v1.ImageIndexFile, metaMaxSize)
	if err != nil {
		return nil, err
	}
	index, err := parseIndex(b, "")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", v1.ImageIndexFile, err)
	}
	type entry struct {
		desc    v1.Descriptor
		refName string
		tag     string
	}
	var manifests []entry
	byRef := map[string][]int{} // top-level manifests with a platform, by ref name
	for i, d := range index.Manifests {
		what := fmt.Sprintf("%s: manifests[%d]", v1.ImageIndexFile, i)
		if err := checkDescriptor(d); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		ref := refName(d)
		switch {
		case isManifestType(d.MediaType):
			if d.Platform != nil {
				byRef[ref] = append(byRef[ref], len(manifests))
			}
			manifests = append(manifests, entry{d, ref, d.Annotations[v1.AnnotationRefName]})
		case isIndexType(d.MediaType):
			md, err := s.resolveIndex(d, want, 1)
			if err != nil {
				return nil, fmt.Errorf("%s (%q): %w", what, ref, err)
			}
			manifests = append(manifests, entry{md, ref, d.Annotations[v1.AnnotationRefName]})
		default:
			return nil, fmt.Errorf("%s (%q): unsupported media type %q", what, ref, d.MediaType)
		}
	}
	// index.json may itself be the multi-platform index (as
	// go-containerregistry writes it): manifests that share a ref name
	// and carry platforms are resolved like an index's.
	drop := map[int]bool{}
	for ref, group := range byRef {
		if len(group) < 2 {
			continue
		}
		descs := make([]v1.Descriptor, len(group))
		for i, j := range group {
			descs[i] = manifests[j].desc
		}
		k, err := selectPlatform(descs, want)
		if err != nil {
			return nil, fmt.Errorf("%s: manifests named %q: %w", v1.ImageIndexFile, ref, err)
		}
		for i, j := range group {
			drop[j] = i != k
		}
	}
	var images []Image
	for i, e := range manifests {
		if drop[i] {
			continue
		}
		img, err := s.image(e.desc, e.refName)
		img.Tag = e.tag
		if err != nil {
			return nil, fmt.Errorf("image %q: %w", e.refName, err)
		}
		images = append(images, img)
	}
	return images, nil
}

// resolveIndex returns the descriptor of the manifest for platform in
// the index d names.
func (s *layoutSource) resolveIndex(d v1.Descriptor, platform v1.Platform, depth int) (v1.Descriptor, error) {
	if depth > indexMaxDepth {
		return v1.Descriptor{}, fmt.Errorf("index %s: indexes nested more than %d deep", d.Digest, indexMaxDepth)
	}
	b, err := s.readBlob(d)
	if err != nil {
		return v1.Descriptor{}, err
	}
	index, err := parseIndex(b, d.MediaType)
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("index %s: %w", d.Digest, err)
	}
	var cands []v1.Descriptor
	for i, m := range index.Manifests {
		if err := checkDescriptor(m); err != nil {
			return v1.Descriptor{}, fmt.Errorf("index %s: manifests[%d]: %w", d.Digest, i, err)
		}
		// Anything else (artifacts, signatures) is not an image.
		if isManifestType(m.MediaType) || isIndexType(m.MediaType) {
			cands = append(cands, m)
		}
	}
	k, err := selectPlatform(cands, platform)
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("index %s: %w", d.Digest, err)
	}
	if isIndexType(cands[k].MediaType) {
		return s.resolveIndex(cands[k], platform, depth+1)
	}
	return cands[k], nil
}

// image reads and checks the manifest d names and its config, and that
// its layers are there.
func (s *layoutSource) image(d v1.Descriptor, ref string) (Image, error) {
	mb, err := s.readBlob(d)
	if err != nil {
		return Image{}, fmt.Errorf("manifest: %w", err)
	}
	m, err := parseManifest(mb, d.MediaType)
	if err != nil {
		return Image{}, fmt.Errorf("manifest %s: %w", d.Digest, err)
	}
	cb, err := s.readBlob(m.Config)
	if err != nil {
		return Image{}, fmt.Errorf("manifest %s: config: %w", d.Digest, err)
	}
	cfg, err := parseConfig(cb, len(m.Layers))
	if err != nil {
		return Image{}, fmt.Errorf("config %s: %w", m.Config.Digest, err)
	}
	for i, l := range m.Layers {
		if err := s.statBlob(l); err != nil {
			return Image{}, fmt.Errorf("manifest %s: layers[%d]: %w", d.Digest, i, err)
		}
	}
	return Image{
		RefName:        ref,
		Manifest:       m,
		ManifestBytes:  mb,
		ManifestDigest: d.Digest,
		Config:         cfg,
		ConfigBytes:    cb,
		ConfigDigest:   m.Config.Digest,
		Open:           s.openBlob,
	}, nil
}

// refName is the name index.json gives the image d names.
func refName(d v1.Descriptor) string {
	ref := d.Annotations[v1.AnnotationRefName]
	if full := d.Annotations[AnnotationContainerdImageName]; full != "" && (ref == "" || strings.HasSuffix(full, ":"+ref)) {
		return full
	}
	return ref
}

// --- JSON documents ---

func isManifestType(mt string) bool {
	return mt == v1.MediaTypeImageManifest || mt == MediaTypeDockerManifest
}

func isIndexType(mt string) bool {
	return mt == v1.MediaTypeImageIndex || mt == MediaTypeDockerManifestList
}

func isConfigType(mt string) bool {
	return mt == v1.MediaTypeImageConfig || mt == MediaTypeDockerConfig
}

// isLayerType reports whether mt is a layer this package reads.
func isLayerType(mt string) bool {
	switch mt {
	case v1.MediaTypeImageLayer, v1.MediaTypeImageLayerGzip, v1.MediaTypeImageLayerZstd,
		MediaTypeDockerLayer, MediaTypeDockerLayerTar:
		return true
	}
	return false
}

// isForeignLayerType reports whether mt is a layer that is not meant to
// be in the image (Windows base layers, fetched from their URLs).
func isForeignLayerType(mt string) bool {
	switch mt {
	// Deprecated in image-spec 1.1, and so refused by name.
	case v1.MediaTypeImageLayerNonDistributable, v1.MediaTypeImageLayerNonDistributableGzip,
		v1.MediaTypeImageLayerNonDistributableZstd, MediaTypeDockerForeignLayer:
		return true
	}
	return false
}

// checkDescriptor checks the fields of d that are used to find its blob.
func checkDescriptor(d v1.Descriptor) error {
	if err := d.Digest.Validate(); err != nil {
		return fmt.Errorf("digest %q: %w", d.Digest, err)
	}
	if d.Size < 0 {
		return fmt.Errorf("blob %s: negative size %d", d.Digest, d.Size)
	}
	return nil
}

// blobPath returns the name of the blob d names in a layout,
// blobs/<alg>/<hex>, after validating the digest: an unvalidated string
// never becomes a path.
func blobPath(d v1.Descriptor) (string, error) {
	if err := checkDescriptor(d); err != nil {
		return "", err
	}
	return v1.ImageBlobsDir + "/" + d.Digest.Algorithm().String() + "/" + d.Digest.Encoded(), nil
}

// parseIndex parses an image index; mediaType is its descriptor's ("" for
// index.json).
func parseIndex(b []byte, mediaType string) (v1.Index, error) {
	var index v1.Index
	if err := json.Unmarshal(b, &index); err != nil {
		return v1.Index{}, err
	}
	if index.SchemaVersion != 2 {
		return v1.Index{}, fmt.Errorf("schemaVersion %d, want 2", index.SchemaVersion)
	}
	if err := checkMediaType(index.MediaType, mediaType, isIndexType); err != nil {
		return v1.Index{}, err
	}
	return index, nil
}

// parseManifest parses and checks an image manifest whose descriptor
// has mediaType.
func parseManifest(b []byte, mediaType string) (v1.Manifest, error) {
	var m v1.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return v1.Manifest{}, err
	}
	if m.SchemaVersion != 2 {
		return v1.Manifest{}, fmt.Errorf("schemaVersion %d, want 2", m.SchemaVersion)
	}
	if err := checkMediaType(m.MediaType, mediaType, isManifestType); err != nil {
		return v1.Manifest{}, err
	}
	if err := checkDescriptor(m.Config); err != nil {
		return v1.Manifest{}, fmt.Errorf("config: %w", err)
	}
	if !isConfigType(m.Config.MediaType) {
		return v1.Manifest{}, fmt.Errorf("config %s: media type %q is not an image config", m.Config.Digest, m.Config.MediaType)
	}
	for i, l := range m.Layers {
		if err := checkDescriptor(l); err != nil {
			return v1.Manifest{}, fmt.Errorf("layers[%d]: %w", i, err)
		}
		switch {
		case isForeignLayerType(l.MediaType):
			return v1.Manifest{}, fmt.Errorf("layers[%d] %s: a non-distributable (foreign) layer, media type %q, URLs %q: not supported", i, l.Digest, l.MediaType, l.URLs)
		case !isLayerType(l.MediaType):
			return v1.Manifest{}, fmt.Errorf("layers[%d] %s: unsupported layer media type %q", i, l.Digest, l.MediaType)
		}
	}
	return m, nil
}

// checkMediaType checks the mediaType field of a document against its
// descriptor's (when there is a descriptor; the field is optional).
func checkMediaType(field, desc string, ok func(string) bool) error {
	switch {
	case field == "":
		return nil
	case desc == "" && !ok(field):
		return fmt.Errorf("unsupported mediaType %q", field)
	case desc != "" && field != desc:
		return fmt.Errorf("mediaType %q, but the descriptor says %q", field, desc)
	}
	return nil
}

// parseConfig parses an image config and checks that it has one diff ID
// for each of the layers layers.
func parseConfig(b []byte, layers int) (v1.Image, error) {
	var cfg v1.Image
	if err := json.Unmarshal(b, &cfg); err != nil {
		return v1.Image{}, err
	}
	if cfg.RootFS.Type != "layers" {
		return v1.Image{}, fmt.Errorf("rootfs.type %q, want \"layers\"", cfg.RootFS.Type)
	}
	if len(cfg.RootFS.DiffIDs) != layers {
		return v1.Image{}, fmt.Errorf("%d rootfs.diff_ids for %d layers", len(cfg.RootFS.DiffIDs), layers)
	}
	for i, id := range cfg.RootFS.DiffIDs {
		if err := id.Validate(); err != nil {
			return v1.Image{}, fmt.Errorf("rootfs.diff_ids[%d] %q: %w", i, id, err)
		}
	}
	return cfg, nil
}

// --- platforms ---

// normalizePlatform spells p's architecture and variant as containerd's
// platforms.Normalize does, so that equal platforms compare equal.
func normalizePlatform(p v1.Platform) v1.Platform {
	p.OS = strings.ToLower(p.OS)
	switch strings.ToLower(p.Architecture) {
	case "x86_64", "x86-64", "amd64":
		p.Architecture = "amd64"
		if p.Variant == "v1" {
			p.Variant = ""
		}
	case "aarch64", "arm64":
		p.Architecture = "arm64"
		switch p.Variant {
		case "8", "v8", "v8.0":
			p.Variant = ""
		}
	case "armhf":
		p.Architecture, p.Variant = "arm", "v7"
	case "armel":
		p.Architecture, p.Variant = "arm", "v6"
	case "arm":
		switch p.Variant {
		case "", "7":
			p.Variant = "v7"
		case "5", "6", "8":
			p.Variant = "v" + p.Variant
		}
	case "i386":
		p.Architecture = "386"
	default:
		p.Architecture = strings.ToLower(p.Architecture)
	}
	return p
}

func platformString(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// selectPlatform returns the index in descs of the manifest for want: the
// first whose platform matches exactly, else for arm the first of an
// older variant the CPU runs too (v7 runs v6 and v5), else the first
// that gives no platform.
func selectPlatform(descs []v1.Descriptor, want v1.Platform) (int, error) {
	want = normalizePlatform(want)
	variants := []string{want.Variant}
	if want.Architecture == "arm" {
		for _, v := range []string{"v7", "v6", "v5"} {
			if v < want.Variant {
				variants = append(variants, v)
			}
		}
	}
	for _, v := range variants {
		for i, d := range descs {
			if d.Platform == nil {
				continue
			}
			p := normalizePlatform(*d.Platform)
			if p.OS == want.OS && p.Architecture == want.Architecture && p.Variant == v {
				return i, nil
			}
		}
	}
	var have []string
	for i, d := range descs {
		if d.Platform == nil {
			return i, nil
		}
		have = append(have, platformString(normalizePlatform(*d.Platform)))
	}
	if len(have) == 0 {
		return 0, fmt.Errorf("no image manifest for %s: the index has none", platformString(want))
	}
	return 0, fmt.Errorf("no image manifest for %s: the index has %s", platformString(want), strings.Join(have, ", "))
}

// --- verified reading ---

// verifiedReader reads a blob and checks it against its descriptor.
type verifiedReader struct {
	name string // "blob sha256:...", for messages; "" if the caller names it
	r    io.Reader
	c    io.Closer
	d    v1.Descriptor
	h    hash.Hash
	n    int64
	err  error // sticky: the end, or what went wrong
}

// newVerifiedReader returns rc checked against d; name names the blob
// in errors.
func newVerifiedReader(rc io.ReadCloser, d v1.Descriptor, name string) io.ReadCloser {
	return &verifiedReader{
		name: name,
		// One byte more than the size shows content that is too long.
		r: io.LimitReader(rc, d.Size+1),
		c: rc,
		d: d,
		h: d.Digest.Algorithm().Hash(),
	}
}

func (v *verifiedReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.r.Read(p)
	tooLong := int64(n) > v.d.Size-v.n
	if tooLong {
		n = int(v.d.Size - v.n)
	}
	v.h.Write(p[:n])
	v.n += int64(n)
	switch {
	case tooLong:
		err = v.errorf("%w: more than the descriptor's %d bytes", ErrSizeMismatch, v.d.Size)
	case err == io.EOF && v.n != v.d.Size:
		err = v.errorf("%w: %d bytes, descriptor says %d (truncated)", ErrSizeMismatch, v.n, v.d.Size)
	case err == io.EOF:
		if got := digest.NewDigest(v.d.Digest.Algorithm(), v.h); got != v.d.Digest {
			err = v.errorf("%w: content is %s", ErrDigestMismatch, got)
		}
	case err != nil:
		err = v.errorf("%w", err)
	}
	v.err = err
	return n, err
}

func (v *verifiedReader) errorf(format string, a ...any) error {
	if v.name == "" {
		return fmt.Errorf(format, a...)
	}
	return fmt.Errorf("%s: "+format, append([]any{v.name}, a...)...)
}

func (v *verifiedReader) Close() error {
	if v.err == nil {
		v.err = fs.ErrClosed
	}
	return v.c.Close()
}

// --- tar archives, read in place ---

// errNotTar is what indexTar returns when the file does not start with a
// tar header.
var errNotTar = errors.New("not a tar")

// tarIndex lists the entries of an uncompressed tar file by clean name.
type tarIndex struct {
	f     *os.File
	files map[string]tarEntry // regular files
	links map[string]string   // symlinks, to their targets as given
	// firstLink is the first symlink in the tar, for messages.
	firstLink string
	// sawImageFile is set if a name is one of an image archive's
	// (isImageFileName).
	sawImageFile bool
	// bad is the first entry that an image archive must not hold
	// (escaping name, hard link, device, duplicate). It is an error only
	// once the tar is known to be an image archive: a root filesystem
	// tarball may hold anything.
	bad error
}

// tarEntry locates a regular file's content in the tar.
type tarEntry struct{ off, size int64 }

// indexTar reads the headers of the tar f, seeking over the contents.
// On an error, the index of the entries before it is returned too.
func indexTar(f *os.File) (*tarIndex, error) {
	ix := &tarIndex{f: f, files: map[string]tarEntry{}, links: map[string]string{}}
	fi, err := f.Stat()
	if err != nil {
		return ix, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return ix, err
	}
	seen := map[string]bool{}
	// archive/tar reads exactly the blocks of a header and seeks over
	// contents (f is an io.Seeker), so f's offset after Next is where the
	// entry's content starts.
	tr := tar.NewReader(f)
	for n := 0; ; n++ {
		hdr, err := tr.Next()
		if err == io.EOF {
			if n == 0 {
				return ix, errNotTar
			}
			return ix, nil
		}
		if err != nil {
			if n == 0 {
				return ix, errNotTar
			}
			return ix, fmt.Errorf("tar header after %d entries: %w", n, err)
		}
		if n >= tarMaxEntries {
			return ix, fmt.Errorf("more than %d entries", tarMaxEntries)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue // PAX defaults, as git archive writes them
		}
		if isSparse(hdr) {
			// The content is not stored as it is read: it cannot be
			// served from an offset.
			ix.badEntry(fmt.Errorf("entry %q: a sparse file", hdr.Name))
			continue
		}
		off, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			return ix, err
		}
		name, err := cleanTarName(hdr.Name)
		if err != nil {
			ix.badEntry(fmt.Errorf("entry %q: %w", hdr.Name, err))
			continue
		}
		if name == "." {
			continue
		}
		if seen[name] {
			ix.badEntry(fmt.Errorf("entry %q: a duplicate", hdr.Name))
			continue
		}
		seen[name] = true
		switch hdr.Typeflag {
		case tar.TypeReg: // archive/tar reads the old TypeRegA as TypeReg
			ix.sawImageFile = ix.sawImageFile || isImageFileName(name)
			if hdr.Size < 0 || off+hdr.Size > fi.Size() {
				return ix, fmt.Errorf("entry %q: truncated (%d bytes at offset %d)", hdr.Name, hdr.Size, off)
			}
			ix.files[name] = tarEntry{off, hdr.Size}
		case tar.TypeDir:
		case tar.TypeSymlink:
			ix.links[name] = hdr.Linkname
			if ix.firstLink == "" {
				ix.firstLink = name
			}
		default:
			ix.badEntry(fmt.Errorf("entry %q: type %q, which an image archive must not hold", hdr.Name, hdr.Typeflag))
		}
	}
}

// isSparse reports whether hdr is a sparse file in the PAX dialects
// (archive/tar reports those as TypeReg; the GNU one is TypeGNUSparse).
func isSparse(hdr *tar.Header) bool {
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// isImageArchive reports whether the tar holds files that only an OCI
// archive or a docker save archive would (isImageFileName).
func (ix *tarIndex) isImageArchive() bool {
	return ix.sawImageFile
}

// isImageFileName reports whether name, a regular file's, is one only
// an image archive would hold: oci-layout, manifest.json,
// blobs/<alg>/<hex>, or docker's old <hex>.json and <hex>/layer.tar.
func isImageFileName(name string) bool {
	if name == v1.ImageLayoutFile || name == dockerManifestFile {
		return true
	}
	if rest, ok := strings.CutPrefix(name, v1.ImageBlobsDir+"/"); ok {
		alg, enc, _ := strings.Cut(rest, "/")
		return digest.NewDigestFromEncoded(digest.Algorithm(alg), enc).Validate() == nil
	}
	hex, ok := strings.CutSuffix(name, ".json")
	if !ok {
		hex, ok = strings.CutSuffix(name, "/layer.tar")
	}
	return ok && digest.NewDigestFromEncoded(digest.SHA256, hex).Validate() == nil
}

func (ix *tarIndex) badEntry(err error) {
	if ix.bad == nil {
		ix.bad = err
	}
}

// cleanTarName returns the clean name of a tar entry ("./x" is "x"). An
// absolute name or one with a ".." element is refused: it would name a
// file outside the archive if it were extracted, which is enough to
// distrust the archive.
func cleanTarName(name string) (string, error) {
	if name == "" {
		return "", errors.New("an empty name")
	}
	if strings.HasPrefix(name, "/") {
		return "", errors.New("an absolute name")
	}
	for _, e := range strings.Split(name, "/") {
		if e == ".." {
			return "", errors.New(`a ".." in the name`)
		}
	}
	return path.Clean(name), nil
}

// resolve returns the regular file that name, a path inside the archive
// as a docker manifest.json gives it, is or links to; symlinks are
// followed inside the index only.
func (ix *tarIndex) resolve(name string) (tarEntry, string, error) {
	n, err := cleanTarName(name)
	if err != nil {
		return tarEntry{}, "", fmt.Errorf("%q: %w", name, err)
	}
	for range linkMaxHops {
		if e, ok := ix.files[n]; ok {
			return e, n, nil
		}
		target, ok := ix.links[n]
		if !ok {
			return tarEntry{}, "", fmt.Errorf("%q: not in the archive: %w", name, fs.ErrNotExist)
		}
		if strings.HasPrefix(target, "/") {
			return tarEntry{}, "", fmt.Errorf("%q: links to %q, outside the archive", name, target)
		}
		n = path.Join(path.Dir(n), target)
		if n == ".." || strings.HasPrefix(n, "../") {
			return tarEntry{}, "", fmt.Errorf("%q: links to %q, outside the archive", name, target)
		}
	}
	return tarEntry{}, "", fmt.Errorf("%q: more than %d links", name, linkMaxHops)
}

func (ix *tarIndex) section(e tarEntry) *io.SectionReader {
	return io.NewSectionReader(ix.f, e.off, e.size)
}

// --- docker save archives ---

// dockerManifest is one image of a docker save archive's manifest.json
// (moby image/tarexport/tarexport.go, manifestItem).
type dockerManifest struct {
	Config       string
	RepoTags     []string
	Layers       []string
	LayerSources map[digest.Digest]v1.Descriptor `json:",omitempty"`
}

// dockerLayer is what hashing a layer file of a docker archive found.
type dockerLayer struct {
	digest    digest.Digest // of the file
	diffID    digest.Digest // of the file, decompressed
	mediaType string
}

// dockerSource reads a docker save archive.
type dockerSource struct {
	ix    *tarIndex
	close func() error
	once  sync.Once

	mu     sync.Mutex
	layers map[string]dockerLayer // by resolved entry name
}

func (s *dockerSource) Close() error {
	err := fs.ErrClosed
	s.once.Do(func() { err = s.close() })
	return err
}

// Images lists the images of manifest.json, one for each of its RepoTags
// (or one with no name). A docker save archive has one platform per
// image, so platform is not used: the caller may check Config.
func (s *dockerSource) Images(platform *v1.Platform) ([]Image, error) {
	e, ok := s.ix.files[dockerManifestFile]
	if !ok {
		return nil, fmt.Errorf("%s: not in the archive", dockerManifestFile)
	}
	if e.size > metaMaxSize {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d allowed", dockerManifestFile, e.size, metaMaxSize)
	}
	b, err := io.ReadAll(s.ix.section(e))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dockerManifestFile, err)
	}
	var items []dockerManifest
	if err := json.Unmarshal(b, &items); err != nil {
		return nil, fmt.Errorf("%s: %w", dockerManifestFile, err)
	}
	var images []Image
	for i, item := range items {
		img, err := s.image(item)
		if err != nil {
			return nil, fmt.Errorf("%s: [%d] %q: %w", dockerManifestFile, i, item.RepoTags, err)
		}
		if len(item.RepoTags) == 0 {
			images = append(images, img)
		}
		for _, tag := range item.RepoTags {
			img.RefName = tag
			images = append(images, img)
		}
	}
	return images, nil
}

// image reads and checks the config and layers of one item of
// manifest.json, and synthesizes its OCI manifest.
func (s *dockerSource) image(item dockerManifest) (Image, error) {
	if item.Config == "" {
		return Image{}, errors.New("no Config")
	}
	ce, cname, err := s.ix.resolve(item.Config)
	if err != nil {
		return Image{}, fmt.Errorf("config %w", err)
	}
	if ce.size > metaMaxSize {
		return Image{}, fmt.Errorf("config %q: %d bytes, more than the %d allowed", cname, ce.size, metaMaxSize)
	}
	cb, err := io.ReadAll(s.ix.section(ce))
	if err != nil {
		return Image{}, fmt.Errorf("config %q: %w", cname, err)
	}
	cd := digest.FromBytes(cb)
	if named, ok := dockerNameDigest(cname); ok && named != cd {
		return Image{}, fmt.Errorf("config %q: %w: content is %s", cname, ErrDigestMismatch, cd)
	}
	cfg, err := parseConfig(cb, len(item.Layers))
	if err != nil {
		return Image{}, fmt.Errorf("config %q: %w", cname, err)
	}
	m := v1.Manifest{
		MediaType: v1.MediaTypeImageManifest,
		Config:    v1.Descriptor{MediaType: v1.MediaTypeImageConfig, Digest: cd, Size: int64(len(cb))},
		Layers:    make([]v1.Descriptor, len(item.Layers)),
	}
	m.SchemaVersion = 2
	files := map[digest.Digest]tarEntry{cd: ce}
	names := map[digest.Digest]string{cd: cname}
	for i, lpath := range item.Layers {
		diffID := cfg.RootFS.DiffIDs[i]
		if src, ok := item.LayerSources[diffID]; ok && (isForeignLayerType(src.MediaType) || len(src.URLs) > 0) {
			return Image{}, fmt.Errorf("layer %q: a non-distributable (foreign) layer, media type %q, URLs %q: not supported", lpath, src.MediaType, src.URLs)
		}
		le, lname, err := s.ix.resolve(lpath)
		if err != nil {
			return Image{}, fmt.Errorf("layer %w", err)
		}
		l, err := s.layer(le, lname)
		if err != nil {
			return Image{}, fmt.Errorf("layer %q: %w", lname, err)
		}
		if l.diffID != diffID {
			return Image{}, fmt.Errorf("layer %q: diff ID %s, but the config's rootfs.diff_ids[%d] is %s", lname, l.diffID, i, diffID)
		}
		m.Layers[i] = v1.Descriptor{MediaType: l.mediaType, Digest: l.digest, Size: le.size}
		files[l.digest] = le
		names[l.digest] = lname
	}
	mb, err := json.Marshal(m)
	if err != nil {
		return Image{}, err
	}
	md := digest.FromBytes(mb)
	open := func(d v1.Descriptor) (io.ReadCloser, error) {
		if err := checkDescriptor(d); err != nil {
			return nil, err
		}
		if d.Digest == md {
			return newVerifiedReader(io.NopCloser(bytes.NewReader(mb)), d, "manifest "+string(md)), nil
		}
		e, ok := files[d.Digest]
		if !ok {
			return nil, fmt.Errorf("blob %s: not in this image: %w", d.Digest, fs.ErrNotExist)
		}
		name := fmt.Sprintf("blob %s (%q)", d.Digest, names[d.Digest])
		return newVerifiedReader(io.NopCloser(s.ix.section(e)), d, name), nil
	}
	return Image{
		Manifest:       m,
		ManifestBytes:  mb,
		ManifestDigest: md,
		Config:         cfg,
		ConfigBytes:    cb,
		ConfigDigest:   cd,
		Open:           open,
	}, nil
}

// layer hashes the layer file e (once per archive): its digest, and
// that of its decompressed content.
func (s *dockerSource) layer(e tarEntry, name string) (dockerLayer, error) {
	s.mu.Lock()
	l, ok := s.layers[name]
	s.mu.Unlock()
	if ok {
		return l, nil
	}
	var magic [4]byte
	n, _ := s.ix.f.ReadAt(magic[:], e.off)
	if int64(n) > e.size {
		n = int(e.size)
	}
	blob := sha256.New()
	r := io.TeeReader(s.ix.section(e), blob)
	l.mediaType = v1.MediaTypeImageLayer
	var dec io.Reader = r
	switch {
	case bytes.HasPrefix(magic[:n], []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(r)
		if err != nil {
			return l, fmt.Errorf("gzip: %w", err)
		}
		l.mediaType, dec = v1.MediaTypeImageLayerGzip, zr
	case bytes.HasPrefix(magic[:n], []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return l, fmt.Errorf("zstd: %w", err)
		}
		defer zr.Close()
		l.mediaType, dec = v1.MediaTypeImageLayerZstd, zr
	}
	diff := sha256.New()
	if _, err := io.Copy(diff, dec); err != nil {
		return l, err
	}
	// What the decompressor left unread is part of the blob too.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return l, err
	}
	l.digest = digest.NewDigest(digest.SHA256, blob)
	l.diffID = digest.NewDigest(digest.SHA256, diff)
	if named, ok := dockerNameDigest(name); ok && named != l.digest {
		return l, fmt.Errorf("%w: content is %s", ErrDigestMismatch, l.digest)
	}
	s.mu.Lock()
	s.layers[name] = l
	s.mu.Unlock()
	return l, nil
}

// dockerNameDigest returns the digest a file name of a docker archive
// gives its content: "blobs/sha256/<hex>" or "<hex>.json".
func dockerNameDigest(name string) (digest.Digest, bool) {
	var hex string
	switch {
	case strings.HasPrefix(name, "blobs/sha256/"):
		hex = strings.TrimPrefix(name, "blobs/sha256/")
	case !strings.Contains(name, "/") && strings.HasSuffix(name, ".json"):
		hex = strings.TrimSuffix(name, ".json")
	default:
		return "", false
	}
	d := digest.NewDigestFromEncoded(digest.SHA256, hex)
	return d, d.Validate() == nil
}
