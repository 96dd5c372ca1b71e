package oci

import (
	"errors"
	"fmt"
	"strings"
)

// The transports of image locations, spelled as skopeo and podman spell
// them: "oci:DIR[:TAG]", "oci-archive:FILE[:TAG]",
// "docker-archive:FILE[:REF]" and "docker://REF".
const (
	TransportLayout        = "oci"
	TransportArchive       = "oci-archive"
	TransportDockerArchive = "docker-archive"
	TransportRegistry      = "docker"
)

// A Location is where an image is read from or written to.
type Location struct {
	// Transport is one of the Transport constants, or "" for a bare
	// path, whose kind its caller decides (a directory or a file).
	Transport string
	// Path is the directory or file; for TransportRegistry, the
	// reference after "docker://". "-" is standard input or output.
	Path string
	// Ref picks an image, or names the one written: an OCI ref name
	// (org.opencontainers.image.ref.name, a tag like "v2") for oci and
	// oci-archive, a reference ("busybox:latest") for docker-archive;
	// "" if none was given.
	Ref string
}

// String gives back the location as it is spelled.
func (l Location) String() string {
	switch l.Transport {
	case "":
		return l.Path
	case TransportRegistry:
		return "docker://" + l.Path
	}
	s := l.Transport + ":" + l.Path
	if l.Ref != "" {
		s += ":" + l.Ref
	}
	return s
}

// IsRegistry reports whether s names an image in a registry
// ("docker://REF"), which import and export do not read or write.
func IsRegistry(s string) bool {
	return strings.HasPrefix(s, "docker://")
}

// ParseLocation parses an image location:
//
//   - "oci:DIR[:TAG]" and "oci-archive:FILE[:TAG]": the part after the
//     last colon is the tag only when it is a valid OCI ref name without
//     a colon or a slash ("oci:/a:b/c" is the directory "/a:b/c", and
//     "oci:/a:b" the directory "/a" with the tag "b");
//   - "docker-archive:FILE[:REF]": as skopeo reads it, the first colon
//     ends FILE, and REF is an image reference, which may hold colons
//     itself ("docker-archive:x.tar:localhost:5000/app:v1");
//   - "docker://REF";
//   - anything else is a bare path (kept whole, colons and all).
func ParseLocation(s string) (Location, error) {
	if s == "" {
		return Location{}, errors.New("empty image location: give a path, or oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:REF]")
	}
	if IsRegistry(s) {
		ref := strings.TrimPrefix(s, "docker://")
		if ref == "" {
			return Location{}, fmt.Errorf("%q: no image reference after docker://", s)
		}
		return Location{Transport: TransportRegistry, Path: ref}, nil
	}
	transport, rest, ok := strings.Cut(s, ":")
	if !ok {
		return Location{Path: s}, nil
	}
	switch transport {
	case TransportLayout, TransportArchive:
		loc := Location{Transport: transport, Path: rest}
		if i := strings.LastIndexByte(rest, ':'); i >= 0 && validTag(rest[i+1:]) {
			loc.Path, loc.Ref = rest[:i], rest[i+1:]
		} else if i >= 0 && rest[i+1:] == "" {
			loc.Path = rest[:i] // "oci:DIR:" names no tag
		}
		if loc.Path == "" {
			return Location{}, fmt.Errorf("%q: no path after %s:", s, transport)
		}
		return loc, nil
	case TransportDockerArchive:
		path, ref, _ := strings.Cut(rest, ":")
		if path == "" {
			return Location{}, fmt.Errorf("%q: no file after %s:", s, transport)
		}
		return Location{Transport: transport, Path: path, Ref: ref}, nil
	case "docker", "dir", "containers-storage", "docker-daemon":
		return Location{}, fmt.Errorf("%q: transport %q is not supported here: use oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:REF] (and 'strata pull'/'strata push' for docker://REF)", s, transport)
	}
	// "./a:b", "backup:2024.tar": a path with a colon.
	return Location{Path: s}, nil
}

// validTag reports whether s may be the tag of an oci: or oci-archive:
// location: an OCI ref name with no colon or slash, at most 128
// characters (docker's tag length).
func validTag(s string) bool {
	return s != "" && len(s) <= 128 && !strings.ContainsAny(s, ":/") && validRefName(s)
}
