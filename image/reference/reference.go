// Package reference parses image references the way docker does: the
// grammar of github.com/distribution/reference and docker's normalization
// of "familiar" names (ParseNormalizedNamed).
//
// Grammar (distribution/reference):
//
//	reference        := name [ ":" tag ] [ "@" digest ]
//	name             := [ domain "/" ] path
//	domain           := host [ ":" port ]
//	host             := domain-name | "[" ipv6 "]"
//	domain-name      := domain-component [ "." domain-component ]*
//	domain-component := /[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]/
//	port             := /[0-9]+/
//	ipv6             := /[a-fA-F0-9:]+/
//	path             := path-component [ "/" path-component ]*
//	path-component   := alnum [ separator alnum ]*
//	alnum            := /[a-z0-9]+/
//	separator        := /[._]|__|-+/
//	tag              := /[\w][\w.-]{0,127}/
//	digest           := "sha256:" /[a-f0-9]{64}/   (validated by go-digest)
//
// Normalization (docker):
//
//   - The first "/"-separated component is a domain if it contains "." or
//     ":" or is "localhost"; otherwise the domain is "docker.io". A name
//     without "/" never has a domain, so "localhost:5000" is the image
//     docker.io/library/localhost with tag "5000", as in docker.
//   - "index.docker.io" is written "docker.io".
//   - On docker.io a one-component path gets the "library/" prefix of
//     official images: "nginx" is docker.io/library/nginx.
//   - The full name (domain "/" path) is at most 255 characters.
//   - A bare 64-hex string is an image ID, never a name; callers that accept
//     IDs check IsDigestID first, as docker does. ("sha256:<hex>" alone
//     parses as the image "sha256" with a tag, also as in docker.)
//
// Where this package differs from distribution/reference:
//
//   - A first component with uppercase letters and no "." or ":"
//     ("Foo/bar") is not taken as a domain; the name is rejected as not
//     lowercase.
//   - A first component that looks like a domain but is not valid as one
//     ("foo_bar.com/x") is an error; distribution/reference quietly parses
//     it as a path with no domain.
//   - Only sha256 digests are accepted.
package reference

import (
	// go-digest validates a sha256 digest only when the hash is linked in.
	_ "crypto/sha256"
	"errors"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
)

const (
	// DefaultDomain is the domain of Docker Hub in normalized names.
	DefaultDomain = "docker.io"
	// legacyDomain is Docker Hub's old "index" name, normalized to
	// DefaultDomain.
	legacyDomain = "index.docker.io"
	// officialPrefix is the Docker Hub namespace of official images.
	officialPrefix = "library/"
	// localhost is always a domain, even without "." or ":".
	localhost = "localhost"
	// DefaultTag is the tag Parse fills in when neither tag nor digest is
	// given.
	DefaultTag = "latest"
	// NameMaxLength is the longest full name (domain "/" path) accepted.
	NameMaxLength = 255
	// tagMaxLength is the longest tag the grammar accepts.
	tagMaxLength = 128
)

var (
	// ErrInvalid is wrapped by every error Parse returns.
	ErrInvalid = errors.New("invalid reference")
	// ErrUppercase is returned when the repository path has uppercase
	// letters.
	ErrUppercase = errors.New("repository name must be lowercase")
	// ErrTooLong is returned when the full name is longer than
	// NameMaxLength.
	ErrTooLong = fmt.Errorf("repository name must not be more than %d characters", NameMaxLength)
	// ErrImageID is returned for a bare 64-hex string, which docker takes
	// for an image ID and refuses as a name.
	ErrImageID = errors.New("cannot specify 64-byte hexadecimal strings (that is an image ID, not a name)")
)

// Reference is a parsed, normalized image reference.
type Reference struct {
	Domain string        // "docker.io", "localhost:5000", "registry.example.com"
	Path   string        // "library/nginx", "user/repo"
	Tag    string        // "" when only a digest was given; Parse fills "latest" when neither was
	Digest digest.Digest // "" unless "@sha256:..." was given
}

// Parse parses and normalizes s: "nginx" becomes
// docker.io/library/nginx:latest, "user/repo:tag" docker.io/user/repo:tag,
// "host:5000/repo" keeps its domain. A tag and a digest may both be given
// and are both kept. Errors wrap ErrInvalid and name s.
func Parse(s string) (Reference, error) {
	r, err := parse(s)
	if err != nil {
		return Reference{}, fmt.Errorf("%w %q: %w", ErrInvalid, s, err)
	}
	return r, nil
}

func parse(s string) (Reference, error) {
	if s == "" {
		return Reference{}, errors.New("empty reference")
	}
	if isHex64(s) {
		return Reference{}, ErrImageID
	}

	// No part before the digest may contain '@', so the first '@' starts
	// the digest.
	rest, dgst, hasDigest := strings.Cut(s, "@")

	var r Reference
	first, remainder, hasSlash := strings.Cut(rest, "/")
	if hasSlash && (strings.ContainsAny(first, ".:") || first == localhost) {
		if err := checkDomain(first); err != nil {
			return Reference{}, err
		}
		r.Domain = first
		rest = remainder
	} else {
		r.Domain = DefaultDomain
	}
	if r.Domain == legacyDomain {
		r.Domain = DefaultDomain
	}

	// A path never contains ':', so the first one starts the tag.
	path, tag, hasTag := strings.Cut(rest, ":")
	if path == "" {
		return Reference{}, errors.New("missing repository name")
	}
	if r.Domain == DefaultDomain && !strings.Contains(path, "/") {
		path = officialPrefix + path
	}
	if err := checkPath(path); err != nil {
		return Reference{}, err
	}
	r.Path = path
	if n := len(r.Domain) + 1 + len(r.Path); n > NameMaxLength {
		return Reference{}, fmt.Errorf("%w (got %d)", ErrTooLong, n)
	}

	if hasTag {
		if err := checkTag(tag); err != nil {
			return Reference{}, err
		}
		r.Tag = tag
	}
	if hasDigest {
		d, err := parseDigest(dgst)
		if err != nil {
			return Reference{}, err
		}
		r.Digest = d
	}
	if !hasTag && !hasDigest {
		r.Tag = DefaultTag
	}
	return r, nil
}

// checkDomain checks host [":" port], host being a domain name or a
// bracketed IPv6 address.
func checkDomain(d string) error {
	host, port, hasPort := d, "", false
	if strings.HasPrefix(d, "[") {
		end := strings.IndexByte(d, ']')
		if end < 0 {
			return fmt.Errorf("invalid domain %q: unclosed '['", d)
		}
		host = d[:end+1]
		switch after := d[end+1:]; {
		case after == "":
		case after[0] == ':':
			port, hasPort = after[1:], true
		default:
			return fmt.Errorf("invalid domain %q: unexpected %q after ']'", d, after)
		}
		if !validIPv6(host[1 : len(host)-1]) {
			return fmt.Errorf("invalid domain %q: bad IPv6 address %s", d, host)
		}
	} else {
		host, port, hasPort = strings.Cut(d, ":")
		if !validDomainName(host) {
			return fmt.Errorf("invalid domain %q: want letters, digits and '-' in '.'-separated parts, each starting and ending with a letter or digit", d)
		}
	}
	if hasPort && !validPort(port) {
		return fmt.Errorf("invalid domain %q: port %q is not a number", d, port)
	}
	return nil
}

func validDomainName(s string) bool {
	for c := range strings.SplitSeq(s, ".") {
		if c == "" || c[0] == '-' || c[len(c)-1] == '-' {
			return false
		}
		for i := 0; i < len(c); i++ {
			if !isAlnum(c[i]) && c[i] != '-' {
				return false
			}
		}
	}
	return true
}

func validIPv6(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isHexDigit(s[i]) && s[i] != ':' {
			return false
		}
	}
	return true
}

func validPort(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// checkPath checks the repository path, "/"-separated path components.
func checkPath(path string) error {
	// Docker reports uppercase before anything else, whatever else is wrong.
	if strings.ToLower(path) != path {
		return ErrUppercase
	}
	for c := range strings.SplitSeq(path, "/") {
		if c == "" {
			return fmt.Errorf("invalid repository name %q: empty path component", path)
		}
		if !validComponent(c) {
			return fmt.Errorf("invalid repository name component %q: want [a-z0-9] separated by one '.', one '_', \"__\", or '-'s", c)
		}
	}
	return nil
}

// validComponent reports whether c is alnum [separator alnum]*, with
// alnum = [a-z0-9]+ and separator = "." | "_" | "__" | "-"+.
func validComponent(c string) bool {
	i := 0
	for {
		start := i
		for i < len(c) && isLowerAlnum(c[i]) {
			i++
		}
		if i == start {
			return false // empty, leading separator, or two separators
		}
		if i == len(c) {
			return true
		}
		switch c[i] {
		case '.':
			i++
		case '_':
			i++
			if i < len(c) && c[i] == '_' {
				i++
			}
		case '-':
			for i < len(c) && c[i] == '-' {
				i++
			}
		default:
			return false
		}
		// The next round needs an alnum run: a trailing separator fails.
	}
}

// checkTag checks tag against [\w][\w.-]{0,127}.
func checkTag(tag string) error {
	if tag == "" {
		return errors.New("empty tag after ':'")
	}
	if len(tag) > tagMaxLength {
		return fmt.Errorf("tag is %d characters, more than %d", len(tag), tagMaxLength)
	}
	for i := 0; i < len(tag); i++ {
		b := tag[i]
		if isAlnum(b) || b == '_' || (i > 0 && (b == '.' || b == '-')) {
			continue
		}
		return fmt.Errorf("invalid tag %q: want letters, digits, '_', '.' and '-', not starting with '.' or '-'", tag)
	}
	return nil
}

func parseDigest(s string) (digest.Digest, error) {
	if s == "" {
		return "", errors.New("empty digest after '@'")
	}
	alg, _, ok := strings.Cut(s, ":")
	if !ok {
		return "", fmt.Errorf("invalid digest %q: want sha256:<64 hex digits>", s)
	}
	if digest.Algorithm(alg) != digest.SHA256 {
		return "", fmt.Errorf("unsupported digest algorithm %q: only sha256 is accepted", alg)
	}
	d, err := digest.Parse(s)
	if err != nil {
		return "", fmt.Errorf("invalid digest %q: %w", s, err)
	}
	return d, nil
}

// IsDigestID reports whether s is an image ID rather than a name: 64
// lowercase hex digits, bare or prefixed with "sha256:". Docker checks this
// before parsing a reference.
func IsDigestID(s string) bool {
	return isHex64(strings.TrimPrefix(s, "sha256:"))
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !('0' <= s[i] && s[i] <= '9' || 'a' <= s[i] && s[i] <= 'f') {
			return false
		}
	}
	return true
}

func isLowerAlnum(b byte) bool { return 'a' <= b && b <= 'z' || '0' <= b && b <= '9' }
func isAlnum(b byte) bool      { return isLowerAlnum(b) || 'A' <= b && b <= 'Z' }
func isHexDigit(b byte) bool {
	return '0' <= b && b <= '9' || 'a' <= b && b <= 'f' || 'A' <= b && b <= 'F'
}

// Name returns the full repository name, domain "/" path:
// "docker.io/library/nginx".
func (r Reference) Name() string {
	if r.Domain == "" {
		return r.Path
	}
	return r.Domain + "/" + r.Path
}

// String returns the full reference: "docker.io/library/nginx:latest",
// "docker.io/library/nginx@sha256:...", or with both tag and digest
// "...:tag@sha256:...". Parse(r.String()) returns r.
func (r Reference) String() string {
	return r.Name() + r.suffix()
}

// FamiliarName returns the name docker shows in the REPOSITORY column:
// docker.io is dropped, and so is "library/" before a single component
// ("nginx", "user/repo", "quay.io/a/b", "localhost:5000/x").
//
// Like docker, it drops docker.io even when the rest would read as a
// domain ("docker.io/foo.com/bar" shows as "foo.com/bar"), so store String,
// not the familiar form.
func (r Reference) FamiliarName() string {
	if r.Domain != DefaultDomain {
		return r.Name()
	}
	if rest, ok := strings.CutPrefix(r.Path, officialPrefix); ok && !strings.Contains(rest, "/") {
		return rest
	}
	return r.Path
}

// Familiar returns the short form docker prints: FamiliarName with the tag
// and digest, "nginx:latest" or "user/repo@sha256:...".
func (r Reference) Familiar() string {
	return r.FamiliarName() + r.suffix()
}

func (r Reference) suffix() string {
	var s string
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + string(r.Digest)
	}
	return s
}
