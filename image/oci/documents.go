package oci

import (
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// The checks of this package, for documents read from elsewhere (a
// registry) by the same rules as those read from a layout.

// IsIndexType reports whether mt is an OCI index or a docker manifest list.
func IsIndexType(mt string) bool { return isIndexType(mt) }

// IsManifestType reports whether mt is an OCI or docker image manifest.
func IsManifestType(mt string) bool { return isManifestType(mt) }

// ParseIndex parses and checks an image index of media type mediaType.
func ParseIndex(b []byte, mediaType string) (v1.Index, error) { return parseIndex(b, mediaType) }

// ParseManifest parses and checks an image manifest of media type
// mediaType: its config and layers are of types strata reads.
func ParseManifest(b []byte, mediaType string) (v1.Manifest, error) {
	return parseManifest(b, mediaType)
}

// ParseConfig parses an image config and checks that it has one diff
// ID for each of layers layers.
func ParseConfig(b []byte, layers int) (v1.Image, error) { return parseConfig(b, layers) }

// SelectPlatform returns the index in descs of the manifest for want,
// by the rules of Source.Images.
func SelectPlatform(descs []v1.Descriptor, want v1.Platform) (int, error) {
	return selectPlatform(descs, want)
}
