package remote

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"oras.land/oras-go/v2/registry/remote/errcode"
)

func TestAPIHost(t *testing.T) {
	for in, want := range map[string]string{
		"docker.io":       "registry-1.docker.io",
		"index.docker.io": "registry-1.docker.io",
		"quay.io":         "quay.io",
		"localhost:5000":  "localhost:5000",
		"127.0.0.1:5000":  "127.0.0.1:5000",
	} {
		if got := APIHost(in); got != want {
			t.Errorf("APIHost(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAuthFilesOrder(t *testing.T) {
	t.Setenv("REGISTRY_AUTH_FILE", "/a/auth.json")
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/7")
	t.Setenv("DOCKER_CONFIG", "")
	t.Setenv("HOME", "/home/u")
	want := []string{"/a/auth.json", "/run/user/7/containers/auth.json", "/home/u/.docker/config.json"}
	if got := AuthFiles(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("AuthFiles() = %q, want %q", got, want)
	}
	t.Setenv("REGISTRY_AUTH_FILE", "")
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("DOCKER_CONFIG", "/etc/dc")
	if got := AuthFiles(); len(got) != 1 || got[0] != "/etc/dc/config.json" {
		t.Errorf("AuthFiles() with only DOCKER_CONFIG = %q", got)
	}
}

// TestLogoutEveryFile removes the credentials from each file that holds
// them, and from no other.
func TestLogoutEveryFile(t *testing.T) {
	dir := t.TempDir()
	podman := filepath.Join(dir, "run", "containers", "auth.json")
	docker := filepath.Join(dir, "home", ".docker", "config.json")
	for _, f := range []string{podman, docker} {
		os.MkdirAll(filepath.Dir(f), 0o700)
		if err := os.WriteFile(f, []byte(`{"auths":{"reg.example:5000":{"auth":"dTpw"},"other.example":{"auth":"dTpw"}}}`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("REGISTRY_AUTH_FILE", "")
	t.Setenv("XDG_RUNTIME_DIR", filepath.Join(dir, "run"))
	t.Setenv("DOCKER_CONFIG", "")
	t.Setenv("HOME", filepath.Join(dir, "home"))
	removed, err := Logout(context.Background(), "", "reg.example:5000")
	if err != nil || len(removed) != 2 {
		t.Fatalf("Logout = %q, %v; want both files", removed, err)
	}
	for _, f := range []string{podman, docker} {
		b, _ := os.ReadFile(f)
		if strings.Contains(string(b), "reg.example:5000") || !strings.Contains(string(b), "other.example") {
			t.Errorf("%s after logout: %s", f, b)
		}
	}
	if removed, err := Logout(context.Background(), "", "reg.example:5000"); err != nil || len(removed) != 0 {
		t.Errorf("second Logout = %q, %v; want none removed", removed, err)
	}
}

func TestExplain(t *testing.T) {
	u, _ := url.Parse("https://reg.example/v2/")
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&errcode.ErrorResponse{Method: "GET", URL: u, StatusCode: http.StatusUnauthorized}, "strata login reg.example"},
		{&errcode.ErrorResponse{Method: "GET", URL: u, StatusCode: http.StatusForbidden}, "denied access"},
		{&errcode.ErrorResponse{Method: "GET", URL: u, StatusCode: http.StatusTooManyRequests}, "try again later"},
		{&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, "is it running"},
		{errors.New(`http: server gave HTTP response to HTTPS client`), "--tls-verify=false"},
		{fmt.Errorf("get: %w", &net.DNSError{Err: "no such host", Name: "reg.example"}), "check the name"},
	} {
		if got := explain("reg.example", tc.err).Error(); !strings.Contains(got, tc.want) {
			t.Errorf("explain(%v) = %q, want it to say %q", tc.err, got, tc.want)
		}
	}
	var ae *AuthError
	if !errors.As(explain("h", &errcode.ErrorResponse{URL: u, StatusCode: 401}), &ae) {
		t.Error("a 401 is not an AuthError")
	}
}

// TestTLSConfigCertsDir reads CAs and client certificates from the
// host's certs.d directory, and refuses a .crt that holds none.
func TestTLSConfigCertsDir(t *testing.T) {
	dir := t.TempDir()
	saved := CertsDirs
	CertsDirs = []string{dir}
	t.Cleanup(func() { CertsDirs = saved })
	c := &Client{}
	cfg, err := c.tlsConfig("reg.example:5000", false)
	if err != nil || cfg.RootCAs != nil || len(cfg.Certificates) != 0 {
		t.Fatalf("no certs.d directory: %v, %+v", err, cfg)
	}
	host := filepath.Join(dir, "reg.example:5000")
	os.MkdirAll(host, 0o755)
	if err := os.WriteFile(filepath.Join(host, "ca.crt"), []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.tlsConfig("reg.example:5000", false); err == nil || !strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Errorf("a bad ca.crt: %v", err)
	}
	if err := os.WriteFile(filepath.Join(host, "ca.crt"), testCA(t), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err = c.tlsConfig("reg.example:5000", false)
	if err != nil || cfg.RootCAs == nil {
		t.Errorf("a good ca.crt: %v, RootCAs %v", err, cfg.RootCAs)
	}
	if err := os.WriteFile(filepath.Join(host, "client.cert"), testCA(t), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.tlsConfig("reg.example:5000", false); err == nil || !strings.Contains(err.Error(), "client.key") {
		t.Errorf("a client certificate without its key: %v", err)
	}
}

// testCA returns a self-signed certificate in PEM.
func testCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "strata-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
