package integration

import (
	"bytes"
	"cmp"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// A registry for the tests of strata pull, push, login and logout:
// Debian's docker-registry (distribution 2.8) run as the test's child on
// a loopback port, in one of three modes (plain HTTP; TLS with htpasswd
// basic auth; TLS with token auth from a token server the test runs
// in-process), a faulty proxy that can stand in front of it, and skopeo
// helpers that put images in it. See docs/registry-tests.md.

// registryMode is how a test registry serves and authenticates.
type registryMode int

const (
	// registryPlain is HTTP without authentication.
	registryPlain registryMode = iota
	// registryTLSBasic is HTTPS with htpasswd (bcrypt) basic auth.
	registryTLSBasic
	// registryToken is HTTPS with token auth: the registry sends clients
	// to the in-process token server, which checks Basic credentials and
	// issues a JWT the registry verifies against its rootcertbundle.
	registryToken
)

func (m registryMode) String() string {
	switch m {
	case registryPlain:
		return "plain"
	case registryTLSBasic:
		return "tls-basic"
	case registryToken:
		return "token"
	}
	return "mode" + strconv.Itoa(int(m))
}

const (
	// regUser and regPassword are the credentials every auth mode
	// accepts, with full access.
	regUser     = "strata"
	regPassword = "s3cret-Pa55"
	// regReader and regReaderPassword may only pull (token mode only:
	// htpasswd has no access control).
	regReader         = "reader"
	regReaderPassword = "read-0nly"
	// regService and regIssuer name the token service and issuer the
	// registry is configured with.
	regService = "strata-test-registry"
	regIssuer  = "strata-test-token-server"
	// regStartTimeout bounds how long the registry may take to answer.
	regStartTimeout = 20 * time.Second
	// regStopGrace is how long Stop waits after SIGTERM before SIGKILL.
	regStopGrace = 5 * time.Second
)

// testRegistry is a running docker-registry, or one stopped by Stop.
// Copies made by faultyProxy.Registry share the process: Stop on a copy
// stops the registry behind the proxy.
type testRegistry struct {
	Mode     registryMode
	Host     string // 127.0.0.1:PORT
	Scheme   string // "http" or "https"
	CAFile   string // PEM of the CA that signed the server certificate (TLS modes)
	CertsDir string // CertsDir/HOST/ca.crt for Host (and localhost:PORT), as /etc/containers/certs.d
	User     string // "" in plain mode
	Password string
	Dir      string // storage root
	// Tokens is the token server (token mode only).
	Tokens *tokenServer

	proc *regProcess
}

// regCA is a certificate authority made for one test.
type regCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	pemFile string
	pool    *x509.CertPool
}

// regProcess is the registry process and what it needs to be restarted.
type regProcess struct {
	t        testing.TB
	config   string
	logFile  string
	ca       *regCA // nil in plain mode
	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{} // closed when cmd has been waited for
	waitErr  error
	wantCode int // what GET /v2/ answers when the registry is up
	scheme   string
	host     string
}

// regToolDebs names the Debian package of each tool the registry tests
// need.
var regToolDebs = map[string]string{"docker-registry": "docker-registry", "htpasswd": "apache2-utils", "skopeo": "skopeo"}

// needRegistryTool is needTool for the tools of regToolDebs: a missing
// one skips the test, or fails it with CI=true.
func needRegistryTool(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missingTool(t, fmt.Sprintf("needs %s (apt-get install %s)", tool, regToolDebs[tool]))
		}
	}
}

// startRegistry starts a registry in mode with its storage in a
// temporary directory; it is stopped in t.Cleanup, and its log is
// printed if the test failed.
func startRegistry(t *testing.T, mode registryMode) *testRegistry {
	t.Helper()
	needRegistryTool(t, "docker-registry")
	if mode == registryTLSBasic {
		needRegistryTool(t, "htpasswd")
	}
	dir := t.TempDir()
	r := &testRegistry{Mode: mode, Scheme: "http", Dir: filepath.Join(dir, "storage")}
	p := &regProcess{t: t, config: filepath.Join(dir, "config.yml"), logFile: filepath.Join(dir, "registry.log"), wantCode: http.StatusUnauthorized}
	r.proc = p
	if err := os.Mkdir(r.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var tlsCfg, authCfg string
	if mode != registryPlain {
		r.Scheme = "https"
		r.User, r.Password = regUser, regPassword
		p.ca = newRegCA(t, dir)
		r.CAFile = p.ca.pemFile
		cert, key := p.ca.issue(t, dir, "registry")
		tlsCfg = fmt.Sprintf("  tls:\n    certificate: %s\n    key: %s\n", cert, key)
	}
	switch mode {
	case registryPlain:
		p.wantCode = http.StatusOK
	case registryTLSBasic:
		htpasswd := filepath.Join(dir, "htpasswd")
		var b []byte
		for _, c := range [][2]string{{regUser, regPassword}, {regReader, regReaderPassword}} {
			out, err := exec.Command("htpasswd", "-Bbn", c[0], c[1]).Output()
			if err != nil {
				t.Fatalf("htpasswd -Bbn %s: %v", c[0], err)
			}
			b = append(b, bytes.TrimRight(out, "\n")...)
			b = append(b, '\n')
		}
		if err := os.WriteFile(htpasswd, b, 0o600); err != nil {
			t.Fatal(err)
		}
		authCfg = fmt.Sprintf("auth:\n  htpasswd:\n    realm: %s\n    path: %s\n", regService, htpasswd)
	case registryToken:
		r.Tokens = startTokenServer(t, p.ca)
		authCfg = fmt.Sprintf("auth:\n  token:\n    realm: %s\n    service: %s\n    issuer: %s\n    rootcertbundle: %s\n",
			r.Tokens.Realm, regService, regIssuer, p.ca.pemFile)
	default:
		t.Fatalf("unknown registry mode %d", mode)
	}
	p.scheme = r.Scheme
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			b, _ := os.ReadFile(p.logFile)
			t.Logf("registry (%s) log:\n%s", mode, b)
		}
	})
	for attempt := 0; ; attempt++ {
		host := freeLoopbackAddr(t)
		cfg := "version: 0.1\n" +
			"log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n" +
			"storage:\n  filesystem:\n    rootdirectory: " + r.Dir + "\n  delete:\n    enabled: true\n" +
			"  maintenance:\n    uploadpurging:\n      enabled: false\n" +
			// No debug: section, so no debug or prometheus listener.
			"http:\n  addr: " + host + "\n  secret: strata-test-secret\n  headers:\n    X-Content-Type-Options: [nosniff]\n" +
			tlsCfg + authCfg
		if err := os.WriteFile(p.config, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		p.host = host
		err := p.start()
		if err == nil {
			r.Host = host
			break
		}
		if !errors.Is(err, errAddrInUse) || attempt >= 4 {
			b, _ := os.ReadFile(p.logFile)
			t.Fatalf("start docker-registry: %v; log:\n%s", err, b)
		}
	}
	if p.ca != nil {
		r.CertsDir = filepath.Join(dir, "certs.d")
		r.addCertsDirHost(t, r.Host)
		_, port, _ := net.SplitHostPort(r.Host)
		r.addCertsDirHost(t, net.JoinHostPort("localhost", port))
	}
	return r
}

// addCertsDirHost puts the CA into CertsDir/host/ca.crt.
func (r *testRegistry) addCertsDirHost(t testing.TB, host string) {
	t.Helper()
	d := filepath.Join(r.CertsDir, host)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(r.CAFile)
	if err == nil {
		err = os.WriteFile(filepath.Join(d, "ca.crt"), b, 0o644)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// HostCertDir is the directory skopeo's and podman's --cert-dir take
// for Host: it holds ca.crt. "" in plain mode.
func (r *testRegistry) HostCertDir() string {
	if r.CertsDir == "" {
		return ""
	}
	return filepath.Join(r.CertsDir, r.Host)
}

// URL is the registry's base URL, e.g. https://127.0.0.1:PORT.
func (r *testRegistry) URL() string { return r.Scheme + "://" + r.Host }

// Ref is the reference of repo (with :tag or @digest) in this registry.
func (r *testRegistry) Ref(repo string) string { return r.Host + "/" + repo }

// Log returns what the registry has logged so far.
func (r *testRegistry) Log() string {
	b, _ := os.ReadFile(r.proc.logFile)
	return string(b)
}

// Stop stops the registry (SIGTERM, then SIGKILL after a grace period);
// its storage stays. Restart brings it back on the same port.
func (r *testRegistry) Stop() { r.proc.stop() }

// Restart starts the stopped registry again, on the same port and
// storage. It fails the test that started the registry if the port was
// taken in between; from another goroutine or subtest, use RestartErr.
func (r *testRegistry) Restart() {
	r.proc.t.Helper()
	if err := r.RestartErr(); err != nil {
		r.proc.t.Fatal(err)
	}
}

// RestartErr is Restart returning the error.
func (r *testRegistry) RestartErr() error {
	r.proc.stop()
	if err := r.proc.start(); err != nil {
		return fmt.Errorf("restart docker-registry on %s: %w; log:\n%s", r.proc.host, err, r.Log())
	}
	return nil
}

// Running reports whether the registry process runs.
func (r *testRegistry) Running() bool {
	r.proc.mu.Lock()
	defer r.proc.mu.Unlock()
	if r.proc.cmd == nil {
		return false
	}
	select {
	case <-r.proc.done:
		return false
	default:
		return true
	}
}

var errAddrInUse = errors.New("address already in use")

// start starts the registry and waits until GET /v2/ answers.
func (p *regProcess) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	logw, err := os.OpenFile(p.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logw.Close()
	fmt.Fprintf(logw, "=== strata test: docker-registry serve on %s at %s\n", p.host, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command("docker-registry", "serve", p.config)
	cmd.Stdout, cmd.Stderr = logw, logw
	// A test binary killed by its timeout runs no cleanup: the registry
	// goes with it rather than staying on as an orphan.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// REGISTRY_* variables override the config file.
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "REGISTRY_") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		p.waitErr = cmd.Wait()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	client := p.httpClient()
	client.Timeout = time.Second
	// This run's part of the log: the registry logs "listening on" once
	// it holds the port. Until then, whatever answers there is not it.
	thisRun := func() string {
		b, _ := os.ReadFile(p.logFile)
		return string(b[max(bytes.LastIndex(b, []byte("=== strata test:")), 0):])
	}
	deadline := time.Now().Add(regStartTimeout)
	for ; time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case <-done:
			if strings.Contains(thisRun(), "address already in use") {
				return fmt.Errorf("%s: %w", p.host, errAddrInUse)
			}
			return fmt.Errorf("docker-registry exited before answering: %v", p.waitErr)
		default:
		}
		if !strings.Contains(thisRun(), "listening on "+p.host) {
			err = errors.New("it has not logged that it listens")
			continue
		}
		var resp *http.Response
		if resp, err = client.Get(p.scheme + "://" + p.host + "/v2/"); err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == p.wantCode {
			return nil
		}
		p.killLocked()
		return fmt.Errorf("GET /v2/: %s, want %d", resp.Status, p.wantCode)
	}
	p.killLocked()
	return fmt.Errorf("GET /v2/ did not answer within %v: %v", regStartTimeout, err)
}

// httpClient trusts the test CA.
func (p *regProcess) httpClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	if p.ca != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: p.ca.pool}
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func (p *regProcess) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.killLocked()
}

// killLocked stops the process, by its PID: SIGTERM, then SIGKILL.
func (p *regProcess) killLocked() {
	if p.cmd == nil {
		return
	}
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(regStopGrace):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	p.cmd = nil
}

// freeLoopbackAddr returns 127.0.0.1:PORT for a port free a moment ago.
func freeLoopbackAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// --- certificates ---

func newRegCA(t testing.TB, dir string) *regCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "strata test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &regCA{cert: cert, key: key, pemFile: filepath.Join(dir, "ca.pem"), pool: x509.NewCertPool()}
	ca.pool.AddCert(cert)
	if err := os.WriteFile(ca.pemFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return ca
}

// issueCert makes a key and a certificate signed by the CA, valid for
// 127.0.0.1 and localhost (TLS servers) and for signing tokens.
func (ca *regCA) issueCert(t testing.TB, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// issue writes a certificate and key from issueCert as PEM files.
func (ca *regCA) issue(t testing.TB, dir, name string) (certFile, keyFile string) {
	t.Helper()
	cert, key := ca.issueCert(t, name)
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// tlsConfig is a server configuration with a fresh certificate.
func (ca *regCA) tlsConfig(t testing.TB, name string) *tls.Config {
	t.Helper()
	cert, key := ca.issueCert(t, name)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}}}
}

// --- token server ---

// tokenServer issues registry tokens (the distribution token spec) on
// loopback, over HTTPS with a certificate of the test CA.
type tokenServer struct {
	Realm string // https://127.0.0.1:PORT/token

	t    testing.TB
	srv  *httptest.Server
	key  *ecdsa.PrivateKey
	cert *x509.Certificate // signs tokens; signed by the CA in the registry's rootcertbundle

	mu       sync.Mutex
	requests []tokenRequest
}

// tokenRequest is one request the token server answered.
type tokenRequest struct {
	Method  string
	User    string   // the user name of the credentials, right or wrong; "" when anonymous
	Scopes  []string // as asked, e.g. "repository:app:pull,push"
	Granted []tokenAccess
	Status  int
}

// tokenAccess is one entry of a token's access claim.
type tokenAccess struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

func startTokenServer(t testing.TB, ca *regCA) *tokenServer {
	t.Helper()
	ts := &tokenServer{t: t}
	ts.cert, ts.key = ca.issueCert(t, "token signer")
	ts.srv = httptest.NewUnstartedServer(http.HandlerFunc(ts.serve))
	ts.srv.TLS = ca.tlsConfig(t, "token server")
	ts.srv.StartTLS()
	t.Cleanup(ts.srv.Close)
	ts.Realm = ts.srv.URL + "/token"
	return ts
}

// Requests returns the requests answered so far.
func (ts *tokenServer) Requests() []tokenRequest {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]tokenRequest(nil), ts.requests...)
}

// Count is the number of token requests answered so far.
func (ts *tokenServer) Count() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return len(ts.requests)
}

// serve answers GET /token (Basic credentials, scope and service in the
// query) and the OAuth2 form POST /token (grant_type=password).
func (ts *tokenServer) serve(w http.ResponseWriter, req *http.Request) {
	tr := tokenRequest{Method: req.Method}
	defer func() {
		ts.mu.Lock()
		ts.requests = append(ts.requests, tr)
		ts.mu.Unlock()
		ts.t.Logf("token server: %s user=%q scopes=%q -> %d, granted %+v", tr.Method, tr.User, tr.Scopes, tr.Status, tr.Granted)
	}()
	fail := func(code int, msg string) {
		tr.Status = code
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"errors":[{"code":"UNAUTHORIZED","message":%q}]}`, msg)
	}
	if req.URL.Path != "/token" {
		fail(http.StatusNotFound, "no such path")
		return
	}
	var user, pass, service string
	var scopes []string
	var hasCreds bool
	switch req.Method {
	case http.MethodGet:
		user, pass, hasCreds = req.BasicAuth()
		service = req.URL.Query().Get("service")
		for _, s := range req.URL.Query()["scope"] {
			scopes = append(scopes, strings.Fields(s)...)
		}
	case http.MethodPost:
		if err := req.ParseForm(); err != nil {
			fail(http.StatusBadRequest, err.Error())
			return
		}
		if g := req.PostForm.Get("grant_type"); g != "password" {
			fail(http.StatusBadRequest, "unsupported grant_type "+g)
			return
		}
		user, pass, hasCreds = req.PostForm.Get("username"), req.PostForm.Get("password"), true
		service = req.PostForm.Get("service")
		scopes = strings.Fields(req.PostForm.Get("scope"))
	default:
		fail(http.StatusMethodNotAllowed, "GET or POST")
		return
	}
	tr.Scopes = scopes
	if service != regService {
		fail(http.StatusBadRequest, fmt.Sprintf("service %q, want %q", service, regService))
		return
	}
	tr.User = user
	readOnly := false
	switch {
	case !hasCreds:
		// Anonymous: a token with no access, as public registries give
		// for private repositories.
	case user == regUser && pass == regPassword:
	case user == regReader && pass == regReaderPassword:
		readOnly = true
	default:
		fail(http.StatusUnauthorized, "bad credentials")
		return
	}
	if hasCreds {
		for _, s := range scopes {
			typ, rest, ok1 := strings.Cut(s, ":")
			i := strings.LastIndex(rest, ":")
			if !ok1 || i < 0 {
				continue
			}
			a := tokenAccess{Type: typ, Name: rest[:i]}
			for _, act := range strings.Split(rest[i+1:], ",") {
				if act != "" && (!readOnly || act == "pull") {
					a.Actions = append(a.Actions, act)
				}
			}
			if len(a.Actions) > 0 {
				tr.Granted = append(tr.Granted, a)
			}
		}
	}
	token, err := ts.sign(tr.User, tr.Granted)
	if err != nil {
		fail(http.StatusInternalServerError, err.Error())
		return
	}
	tr.Status = http.StatusOK
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token": token, "access_token": token, "expires_in": 300, "issued_at": time.Now().UTC().Format(time.RFC3339),
	})
}

// sign makes an ES256 JWT whose header carries the signing certificate
// (x5c), which distribution verifies against its rootcertbundle.
func (ts *tokenServer) sign(sub string, access []tokenAccess) (string, error) {
	if access == nil {
		access = []tokenAccess{}
	}
	now := time.Now()
	jti := make([]byte, 12)
	if _, err := rand.Read(jti); err != nil {
		return "", err
	}
	header, err := json.Marshal(map[string]any{
		"typ": "JWT", "alg": "ES256",
		"x5c": []string{base64.StdEncoding.EncodeToString(ts.cert.Raw)},
	})
	if err != nil {
		return "", err
	}
	claims, err := json.Marshal(map[string]any{
		"iss": regIssuer, "sub": sub, "aud": regService,
		"exp": now.Add(5 * time.Minute).Unix(), "nbf": now.Add(-time.Minute).Unix(), "iat": now.Unix(),
		"jti": hex.EncodeToString(jti), "access": access,
	})
	if err != nil {
		return "", err
	}
	b64 := base64.RawURLEncoding.EncodeToString
	input := b64(header) + "." + b64(claims)
	sum := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, ts.key, sum[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64) // JWS ES256: r and s, 32 bytes each
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + b64(sig), nil
}

// --- a client for assertions ---

// Client is an HTTP client that trusts the registry's CA.
func (r *testRegistry) Client() *http.Client { return r.proc.httpClient() }

// do does one request to the registry at host (Host, or a proxy's
// host) as a client would: on a 401 it answers the challenge with
// user and password (Basic, or a token from the realm for the scopes
// asked), and sends the request again. body may be nil. It returns the
// response with its body read.
func (r *testRegistry) do(t testing.TB, method, host, path string, hdr http.Header, body []byte, user, password string) (*http.Response, []byte) {
	t.Helper()
	resp, b, err := r.doErr(method, host, path, hdr, body, user, password)
	if err != nil {
		t.Fatalf("%s %s%s: %v", method, host, path, err)
	}
	return resp, b
}

// doErr is do without failing the test; a body cut short comes back
// with what was read and the error.
func (r *testRegistry) doErr(method, host, path string, hdr http.Header, body []byte, user, password string) (*http.Response, []byte, error) {
	client := r.Client()
	send := func(auth string) (*http.Response, []byte, error) {
		req, err := http.NewRequest(method, r.Scheme+"://"+host+path, bytes.NewReader(body))
		if err != nil {
			return nil, nil, err
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, b, err
	}
	resp, b, err := send("")
	if err != nil || resp.StatusCode != http.StatusUnauthorized || user == "" {
		return resp, b, err
	}
	auth, err := r.answerChallenge(client, resp.Header.Get("Www-Authenticate"), user, password)
	if err != nil {
		return resp, b, err
	}
	return send(auth)
}

// manifestAccept is every manifest type a pull accepts.
var manifestAccept = strings.Join([]string{
	v1.MediaTypeImageManifest, v1.MediaTypeImageIndex,
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
}, ", ")

// Manifest returns the manifest or index ref (a tag or a digest) of
// repo, read as User, and its media type. It fails the test unless
// the registry has it (with that digest, for a digest).
func (r *testRegistry) Manifest(t testing.TB, repo, ref string) ([]byte, string) {
	t.Helper()
	resp, b := r.do(t, http.MethodGet, r.Host, "/v2/"+repo+"/manifests/"+ref, http.Header{"Accept": {manifestAccept}}, nil, r.User, r.Password)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("manifest %s:%s: %s %s", repo, ref, resp.Status, b)
	}
	if d, err := digest.Parse(ref); err == nil && digest.FromBytes(b) != d {
		t.Fatalf("manifest %s@%s: got content of digest %s", repo, ref, digest.FromBytes(b))
	}
	return b, resp.Header.Get("Content-Type")
}

// Blob returns the blob d of repo, read as User. It fails the test
// unless the registry has it with that digest.
func (r *testRegistry) Blob(t testing.TB, repo string, d digest.Digest) []byte {
	t.Helper()
	resp, b := r.do(t, http.MethodGet, r.Host, "/v2/"+repo+"/blobs/"+d.String(), nil, nil, r.User, r.Password)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("blob %s@%s: %s %s", repo, d, resp.Status, b)
	}
	if got := digest.FromBytes(b); got != d {
		t.Fatalf("blob %s@%s: got content of digest %s", repo, d, got)
	}
	return b
}

var challengeParam = regexp.MustCompile(`(\w+)="([^"]*)"`)

// answerChallenge returns the Authorization value for a challenge.
func (r *testRegistry) answerChallenge(client *http.Client, challenge, user, password string) (string, error) {
	scheme, params, _ := strings.Cut(challenge, " ")
	switch strings.ToLower(scheme) {
	case "basic":
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password)), nil
	case "bearer":
	default:
		return "", fmt.Errorf("unknown challenge %q", challenge)
	}
	p := map[string]string{}
	for _, m := range challengeParam.FindAllStringSubmatch(params, -1) {
		p[m[1]] = m[2]
	}
	q := url.Values{"service": {p["service"]}}
	for _, s := range strings.Fields(p["scope"]) {
		q.Add("scope", s)
	}
	req, err := http.NewRequest(http.MethodGet, p["realm"]+"?"+q.Encode(), nil)
	if err != nil {
		return "", err
	}
	req.SetBasicAuth(user, password)
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var tok struct{ Token string }
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("token server: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil {
		return "", err
	}
	return "Bearer " + tok.Token, nil
}

// --- faulty proxy ---

// proxyFaultKind is what a faulty proxy does wrong.
type proxyFaultKind int

const (
	// faultNone passes everything through.
	faultNone proxyFaultKind = iota
	// faultCorrupt flips a byte (the middle one) of the body of a blob
	// GET, keeping its length.
	faultCorrupt
	// faultCut sends CutAfter bytes of a blob GET's body, then closes the
	// connection.
	faultCut
	// faultUnauthorized answers 401, with the registry's kind of
	// challenge, to a PATCH or PUT of a blob upload, without passing it
	// on: the client must authenticate again and resend it.
	faultUnauthorized
	// faultStall sends CutAfter bytes of a blob GET's body, then sends
	// nothing more until the client goes away: a transfer to kill
	// mid-layer.
	faultStall
	// faultSlow passes the body of a blob GET CutAfter bytes at a time
	// (4 KiB if 0), sleeping Delay between: a download slow to watch.
	faultSlow
)

func (k proxyFaultKind) String() string {
	return [...]string{"none", "corrupt", "cut", "unauthorized", "stall", "slow"}[k]
}

// proxyFault is a fault and how often it fires.
type proxyFault struct {
	Kind     proxyFaultKind
	CutAfter int64         // faultCut: body bytes passed before the connection closes
	Delay    time.Duration // faultSlow: the sleep between chunks
	// Times is how many matching requests the fault hits; 0 means all.
	Times int
}

// proxyRequest is one request the proxy saw.
type proxyRequest struct {
	Method string
	Path   string
	Query  string
	Range  string // the Range header, "" for none
	Auth   string // the Authorization scheme ("Basic", "Bearer"), "" for none
	Status int    // what the proxy answered (the registry's status, or the fault's)
	Fault  string // the fault applied, "" for none
}

// faultyProxy is a reverse proxy on loopback in front of a test
// registry, serving the same scheme (HTTPS with a certificate of the
// registry's CA in TLS modes).
type faultyProxy struct {
	Host string // 127.0.0.1:PORT

	upstream *testRegistry
	srv      *httptest.Server
	mu       sync.Mutex
	fault    proxyFault
	fired    int
	log      []proxyRequest
}

var blobGetPath = regexp.MustCompile(`^/v2/.+/blobs/sha256:[0-9a-f]{64}$`)
var uploadPath = regexp.MustCompile(`^/v2/.+/blobs/uploads/.+`)

// startFaultyProxy starts a proxy in front of upstream with fault set;
// it is closed in t.Cleanup.
func startFaultyProxy(t *testing.T, upstream *testRegistry, fault proxyFault) *faultyProxy {
	t.Helper()
	p := &faultyProxy{upstream: upstream, fault: fault}
	target, err := url.Parse(upstream.URL())
	if err != nil {
		t.Fatal(err)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host // the registry builds Location URLs from it
			pr.SetXForwarded()
		},
		Transport:     upstream.Client().Transport,
		FlushInterval: -1,                         // a cut body reaches the client up to the cut
		ErrorLog:      log.New(io.Discard, "", 0), // a cut body is no news
	}
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		p.serve(rp, w, req)
	}))
	if upstream.proc.ca != nil {
		p.srv.TLS = upstream.proc.ca.tlsConfig(t, "proxy")
		p.srv.StartTLS()
	} else {
		p.srv.Start()
	}
	t.Cleanup(func() {
		p.srv.Close()
		if t.Failed() {
			for _, r := range p.Requests() {
				t.Logf("proxy: %+v", r)
			}
		}
	})
	p.Host = p.srv.Listener.Addr().String()
	return p
}

// SetFault changes the fault; the count of Times starts again.
func (p *faultyProxy) SetFault(f proxyFault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fault, p.fired = f, 0
}

// Requests returns the requests seen so far.
func (p *faultyProxy) Requests() []proxyRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]proxyRequest(nil), p.log...)
}

// Ranges returns the Range headers of the requests seen so far.
func (p *faultyProxy) Ranges() []string {
	var out []string
	for _, r := range p.Requests() {
		if r.Range != "" {
			out = append(out, r.Range)
		}
	}
	return out
}

// Registry is upstream as seen through the proxy: the same registry
// (Stop stops it), with Host the proxy's and the CA under
// CertsDir/HOST for the proxy's host too.
func (p *faultyProxy) Registry(t testing.TB) *testRegistry {
	t.Helper()
	r := *p.upstream
	r.Host = p.Host
	if r.CertsDir != "" {
		r.addCertsDirHost(t, p.Host)
	}
	return &r
}

// current returns the fault set now.
func (p *faultyProxy) current() proxyFault {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fault
}

// fire reports whether the fault f, if still set, may hit one more
// request, and counts that one.
func (p *faultyProxy) fire(f proxyFault) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fault != f || (f.Times > 0 && p.fired >= f.Times) {
		return false
	}
	p.fired++
	return true
}

func (p *faultyProxy) serve(rp *httputil.ReverseProxy, w http.ResponseWriter, req *http.Request) {
	rec := proxyRequest{Method: req.Method, Path: req.URL.Path, Query: req.URL.RawQuery, Range: req.Header.Get("Range")}
	rec.Auth, _, _ = strings.Cut(req.Header.Get("Authorization"), " ")
	sw := &statusWriter{ResponseWriter: w}
	// Logged before it is served, so that a client that has its answer
	// finds its request in the log; the status and fault follow.
	p.mu.Lock()
	at := len(p.log)
	p.log = append(p.log, rec)
	p.mu.Unlock()
	defer func() {
		// Runs on the panic with which ReverseProxy ends a cut body too.
		rec.Status = sw.status
		p.mu.Lock()
		p.log[at] = rec
		p.mu.Unlock()
	}()
	f := p.current()
	isUpload := (req.Method == http.MethodPatch || req.Method == http.MethodPut) && uploadPath.MatchString(req.URL.Path)
	isBlobGet := req.Method == http.MethodGet && blobGetPath.MatchString(req.URL.Path)
	switch {
	case f.Kind == faultUnauthorized && isUpload && p.fire(f):
		rec.Fault = f.Kind.String()
		p.mu.Lock()
		p.log[at].Fault = rec.Fault
		p.mu.Unlock()
		if c := p.challenge(req); c != "" {
			sw.Header().Set("Www-Authenticate", c)
		}
		sw.Header().Set("Content-Type", "application/json")
		sw.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(sw, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required (faulty proxy)"}]}`+"\n")
	case (f.Kind == faultCorrupt || f.Kind == faultCut || f.Kind == faultStall || f.Kind == faultSlow) && isBlobGet:
		// Only a body the registry serves is faulted (not a 401).
		frp := *rp
		frp.ModifyResponse = func(resp *http.Response) error {
			if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
				return nil
			}
			// A cut or a stall needs a body longer than what it lets through.
			if (f.Kind == faultCut || f.Kind == faultStall) && resp.ContentLength >= 0 && resp.ContentLength <= f.CutAfter {
				return nil
			}
			if !p.fire(f) {
				return nil
			}
			rec.Fault = f.Kind.String()
			switch f.Kind {
			case faultCorrupt:
				resp.Body = &corruptReader{r: resp.Body, c: resp.Body, at: max(resp.ContentLength/2, 0)}
			case faultStall:
				resp.Body = &stallReader{r: resp.Body, c: resp.Body, left: f.CutAfter, done: req.Context().Done()}
			case faultSlow:
				resp.Body = &slowReader{r: resp.Body, c: resp.Body, chunk: cmp.Or(f.CutAfter, 4<<10), delay: f.Delay}
			default:
				resp.Body = &cutReader{r: resp.Body, c: resp.Body, left: f.CutAfter}
			}
			return nil
		}
		frp.ServeHTTP(sw, req)
	default:
		rp.ServeHTTP(sw, req)
	}
}

// challenge is the WWW-Authenticate value the registry would send for
// an upload to the repository of req.
func (p *faultyProxy) challenge(req *http.Request) string {
	switch p.upstream.Mode {
	case registryTLSBasic:
		return fmt.Sprintf("Basic realm=%q", regService)
	case registryToken:
		repo := strings.TrimPrefix(req.URL.Path, "/v2/")
		repo = repo[:strings.Index(repo, "/blobs/uploads/")]
		return fmt.Sprintf(`Bearer realm=%q,service=%q,scope="repository:%s:pull,push",error="invalid_token"`, p.upstream.Tokens.Realm, regService, repo)
	}
	return ""
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// corruptReader flips the byte at offset at.
type corruptReader struct {
	r   io.Reader
	c   io.Closer
	off int64
	at  int64
}

func (c *corruptReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	if c.at >= c.off && c.at < c.off+int64(n) {
		b[c.at-c.off] ^= 0xff
	}
	c.off += int64(n)
	return n, err
}

func (c *corruptReader) Close() error { return c.c.Close() }

// errCut ends a body the proxy cuts; ReverseProxy then aborts the
// connection.
var errCut = errors.New("faulty proxy: body cut")

// cutReader passes left bytes, then fails.
type cutReader struct {
	r    io.Reader
	c    io.Closer
	left int64
}

func (c *cutReader) Read(b []byte) (int, error) {
	if c.left <= 0 {
		return 0, errCut
	}
	if int64(len(b)) > c.left {
		b = b[:c.left]
	}
	n, err := c.r.Read(b)
	c.left -= int64(n)
	return n, err
}

func (c *cutReader) Close() error { return c.c.Close() }

// slowReader passes chunk bytes at a time, sleeping delay before each
// chunk but the first.
type slowReader struct {
	r     io.Reader
	c     io.Closer
	chunk int64
	delay time.Duration
	reads int
}

func (s *slowReader) Read(b []byte) (int, error) {
	if s.reads > 0 {
		time.Sleep(s.delay)
	}
	s.reads++
	if int64(len(b)) > s.chunk {
		b = b[:s.chunk]
	}
	return s.r.Read(b)
}

func (s *slowReader) Close() error { return s.c.Close() }

// --- skopeo and fixture images ---

// skopeoEnv keeps skopeo from reading the user's credentials and
// registries configuration.
func skopeoEnv(t testing.TB) []string {
	dir := t.TempDir()
	return append(os.Environ(), "REGISTRY_AUTH_FILE="+filepath.Join(dir, "auth.json"), "XDG_RUNTIME_DIR="+dir)
}

// regSkopeoFlags returns skopeo's flags for reaching reg as prefix
// ("dest-", "src-" or "" for inspect) with creds ("" for none).
func regSkopeoFlags(reg *testRegistry, prefix, creds string) []string {
	args := []string{"--" + prefix + "tls-verify=" + strconv.FormatBool(reg.Scheme == "https")}
	if reg.HostCertDir() != "" {
		args = append(args, "--"+prefix+"cert-dir="+reg.HostCertDir())
	}
	if creds != "" {
		args = append(args, "--"+prefix+"creds="+creds)
	} else {
		args = append(args, "--"+prefix+"no-creds")
	}
	return args
}

// regCreds is reg's user:password, "" in plain mode.
func regCreds(reg *testRegistry) string {
	if reg.User == "" {
		return ""
	}
	return reg.User + ":" + reg.Password
}

// pushWithSkopeo copies the OCI image layout srcOCILayoutDir (its only
// image or index) to repoTag ("repo:tag") in reg, every platform of an
// index, digests preserved.
func pushWithSkopeo(t testing.TB, reg *testRegistry, srcOCILayoutDir, repoTag string) {
	t.Helper()
	needRegistryTool(t, "skopeo")
	args := append([]string{"copy", "--all", "--preserve-digests", "--retry-times=0"}, regSkopeoFlags(reg, "dest-", regCreds(reg))...)
	args = append(args, "oci:"+srcOCILayoutDir, "docker://"+reg.Ref(repoTag))
	cmd := exec.Command("skopeo", args...)
	cmd.Env = skopeoEnv(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// skopeoInspectRaw returns the manifest (or index) of ref ("repo:tag"
// or "repo@digest") in reg as skopeo reads it with creds ("" for none),
// or skopeo's error and output.
func skopeoInspectRaw(t testing.TB, reg *testRegistry, ref, creds string) ([]byte, error) {
	t.Helper()
	needRegistryTool(t, "skopeo")
	args := append([]string{"inspect", "--raw", "--retry-times=0"}, regSkopeoFlags(reg, "", creds)...)
	args = append(args, "docker://"+reg.Ref(ref))
	cmd := exec.Command("skopeo", args...)
	cmd.Env = skopeoEnv(t)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("skopeo %s: %w: %s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out, nil
}

// regImage builds a small image of three gzipped layers (the last
// deletes a file of the first) whose content depends on seed, for
// platform (zero: this machine's).
func regImage(t testing.TB, seed uint64, platform v1.Platform) *imgFixture {
	t.Helper()
	return buildImage(t, imgSpec{
		platform: platform,
		layers: []imgLayerSpec{
			{files: map[string]string{"etc/hostname": "registry\n", "data/base": imgData(seed, 48<<10), "data/gone": "x\n"}, comp: "gzip"},
			{files: map[string]string{"data/mid": imgData(seed+1, 16<<10), "bin/": ""}, comp: "gzip"},
			{files: map[string]string{"data/.wh.gone": "", "data/top": fmt.Sprintf("seed %d\n", seed)}, comp: "gzip"},
		},
		config: v1.ImageConfig{Cmd: []string{"/bin/sh"}, Env: []string{"SEED=" + strconv.FormatUint(seed, 10)}},
	})
}

// regImageLayout writes regImage(seed) as an OCI layout in a new
// directory, named "latest".
func regImageLayout(t testing.TB, seed uint64) (*imgFixture, string) {
	t.Helper()
	f := regImage(t, seed, v1.Platform{})
	return f, writeLayout(t, filepath.Join(t.TempDir(), "layout"), f, "latest")
}

// regMultiPlatform is a multi-platform index and its images.
type regMultiPlatform struct {
	index  v1.Descriptor
	images map[string]*imgFixture // by "linux/amd64", "linux/arm64"
	dir    string                 // the OCI layout
}

// regMultiPlatformLayout writes an index of a linux/amd64 and a
// linux/arm64 image, of different content, as an OCI layout.
func regMultiPlatformLayout(t testing.TB, seed uint64) *regMultiPlatform {
	t.Helper()
	m := &regMultiPlatform{images: map[string]*imgFixture{}, dir: filepath.Join(t.TempDir(), "index")}
	l := newImgLayout(t, m.dir)
	var descs []v1.Descriptor
	for i, arch := range []string{"amd64", "arm64"} {
		f := regImage(t, seed+uint64(10*i), v1.Platform{OS: "linux", Architecture: arch})
		m.images["linux/"+arch] = f
		descs = append(descs, l.image(f))
	}
	m.index = l.indexBlob(descs...)
	l.add(m.index, "latest")
	l.close()
	return m
}

// pushMultiPlatform pushes regMultiPlatformLayout(seed) to repoTag.
func pushMultiPlatform(t testing.TB, reg *testRegistry, repoTag string, seed uint64) *regMultiPlatform {
	t.Helper()
	m := regMultiPlatformLayout(t, seed)
	pushWithSkopeo(t, reg, m.dir, repoTag)
	return m
}

// --- the harness's own test ---

// TestRegistryHarness checks the harness with skopeo and net/http, in
// each mode: an image and a multi-platform index pushed with skopeo read
// back with the right credentials and not with wrong ones; a restart
// keeps the storage; the proxy's faults do what they say.
func TestRegistryHarness(t *testing.T) {
	needRegistryTool(t, "docker-registry", "skopeo")
	for _, mode := range []registryMode{registryPlain, registryTLSBasic, registryToken} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			reg := startRegistry(t, mode)
			img, dir := regImageLayout(t, 1)
			pushWithSkopeo(t, reg, dir, "app:1")
			raw, err := skopeoInspectRaw(t, reg, "app:1", regCreds(reg))
			if err != nil {
				t.Fatal(err)
			}
			if got := digest.FromBytes(raw); got != img.manifestDesc.Digest {
				t.Errorf("skopeo inspect --raw app:1: manifest %s, want %s", got, img.manifestDesc.Digest)
			}
			if mode != registryPlain {
				for _, creds := range []string{"", reg.User + ":wrong", "nobody:" + reg.Password} {
					_, err := skopeoInspectRaw(t, reg, "app:1", creds)
					if err == nil {
						t.Errorf("skopeo inspect with creds %q: succeeded, want a failure", creds)
					} else if !strings.Contains(strings.ToLower(err.Error()), "unauthorized") && !strings.Contains(err.Error(), "401") {
						t.Errorf("skopeo inspect with creds %q: want an authentication failure; got %v", creds, err)
					}
				}
			}
			if mode == registryToken {
				checkTokenServer(t, reg, img)
			}

			m := pushMultiPlatform(t, reg, "multi:1", 100)
			raw, err = skopeoInspectRaw(t, reg, "multi:1", regCreds(reg))
			if err != nil {
				t.Fatal(err)
			}
			var ix v1.Index
			if got := digest.FromBytes(raw); got != m.index.Digest {
				t.Errorf("multi:1: index %s, want %s", got, m.index.Digest)
			} else if err := json.Unmarshal(raw, &ix); err != nil || len(ix.Manifests) != 2 {
				t.Errorf("multi:1: want an index of 2 manifests, got %v: %s", err, raw)
			}
			for p, f := range m.images {
				raw, err := skopeoInspectRaw(t, reg, "multi@"+f.manifestDesc.Digest.String(), regCreds(reg))
				if err != nil || digest.FromBytes(raw) != f.manifestDesc.Digest {
					t.Errorf("multi@%s (%s): %v %s", f.manifestDesc.Digest, p, err, raw)
				}
			}
			if b, mt := reg.Manifest(t, "multi", "1"); digest.FromBytes(b) != m.index.Digest || mt != v1.MediaTypeImageIndex {
				t.Errorf("multi:1 by net/http: %s of type %q, want %s of type %q", digest.FromBytes(b), mt, m.index.Digest, v1.MediaTypeImageIndex)
			}
			arm := m.images["linux/arm64"]
			if b := reg.Blob(t, "multi", arm.configDesc.Digest); !bytes.Equal(b, arm.configBytes) {
				t.Errorf("multi: the arm64 config differs from the one pushed")
			}
			if m.images["linux/amd64"].layers[0].desc.Digest == m.images["linux/arm64"].layers[0].desc.Digest {
				t.Error("the two platforms' images share their first layer; they should differ")
			}

			checkStopRestart(t, reg, img)
			checkFaultyProxy(t, reg, img)
		})
	}
}

// checkTokenServer checks that the token server was asked for the
// scope of a pull and granted it, and that a cross-repository mount
// asks two scopes in one request.
func checkTokenServer(t *testing.T, reg *testRegistry, img *imgFixture) {
	var sawPull bool
	for _, tr := range reg.Tokens.Requests() {
		for _, s := range tr.Scopes {
			if s == "repository:app:pull" && tr.User == regUser && tr.Status == http.StatusOK && len(tr.Granted) == 1 {
				sawPull = true
			}
		}
	}
	if !sawPull {
		t.Errorf("no granted token request for repository:app:pull; requests: %+v", reg.Tokens.Requests())
	}
	// A mount from app into other: the registry's challenge names both
	// repositories; the token grants both.
	layer := img.layers[0].desc.Digest
	before := reg.Tokens.Count()
	resp, body := reg.do(t, http.MethodPost, reg.Host, "/v2/other/blobs/uploads/?mount="+layer.String()+"&from=app", nil, nil, reg.User, reg.Password)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("cross-repository mount: %s %s, want 201", resp.Status, body)
	}
	reqs := reg.Tokens.Requests()[before:]
	if len(reqs) != 1 || len(reqs[0].Scopes) != 2 || len(reqs[0].Granted) != 2 {
		t.Errorf("cross-repository mount: want one token request with two scopes, both granted; got %+v", reqs)
	} else {
		t.Logf("cross-repository mount asked %v", reqs[0].Scopes)
	}
	// The registry checks the signature: a token of the same form from
	// a key its rootcertbundle does not vouch for is refused.
	manifest := "/v2/app/manifests/" + img.manifestDesc.Digest.String()
	access := []tokenAccess{{Type: "repository", Name: "app", Actions: []string{"pull"}}}
	stranger := &tokenServer{}
	stranger.cert, stranger.key = newRegCA(t, t.TempDir()).issueCert(t, "stranger")
	for _, tc := range []struct {
		ts   *tokenServer
		want int
	}{{reg.Tokens, http.StatusOK}, {stranger, http.StatusUnauthorized}} {
		tok, err := tc.ts.sign(regUser, access)
		if err != nil {
			t.Fatal(err)
		}
		hdr := http.Header{"Authorization": {"Bearer " + tok}, "Accept": {v1.MediaTypeImageManifest}}
		if resp, body := reg.do(t, http.MethodGet, reg.Host, manifest, hdr, nil, "", ""); resp.StatusCode != tc.want {
			t.Errorf("GET manifest with a token signed by %s: %s %s, want %d", tc.ts.cert.Issuer.CommonName, resp.Status, body, tc.want)
		}
	}
	// The reader may pull but not push.
	if resp, _ := reg.do(t, http.MethodGet, reg.Host, "/v2/app/blobs/"+layer.String(), nil, nil, regReader, regReaderPassword); resp.StatusCode != http.StatusOK {
		t.Errorf("reader GET blob: %s, want 200", resp.Status)
	}
	if resp, _ := reg.do(t, http.MethodPost, reg.Host, "/v2/app/blobs/uploads/", nil, nil, regReader, regReaderPassword); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("reader starting an upload: %s, want 401", resp.Status)
	}
}

// checkStopRestart stops the registry, sees it gone, restarts it, and
// reads the image back.
func checkStopRestart(t *testing.T, reg *testRegistry, img *imgFixture) {
	reg.Stop()
	if reg.Running() {
		t.Fatal("registry still running after Stop")
	}
	if _, err := reg.Client().Get(reg.URL() + "/v2/"); err == nil {
		t.Error("GET /v2/ answered after Stop")
	}
	if _, err := skopeoInspectRaw(t, reg, "app:1", regCreds(reg)); err == nil {
		t.Error("skopeo inspect succeeded with the registry stopped")
	}
	reg.Restart()
	raw, err := skopeoInspectRaw(t, reg, "app:1", regCreds(reg))
	if err != nil || digest.FromBytes(raw) != img.manifestDesc.Digest {
		t.Errorf("after Restart, app:1: %v %s", err, raw)
	}
}

// checkFaultyProxy fetches a layer through the proxy with each fault.
func checkFaultyProxy(t *testing.T, reg *testRegistry, img *imgFixture) {
	p := startFaultyProxy(t, reg, proxyFault{})
	layer := img.layers[0]
	blobPath := "/v2/app/blobs/" + layer.desc.Digest.String()
	get := func(rangeHdr string) (*http.Response, []byte, error) {
		hdr := http.Header{}
		if rangeHdr != "" {
			hdr.Set("Range", rangeHdr)
		}
		return reg.doErr(http.MethodGet, p.Host, blobPath, hdr, nil, reg.User, reg.Password)
	}

	// Pass-through, and skopeo through the proxy.
	if resp, b, err := get(""); err != nil || resp.StatusCode != 200 || digest.FromBytes(b) != layer.desc.Digest {
		t.Fatalf("blob through the proxy: %v %v, %d bytes of %d", err, resp, len(b), layer.desc.Size)
	}
	if raw, err := skopeoInspectRaw(t, p.Registry(t), "app:1", regCreds(reg)); err != nil || digest.FromBytes(raw) != img.manifestDesc.Digest {
		t.Errorf("skopeo inspect through the proxy: %v %s", err, raw)
	}

	p.SetFault(proxyFault{Kind: faultCorrupt})
	if resp, b, err := get(""); err != nil || resp.StatusCode != 200 {
		t.Errorf("corrupt: %v %v", err, resp)
	} else if int64(len(b)) != layer.desc.Size || digest.FromBytes(b) == layer.desc.Digest {
		t.Errorf("corrupt: %d bytes with digest %s; want %d bytes of another digest than %s", len(b), digest.FromBytes(b), layer.desc.Size, layer.desc.Digest)
	}

	const cut = 10000
	p.SetFault(proxyFault{Kind: faultCut, CutAfter: cut, Times: 1})
	resp, first, err := get("")
	if err == nil || len(first) != cut {
		t.Errorf("cut: want an error after %d bytes; got %v, %d bytes (%v)", cut, err, len(first), resp)
	}
	rng := "bytes=" + strconv.Itoa(len(first)) + "-"
	resp, rest, err := get(rng)
	if err != nil || resp.StatusCode != http.StatusPartialContent || digest.FromBytes(append(first, rest...)) != layer.desc.Digest {
		t.Errorf("resume with Range %s: %v %v, %d+%d bytes, want the rest of the blob", rng, err, resp, len(first), len(rest))
	}
	// In auth modes the first, unauthenticated try carries the Range
	// header too.
	got := p.Ranges()
	if len(got) == 0 {
		t.Errorf("no Range header seen, want %q", rng)
	}
	for _, g := range got {
		if g != rng {
			t.Errorf("Range headers seen: %q, want only %q", got, rng)
			break
		}
	}

	// 401 on the first upload PUT, then through.
	if reg.Mode != registryPlain {
		tokensBefore := 0
		if reg.Tokens != nil {
			tokensBefore = reg.Tokens.Count()
		}
		p.SetFault(proxyFault{Kind: faultUnauthorized, Times: 1})
		blob := []byte("a blob pushed through a faulty proxy\n")
		resp, body := reg.do(t, http.MethodPost, p.Host, "/v2/pushed/blobs/uploads/", nil, nil, reg.User, reg.Password)
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("start upload through the proxy: %s %s", resp.Status, body)
		}
		loc, err := url.Parse(resp.Header.Get("Location"))
		if err != nil || loc.Host != p.Host {
			t.Fatalf("upload Location %q: want one on the proxy %s (%v)", resp.Header.Get("Location"), p.Host, err)
		}
		q := loc.Query()
		q.Set("digest", digest.FromBytes(blob).String())
		put := loc.Path + "?" + q.Encode()
		hdr := http.Header{"Content-Type": {"application/octet-stream"}}
		resp, body, err = reg.doErr(http.MethodPut, p.Host, put, hdr, blob, "", "")
		if err != nil || resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("Www-Authenticate") == "" {
			t.Fatalf("PUT with the fault: want 401 with a challenge; got %v %v %s", err, resp, body)
		}
		resp, body = reg.do(t, http.MethodPut, p.Host, put, hdr, blob, reg.User, reg.Password)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("PUT again after the 401: %s %s, want 201", resp.Status, body)
		}
		if reg.Tokens != nil && reg.Tokens.Count() <= tokensBefore {
			t.Error("no token request after the proxy's 401")
		}
		var faults []string
		for _, r := range p.Requests() {
			if r.Fault != "" {
				faults = append(faults, fmt.Sprintf("%s %s %d %s", r.Method, r.Path[:strings.Index(r.Path, "/blobs/")], r.Status, r.Fault))
			}
		}
		want := []string{"GET /v2/app 200 corrupt", "GET /v2/app 200 cut", "PUT /v2/pushed 401 unauthorized"}
		if strings.Join(faults, "\n") != strings.Join(want, "\n") {
			t.Errorf("faulted requests:\n%s\nwant:\n%s", strings.Join(faults, "\n"), strings.Join(want, "\n"))
		}
	}
}

// stallReader passes left bytes, then blocks until done is closed.
type stallReader struct {
	r    io.Reader
	c    io.Closer
	left int64
	done <-chan struct{}
}

func (s *stallReader) Read(b []byte) (int, error) {
	if s.left <= 0 {
		<-s.done
		return 0, io.ErrUnexpectedEOF
	}
	if int64(len(b)) > s.left {
		b = b[:s.left]
	}
	n, err := s.r.Read(b)
	s.left -= int64(n)
	return n, err
}

func (s *stallReader) Close() error { return s.c.Close() }
