package reference

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

const (
	hex1 = "7cc4b5aefd1d0cadf8d97d4350462ba51c694ebca145b08d7d41b41acc8db5aa"
	hex2 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	dig1 = digest.Digest("sha256:" + hex1)
)

type parseCase struct {
	in           string
	want         Reference
	str          string // String()
	familiar     string // Familiar()
	familiarName string // FamiliarName()
}

var validCases = []parseCase{
	// From docker's documentation.
	{"ubuntu", Reference{"docker.io", "library/ubuntu", "latest", ""},
		"docker.io/library/ubuntu:latest", "ubuntu:latest", "ubuntu"},
	{"ubuntu:22.04", Reference{"docker.io", "library/ubuntu", "22.04", ""},
		"docker.io/library/ubuntu:22.04", "ubuntu:22.04", "ubuntu"},
	{"myregistry.local:5000/testing/test-image:v1", Reference{"myregistry.local:5000", "testing/test-image", "v1", ""},
		"myregistry.local:5000/testing/test-image:v1", "myregistry.local:5000/testing/test-image:v1", "myregistry.local:5000/testing/test-image"},
	{"localhost/foo", Reference{"localhost", "foo", "latest", ""},
		"localhost/foo:latest", "localhost/foo:latest", "localhost/foo"},
	{"foo/bar@sha256:" + hex1, Reference{"docker.io", "foo/bar", "", dig1},
		"docker.io/foo/bar@sha256:" + hex1, "foo/bar@sha256:" + hex1, "foo/bar"},
	{"docker.io/library/busybox:latest", Reference{"docker.io", "library/busybox", "latest", ""},
		"docker.io/library/busybox:latest", "busybox:latest", "busybox"},

	// Docker Hub normalization.
	{"nginx", Reference{"docker.io", "library/nginx", "latest", ""},
		"docker.io/library/nginx:latest", "nginx:latest", "nginx"},
	{"user/repo:tag", Reference{"docker.io", "user/repo", "tag", ""},
		"docker.io/user/repo:tag", "user/repo:tag", "user/repo"},
	{"docker.io/busybox", Reference{"docker.io", "library/busybox", "latest", ""},
		"docker.io/library/busybox:latest", "busybox:latest", "busybox"},
	{"index.docker.io/busybox", Reference{"docker.io", "library/busybox", "latest", ""},
		"docker.io/library/busybox:latest", "busybox:latest", "busybox"},
	{"index.docker.io/user/repo", Reference{"docker.io", "user/repo", "latest", ""},
		"docker.io/user/repo:latest", "user/repo:latest", "user/repo"},
	// "library/" is dropped only before a single component.
	{"docker.io/library/a/b", Reference{"docker.io", "library/a/b", "latest", ""},
		"docker.io/library/a/b:latest", "library/a/b:latest", "library/a/b"},
	{"nginx:1.25@sha256:" + hex1, Reference{"docker.io", "library/nginx", "1.25", dig1},
		"docker.io/library/nginx:1.25@sha256:" + hex1, "nginx:1.25@sha256:" + hex1, "nginx"},
	{"nginx@sha256:" + hex1, Reference{"docker.io", "library/nginx", "", dig1},
		"docker.io/library/nginx@sha256:" + hex1, "nginx@sha256:" + hex1, "nginx"},

	// Other registries.
	{"quay.io/a/b", Reference{"quay.io", "a/b", "latest", ""},
		"quay.io/a/b:latest", "quay.io/a/b:latest", "quay.io/a/b"},
	{"localhost:5000/x", Reference{"localhost:5000", "x", "latest", ""},
		"localhost:5000/x:latest", "localhost:5000/x:latest", "localhost:5000/x"},
	{"127.0.0.1:5000/foo:1", Reference{"127.0.0.1:5000", "foo", "1", ""},
		"127.0.0.1:5000/foo:1", "127.0.0.1:5000/foo:1", "127.0.0.1:5000/foo"},
	{"[::1]:5000/foo", Reference{"[::1]:5000", "foo", "latest", ""},
		"[::1]:5000/foo:latest", "[::1]:5000/foo:latest", "[::1]:5000/foo"},
	{"[2001:db8::1]/foo", Reference{"[2001:db8::1]", "foo", "latest", ""},
		"[2001:db8::1]/foo:latest", "[2001:db8::1]/foo:latest", "[2001:db8::1]/foo"},
	{"registry-1.example.com/team/app@sha256:" + hex2, Reference{"registry-1.example.com", "team/app", "", digest.Digest("sha256:" + hex2)},
		"registry-1.example.com/team/app@sha256:" + hex2, "registry-1.example.com/team/app@sha256:" + hex2, "registry-1.example.com/team/app"},
	// Domains may have uppercase letters, and keep them; only the path
	// must be lowercase.
	{"Registry.Example.com/foo", Reference{"Registry.Example.com", "foo", "latest", ""},
		"Registry.Example.com/foo:latest", "Registry.Example.com/foo:latest", "Registry.Example.com/foo"},
	// Not docker.io: no "library/" is added.
	{"example.com/foo", Reference{"example.com", "foo", "latest", ""},
		"example.com/foo:latest", "example.com/foo:latest", "example.com/foo"},

	// Path components and separators.
	{"user/a.b_c__d-e---f0", Reference{"docker.io", "user/a.b_c__d-e---f0", "latest", ""},
		"docker.io/user/a.b_c__d-e---f0:latest", "user/a.b_c__d-e---f0:latest", "user/a.b_c__d-e---f0"},
	{"a/b/c/d", Reference{"docker.io", "a/b/c/d", "latest", ""},
		"docker.io/a/b/c/d:latest", "a/b/c/d:latest", "a/b/c/d"},
	{"0", Reference{"docker.io", "library/0", "latest", ""},
		"docker.io/library/0:latest", "0:latest", "0"},

	// Tags: \w first, then \w . -, up to 128; uppercase is allowed.
	{"a:Tag_1.x-Y", Reference{"docker.io", "library/a", "Tag_1.x-Y", ""},
		"docker.io/library/a:Tag_1.x-Y", "a:Tag_1.x-Y", "a"},
	{"a:_x", Reference{"docker.io", "library/a", "_x", ""},
		"docker.io/library/a:_x", "a:_x", "a"},
	{"a:" + strings.Repeat("t", 128), Reference{"docker.io", "library/a", strings.Repeat("t", 128), ""},
		"docker.io/library/a:" + strings.Repeat("t", 128), "a:" + strings.Repeat("t", 128), "a"},

	// The full name may be 255 characters: "docker.io/" is 10 of them.
	{"a/" + strings.Repeat("b", 243), Reference{"docker.io", "a/" + strings.Repeat("b", 243), "latest", ""},
		"docker.io/a/" + strings.Repeat("b", 243) + ":latest", "a/" + strings.Repeat("b", 243) + ":latest", "a/" + strings.Repeat("b", 243)},

	// Docker quirks, matched on purpose.
	//
	// Without "/", there is no domain: "localhost:5000" is the image
	// "localhost" with tag "5000".
	{"localhost:5000", Reference{"docker.io", "library/localhost", "5000", ""},
		"docker.io/library/localhost:5000", "localhost:5000", "localhost"},
	{"localhost", Reference{"docker.io", "library/localhost", "latest", ""},
		"docker.io/library/localhost:latest", "localhost:latest", "localhost"},
	{"example.com", Reference{"docker.io", "library/example.com", "latest", ""},
		"docker.io/library/example.com:latest", "example.com:latest", "example.com"},
	// An image ID with its algorithm is the image "sha256" to the parser;
	// callers check IsDigestID first.
	{"sha256:" + hex1, Reference{"docker.io", "library/sha256", hex1, ""},
		"docker.io/library/sha256:" + hex1, "sha256:" + hex1, "sha256"},
	// Only a bare 64-hex string is refused, not one with a tag or domain.
	{hex1 + ":tag", Reference{"docker.io", "library/" + hex1, "tag", ""},
		"docker.io/library/" + hex1 + ":tag", hex1 + ":tag", hex1},
	{"docker.io/library/" + hex1, Reference{"docker.io", "library/" + hex1, "latest", ""},
		"docker.io/library/" + hex1 + ":latest", hex1 + ":latest", hex1},
	// docker.io is dropped from the familiar form even when what is left
	// reads as a domain.
	{"docker.io/foo.com/bar", Reference{"docker.io", "foo.com/bar", "latest", ""},
		"docker.io/foo.com/bar:latest", "foo.com/bar:latest", "foo.com/bar"},
	{"docker.io/localhost/bar", Reference{"docker.io", "localhost/bar", "latest", ""},
		"docker.io/localhost/bar:latest", "localhost/bar:latest", "localhost/bar"},
}

func TestParse(t *testing.T) {
	for _, tc := range validCases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := Parse(tc.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.in, err)
			}
			if got != tc.want {
				t.Errorf("Parse(%q) = %#v, want %#v", tc.in, got, tc.want)
			}
			if s := got.String(); s != tc.str {
				t.Errorf("String() = %q, want %q", s, tc.str)
			}
			if s := got.Familiar(); s != tc.familiar {
				t.Errorf("Familiar() = %q, want %q", s, tc.familiar)
			}
			if s := got.FamiliarName(); s != tc.familiarName {
				t.Errorf("FamiliarName() = %q, want %q", s, tc.familiarName)
			}
			if s, want := got.Name(), tc.want.Domain+"/"+tc.want.Path; s != want {
				t.Errorf("Name() = %q, want %q", s, want)
			}
			again, err := Parse(got.String())
			if err != nil || again != got {
				t.Errorf("Parse(String()) = %#v, %v; want %#v", again, err, got)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	long := "a/" + strings.Repeat("b", 244) // "docker.io/" + 246 = 256
	cases := []struct {
		name string
		in   string
		is   error  // a sentinel the error wraps, besides ErrInvalid
		msg  string // the whole message, or a substring if it ends in "..."
	}{
		{"empty", "", nil, `invalid reference "": empty reference`},
		{"uppercase", "UPPER:tag", ErrUppercase, `invalid reference "UPPER:tag": repository name must be lowercase`},
		{"uppercase second component", "foo/Bar", ErrUppercase, `invalid reference "foo/Bar": repository name must be lowercase`},
		// Docker takes "Foo" for a domain; we keep the rule that only
		// ".", ":" or "localhost" make a domain.
		{"uppercase first component", "Foo/bar", ErrUppercase, `invalid reference "Foo/bar": repository name must be lowercase`},
		{"uppercase after domain", "localhost:5000/Foo", ErrUppercase, `invalid reference "localhost:5000/Foo": repository name must be lowercase`},
		{"64 hex", hex1, ErrImageID, `invalid reference "` + hex1 + `": cannot specify 64-byte hexadecimal strings...`},
		{"too long", long, ErrTooLong, `invalid reference "` + long + `": repository name must not be more than 255 characters (got 256)`},

		{"trailing colon", "nginx:", nil, `invalid reference "nginx:": empty tag after ':'`},
		{"tag starts with dash", "nginx:-x", nil, `invalid reference "nginx:-x": invalid tag "-x"...`},
		{"tag starts with dot", "nginx:.x", nil, `invalid tag ".x"...`},
		{"tag with colon", "nginx:a:b", nil, `invalid tag "a:b"...`},
		{"tag too long", "nginx:" + strings.Repeat("t", 129), nil, `tag is 129 characters, more than 128`},
		{"tag with slash", "foo:bar/baz", nil, `invalid domain "foo:bar": port "bar" is not a number`},

		{"at without digest", "nginx@", nil, `invalid reference "nginx@": empty digest after '@'`},
		{"tag and at without digest", "foo/bar:tag@", nil, `empty digest after '@'`},
		{"digest without algorithm", "nginx@" + hex1, nil, `invalid digest "` + hex1 + `": want sha256:<64 hex digits>`},
		{"digest too short", "nginx@sha256:abc", nil, `invalid reference "nginx@sha256:abc": invalid digest "sha256:abc": invalid checksum digest length`},
		{"digest uppercase hex", "nginx@sha256:" + strings.ToUpper(hex1), nil, `invalid checksum digest format`},
		{"digest sha512", "nginx@sha512:" + hex1 + hex2, nil, `unsupported digest algorithm "sha512": only sha256 is accepted`},
		{"digest empty hex", "nginx@sha256:", nil, `invalid digest "sha256:"...`},
		{"two digests", "nginx@sha256:" + hex1 + "@sha256:" + hex2, nil, `invalid digest...`},
		{"digest only", "@sha256:" + hex1, nil, `missing repository name`},
		{"tag only", ":tag", nil, `missing repository name`},
		{"domain only", "localhost/", nil, `missing repository name`},

		{"space inside", "ng inx", nil, `invalid repository name component "ng inx"...`},
		{"leading space", " nginx", nil, `invalid repository name component " nginx"...`},
		{"trailing space", "nginx ", nil, `invalid repository name component "nginx "...`},
		{"space in tag", "nginx:1 2", nil, `invalid tag "1 2"...`},
		{"double slash", "a//b", nil, `invalid reference "a//b": invalid repository name "a//b": empty path component`},
		{"leading slash", "/a", nil, `empty path component`},
		{"trailing slash", "a/", nil, `empty path component`},
		{"leading dash", "-a", nil, `invalid reference "-a": invalid repository name component "-a": want [a-z0-9] separated by one '.', one '_', "__", or '-'s`},
		{"trailing dash", "a-", nil, `invalid repository name component "a-"...`},
		{"leading dot", ".a", nil, `invalid repository name component ".a"...`},
		{"trailing dot", "a.", nil, `invalid repository name component "a."...`},
		{"two dots", "a..b", nil, `invalid repository name component "a..b"...`},
		{"three underscores", "a___b", nil, `invalid repository name component "a___b"...`},
		{"underscore dash", "a_-b", nil, `invalid repository name component "a_-b"...`},
		{"dash dot", "a-.b", nil, `invalid repository name component "a-.b"...`},
		{"bad character", "a+b", nil, `invalid repository name component "a+b"...`},

		// distribution/reference parses this as a path with no domain.
		{"underscore in domain", "foo_bar.com/x", nil, `invalid reference "foo_bar.com/x": invalid domain "foo_bar.com"...`},
		{"domain component starts with dash", "-bad.com/x", nil, `invalid domain "-bad.com"...`},
		{"domain component ends with dash", "bad-.com/x", nil, `invalid domain "bad-.com"...`},
		{"empty domain component", "a..com/x", nil, `invalid domain "a..com"...`},
		{"empty port", "example.com:/x", nil, `invalid domain "example.com:": port "" is not a number`},
		{"port not a number", "example.com:http/x", nil, `port "http" is not a number`},
		{"two ports", "example.com:1:2/x", nil, `port "1:2" is not a number`},
		{"unclosed ipv6", "[::1/x", nil, `invalid domain "[::1": unclosed '['`},
		{"bad ipv6", "[zz:1]/x", nil, `invalid domain "[zz:1]": bad IPv6 address [zz:1]`},
		{"empty ipv6", "[]:5000/x", nil, `bad IPv6 address []`},
		{"junk after ipv6", "[::1]x:5000/x", nil, `invalid domain "[::1]x:5000": unexpected "x:5000" after ']'`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.in)
			if err == nil {
				t.Fatalf("Parse(%q) = %#v, want error", tc.in, got)
			}
			if got != (Reference{}) {
				t.Errorf("Parse(%q) returned %#v with its error, want the zero Reference", tc.in, got)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Parse(%q) error %v does not wrap ErrInvalid", tc.in, err)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("Parse(%q) error %v does not wrap %v", tc.in, err, tc.is)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.in)) {
				t.Errorf("Parse(%q) error %q does not name the input", tc.in, err)
			}
			got2, want := err.Error(), tc.msg
			switch {
			case strings.HasSuffix(want, "..."):
				if !strings.Contains(got2, strings.TrimSuffix(want, "...")) {
					t.Errorf("Parse(%q) error = %q, want it to contain %q", tc.in, got2, strings.TrimSuffix(want, "..."))
				}
			case strings.HasPrefix(want, "invalid reference "):
				if got2 != want {
					t.Errorf("Parse(%q) error = %q, want %q", tc.in, got2, want)
				}
			default:
				if !strings.Contains(got2, want) {
					t.Errorf("Parse(%q) error = %q, want it to contain %q", tc.in, got2, want)
				}
			}
		})
	}
}

func TestIsDigestID(t *testing.T) {
	cases := []struct {
		in   string
		want bool
	}{
		{hex1, true},
		{"sha256:" + hex1, true},
		{"", false},
		{"sha256:", false},
		{hex1[:63], false},
		{hex1 + "0", false},
		{strings.ToUpper(hex1), false},
		{"sha256:" + strings.ToUpper(hex1), false},
		{"sha512:" + hex1, false},
		{"sha256:sha256:" + hex1, false},
		{strings.Repeat("g", 64), false},
		{"nginx", false},
		{"nginx@sha256:" + hex1, false},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			if got := IsDigestID(tc.in); got != tc.want {
				t.Errorf("IsDigestID(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestZeroReference(t *testing.T) {
	// A Reference built by hand without a domain still prints sensibly.
	r := Reference{Path: "foo", Tag: "v1"}
	if got, want := r.String(), "foo:v1"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got, want := (Reference{}).String(), ""; got != want {
		t.Errorf("zero String() = %q, want %q", got, want)
	}
}

// familiarLooksLikeDomain reports whether r's familiar name would be read
// back with a domain it does not have: docker drops docker.io even then
// (docker.io/foo.com/bar shows as foo.com/bar).
func familiarLooksLikeDomain(r Reference) bool {
	first, _, ok := strings.Cut(r.FamiliarName(), "/")
	return r.Domain == DefaultDomain && ok && (strings.ContainsAny(first, ".:") || first == localhost)
}

func FuzzParse(f *testing.F) {
	for _, tc := range validCases {
		f.Add(tc.in)
	}
	for _, s := range []string{"", "nginx:", "nginx@", "a//b", "-a", "UPPER:tag", hex1, "[::1]:5000/x", "foo_bar.com/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%q) error %v does not wrap ErrInvalid", s, err)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("%q", s)) {
				t.Fatalf("Parse(%q) error %q does not name the input", s, err)
			}
			return
		}
		if n := len(r.Name()); n > NameMaxLength {
			t.Errorf("Parse(%q): name is %d characters", s, n)
		}
		if strings.ToLower(r.Path) != r.Path || r.Domain == "" || r.Path == "" {
			t.Errorf("Parse(%q) = %#v: bad domain or path", s, r)
		}
		if r.Tag == "" && r.Digest == "" {
			t.Errorf("Parse(%q) = %#v: neither tag nor digest", s, r)
		}
		if r.Digest != "" && r.Digest.Validate() != nil {
			t.Errorf("Parse(%q) = %#v: invalid digest", s, r)
		}
		if again, err := Parse(r.String()); err != nil || again != r {
			t.Errorf("Parse(%q).String() = %q parses to %#v, %v", s, r.String(), again, err)
		}
		if !familiarLooksLikeDomain(r) {
			if again, err := Parse(r.Familiar()); err != nil || again != r {
				t.Errorf("Parse(%q).Familiar() = %q parses to %#v, %v", s, r.Familiar(), again, err)
			}
		}
	})
}
