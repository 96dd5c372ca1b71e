package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// Tests of strata pull, push, login and logout against Debian's
// docker-registry, started by the tests (registry_harness_test.go).

// regClient is a strata store that talks to one test registry, with
// credential files of its own (never the user's).
type regClient struct {
	*cliStore
	reg      *testRegistry
	home     string
	authFile string
}

func newRegClient(t *testing.T, reg *testRegistry) *regClient {
	t.Helper()
	home := t.TempDir()
	return &regClient{cliStore: newCLIStore(t), reg: reg, home: home, authFile: filepath.Join(home, "auth.json")}
}

// env is the environment strata runs in: credentials in authFile only.
func (c *regClient) env() []string {
	return []string{"REGISTRY_AUTH_FILE=" + c.authFile, "HOME=" + c.home, "XDG_RUNTIME_DIR=" + c.home, "DOCKER_CONFIG=" + filepath.Join(c.home, ".docker")}
}

// tlsFlags are the flags that reach the registry: its CA for TLS, plain
// HTTP allowed otherwise.
func (c *regClient) tlsFlags() []string {
	if c.reg.Scheme == "http" {
		return []string{"--tls-verify=false"}
	}
	return []string{"--cert-dir", c.reg.HostCertDir()}
}

// reg runs `strata CMD` with the registry flags; stdin may be "".
func (c *regClient) regRun(stdin string, cmd string, args ...string) cliResult {
	c.t.Helper()
	o := cliOpts{env: c.env()}
	if stdin != "" {
		o.stdin = strings.NewReader(stdin)
	}
	all := append([]string{cmd}, c.tlsFlags()...)
	if cmd == "logout" {
		all = []string{cmd}
	}
	return c.runWith(o, append(all, args...)...)
}

func (c *regClient) regMust(cmd string, args ...string) string {
	c.t.Helper()
	r := c.regRun("", cmd, args...)
	if r.code != 0 || r.err != nil {
		c.t.Fatalf("%v", r)
	}
	return r.stdout
}

// login logs in with the registry's user, if it has one.
func (c *regClient) login() {
	c.t.Helper()
	if c.reg.User == "" {
		return
	}
	r := c.regRun(c.reg.Password+"\n", "login", "-u", c.reg.User, "--password-stdin", c.reg.Host)
	if r.code != 0 || r.stdout != "Login Succeeded\n" {
		c.t.Fatalf("%v", r)
	}
}

var pullDigestRE = regexp.MustCompile(`(?m)^Digest: (sha256:[0-9a-f]{64})$`)
var pushDigestRE = regexp.MustCompile(`(?m)^\S+: digest: (sha256:[0-9a-f]{64}) size: \d+$`)

func matchDigest(t testing.TB, re *regexp.Regexp, out string) string {
	t.Helper()
	m := re.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no digest in output:\n%s", out)
	}
	return m[1]
}

// TestRegistryRoundTrip pulls an image skopeo pushed, in each mode of
// the registry, checks what is stored, pushes it back under another
// name (its blobs mounted across repositories), and pulls that back
// into a new store: digests and image ID are kept throughout.
func TestRegistryRoundTrip(t *testing.T) {
	needRegistryTool(t, "docker-registry", "skopeo")
	for _, mode := range []registryMode{registryPlain, registryTLSBasic, registryToken} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			reg := startRegistry(t, mode)
			img, dir := regImageLayout(t, 7)
			pushWithSkopeo(t, reg, dir, "app:1")

			c := newRegClient(t, reg)
			c.login()
			out := c.regMust("pull", reg.Ref("app:1"))
			if got := matchDigest(t, pullDigestRE, out); got != img.manifestDesc.Digest.String() {
				t.Errorf("pull printed digest %s, want %s", got, img.manifestDesc.Digest)
			}
			for _, want := range []string{"1: Pulling from " + reg.Ref("app"), "Pull complete", "Status: Downloaded newer image for " + reg.Ref("app:1")} {
				if !strings.Contains(out, want) {
					t.Errorf("pull output lacks %q:\n%s", want, out)
				}
			}
			if n := strings.Count(out, ": Pull complete\n"); n != 3 {
				t.Errorf("pull printed %d 'Pull complete' lines, want one per layer (3):\n%s", n, out)
			}
			in := c.inspectImage(reg.Ref("app:1"))
			if in.Id != img.id() {
				t.Errorf("pulled image ID %s, want %s", in.Id, img.id())
			}
			wantRD := reg.Ref("app") + "@" + img.manifestDesc.Digest.String()
			if len(in.RepoDigests) != 1 || in.RepoDigests[0] != wantRD {
				t.Errorf("RepoDigests %q, want [%s]", in.RepoDigests, wantRD)
			}
			if out := c.must("images", "--digests"); !strings.Contains(out, "DIGEST") || !strings.Contains(out, img.manifestDesc.Digest.String()) {
				t.Errorf("images --digests lacks the manifest digest %s:\n%s", img.manifestDesc.Digest, out)
			}
			if got, want := c.imageTree(reg.Ref("app:1")), img.tree(); !equalTrees(got, want) {
				t.Errorf("pulled tree differs:\n%s", strings.Join(diffSnapshots(want, got), "\n"))
			}
			c.mustCheck()

			// Again: nothing to download.
			out = c.regMust("pull", reg.Ref("app:1"))
			if n := strings.Count(out, ": Already exists\n"); n != 3 || !strings.Contains(out, "Status: Image is up to date for "+reg.Ref("app:1")) {
				t.Errorf("second pull: want 3 layers 'Already exists' and up to date:\n%s", out)
			}

			// Push under another repository: every blob mounted from app.
			out = c.regMust("push", reg.Ref("app:1"), reg.Ref("copy/app:2"))
			if got := matchDigest(t, pushDigestRE, out); got != img.manifestDesc.Digest.String() {
				t.Errorf("push printed digest %s, want %s (the digest it was pulled by)", got, img.manifestDesc.Digest)
			}
			if n := strings.Count(out, ": Mounted from app\n"); n != 3 {
				t.Errorf("push to another repository mounted %d layers, want 3:\n%s", n, out)
			}
			raw, err := skopeoInspectRaw(t, reg, "copy/app:2", regCreds(reg))
			if err != nil {
				t.Fatal(err)
			}
			if got := digest.FromBytes(raw); got != img.manifestDesc.Digest {
				t.Errorf("the registry holds copy/app:2 as %s, want %s", got, img.manifestDesc.Digest)
			}
			// Pushed again: the registry has every layer.
			out = c.regMust("push", reg.Ref("app:1"), reg.Ref("copy/app:2"))
			if n := strings.Count(out, ": Layer already exists\n"); n != 3 {
				t.Errorf("second push: want 3 'Layer already exists':\n%s", out)
			}
			in = c.inspectImage(reg.Ref("app:1"))
			if !slices.Contains(in.RepoDigests, reg.Ref("copy/app")+"@"+img.manifestDesc.Digest.String()) {
				t.Errorf("after push, RepoDigests %q lack the pushed repository", in.RepoDigests)
			}

			// Pull back into a new store by digest: same image.
			c2 := newRegClient(t, reg)
			c2.login()
			out = c2.regMust("pull", "-q", reg.Ref("copy/app@"+img.manifestDesc.Digest.String()))
			if want := reg.Ref("copy/app@"+img.manifestDesc.Digest.String()) + "\n"; out != want {
				t.Errorf("pull -q printed %q, want %q", out, want)
			}
			rows := c2.imagesJSON()
			if len(rows) != 1 || c2.inspectImage(rows[0].ID).Id != img.id() {
				t.Fatalf("images after pull by digest: %+v, want one image %s", rows, img.id())
			}
			if rd := c2.inspectImage(rows[0].ID).RepoDigests; len(rd) != 1 || rd[0] != reg.Ref("copy/app")+"@"+img.manifestDesc.Digest.String() {
				t.Errorf("pulled by digest, RepoDigests %q, want the repository at that digest", rd)
			}
			c2.mustCheck()
		})
	}
}

func equalTrees(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestRegistryUserStory is a user's day with strata alone: log in,
// pull, run a container, commit it, push the result, and pull it back
// into another store with the digest the push printed.
func TestRegistryUserStory(t *testing.T) {
	needRegistryTool(t, "docker-registry")
	reg := startRegistry(t, registryToken)
	// A publisher puts a busybox image in the registry.
	pub := newRunStore(t)
	pc := &regClient{cliStore: pub.cliStore, reg: reg, home: t.TempDir()}
	pc.authFile = filepath.Join(pc.home, "auth.json")
	pc.login()
	pc.regMust("push", "busybox:test", reg.Ref("tools/busybox:1"))

	// The user.
	u := newRegClient(t, reg)
	us := &runStore{u.cliStore}
	t.Cleanup(us.removeAll)
	u.login()
	b, err := os.ReadFile(u.authFile)
	if err != nil || !strings.Contains(string(b), reg.Host) {
		t.Fatalf("login wrote no credentials for %s into REGISTRY_AUTH_FILE: %v %s", reg.Host, err, b)
	}
	u.regMust("pull", reg.Ref("tools/busybox:1"))
	r := u.runWith(cliOpts{env: u.env()}, "run", "--name", "job", reg.Ref("tools/busybox:1"), "sh", "-c", "echo built by job > /result; cat /result")
	if r.code != 0 || r.stdout != "built by job\n" {
		t.Fatalf("%v", r)
	}
	u.must("commit", "job", reg.Ref("tools/result:1"))
	out := u.regMust("push", reg.Ref("tools/result:1"))
	pushed := matchDigest(t, pushDigestRE, out)
	// The base layer came from tools/busybox: mounted, not uploaded.
	if !strings.Contains(out, "Mounted from tools/busybox") || !strings.Contains(out, ": Pushed\n") {
		t.Errorf("push: want the base layer mounted from tools/busybox and the new one pushed:\n%s", out)
	}

	v := newRegClient(t, reg)
	v.login()
	out = v.regMust("pull", reg.Ref("tools/result:1"))
	if got := matchDigest(t, pullDigestRE, out); got != pushed {
		t.Errorf("pulled back digest %s, pushed %s", got, pushed)
	}
	vs := &runStore{v.cliStore}
	t.Cleanup(vs.removeAll)
	if r := v.run("run", "--rm", reg.Ref("tools/result:1"), "cat", "/result"); r.code != 0 || r.stdout != "built by job\n" {
		t.Errorf("the pulled-back image: %v", r)
	}
	// Logged out, the registry refuses.
	if r := v.regRun("", "logout", reg.Host); r.code != 0 || !strings.Contains(r.stdout, "Removing login credentials for "+reg.Host) {
		t.Errorf("%v", r)
	}
	if r := v.regRun("", "pull", reg.Ref("tools/result:1")); r.code != 1 || !strings.Contains(r.stderr, "strata login") {
		t.Errorf("pull after logout: want exit 1 saying to log in: %v", r)
	}
	if r := v.regRun("", "logout", reg.Host); r.code != 1 || !strings.Contains(r.stderr, "not logged in to "+reg.Host) {
		t.Errorf("second logout: %v", r)
	}
}

// TestRegistryMultiPlatform pulls from an index: the host's image by
// default, another with --platform, and a clear error for a platform
// the index lacks.
func TestRegistryMultiPlatform(t *testing.T) {
	needRegistryTool(t, "docker-registry", "skopeo")
	reg := startRegistry(t, registryPlain)
	m := pushMultiPlatform(t, reg, "multi:1", 20)
	c := newRegClient(t, reg)
	out := c.regMust("pull", reg.Ref("multi:1"))
	if got := matchDigest(t, pullDigestRE, out); got != m.index.Digest.String() {
		t.Errorf("pull printed %s, want the index's digest %s", got, m.index.Digest)
	}
	host := "linux/amd64"
	if hostArch() == "arm64" {
		host = "linux/arm64"
	}
	if in := c.inspectImage(reg.Ref("multi:1")); in.Id != m.images[host].id() {
		t.Errorf("pulled %s, want the %s image %s", in.Id, host, m.images[host].id())
	}
	other := "linux/arm64"
	if host == other {
		other = "linux/amd64"
	}
	c.regMust("pull", "--platform", other, reg.Ref("multi:1"))
	if in := c.inspectImage(reg.Ref("multi:1")); in.Id != m.images[other].id() {
		t.Errorf("pull --platform %s gave %s, want %s", other, in.Id, m.images[other].id())
	}
	r := c.regRun("", "pull", "--platform", "linux/s390x", reg.Ref("multi:1"))
	if r.code != 1 || !strings.Contains(r.stderr, "linux/s390x") || !strings.Contains(r.stderr, "linux/amd64") {
		t.Errorf("pull for a platform the index lacks: %v", r)
	}
}

func hostArch() string {
	out, _ := exec.Command("uname", "-m").Output()
	if strings.TrimSpace(string(out)) == "aarch64" {
		return "arm64"
	}
	return "amd64"
}

// TestRegistryCorruptBlob serves a corrupt layer: the pull fails naming
// the blob, and nothing is stored, not even the download.
func TestRegistryCorruptBlob(t *testing.T) {
	needRegistryTool(t, "docker-registry", "skopeo")
	reg := startRegistry(t, registryPlain)
	img, dir := regImageLayout(t, 30)
	pushWithSkopeo(t, reg, dir, "app:1")
	p := startFaultyProxy(t, reg, proxyFault{Kind: faultCorrupt})
	c := newRegClient(t, p.Registry(t))
	before := c.imgState()
	r := c.regRun("", "pull", p.Registry(t).Ref("app:1"))
	if r.code != 1 || !strings.Contains(r.stderr, "corrupt") || !strings.Contains(r.stderr, "nothing was stored") {
		t.Fatalf("pull of a corrupt blob: want exit 1 saying it is corrupt: %v", r)
	}
	named := false
	for _, l := range append(img.manifest.Layers, img.manifest.Config) {
		named = named || strings.Contains(r.stderr, l.Digest.String())
	}
	if !named {
		t.Errorf("the error names no blob of the image: %s", r.stderr)
	}
	if after := c.imgState(); after != before {
		t.Errorf("a failed pull changed the store:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if ents, _ := os.ReadDir(filepath.Join(c.root, "downloads")); len(ents) != 0 {
		t.Errorf("downloads/ keeps %d files of a corrupt pull", len(ents))
	}
	c.mustCheck()
	// The same pull through the registry itself works.
	c.reg = reg
	c.regMust("pull", reg.Ref("app:1"))
}

// TestRegistryResume breaks a layer's download off: within a pull it is
// resumed by a range request; after strata is killed mid-layer, the
// next pull asks for the rest only. The store stays consistent.
func TestRegistryResume(t *testing.T) {
	needRegistryTool(t, "docker-registry")
	reg := startRegistry(t, registryPlain)
	// One big layer, so that a cut is mid-layer.
	img := buildImage(t, imgSpec{layers: []imgLayerSpec{{files: map[string]string{"big": imgData(40, 4<<20)}, comp: "gzip"}}})
	dir := writeLayout(t, filepath.Join(t.TempDir(), "layout"), img, "latest")
	pushWithSkopeo(t, reg, dir, "big:1")
	layer := img.manifest.Layers[0]
	const cut = 64 << 10

	t.Run("within a pull", func(t *testing.T) {
		p := startFaultyProxy(t, reg, proxyFault{Kind: faultCut, CutAfter: cut, Times: 1})
		c := newRegClient(t, p.Registry(t))
		c.regMust("pull", p.Registry(t).Ref("big:1"))
		if !slices.Contains(p.Ranges(), fmt.Sprintf("bytes=%d-", cut)) {
			t.Errorf("the broken download was not resumed from byte %d: ranges asked %q", cut, p.Ranges())
		}
		if in := c.inspectImage(p.Registry(t).Ref("big:1")); in.Id != img.id() {
			t.Errorf("image %s, want %s", in.Id, img.id())
		}
	})

	// killPull starts a pull through a proxy that stalls the layer
	// mid-way, kills it with SIGKILL once it holds part of the layer,
	// and returns the proxy, the store and the bytes left downloaded.
	killPull := func(t *testing.T) (*faultyProxy, *regClient, int64) {
		p := startFaultyProxy(t, reg, proxyFault{Kind: faultStall, CutAfter: cut, Times: 1})
		preg := p.Registry(t)
		c := newRegClient(t, preg)
		cmd, stdout, stderr, err := cliCommand(t.TempDir(), cliOpts{env: c.env()}, c.args(append(append([]string{"pull"}, c.tlsFlags()...), preg.Ref("big:1")))...)
		if err != nil {
			t.Fatal(err)
		}
		defer stdout.Close()
		defer stderr.Close()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		part := filepath.Join(c.root, "downloads", layer.Digest.Encoded())
		deadline := time.Now().Add(30 * time.Second)
		for {
			if fi, err := os.Stat(part); err == nil && fi.Size() >= cut/2 {
				break
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				cmd.Wait()
				b, _ := os.ReadFile(stderr.Name())
				t.Fatalf("the download never reached %d bytes; stderr:\n%s", cut, b)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		fi, err := os.Stat(part)
		if err != nil {
			t.Fatalf("the killed pull left no partial download: %v", err)
		}
		return p, c, fi.Size()
	}

	t.Run("after kill -9", func(t *testing.T) {
		p, c, held := killPull(t)
		preg := p.Registry(t)
		if rows := c.imagesJSON(); len(rows) != 0 {
			t.Errorf("a killed pull recorded images: %+v", rows)
		}
		// What a kill leaves is an interrupted operation, which the next
		// command that changes the store repairs.
		if r := c.run("check"); r.code == 0 || !strings.Contains(r.stdout, "of an interrupted operation") || strings.Count(r.stdout, "\n") != strings.Count(r.stdout, "of an interrupted operation") {
			t.Errorf("check after kill -9: want only interrupted operations: %v", r)
		}
		p.SetFault(proxyFault{})
		c.regMust("pull", preg.Ref("big:1"))
		want := fmt.Sprintf("bytes=%d-", held)
		if !slices.Contains(p.Ranges(), want) {
			t.Errorf("the pull after the kill did not resume with %q: ranges asked %q", want, p.Ranges())
		}
		full := 0
		for _, rq := range p.Requests() {
			if rq.Method == "GET" && strings.HasSuffix(rq.Path, layer.Digest.String()) && rq.Range == "" {
				full++
			}
		}
		if full != 1 {
			t.Errorf("the layer was asked for whole %d times, want once (then resumed)", full)
		}
		if in := c.inspectImage(preg.Ref("big:1")); in.Id != img.id() {
			t.Errorf("image %s, want %s", in.Id, img.id())
		}
		if ents, _ := os.ReadDir(filepath.Join(c.root, "downloads")); len(ents) != 0 {
			t.Errorf("downloads/ keeps %d files after a complete pull", len(ents))
		}
		c.mustCheck()
	})

	t.Run("prune drops a broken-off download", func(t *testing.T) {
		_, c, held := killPull(t)
		out := c.imgMust("image", "prune", "-f")
		if ents, _ := os.ReadDir(filepath.Join(c.root, "downloads")); len(ents) != 0 {
			t.Errorf("image prune left %d downloads of a killed pull", len(ents))
		}
		if held < 1000 || !strings.Contains(out, "Total reclaimed space:") || strings.Contains(out, "Total reclaimed space: 0B") {
			t.Errorf("image prune: want the download's space reclaimed:\n%s", out)
		}
		c.mustCheck()
	})
}

// TestRegistryErrors: wrong credentials, a registry that is down, an
// unknown image and an untrusted certificate each get a clear error,
// exit 1, and change nothing.
func TestRegistryErrors(t *testing.T) {
	needRegistryTool(t, "docker-registry", "skopeo")
	for _, mode := range []registryMode{registryTLSBasic, registryToken} {
		t.Run("wrong credentials/"+mode.String(), func(t *testing.T) {
			t.Parallel()
			reg := startRegistry(t, mode)
			_, dir := regImageLayout(t, 50)
			pushWithSkopeo(t, reg, dir, "app:1")
			c := newRegClient(t, reg)
			r := c.regRun("wrong-password\n", "login", "-u", reg.User, "--password-stdin", reg.Host)
			if r.code != 1 || !strings.Contains(r.stderr, "refused the credentials") {
				t.Errorf("login with a wrong password: %v", r)
			}
			if _, err := os.Stat(c.authFile); err == nil {
				b, _ := os.ReadFile(c.authFile)
				if strings.Contains(string(b), reg.Host) {
					t.Errorf("a refused login was saved: %s", b)
				}
			}
			before := c.imgState()
			r = c.regRun("", "pull", "--creds", reg.User+":wrong-password", reg.Ref("app:1"))
			if r.code != 1 || !strings.Contains(r.stderr, "refused the credentials") {
				t.Errorf("pull with wrong --creds: %v", r)
			}
			if strings.Contains(r.stderr+r.stdout, "wrong-password") {
				t.Errorf("strata printed the password: %v", r)
			}
			if after := c.imgState(); after != before {
				t.Errorf("a refused pull changed the store:\n%s\n%s", before, after)
			}
		})
	}
	t.Run("down", func(t *testing.T) {
		reg := startRegistry(t, registryPlain)
		c := newRegClient(t, reg)
		reg.Stop()
		before := c.imgState()
		r := c.regRun("", "pull", reg.Ref("app:1"))
		if r.code != 1 || !strings.Contains(r.stderr, "cannot reach registry "+reg.Host) || !strings.Contains(r.stderr, "connection refused") {
			t.Errorf("pull from a registry that is down: %v", r)
		}
		if after := c.imgState(); after != before {
			t.Errorf("changed the store:\n%s\n%s", before, after)
		}
	})
	t.Run("unknown image", func(t *testing.T) {
		reg := startRegistry(t, registryPlain)
		c := newRegClient(t, reg)
		r := c.regRun("", "pull", reg.Ref("nothing:here"))
		if r.code != 1 || !strings.Contains(r.stderr, "not found") {
			t.Errorf("pull of an unknown image: %v", r)
		}
	})
	t.Run("untrusted certificate", func(t *testing.T) {
		reg := startRegistry(t, registryTLSBasic)
		c := newRegClient(t, reg)
		r := c.runWith(cliOpts{env: c.env()}, "pull", reg.Ref("app:1"))
		if r.code != 1 || !strings.Contains(r.stderr, "not trusted") || !strings.Contains(r.stderr, "certs.d/"+reg.Host) {
			t.Errorf("pull from a registry of an unknown CA: %v", r)
		}
		r = c.runWith(cliOpts{env: c.env()}, "pull", "--tls-verify=false", "--creds", regCreds(reg), reg.Ref("app:1"))
		if r.code != 1 || !strings.Contains(r.stderr, "not found") {
			t.Errorf("pull with --tls-verify=false reaches the registry, and finds no such image: %v", r)
		}
		// The CA where podman keeps it, for this registry's host only.
		certs := filepath.Join("/etc/containers/certs.d", reg.Host)
		if err := os.MkdirAll(certs, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(certs) })
		ca, err := os.ReadFile(reg.CAFile)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(certs, "ca.crt"), ca, 0o644); err != nil {
			t.Fatal(err)
		}
		r = c.runWith(cliOpts{env: c.env()}, "pull", "--creds", regCreds(reg), reg.Ref("app:1"))
		if r.code != 1 || !strings.Contains(r.stderr, "not found") {
			t.Errorf("pull with the CA in /etc/containers/certs.d/HOST reaches the registry, and finds no such image: %v", r)
		}
	})
	t.Run("plain HTTP without --tls-verify=false", func(t *testing.T) {
		reg := startRegistry(t, registryPlain)
		c := newRegClient(t, reg)
		r := c.runWith(cliOpts{env: c.env()}, "pull", reg.Ref("app:1"))
		if r.code != 1 || !strings.Contains(r.stderr, "plain HTTP") || !strings.Contains(r.stderr, "--tls-verify=false") {
			t.Errorf("pull from a plain HTTP registry: %v", r)
		}
		// Named insecure, by flag or in the environment, it is used.
		r = c.runWith(cliOpts{env: c.env()}, "pull", "--insecure-registry", reg.Host, reg.Ref("app:1"))
		if r.code != 1 || !strings.Contains(r.stderr, "not found") {
			t.Errorf("pull --insecure-registry HOST reaches the registry, and finds no such image: %v", r)
		}
		r = c.runWith(cliOpts{env: append(c.env(), "STRATA_INSECURE_REGISTRIES=example.com,"+reg.Host)}, "pull", reg.Ref("app:1"))
		if r.code != 1 || !strings.Contains(r.stderr, "not found") {
			t.Errorf("pull with HOST in $STRATA_INSECURE_REGISTRIES reaches the registry, and finds no such image: %v", r)
		}
	})
}

// TestRegistryConcurrentPulls pulls 10 images sharing a base, at once,
// into one store: each layer is downloaded and stored once.
func TestRegistryConcurrentPulls(t *testing.T) {
	needRegistryTool(t, "docker-registry", "skopeo")
	reg := startRegistry(t, registryPlain)
	p := startFaultyProxy(t, reg, proxyFault{})
	preg := p.Registry(t)
	base := map[string]string{"base/data": imgData(60, 1<<20), "etc/os-release": "ID=shared\n"}
	var imgs []*imgFixture
	for i := 0; i < 10; i++ {
		img := buildImage(t, imgSpec{layers: []imgLayerSpec{
			{files: base, comp: "gzip"},
			{files: map[string]string{fmt.Sprintf("app/%d", i): imgData(uint64(61+i), 32<<10)}, comp: "gzip"},
		}})
		imgs = append(imgs, img)
		pushWithSkopeo(t, reg, writeLayout(t, filepath.Join(t.TempDir(), "layout"), img, "latest"), fmt.Sprintf("app%d:1", i))
	}
	c := newRegClient(t, preg)
	var wg sync.WaitGroup
	results := make([]cliResult, len(imgs))
	for i := range imgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = c.regRun("", "pull", preg.Ref(fmt.Sprintf("app%d:1", i)))
		}()
	}
	wg.Wait()
	for _, r := range results {
		if r.code != 0 {
			t.Errorf("%v", r)
		}
	}
	baseDigest := imgs[0].manifest.Layers[0].Digest
	gets := 0
	for _, rq := range p.Requests() {
		if rq.Method == "GET" && strings.HasSuffix(rq.Path, "/blobs/"+baseDigest.String()) {
			gets++
		}
	}
	if gets != 1 {
		t.Errorf("the shared base layer was downloaded %d times, want once", gets)
	}
	// Blobs: one base, and a layer, a config and a manifest per image.
	ents, err := os.ReadDir(filepath.Join(c.root, "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	if want := 1 + 3*len(imgs); len(ents) != want {
		t.Errorf("the store keeps %d blobs, want %d", len(ents), want)
	}
	committed := 0
	for _, l := range c.list() {
		if l.Kind == "committed" {
			committed++
		}
	}
	if want := 1 + len(imgs); committed != want {
		t.Errorf("the store has %d layers, want %d (one base)", committed, want)
	}
	for i, img := range imgs {
		if in := c.inspectImage(preg.Ref(fmt.Sprintf("app%d:1", i))); in.Id != img.id() {
			t.Errorf("app%d: %s, want %s", i, in.Id, img.id())
		}
	}
	c.mustCheck()
}

// TestRegistryPushReauth answers 401 to an upload mid-push, as a token
// that expires would: the push authenticates again and completes.
func TestRegistryPushReauth(t *testing.T) {
	needRegistryTool(t, "docker-registry", "skopeo")
	reg := startRegistry(t, registryToken)
	_, dir := regImageLayout(t, 80)
	pushWithSkopeo(t, reg, dir, "src:1")
	c := newRegClient(t, reg)
	c.login()
	c.regMust("pull", reg.Ref("src:1"))
	p := startFaultyProxy(t, reg, proxyFault{Kind: faultUnauthorized, Times: 1})
	pc := &regClient{cliStore: c.cliStore, reg: p.Registry(t), home: c.home, authFile: c.authFile}
	// Log in to the proxy's host too: credentials are per host.
	pc.login()
	tokens := reg.Tokens.Count()
	out := pc.regMust("push", reg.Ref("src:1"), p.Registry(t).Ref("dst:1"))
	if got := reg.Tokens.Count(); got <= tokens {
		t.Errorf("no new token was asked for after the 401 (%d before, %d after)", tokens, got)
	}
	faulted := 0
	for _, rq := range p.Requests() {
		if rq.Fault == "unauthorized" {
			faulted++
		}
	}
	if faulted != 1 {
		t.Errorf("the proxy refused %d uploads, want 1", faulted)
	}
	if _, err := skopeoInspectRaw(t, reg, "dst:1", regCreds(reg)); err != nil {
		t.Errorf("dst:1 is not in the registry after the push: %v\n%s", err, out)
	}
}

// TestRegistryCredentials: login writes where docker and podman look,
// a credential helper named in config.json is used, and no secret is
// printed under --debug or written into the store.
func TestRegistryCredentials(t *testing.T) {
	needRegistryTool(t, "docker-registry", "skopeo")
	reg := startRegistry(t, registryTLSBasic)
	_, dir := regImageLayout(t, 90)
	pushWithSkopeo(t, reg, dir, "app:1")

	t.Run("docker config", func(t *testing.T) {
		c := newRegClient(t, reg)
		env := []string{"HOME=" + c.home, "REGISTRY_AUTH_FILE=", "XDG_RUNTIME_DIR=", "DOCKER_CONFIG="}
		all := append(append([]string{"login"}, c.tlsFlags()...), "-u", reg.User, "--password-stdin", reg.Host)
		if r := c.runWith(cliOpts{env: env, stdin: strings.NewReader(reg.Password)}, all...); r.code != 0 {
			t.Fatalf("%v", r)
		}
		b, err := os.ReadFile(filepath.Join(c.home, ".docker", "config.json"))
		if err != nil || !strings.Contains(string(b), `"`+reg.Host+`"`) {
			t.Fatalf("login did not write ~/.docker/config.json: %v %s", err, b)
		}
		fi, _ := os.Stat(filepath.Join(c.home, ".docker", "config.json"))
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("config.json has mode %v: others may read the credentials", fi.Mode().Perm())
		}
		// skopeo reads what strata wrote.
		cmd := exec.Command("skopeo", "inspect", "--raw", "--cert-dir", reg.HostCertDir(), "--authfile", filepath.Join(c.home, ".docker", "config.json"), "docker://"+reg.Ref("app:1"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("skopeo with strata's config.json: %v\n%s", err, out)
		}
		r := c.runWith(cliOpts{env: append(env, "STRATA_TEST=1")}, append(append([]string{"pull", "--debug"}, c.tlsFlags()...), reg.Ref("app:1"))...)
		if r.code != 0 {
			t.Fatalf("%v", r)
		}
		if !strings.Contains(r.stderr, "GET https://"+reg.Host+"/v2/") {
			t.Errorf("--debug logged no request:\n%s", r.stderr)
		}
		if strings.Contains(r.stderr+r.stdout, reg.Password) {
			t.Errorf("--debug printed the password")
		}
		walkNoSecret(t, c.root, reg.Password)
		lo := c.runWith(cliOpts{env: env}, "logout", reg.Host)
		if lo.code != 0 {
			t.Errorf("%v", lo)
		}
		b, _ = os.ReadFile(filepath.Join(c.home, ".docker", "config.json"))
		if strings.Contains(string(b), reg.Host) {
			t.Errorf("logout left the credentials: %s", b)
		}
	})

	t.Run("podman auth.json", func(t *testing.T) {
		c := newRegClient(t, reg)
		run := filepath.Join(c.home, "run")
		env := []string{"HOME=" + c.home, "REGISTRY_AUTH_FILE=", "XDG_RUNTIME_DIR=" + run}
		all := append(append([]string{"login"}, c.tlsFlags()...), "-u", reg.User, "--password-stdin", reg.Host)
		if r := c.runWith(cliOpts{env: env, stdin: strings.NewReader(reg.Password)}, all...); r.code != 0 {
			t.Fatalf("%v", r)
		}
		if b, err := os.ReadFile(filepath.Join(run, "containers", "auth.json")); err != nil || !strings.Contains(string(b), reg.Host) {
			t.Fatalf("login did not write $XDG_RUNTIME_DIR/containers/auth.json: %v %s", err, b)
		}
	})

	t.Run("credential helper", func(t *testing.T) {
		c := newRegClient(t, reg)
		bin := t.TempDir()
		helper := fmt.Sprintf("#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread host\necho '{\"ServerURL\":\"'$host'\",\"Username\":%q,\"Secret\":%q}'\n", reg.User, reg.Password)
		if err := os.WriteFile(filepath.Join(bin, "docker-credential-strata-test"), []byte(helper), 0o755); err != nil {
			t.Fatal(err)
		}
		cfg := filepath.Join(c.home, ".docker", "config.json")
		os.MkdirAll(filepath.Dir(cfg), 0o700)
		b, _ := json.Marshal(map[string]any{"credHelpers": map[string]string{reg.Host: "strata-test"}})
		if err := os.WriteFile(cfg, b, 0o600); err != nil {
			t.Fatal(err)
		}
		env := []string{"HOME=" + c.home, "REGISTRY_AUTH_FILE=", "XDG_RUNTIME_DIR=", "PATH=" + bin + ":" + os.Getenv("PATH")}
		r := c.runWith(cliOpts{env: env}, append(append([]string{"pull"}, c.tlsFlags()...), reg.Ref("app:1"))...)
		if r.code != 0 {
			t.Fatalf("pull with a credential helper: %v", r)
		}
	})
}

// walkNoSecret fails if any file under root holds secret.
func walkNoSecret(t *testing.T, root, secret string) {
	t.Helper()
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() || fi.Size() > 64<<20 {
			return nil
		}
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), secret) {
			t.Errorf("%s holds the password", p)
		}
		return nil
	})
}

// TestRegistryTransports: import docker://REF is a pull, export to
// docker://REF a push, as skopeo spells them.
func TestRegistryTransports(t *testing.T) {
	needRegistryTool(t, "docker-registry", "skopeo")
	reg := startRegistry(t, registryPlain)
	img, dir := regImageLayout(t, 100)
	pushWithSkopeo(t, reg, dir, "app:1")
	c := newRegClient(t, reg)
	c.regMust("import", "docker://"+reg.Ref("app:1"), "mine:1")
	if in := c.inspectImage("mine:1"); in.Id != img.id() {
		t.Errorf("import docker:// then tag: %s, want %s", in.Id, img.id())
	}
	out := c.regMust("export", "mine:1", "docker://"+reg.Ref("again:2"))
	if got := matchDigest(t, pushDigestRE, out); got != img.manifestDesc.Digest.String() {
		t.Errorf("export to docker:// pushed %s, want %s", got, img.manifestDesc.Digest)
	}
	raw, err := skopeoInspectRaw(t, reg, "again:2", "")
	if err != nil || digest.FromBytes(raw) != img.manifestDesc.Digest {
		t.Errorf("again:2 in the registry: %v, digest %s, want %s", err, digest.FromBytes(raw), img.manifestDesc.Digest)
	}
}

// TestRegistrySharedBlobs pulls an image that gives one layer blob
// twice (as images with repeated empty layers do), then an image with
// the same blobs in another order: each blob is downloaded once, and a
// blob the store has is applied from the store.
func TestRegistrySharedBlobs(t *testing.T) {
	needRegistryTool(t, "docker-registry", "skopeo")
	reg := startRegistry(t, registryPlain)
	p := startFaultyProxy(t, reg, proxyFault{})
	preg := p.Registry(t)
	a := imgLayerSpec{files: map[string]string{"a/file": imgData(110, 64<<10)}, comp: "gzip"}
	b := imgLayerSpec{files: map[string]string{"b/file": imgData(111, 64<<10), "a/file": "replaced by b\n"}, comp: "gzip"}
	aba := buildImage(t, imgSpec{layers: []imgLayerSpec{a, b, a}})
	ba := buildImage(t, imgSpec{layers: []imgLayerSpec{b, a}})
	if aba.manifest.Layers[0].Digest != aba.manifest.Layers[2].Digest || ba.manifest.Layers[1].Digest != aba.manifest.Layers[0].Digest {
		t.Fatal("the fixture's equal layers have different blobs")
	}
	pushWithSkopeo(t, reg, writeLayout(t, filepath.Join(t.TempDir(), "aba"), aba, "latest"), "aba:1")
	pushWithSkopeo(t, reg, writeLayout(t, filepath.Join(t.TempDir(), "ba"), ba, "latest"), "ba:1")
	c := newRegClient(t, preg)
	blobGets := func() map[string]int {
		n := map[string]int{}
		for _, rq := range p.Requests() {
			if rq.Method == "GET" && strings.Contains(rq.Path, "/blobs/") {
				n[rq.Path[strings.LastIndex(rq.Path, "/")+1:]]++
			}
		}
		return n
	}
	c.regMust("pull", preg.Ref("aba:1"))
	if got, want := c.imageTree(preg.Ref("aba:1")), aba.tree(); !equalTrees(got, want) {
		t.Errorf("aba's tree differs:\n%s", strings.Join(diffSnapshots(want, got), "\n"))
	}
	if n := blobGets()[aba.manifest.Layers[0].Digest.String()]; n != 1 {
		t.Errorf("the blob given twice was downloaded %d times, want once", n)
	}
	c.regMust("pull", preg.Ref("ba:1"))
	if got, want := c.imageTree(preg.Ref("ba:1")), ba.tree(); !equalTrees(got, want) {
		t.Errorf("ba's tree differs:\n%s", strings.Join(diffSnapshots(want, got), "\n"))
	}
	gets := blobGets()
	for _, l := range ba.manifest.Layers {
		if gets[l.Digest.String()] != 1 {
			t.Errorf("blob %s downloaded %d times in all, want once: the second image has it in the store", l.Digest, gets[l.Digest.String()])
		}
	}
	c.mustCheck()
}

// TestRegistryPullAllTags: pull -a pulls every tag of a repository, and
// refuses a reference with a tag.
func TestRegistryPullAllTags(t *testing.T) {
	needRegistryTool(t, "docker-registry", "skopeo")
	reg := startRegistry(t, registryPlain)
	one, dir1 := regImageLayout(t, 120)
	two, dir2 := regImageLayout(t, 121)
	pushWithSkopeo(t, reg, dir1, "app:one")
	pushWithSkopeo(t, reg, dir2, "app:two")
	c := newRegClient(t, reg)
	out := c.regMust("pull", "-a", reg.Ref("app"))
	for tag, img := range map[string]*imgFixture{"one": one, "two": two} {
		if in := c.inspectImage(reg.Ref("app:" + tag)); in.Id != img.id() {
			t.Errorf("app:%s is %s, want %s\n%s", tag, in.Id, img.id(), out)
		}
	}
	if r := c.regRun("", "pull", "-a", reg.Ref("app:one")); r.code != 2 || !strings.Contains(r.stderr, "--all-tags") {
		t.Errorf("pull -a with a tag: want a usage error: %v", r)
	}
}

// TestRegistryDiskFull pulls into a store on a small tmpfs: the pull
// fails saying the disk is full and what to do, the store stays
// consistent, and once there is room the pull resumes where it stopped.
func TestRegistryDiskFull(t *testing.T) {
	needRegistryTool(t, "docker-registry", "skopeo")
	reg := startRegistry(t, registryPlain)
	img := buildImage(t, imgSpec{layers: []imgLayerSpec{{files: map[string]string{"big": imgData(130, 6<<20)}, comp: "gzip"}}})
	pushWithSkopeo(t, reg, writeLayout(t, filepath.Join(t.TempDir(), "layout"), img, "latest"), "big:1")
	p := startFaultyProxy(t, reg, proxyFault{})
	c := newRegClient(t, p.Registry(t))
	if err := os.MkdirAll(c.root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", c.root, "tmpfs", 0, "size=4m"); err != nil {
		t.Fatalf("mount a small tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(c.root, syscall.MNT_DETACH) })
	r := c.regRun("", "pull", p.Registry(t).Ref("big:1"))
	if r.code != 1 || !strings.Contains(r.stderr, "no space left on device") || !strings.Contains(r.stderr, "free some space") {
		t.Fatalf("pull onto a full disk: want exit 1 saying so: %v", r)
	}
	if rows := c.imagesJSON(); len(rows) != 0 {
		t.Errorf("a failed pull recorded images: %+v", rows)
	}
	c.mustCheck()
	fi, err := os.Stat(filepath.Join(c.root, "downloads", img.manifest.Layers[0].Digest.Encoded()))
	if err != nil || fi.Size() == 0 {
		t.Fatalf("the broken download is not kept to resume: %v", err)
	}
	if err := syscall.Mount("tmpfs", c.root, "tmpfs", syscall.MS_REMOUNT, "size=64m"); err != nil {
		t.Fatalf("grow the tmpfs: %v", err)
	}
	c.regMust("pull", p.Registry(t).Ref("big:1"))
	if want := fmt.Sprintf("bytes=%d-", fi.Size()); !slices.Contains(p.Ranges(), want) {
		t.Errorf("the pull after freeing space did not resume with %q: %q", want, p.Ranges())
	}
	if in := c.inspectImage(p.Registry(t).Ref("big:1")); in.Id != img.id() {
		t.Errorf("image %s, want %s", in.Id, img.id())
	}
	c.mustCheck()
}

// TestRegistryCrossedPulls pulls, at once into one store, two images
// whose two layer blobs come in opposite orders: neither pull may wait
// for the other's locks for ever.
func TestRegistryCrossedPulls(t *testing.T) {
	needRegistryTool(t, "docker-registry", "skopeo")
	reg := startRegistry(t, registryPlain)
	p := startFaultyProxy(t, reg, proxyFault{Kind: faultSlow, CutAfter: 32 << 10, Delay: 5 * time.Millisecond})
	preg := p.Registry(t)
	a := imgLayerSpec{files: map[string]string{"a": imgData(140, 512<<10)}, comp: "gzip"}
	b := imgLayerSpec{files: map[string]string{"b": imgData(141, 512<<10)}, comp: "gzip"}
	ab := buildImage(t, imgSpec{layers: []imgLayerSpec{a, b}})
	ba := buildImage(t, imgSpec{layers: []imgLayerSpec{b, a}})
	pushWithSkopeo(t, reg, writeLayout(t, filepath.Join(t.TempDir(), "ab"), ab, "latest"), "ab:1")
	pushWithSkopeo(t, reg, writeLayout(t, filepath.Join(t.TempDir(), "ba"), ba, "latest"), "ba:1")
	c := newRegClient(t, preg)
	var wg sync.WaitGroup
	res := make([]cliResult, 2)
	for i, ref := range []string{"ab:1", "ba:1"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i] = c.regRun("", "pull", preg.Ref(ref))
		}()
	}
	wg.Wait()
	for _, r := range res {
		if r.code != 0 {
			t.Errorf("%v", r)
		}
	}
	for ref, img := range map[string]*imgFixture{"ab:1": ab, "ba:1": ba} {
		if in := c.inspectImage(preg.Ref(ref)); in.Id != img.id() {
			t.Errorf("%s: %s, want %s", ref, in.Id, img.id())
		}
	}
	c.mustCheck()
}
