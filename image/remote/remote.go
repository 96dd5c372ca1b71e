// Package remote talks to image registries (the OCI distribution API)
// for strata pull, push, login and logout. The protocol, token and
// Basic auth and the credential files are oras-go's; this package adds
// what strata's users expect of docker and podman around them: the
// certs.d directories, insecure registries, ranged blob reads for
// resuming, and errors that say what to do.
//
// Nothing here keeps content: blobs are streamed to the caller, which
// verifies and stores them.
package remote

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"

	"github.com/strata-fs/strata/image/reference"
	"github.com/strata-fs/strata/internal/version"
)

// CertsDirs are where registry certificates are looked up, per
// registry host: DIR/HOST[:PORT]/*.crt are CA certificates, and a
// *.cert with the *.key of the same name is a client certificate (the
// layout of podman's containers-certs.d(5) and docker's certs.d).
var CertsDirs = []string{"/etc/containers/certs.d", "/etc/docker/certs.d"}

// Options tune a Client.
type Options struct {
	// TLSVerify false skips certificate verification and lets a registry
	// that answers in plain HTTP be used over HTTP, for every registry.
	TLSVerify bool
	// Insecure names registries (HOST or HOST:PORT) treated as with
	// TLSVerify false.
	Insecure []string
	// CertDir, if set, is used instead of the CertsDirs lookup: a
	// directory of *.crt, *.cert and *.key files (podman's --cert-dir).
	CertDir string
	// AuthFile, if set, is the only credentials file read and written
	// (--authfile); otherwise see AuthFiles.
	AuthFile string
	// Credential, if set, is used instead of any stored one (--creds).
	Credential *auth.Credential
	// Log, if set, is told of every request: method, URL and status,
	// never a header or a body, so no credential reaches it.
	Log *log.Logger
}

// Client makes repositories of registries, sharing one token cache.
type Client struct {
	opts  Options
	cache auth.Cache
	store credentials.Store

	mu    sync.Mutex
	hosts map[string]*hostClient // by API host
}

// hostClient is what a registry host needs: its HTTP client, whether it
// speaks plain HTTP.
type hostClient struct {
	once  sync.Once
	err   error
	plain bool
	auth  *auth.Client
}

// New returns a Client.
func New(opts Options) (*Client, error) {
	c := &Client{opts: opts, cache: auth.NewCache(), hosts: map[string]*hostClient{}}
	if opts.Credential == nil {
		st, err := openCredentials(opts.AuthFile)
		if err != nil {
			return nil, err
		}
		c.store = st
	}
	return c, nil
}

// APIHost is the host that serves domain's API: registry-1.docker.io
// for docker.io (as docker maps it), else the domain itself.
func APIHost(domain string) string {
	if domain == reference.DefaultDomain || domain == "index.docker.io" {
		return "registry-1.docker.io"
	}
	return domain
}

func (c *Client) insecure(host string) bool {
	if !c.opts.TLSVerify {
		return true
	}
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	return slices.Contains(c.opts.Insecure, host) || slices.Contains(c.opts.Insecure, h)
}

// host returns the client for host, probing once whether it speaks
// HTTPS, or plain HTTP where that is allowed.
func (c *Client) host(ctx context.Context, host string) (*hostClient, error) {
	c.mu.Lock()
	hc := c.hosts[host]
	if hc == nil {
		hc = &hostClient{}
		c.hosts[host] = hc
	}
	c.mu.Unlock()
	hc.once.Do(func() { hc.err = c.setup(ctx, host, hc) })
	return hc, hc.err
}

func (c *Client) setup(ctx context.Context, host string, hc *hostClient) error {
	insecure := c.insecure(host)
	tcfg, err := c.tlsConfig(host, insecure)
	if err != nil {
		return err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tcfg
	tr.MaxIdleConnsPerHost = 16
	var rt http.RoundTripper = tr
	if c.opts.Log != nil {
		rt = logTransport{rt, c.opts.Log}
	}
	hc.auth = &auth.Client{
		Client: &http.Client{Transport: rt},
		Header: http.Header{"User-Agent": {"strata/" + version.String()}},
		Cache:  c.cache,
	}
	if cred := c.opts.Credential; cred != nil {
		hc.auth.Credential = func(context.Context, string) (auth.Credential, error) { return *cred, nil }
	} else {
		hc.auth.Credential = credentials.Credential(c.store)
	}
	if isLoopback(host) {
		// A registry on this machine may have its token service here
		// too; oras refuses loopback realms by default, against a
		// registry elsewhere that points it at a local service.
		hc.auth.BlockedRealmPrefixes = slices.DeleteFunc(auth.DefaultBlockedRealmPrefixes(), func(p netip.Prefix) bool {
			return p.Addr().IsLoopback()
		})
	}
	if !insecure {
		return nil
	}
	// Find out whether the registry speaks HTTPS at all, as podman does
	// with --tls-verify=false.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+host+"/v2/", nil)
	if err != nil {
		return err
	}
	resp, err := hc.auth.Client.Do(req)
	if err == nil {
		resp.Body.Close()
		return nil
	}
	if errors.Is(err, http.ErrSchemeMismatch) || strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		hc.plain = true
		return nil
	}
	return explain(host, err)
}

func isLoopback(host string) bool {
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	if h == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.IsLoopback()
}

// tlsConfig is the TLS configuration for host: the system's CAs plus
// those of its certs.d directory, its client certificate if any.
func (c *Client) tlsConfig(host string, insecure bool) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure}
	dirs := []string{c.opts.CertDir}
	if c.opts.CertDir == "" {
		dirs = nil
		for _, d := range CertsDirs {
			dirs = append(dirs, filepath.Join(d, host))
		}
	}
	for _, dir := range dirs {
		ents, err := os.ReadDir(dir)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("registry %s: certificates: %w", host, err)
		}
		for _, ent := range ents {
			p := filepath.Join(dir, ent.Name())
			switch filepath.Ext(ent.Name()) {
			case ".crt":
				pem, err := os.ReadFile(p)
				if err != nil {
					return nil, fmt.Errorf("registry %s: CA certificate: %w", host, err)
				}
				if cfg.RootCAs == nil {
					if cfg.RootCAs, err = x509.SystemCertPool(); err != nil {
						cfg.RootCAs = x509.NewCertPool()
					}
				}
				if !cfg.RootCAs.AppendCertsFromPEM(pem) {
					return nil, fmt.Errorf("registry %s: %s holds no PEM certificate", host, p)
				}
			case ".cert":
				key := strings.TrimSuffix(p, ".cert") + ".key"
				cert, err := tls.LoadX509KeyPair(p, key)
				if err != nil {
					return nil, fmt.Errorf("registry %s: client certificate %s (with %s): %w", host, p, key, err)
				}
				cfg.Certificates = append(cfg.Certificates, cert)
			}
		}
	}
	return cfg, nil
}

// logTransport tells a logger of each request and its status.
type logTransport struct {
	rt  http.RoundTripper
	log *log.Logger
}

func (t logTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	u := *req.URL
	u.User = nil
	resp, err := t.rt.RoundTrip(req)
	if err != nil {
		t.log.Printf("%s %s: %v", req.Method, u.Redacted(), err)
		return nil, err
	}
	t.log.Printf("%s %s: %s (%s)", req.Method, u.Redacted(), resp.Status, time.Since(start).Round(time.Millisecond))
	return resp, nil
}
