package remote

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
	oras "oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"github.com/strata-fs/strata/image/reference"
)

// ManifestMaxSize bounds a manifest or index read from a registry
// (registries refuse larger ones).
const ManifestMaxSize = 4 << 20

// ErrNotFound is returned for a manifest or blob the registry lacks.
var ErrNotFound = errdef.ErrNotFound

// Repository is one repository of a registry.
type Repository struct {
	// Name is the repository in the reference's terms
	// ("docker.io/library/busybox").
	Name string
	host string
	path string
	hc   *hostClient
	repo *oras.Repository
}

// Repository opens ref's repository (the tag or digest of ref is not
// used). It talks to the registry once, to learn its scheme, when
// TLS verification is off for it.
func (c *Client) Repository(ctx context.Context, ref reference.Reference) (*Repository, error) {
	host := APIHost(ref.Domain)
	hc, err := c.host(ctx, host)
	if err != nil {
		return nil, err
	}
	repo := &oras.Repository{
		Client:    hc.auth,
		Reference: registry.Reference{Registry: host, Repository: ref.Path},
		PlainHTTP: hc.plain,
		ManifestMediaTypes: []string{
			v1.MediaTypeImageManifest, v1.MediaTypeImageIndex,
			"application/vnd.docker.distribution.manifest.v2+json",
			"application/vnd.docker.distribution.manifest.list.v2+json",
		},
		MaxMetadataBytes: ManifestMaxSize,
	}
	return &Repository{Name: ref.Name(), host: host, path: ref.Path, hc: hc, repo: repo}, nil
}

// Host is the registry host the repository is served from.
func (r *Repository) Host() string { return r.host }

// Manifest fetches the manifest or index tagOrDigest names, and checks
// its digest: against tagOrDigest when that is a digest, and against
// the registry's Docker-Content-Digest when it gives one.
func (r *Repository) Manifest(ctx context.Context, tagOrDigest string) (v1.Descriptor, []byte, error) {
	desc, rc, err := r.repo.FetchReference(ctx, tagOrDigest)
	if errors.Is(err, errdef.ErrNotFound) {
		sep := ":"
		if strings.Contains(tagOrDigest, ":") {
			sep = "@"
		}
		return v1.Descriptor{}, nil, fmt.Errorf("%s%s%s: %w: the registry has no such repository, tag or digest", r.Name, sep, tagOrDigest, ErrNotFound)
	}
	if err != nil {
		return v1.Descriptor{}, nil, r.explain(err, "manifest "+tagOrDigest)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, ManifestMaxSize+1))
	if err != nil {
		return v1.Descriptor{}, nil, r.explain(err, "manifest "+tagOrDigest)
	}
	if len(b) > ManifestMaxSize {
		return v1.Descriptor{}, nil, fmt.Errorf("%s: manifest %s is larger than %d bytes", r.Name, tagOrDigest, ManifestMaxSize)
	}
	got := digest.FromBytes(b)
	want := desc.Digest
	if d, err := digest.Parse(tagOrDigest); err == nil {
		want = d
	}
	if want != "" && got != want {
		return v1.Descriptor{}, nil, fmt.Errorf("%s: manifest %s: the registry sent content of digest %s: it is corrupt or the registry is misbehaving; nothing was stored", r.Name, want, got)
	}
	desc.Digest, desc.Size = got, int64(len(b))
	return desc, b, nil
}

// Blob opens the blob d from byte offset on (a ranged request when
// offset > 0). The content is not verified here: the caller hashes
// what it stores. ok is false when the registry ignored the range and
// sends the blob from its start.
func (r *Repository) Blob(ctx context.Context, d v1.Descriptor, offset int64) (rc io.ReadCloser, ranged bool, err error) {
	ctx = auth.AppendRepositoryScope(ctx, r.repo.Reference, auth.ActionPull)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url("blobs/"+d.Digest.String()), nil)
	if err != nil {
		return nil, false, err
	}
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	resp, err := r.hc.auth.Do(req)
	if err != nil {
		return nil, false, r.explain(err, "blob "+d.Digest.String())
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return resp.Body, false, nil
	case http.StatusPartialContent:
		return resp.Body, true, nil
	case http.StatusRequestedRangeNotSatisfiable:
		resp.Body.Close()
		return r.Blob(ctx, d, 0)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, false, fmt.Errorf("%s: blob %s: %w", r.Name, d.Digest, ErrNotFound)
	}
	return nil, false, r.explain(&errcode.ErrorResponse{Method: req.Method, URL: req.URL, StatusCode: resp.StatusCode}, "blob "+d.Digest.String())
}

func (r *Repository) url(rest string) string {
	scheme := "https"
	if r.hc.plain {
		scheme = "http"
	}
	return scheme + "://" + r.host + "/v2/" + r.path + "/" + rest
}

// BlobExists tells whether the registry has blob d in this repository.
func (r *Repository) BlobExists(ctx context.Context, d v1.Descriptor) (bool, error) {
	ok, err := r.repo.Blobs().Exists(ctx, d)
	return ok, r.explain(err, "blob "+d.Digest.String())
}

// MountBlob asks the registry to mount blob d from the repository
// from (a path in the same registry) and reports whether it did; a
// registry that cannot mount it is not an error.
func (r *Repository) MountBlob(ctx context.Context, d v1.Descriptor, from string) (bool, error) {
	mounted := true
	err := r.repo.Mount(ctx, d, from, func() (io.ReadCloser, error) {
		mounted = false
		return nil, errNoMount
	})
	if errors.Is(err, errNoMount) {
		return false, nil
	}
	if err != nil {
		var er *errcode.ErrorResponse
		if errors.As(err, &er) && (er.StatusCode == http.StatusNotFound || er.StatusCode == http.StatusForbidden || er.StatusCode == http.StatusUnauthorized) {
			// Not allowed to read from there: upload instead.
			return false, nil
		}
		return false, r.explain(err, "mount blob "+d.Digest.String())
	}
	return mounted, nil
}

var errNoMount = errors.New("registry did not mount the blob")

// PushBlob uploads blob d, read from open (called again to retry once
// after the registry refuses a token mid-upload).
func (r *Repository) PushBlob(ctx context.Context, d v1.Descriptor, open func() (io.ReadCloser, error)) error {
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		var rc io.ReadCloser
		if rc, err = open(); err != nil {
			return err
		}
		err = r.repo.Blobs().Push(ctx, d, rc)
		rc.Close()
		if !isStatus(err, http.StatusUnauthorized) {
			break
		}
	}
	return r.explain(err, "upload blob "+d.Digest.String())
}

// PushManifest uploads the manifest b (of descriptor d) and, when tag
// is not "", tags it.
func (r *Repository) PushManifest(ctx context.Context, d v1.Descriptor, b []byte, tag string) error {
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		if tag != "" {
			err = r.repo.Manifests().PushReference(ctx, d, strings.NewReader(string(b)), tag)
		} else {
			err = r.repo.Manifests().Push(ctx, d, strings.NewReader(string(b)))
		}
		if !isStatus(err, http.StatusUnauthorized) {
			break
		}
	}
	return r.explain(err, "upload manifest "+d.Digest.String())
}

// Tags lists the repository's tags.
func (r *Repository) Tags(ctx context.Context) ([]string, error) {
	var tags []string
	err := r.repo.Tags(ctx, "", func(t []string) error {
		tags = append(tags, t...)
		return nil
	})
	return tags, r.explain(err, "tags")
}

func isStatus(err error, code int) bool {
	var er *errcode.ErrorResponse
	return errors.As(err, &er) && er.StatusCode == code
}

// ping checks that the registry takes the client's credentials.
func ping(ctx context.Context, ac *auth.Client, plain bool, host string) error {
	reg := &oras.Registry{RepositoryOptions: oras.RepositoryOptions{
		Client: ac, Reference: registry.Reference{Registry: host}, PlainHTTP: plain,
	}}
	if err := reg.Ping(ctx); err != nil {
		return explain(host, err)
	}
	return nil
}

func (r *Repository) explain(err error, what string) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, errdef.ErrNotFound) {
		return fmt.Errorf("%s: %s: %w", r.Name, what, ErrNotFound)
	}
	return fmt.Errorf("%s: %s: %w", r.Name, what, explain(r.host, err))
}

// explain turns what the network or the registry said into an error
// that says what to do.
func explain(host string, err error) error {
	var er *errcode.ErrorResponse
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	switch {
	case errors.As(err, &er) && er.StatusCode == http.StatusUnauthorized:
		return &AuthError{Host: host, err: err}
	case errors.As(err, &er) && er.StatusCode == http.StatusForbidden:
		return fmt.Errorf("registry %s denied access (%v): check that the account may do this", host, errorsOf(er))
	case errors.As(err, &er) && er.StatusCode == http.StatusTooManyRequests:
		return fmt.Errorf("registry %s: too many requests: try again later, or log in for a higher rate limit", host)
	case errors.As(err, &ua), errors.As(err, &hn), errors.As(err, &ci):
		return fmt.Errorf("registry %s: its TLS certificate is not trusted (%v): put its CA certificate in /etc/containers/certs.d/%s/ca.crt, or pass --tls-verify=false", host, err, host)
	case errors.Is(err, http.ErrSchemeMismatch) || strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Errorf("registry %s speaks plain HTTP, not HTTPS: pass --tls-verify=false to use it anyway", host)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("cannot reach registry %s: connection refused: is it running, and is the address right?", host)
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return fmt.Errorf("cannot reach registry %s: %v: check the name and the network", host, dns)
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return fmt.Errorf("cannot reach registry %s: %v", host, op)
	}
	return err
}

func errorsOf(er *errcode.ErrorResponse) string {
	if len(er.Errors) == 0 {
		return http.StatusText(er.StatusCode)
	}
	return er.Errors.Error()
}

// AuthError is a registry's 401: no credentials, or wrong ones.
type AuthError struct {
	Host string
	err  error
}

func (e *AuthError) Error() string {
	return fmt.Sprintf("registry %s refused the credentials, or needs some: check the user and password, and run 'strata login %s'", e.Host, e.Host)
}

func (e *AuthError) Unwrap() error { return e.err }
