//go:build linux

// Package layer reads and writes OCI image layers (image-spec layer.md):
// Apply extracts a layer tarball into a directory in the union
// filesystem's upper format, Write encodes the changes held in an upper
// directory as a layer tarball, and Changes lists them as `docker diff`
// does.
//
// An upper directory is what cow writes and kernel overlayfs reads, in
// the format package ovl reads and writes: whiteouts are character
// devices 0/0 (or, where mknod is not allowed, ".wh.<name>" files),
// opaque directories carry trusted.overlay.opaque=y (or
// user.overlay.opaque=y, or a ".wh..wh..opq" file); renamed directories
// carry a redirect and metadata-only copies a metacopy record, both
// referring to the lower layers, which Write and Changes are given. Every
// dialect is read; the kernel's is written where possible (ovl.Probe).
// OCI layers hold no redirect or metacopy: Write resolves them, and Apply
// drops every overlay xattr a tar carries.
package layer

import "github.com/opencontainers/go-digest"

// Compression names a layer's compression.
type Compression int

const (
	Uncompressed Compression = iota
	Gzip
	Zstd
)

// String returns "none", "gzip" or "zstd".
func (c Compression) String() string {
	switch c {
	case Gzip:
		return "gzip"
	case Zstd:
		return "zstd"
	}
	return "none"
}

// Media types of the layers strata writes and reads (image-spec
// media-types.md).
const (
	MediaTypeTar  = "application/vnd.oci.image.layer.v1.tar"
	MediaTypeGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
	MediaTypeZstd = "application/vnd.oci.image.layer.v1.tar+zstd"
)

// MediaType returns the OCI layer media type for c.
func (c Compression) MediaType() string {
	switch c {
	case Gzip:
		return MediaTypeGzip
	case Zstd:
		return MediaTypeZstd
	}
	return MediaTypeTar
}

// Descriptor describes a layer blob: its compressed digest and size, and
// the diff ID (digest of the uncompressed tar) with the tar's size.
type Descriptor struct {
	MediaType        string
	Digest           digest.Digest
	Size             int64
	DiffID           digest.Digest
	UncompressedSize int64
}

// ChangeKind is the kind of a change, as `docker diff` prints it.
type ChangeKind byte

const (
	Added    ChangeKind = 'A'
	Modified ChangeKind = 'C'
	Deleted  ChangeKind = 'D'
)

// Change is one changed path, absolute ("/etc/passwd").
type Change struct {
	Kind ChangeKind
	Path string
}
