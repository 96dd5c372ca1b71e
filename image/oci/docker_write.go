package oci

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// DockerImage is an image to write as a docker save archive.
type DockerImage struct {
	Config          []byte // the config JSON, as stored
	ConfigMediaType string // "" means the OCI config type
	// Name is the image's full reference ("docker.io/library/busybox:latest"),
	// or "" for an image without a name.
	Name string
	// Layers are the image's layers, bottom first, uncompressed.
	Layers []DockerLayer
}

// DockerLayer is one uncompressed layer of a DockerImage.
type DockerLayer struct {
	DiffID digest.Digest // the digest of the uncompressed tar
	Size   int64         // its size in bytes
	// Open returns the uncompressed tar; what it reads is checked
	// against DiffID and Size.
	Open func() (io.ReadCloser, error)
}

// WriteDockerArchive writes im to w as `docker save` (Docker 25 and
// later) writes an image: every blob under blobs/sha256/<hex> (the
// config, the layers uncompressed, an OCI manifest of them), an OCI
// layout (oci-layout, index.json naming the image), and manifest.json
// with Config, RepoTags and Layers, which older docker load and skopeo's
// docker-archive transport read. familiar is the name in RepoTags
// ("busybox:latest"). Like WriteArchive, the tar is reproducible.
func WriteDockerArchive(w io.Writer, im DockerImage, familiar string) error {
	cd := digest.FromBytes(im.Config)
	cmt := im.ConfigMediaType
	if cmt == "" {
		cmt = v1.MediaTypeImageConfig
	}
	m := v1.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: v1.MediaTypeImageManifest,
		Config:    v1.Descriptor{MediaType: cmt, Digest: cd, Size: int64(len(im.Config))},
		Layers:    make([]v1.Descriptor, len(im.Layers)),
	}
	dm := dockerManifest{Config: blobName(cd), Layers: make([]string, len(im.Layers))}
	if familiar != "" {
		dm.RepoTags = []string{familiar}
	}
	for i, l := range im.Layers {
		if err := l.DiffID.Validate(); err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
		m.Layers[i] = v1.Descriptor{MediaType: v1.MediaTypeImageLayer, Digest: l.DiffID, Size: l.Size}
		dm.Layers[i] = blobName(l.DiffID)
	}
	mb, err := json.Marshal(m)
	if err != nil {
		return err
	}
	md := v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: digest.FromBytes(mb), Size: int64(len(mb))}
	if im.Name != "" {
		md.Annotations = map[string]string{AnnotationContainerdImageName: im.Name}
		if tag := tagOf(im.Name); tag != "" {
			md.Annotations[v1.AnnotationRefName] = tag
		}
	}
	index := v1.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageIndex, Manifests: []v1.Descriptor{md}}
	ib, err := json.Marshal(index)
	if err != nil {
		return err
	}
	dmb, err := json.Marshal([]dockerManifest{dm})
	if err != nil {
		return err
	}
	lb, err := json.Marshal(v1.ImageLayout{Version: v1.ImageLayoutVersion})
	if err != nil {
		return err
	}

	tw := tar.NewWriter(w)
	for _, d := range []string{v1.ImageBlobsDir, v1.ImageBlobsDir + "/sha256"} {
		if err := writeArchiveDir(tw, d); err != nil {
			return err
		}
	}
	written := map[digest.Digest]bool{}
	// Blobs in digest order, as a directory listing gives them.
	type blob struct {
		d    digest.Digest
		size int64
		open func() (io.ReadCloser, error)
	}
	blobs := []blob{
		{cd, int64(len(im.Config)), bytesOpener(im.Config)},
		{md.Digest, md.Size, bytesOpener(mb)},
	}
	for _, l := range im.Layers {
		blobs = append(blobs, blob{l.DiffID, l.Size, l.Open})
	}
	sortBlobs := func(i, j int) bool { return blobs[i].d < blobs[j].d }
	for i := 1; i < len(blobs); i++ { // insertion sort: a handful of blobs
		for j := i; j > 0 && sortBlobs(j, j-1); j-- {
			blobs[j], blobs[j-1] = blobs[j-1], blobs[j]
		}
	}
	for _, b := range blobs {
		if written[b.d] {
			continue
		}
		written[b.d] = true
		if err := writeTarBlob(tw, blobName(b.d), b.d, b.size, b.open); err != nil {
			return err
		}
	}
	for _, f := range []struct {
		name string
		b    []byte
	}{{v1.ImageIndexFile, ib}, {dockerManifestFile, dmb}, {v1.ImageLayoutFile, lb}} {
		if err := writeTarBlob(tw, f.name, "", int64(len(f.b)), bytesOpener(f.b)); err != nil {
			return err
		}
	}
	return tw.Close()
}

func blobName(d digest.Digest) string {
	return v1.ImageBlobsDir + "/" + d.Algorithm().String() + "/" + d.Encoded()
}

// tagOf is the tag of a full reference "name:tag" ("" if none).
func tagOf(ref string) string {
	for i := len(ref) - 1; i >= 0; i-- {
		switch ref[i] {
		case ':':
			return ref[i+1:]
		case '/', '@':
			return ""
		}
	}
	return ""
}

func bytesOpener(b []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

// writeTarBlob writes one file of size bytes, checking its digest d
// unless d is "".
func writeTarBlob(tw *tar.Writer, name string, d digest.Digest, size int64, open func() (io.ReadCloser, error)) (err error) {
	rc, err := open()
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer func() { err = errors.Join(err, rc.Close()) }()
	err = tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Size:     size,
		Mode:     0o644,
		ModTime:  time.Unix(0, 0),
		Format:   tar.FormatPAX,
	})
	if err != nil {
		return err
	}
	var r io.Reader = rc
	if d != "" {
		r = newVerifiedReader(io.NopCloser(rc), v1.Descriptor{Digest: d, Size: size}, name)
	}
	_, err = io.Copy(tw, r)
	return err
}
