package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Tests of strata build through the built binary, on the busybox
// images of newRunStore (busybox:base has sh, cat, echo, ls, id, ...).

// buildContext writes files (name to content) into a new context
// directory.
func buildContext(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	writeTree(t, dir, files)
	return dir
}

// builtConfig is the part of an image's config a build sets.
type builtConfig struct {
	Config struct {
		Env          []string
		Cmd          []string
		Entrypoint   []string
		WorkingDir   string
		User         string
		Labels       map[string]string
		ExposedPorts map[string]struct{}
		Volumes      map[string]struct{}
		StopSignal   string
	}
	History []struct {
		CreatedBy  string `json:"created_by"`
		EmptyLayer bool   `json:"empty_layer"`
	}
}

func (s *runStore) builtConfig(t *testing.T, ref string) builtConfig {
	t.Helper()
	out := s.must("inspect", "--format", "{{json .Config}}", ref)
	var c builtConfig
	if err := json.Unmarshal([]byte(out), &c.Config); err != nil {
		t.Fatalf("inspect %s: %v\n%s", ref, err, out)
	}
	out = s.must("inspect", "--format", "{{json .History}}", ref)
	if err := json.Unmarshal([]byte(out), &c.History); err != nil {
		t.Fatalf("inspect %s history: %v\n%s", ref, err, out)
	}
	return c
}

var buildStepRE = regexp.MustCompile(`(?m)^#(\d+) (CACHED|DONE)`)

// steps counts the steps a build printed as CACHED and as DONE.
func steps(out string) (cached, done int) {
	for _, m := range buildStepRE.FindAllStringSubmatch(out, -1) {
		if m[2] == "CACHED" {
			cached++
		} else {
			done++
		}
	}
	return cached, done
}

const buildDockerfile = `# a comment
ARG BASE=busybox:base
FROM ${BASE} AS app
ARG GREETING=hello
ENV APP=/srv/app \
    MODE=test
LABEL org.example.name="site" version=1
WORKDIR $APP
COPY index.html ./
COPY --chmod=0750 bin/ /usr/local/bin/
RUN echo "$GREETING from $MODE" > greeting.txt && ls -l /usr/local/bin/tool > tool.ls
EXPOSE 80 53/udp
VOLUME /data
STOPSIGNAL SIGTERM
USER 1000
CMD ["cat", "greeting.txt"]
`

func TestBuild(t *testing.T) {
	s := newRunStore(t)
	ctx := buildContext(t, map[string]string{
		"Dockerfile":  buildDockerfile,
		"index.html":  "<h1>site</h1>\n",
		"bin/tool":    "#!/bin/sh\necho tool\n",
		"notes/x.txt": "not copied\n",
	})
	out := s.must("build", "-t", "app:1", ctx)
	if !strings.Contains(out, "naming to docker.io/library/app:1") || !strings.Contains(out, "writing image sha256:") {
		t.Errorf("build output lacks the image and its name:\n%s", out)
	}
	if _, done := steps(out); done < 10 {
		t.Errorf("build printed %d steps done:\n%s", done, out)
	}
	c := s.builtConfig(t, "app:1")
	for _, want := range []string{"APP=/srv/app", "MODE=test"} {
		if !slicesContains(c.Config.Env, want) {
			t.Errorf("Env %q lacks %s", c.Config.Env, want)
		}
	}
	for _, e := range c.Config.Env {
		if strings.HasPrefix(e, "GREETING=") {
			t.Errorf("a build ARG leaked into the image's Env: %q", c.Config.Env)
		}
	}
	if c.Config.WorkingDir != "/srv/app" || c.Config.User != "1000" || c.Config.StopSignal != "SIGTERM" ||
		strings.Join(c.Config.Cmd, " ") != "cat greeting.txt" || c.Config.Labels["org.example.name"] != "site" || c.Config.Labels["version"] != "1" {
		t.Errorf("config: %+v", c.Config)
	}
	if _, ok := c.Config.ExposedPorts["80/tcp"]; !ok {
		t.Errorf("ExposedPorts %v", c.Config.ExposedPorts)
	}
	if _, ok := c.Config.ExposedPorts["53/udp"]; !ok {
		t.Errorf("ExposedPorts %v", c.Config.ExposedPorts)
	}
	if _, ok := c.Config.Volumes["/data"]; !ok {
		t.Errorf("Volumes %v", c.Config.Volumes)
	}
	var runHist, envHist bool
	for _, h := range c.History {
		if strings.HasPrefix(h.CreatedBy, "RUN /bin/sh -c echo") && !h.EmptyLayer {
			runHist = true
		}
		if strings.Contains(h.CreatedBy, "#(nop) ENV APP=/srv/app MODE=test") && h.EmptyLayer {
			envHist = true
		}
	}
	if !runHist || !envHist {
		t.Errorf("history lacks the RUN layer or the ENV entry: %+v", c.History)
	}
	// What the image holds, through strata run.
	s.runArgs(t, []string{"app:1"}, 0, "hello from test\n")
	r := s.runArgs(t, []string{"app:1", "cat", "index.html", "tool.ls"}, 0, "")
	if !strings.Contains(r.stdout, "<h1>site</h1>") || !strings.Contains(r.stdout, "-rwxr-x---") {
		t.Errorf("copied files: %q", r.stdout)
	}
	s.runArgs(t, []string{"app:1", "id", "-u"}, 0, "1000\n")
	// A build arg changes what RUN wrote.
	s.must("build", "--network", "default", "--build-arg", "GREETING=hi", "-t", "app:2", ctx)
	s.runArgs(t, []string{"app:2"}, 0, "hi from test\n")
	s.checkNothingLeft()
}

// TestBuildCache: an unchanged rebuild is all cached and fast; a
// changed file rebuilds from its COPY on; a changed build arg rebuilds
// the steps that see it.
func TestBuildCache(t *testing.T) {
	s := newRunStore(t)
	ctx := buildContext(t, map[string]string{
		"Dockerfile": "FROM busybox:base\nARG V=1\nCOPY a.txt /a.txt\nRUN echo v$V > /v.txt\nCOPY b.txt /b.txt\nCMD [\"cat\", \"/a.txt\", \"/v.txt\", \"/b.txt\"]\n",
		"a.txt":      "a\n", "b.txt": "b\n",
	})
	first := s.must("build", "-q", "-t", "c:1", ctx)
	start := time.Now()
	out := s.must("build", "-t", "c:1", ctx)
	took := time.Since(start)
	cached, done := steps(out)
	if cached != 4 || done != 2 { // FROM and ARG are DONE, every other step CACHED
		t.Errorf("rebuild: %d cached, %d done, want 4 and 2:\n%s", cached, done, out)
	}
	if took > 2*time.Second {
		t.Errorf("a cached rebuild took %v", took)
	}
	t.Logf("cached rebuild took %v", took)
	id := strings.TrimSpace(s.must("build", "-q", ctx))
	if id != strings.TrimSpace(first) {
		t.Errorf("a cached rebuild gave %s, the first build %s", id, first)
	}
	// b.txt changes: only its COPY and what follows run again.
	os.WriteFile(filepath.Join(ctx, "b.txt"), []byte("B\n"), 0o644)
	out = s.must("build", "-t", "c:2", ctx)
	if cached, _ := steps(out); cached != 2 {
		t.Errorf("after b.txt changed: %d cached, want 2 (COPY a, RUN):\n%s", cached, out)
	}
	s.runArgs(t, []string{"c:2"}, 0, "a\nv1\nB\n")
	// A build arg: the RUN that sees it runs again.
	out = s.must("build", "--build-arg", "V=2", "-t", "c:3", ctx)
	if cached, _ := steps(out); cached != 1 {
		t.Errorf("after V changed: %d cached, want 1 (COPY a):\n%s", cached, out)
	}
	s.runArgs(t, []string{"c:3"}, 0, "a\nv2\nB\n")
	// --no-cache runs everything.
	out = s.must("build", "--no-cache", ctx)
	if cached, _ := steps(out); cached != 0 {
		t.Errorf("--no-cache: %d cached:\n%s", cached, out)
	}
	// The intermediate images are hidden from images, shown by -a.
	plain := s.must("images", "-q")
	all := s.must("images", "-a", "-q")
	if strings.Count(all, "\n") <= strings.Count(plain, "\n") {
		t.Errorf("images -a lists no intermediate images:\n%s\nvs\n%s", all, plain)
	}
	// system df counts the cache; builder prune empties it, and the
	// next build runs every step again.
	type dfRow struct {
		Type       string
		TotalCount int
	}
	cacheRecords := func() int {
		var rows []dfRow
		if err := json.Unmarshal([]byte(s.imgMust("system", "df", "--format", "json")), &rows); err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if r.Type == "Build Cache" {
				return r.TotalCount
			}
		}
		t.Fatalf("system df has no Build Cache row: %+v", rows)
		return 0
	}
	if n := cacheRecords(); n < 5 {
		t.Errorf("system df counts %d build cache records, want at least 5", n)
	}
	s.imgMust("builder", "prune", "-f")
	if n := cacheRecords(); n != 0 {
		t.Errorf("after builder prune: %d build cache records", n)
	}
	if a, p := s.must("images", "-a", "-q"), s.must("images", "-q"); a != p {
		t.Errorf("after builder prune, images -a still lists intermediate images:\n%s\nvs\n%s", a, p)
	}
	if out := s.must("build", ctx); strings.Contains(out, "CACHED") {
		t.Errorf("a build after builder prune used a cache:\n%s", out)
	}
	s.checkNothingLeft()
}

func slicesContains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestBuildMultiStage copies from an earlier stage; --target stops at a
// stage; a stage nothing needs is not built.
func TestBuildMultiStage(t *testing.T) {
	s := newRunStore(t)
	ctx := buildContext(t, map[string]string{
		"Dockerfile": "FROM busybox:base AS builder\nRUN echo built > /out.txt\n\n" +
			"FROM busybox:base AS unused\nRUN exit 3\n\n" +
			"FROM busybox:base\nCOPY --from=builder /out.txt /app/out.txt\nCMD [\"cat\", \"/app/out.txt\"]\n",
	})
	out := s.must("build", "-t", "ms:1", ctx)
	if strings.Contains(out, "exit 3") {
		t.Errorf("the unused stage was built:\n%s", out)
	}
	s.runArgs(t, []string{"ms:1"}, 0, "built\n")
	s.must("build", "--target", "builder", "-t", "ms:builder", ctx)
	s.runArgs(t, []string{"ms:builder", "cat", "/out.txt"}, 0, "built\n")
	s.checkNothingLeft()
}

// TestBuildFailingRun: a RUN that fails stops the build, naming the
// step and its status; no image is tagged and no container is left.
func TestBuildFailingRun(t *testing.T) {
	s := newRunStore(t)
	ctx := buildContext(t, map[string]string{"Dockerfile": "FROM busybox:base\nRUN echo before\nRUN echo oops >&2; exit 7\nRUN echo after\n"})
	r := s.run("build", "-t", "bad:1", ctx)
	if r.code != 1 || !strings.Contains(r.stderr, "Dockerfile:3") || !strings.Contains(r.stderr, "status 7") {
		t.Errorf("a failing RUN: want exit 1 naming Dockerfile:3 and status 7: %v", r)
	}
	if !strings.Contains(r.stdout, "oops") || strings.Contains(r.stdout, "after") {
		t.Errorf("output: the failing step's stderr shows, and no step after it:\n%s", r.stdout)
	}
	if rr := s.run("inspect", "bad:1"); rr.code == 0 {
		t.Errorf("a failed build tagged bad:1")
	}
	s.checkNothingLeft()
}

// TestBuildDockerignore leaves out what .dockerignore names.
func TestBuildDockerignore(t *testing.T) {
	s := newRunStore(t)
	ctx := buildContext(t, map[string]string{
		"Dockerfile":    "FROM busybox:base\nCOPY . /ctx/\nCMD [\"ls\", \"-a\", \"/ctx\", \"/ctx/logs\"]\n",
		".dockerignore": "# secrets\nsecret.txt\nlogs/*.log\n!logs/keep.log\n",
		"app.txt":       "app\n", "secret.txt": "s3cret\n",
		"logs/a.log": "a\n", "logs/keep.log": "k\n",
	})
	s.must("build", "-t", "ig:1", ctx)
	r := s.runArgs(t, []string{"ig:1"}, 0, "")
	if strings.Contains(r.stdout, "secret.txt") || strings.Contains(r.stdout, "a.log") || !strings.Contains(r.stdout, "keep.log") || !strings.Contains(r.stdout, "app.txt") {
		t.Errorf(".dockerignore not applied:\n%s", r.stdout)
	}
	s.checkNothingLeft()
}

// TestBuildReproducible: with SOURCE_DATE_EPOCH, two builds without the
// cache give the same image.
func TestBuildReproducible(t *testing.T) {
	s := newRunStore(t)
	ctx := buildContext(t, map[string]string{"Dockerfile": "FROM busybox:base\nENV A=1\nCOPY f /f\nRUN echo x > /x\n", "f": "f\n"})
	o := cliOpts{env: []string{"SOURCE_DATE_EPOCH=1700000000"}}
	a := strings.TrimSpace(s.mustWith(o, "build", "-q", "--no-cache", ctx))
	b := strings.TrimSpace(s.mustWith(o, "build", "-q", "--no-cache", ctx))
	if a != b || !strings.HasPrefix(a, "sha256:") {
		t.Errorf("two builds with SOURCE_DATE_EPOCH: %s and %s", a, b)
	}
	s.checkNothingLeft()
}

// TestBuildKilled kills a build mid-RUN: the next command repairs the
// store, and the next build works.
func TestBuildKilled(t *testing.T) {
	s := newRunStore(t)
	ctx := buildContext(t, map[string]string{"Dockerfile": "FROM busybox:base\nRUN echo started > /s && sleep 30\n"})
	cmd := startBuild(t, s, "reached its RUN", func(out string) bool { return strings.Contains(out, "RUN echo started") }, ctx)
	time.Sleep(500 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	// The RUN's process outlives the build (it is runc's child): the
	// next build finds the step's container orphaned, kills what runs in
	// it and removes it.
	if ps := s.ps(); len(ps) != 1 {
		t.Errorf("after the kill: %d containers, want the step's one: %v", len(ps), ps)
	}
	os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte("FROM busybox:base\nRUN echo done > /d\nCMD [\"cat\", \"/d\"]\n"), 0o644)
	s.must("build", "-t", "after:1", ctx)
	s.runArgs(t, []string{"after:1"}, 0, "done\n")
	s.checkNothingLeft()
}

// TestBuildSiteStory is the user's story: build a web site image, run
// it with a published port, fetch the page from the host, stop it (run
// with --rm, it goes), tag and push it, and pull it back elsewhere.
func TestBuildSiteStory(t *testing.T) {
	needRegistryTool(t, "docker-registry")
	s := newRunStore(t)
	ctx := buildContext(t, map[string]string{
		"Dockerfile": "FROM busybox:base\nWORKDIR /www\nCOPY index.html index.html\nEXPOSE 80\nCMD [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n",
		"index.html": "<h1>story</h1>\n",
	})
	s.globalMust("image", "build", "-t", "site", ctx)
	port := freePort(t)
	s.globalMust("container", "run", "-d", "-p", fmt.Sprintf("%d:80", port), "--rm", "--name", "site-web", "site")
	var body string
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the site never answered on port %d: %v", port, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if body != "<h1>story</h1>\n" {
		t.Errorf("the page: %q", body)
	}
	if out := s.globalMust("container", "stop", "-t", "1", "site-web"); out != "site-web\n" {
		t.Errorf("stop of a --rm container: %q", out)
	}
	if ps := s.ps(); len(ps) != 0 {
		t.Errorf("after stop, --rm left containers: %v", ps)
	}
	reg := startRegistry(t, registryPlain)
	s.globalMust("image", "tag", "site", reg.Ref("me/site:latest"))
	out := s.globalMust("image", "push", "--tls-verify=false", reg.Ref("me/site:latest"))
	pushed := matchDigest(t, pushDigestRE, out)
	c := newRegClient(t, reg)
	if got := matchDigest(t, pullDigestRE, c.regMust("pull", reg.Ref("me/site:latest"))); got != pushed {
		t.Errorf("pulled %s, pushed %s", got, pushed)
	}
	if h := s.globalMust("image", "history", "site"); !strings.Contains(h, "COPY") || !strings.Contains(h, "WORKDIR /www") {
		t.Errorf("history:\n%s", h)
	}
	s.checkNothingLeft()
}

// TestBuildDebian builds on the Debian minbase of the userland tests:
// a package installed by dpkg in a RUN step, from a .deb copied in.
func TestBuildDebian(t *testing.T) {
	tarball, debs := debianFixture(t, "hello")
	s := newRunStore(t)
	s.imgMust("import", tarball, "debian:minbase")
	files := map[string]string{
		"Dockerfile": "FROM debian:minbase\nCOPY hello.deb /tmp/\nRUN dpkg -i /tmp/hello.deb && rm /tmp/hello.deb\nCMD [\"hello\"]\n",
	}
	ctx := buildContext(t, files)
	b, err := os.ReadFile(debs[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ctx, "hello.deb"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	out := s.must("build", "-t", "deb:1", ctx)
	if !strings.Contains(out, "Setting up hello") {
		t.Errorf("dpkg's output is not in the build's:\n%s", out)
	}
	s.runArgs(t, []string{"deb:1"}, 0, "Hello, world!\n")
	s.runArgs(t, []string{"deb:1", "dpkg-query", "-W", "-f", "${Status}", "hello"}, 0, "install ok installed")
	s.checkNothingLeft()
}

// TestBuildPull pulls a FROM image the store lacks, and with --pull one
// it has; --platform refuses an image of another platform.
func TestBuildPull(t *testing.T) {
	needRegistryTool(t, "docker-registry")
	s := newRunStore(t)
	reg := startRegistry(t, registryPlain)
	s.must("push", "--tls-verify=false", "busybox:base", reg.Ref("lib/busybox:1"))
	ctx := buildContext(t, map[string]string{"Dockerfile": "FROM " + reg.Ref("lib/busybox:1") + "\nRUN echo pulled > /p\nCMD [\"cat\", \"/p\"]\n"})
	out := s.must("build", "--tls-verify=false", "-t", "p:1", ctx)
	if !strings.Contains(out, "pulling "+reg.Ref("lib/busybox:1")) {
		t.Errorf("the build did not pull its FROM image:\n%s", out)
	}
	s.runArgs(t, []string{"p:1"}, 0, "pulled\n")
	if out := s.must("build", "--tls-verify=false", "--pull", ctx); !strings.Contains(out, "pulling") {
		t.Errorf("--pull did not pull:\n%s", out)
	}
	if r := s.run("build", "--platform", "linux/s390x", ctx); r.code != 1 || !strings.Contains(r.stderr, "not linux/s390x") {
		t.Errorf("--platform of another platform: %v", r)
	}
	reg.Stop()
	if r := s.run("build", "--tls-verify=false", "--pull", ctx); r.code != 1 || !strings.Contains(r.stderr, "--pull") || !strings.Contains(r.stderr, "cannot reach registry") {
		t.Errorf("--pull with the registry down: %v", r)
	}
	s.checkNothingLeft()
}

// everyDockerfile uses every instruction strata build takes, in one
// Dockerfile, with the escape directive, continuations, heredocs and
// variable substitution.
const everyDockerfile = "# escape=`\n" + `# syntax=docker/dockerfile:1
ARG BASE=busybox:base
FROM ${BASE} AS tools
RUN echo tool-from-stage > /tool.txt

FROM ${BASE}
ARG FLAVOUR
ARG GREETING=hello
ENV HOME_DIR=/srv/every ` + "`" + `
    EMPTY=
LABEL flavour="${FLAVOUR:-plain}" set="${GREETING:+yes}"
MAINTAINER someone@example.com
WORKDIR $HOME_DIR
COPY --chown=alice:staff --chmod=0640 *.txt ./
COPY --from=tools /tool.txt ./tool.txt
ADD bundle.tar.gz /opt/
ADD plain.conf /etc/every.conf
SHELL ["/bin/sh", "-e", "-c"]
RUN echo "$GREETING ${FLAVOUR:-plain}" > greeting
RUN ["sh", "-c", "echo exec-form > exec.txt"]
RUN <<EOF
echo heredoc-one > heredoc.txt
echo heredoc-two >> heredoc.txt
EOF
COPY <<EOF notes.txt
from a heredoc, home ${HOME_DIR}
EOF
USER alice
EXPOSE 8080/tcp
VOLUME ["/data"]
STOPSIGNAL SIGINT
HEALTHCHECK --interval=30s --retries=2 CMD cat greeting || exit 1
ONBUILD RUN echo from-the-trigger
ENTRYPOINT ["cat"]
CMD ["greeting"]
`

// TestBuildEveryInstruction builds everyDockerfile and checks the
// config, the history and the files through strata run.
func TestBuildEveryInstruction(t *testing.T) {
	s := newRunStore(t)
	ctx := buildContext(t, map[string]string{
		"Dockerfile": everyDockerfile,
		"a.txt":      "a\n", "b.txt": "b\n", "plain.conf": "conf\n",
	})
	if err := os.WriteFile(filepath.Join(ctx, "bundle.tar.gz"), buildTar(t, true, map[string]string{"bundle/": "", "bundle/x": "from the bundle\n"}), 0o644); err != nil {
		t.Fatal(err)
	}
	s.must("build", "--build-arg", "FLAVOUR=spicy", "-t", "every:1", ctx)
	c := s.builtConfig(t, "every:1")
	if c.Config.WorkingDir != "/srv/every" || c.Config.User != "alice" || c.Config.StopSignal != "SIGINT" ||
		strings.Join(c.Config.Entrypoint, " ") != "cat" || strings.Join(c.Config.Cmd, " ") != "greeting" ||
		c.Config.Labels["flavour"] != "spicy" || c.Config.Labels["set"] != "yes" {
		t.Errorf("config: %+v", c.Config)
	}
	if !slicesContains(c.Config.Env, "HOME_DIR=/srv/every") || !slicesContains(c.Config.Env, "EMPTY=") {
		t.Errorf("Env: %q", c.Config.Env)
	}
	if _, ok := c.Config.ExposedPorts["8080/tcp"]; !ok {
		t.Errorf("ExposedPorts: %v", c.Config.ExposedPorts)
	}
	if _, ok := c.Config.Volumes["/data"]; !ok {
		t.Errorf("Volumes: %v", c.Config.Volumes)
	}
	dc := s.dockerConfig(t, "every:1")
	if strings.Join(dc.Config.Shell, " ") != "/bin/sh -e -c" || len(dc.Config.OnBuild) != 1 || dc.Config.Healthcheck == nil || dc.Config.Healthcheck.Retries != 2 {
		t.Errorf("docker's fields: %+v", dc.Config)
	}
	if a := strings.TrimSpace(s.must("inspect", "--format", "{{.Author}}", "every:1")); a != "someone@example.com" {
		t.Errorf("Author %q", a)
	}
	var layers, empty int
	for _, h := range c.History {
		if h.EmptyLayer {
			empty++
		} else {
			layers++
		}
	}
	if layers < 9 || empty < 10 {
		t.Errorf("history: %d layers, %d empty entries:\n%+v", layers, empty, c.History)
	}
	s.runArgs(t, []string{"every:1"}, 0, "hello spicy\n")
	r := s.runArgs(t, []string{"--entrypoint", "sh", "every:1", "-c",
		"cat tool.txt exec.txt heredoc.txt notes.txt /opt/bundle/x /etc/every.conf; stat -c '%U:%G %a' a.txt b.txt; id -un"}, 0, "")
	want := "tool-from-stage\nexec-form\nheredoc-one\nheredoc-two\nfrom a heredoc, home /srv/every\nfrom the bundle\nconf\nalice:staff 640\nalice:staff 640\nalice\n"
	if r.stdout != want {
		t.Errorf("files:\n%s\nwant:\n%s", r.stdout, want)
	}
	// The ONBUILD trigger runs in a child build.
	child := buildContext(t, map[string]string{"Dockerfile": "FROM every:1\n"})
	if out := s.must("build", "-t", "child:1", child); !strings.Contains(out, " from-the-trigger\n") {
		t.Errorf("the ONBUILD trigger did not run in the child build:\n%s", out)
	}
	s.checkNothingLeft()
}

// TestBuildInterrupted: Ctrl-C (SIGINT) during a RUN stops the step's
// process; the build fails at that step and leaves nothing behind.
func TestBuildInterrupted(t *testing.T) {
	s := newRunStore(t)
	ctx := buildContext(t, map[string]string{"Dockerfile": "FROM busybox:base\nRUN echo started && sleep 30\n"})
	cmd := startBuild(t, s, "reached its RUN", func(out string) bool { return strings.Contains(out, "#2 started") }, ctx)
	start := time.Now()
	cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatal("the build did not stop within 20 s of SIGINT")
	}
	if cmd.ProcessState.ExitCode() == 0 {
		t.Errorf("an interrupted build exited 0")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the build took %v to stop after SIGINT", d)
	}
	s.checkNothingLeft()
}

// TestBuildArgsAndCache: what a step depends on through ARGs, SHELL and
// ENV is in its cache key and its environment, as in docker; flags
// strata build does not implement are refused, not ignored.
func TestBuildArgsAndCache(t *testing.T) {
	s := newRunStore(t)
	// A COPY destination from an ARG: a new value is a new step.
	ctx := buildContext(t, map[string]string{"Dockerfile": "FROM busybox:base\nARG D=/a\nCOPY f $D\n", "f": "f\n"})
	s.must("build", "-t", "d:1", ctx)
	s.must("build", "--build-arg", "D=/b", "-t", "d:2", ctx)
	s.runArgs(t, []string{"d:2", "cat", "/b"}, 0, "f\n")
	// SHELL cached still changes the shell of later steps.
	ctx = buildContext(t, map[string]string{"Dockerfile": "FROM busybox:base\nSHELL [\"/bin/sh\", \"-e\", \"-c\"]\nRUN false; echo survived > /s\n"})
	for i := 0; i < 2; i++ {
		if r := s.run("build", ctx); r.code == 0 {
			t.Errorf("build %d: RUN under sh -e should fail at false:\n%s", i+1, r.stdout)
		}
	}
	// An ARG declared again in the stage takes the value given before
	// FROM; the platform ARGs have this machine's; ENV wins over ARG.
	ctx = buildContext(t, map[string]string{"Dockerfile": "ARG META=metaval\nFROM busybox:base\nARG META\nARG TARGETARCH\nARG V=fromarg\nENV V=fromenv\nRUN echo $META $TARGETARCH $V > /out\nCMD [\"cat\", \"/out\"]\n"})
	s.must("build", "-t", "args:1", ctx)
	s.runArgs(t, []string{"args:1"}, 0, "metaval "+runtimeGOARCH()+" fromenv\n")
	// WORKDIR is expanded once.
	ctx = buildContext(t, map[string]string{"Dockerfile": "FROM busybox:base\nENV X=xx\nWORKDIR /a$X\nRUN pwd > /pwd\nCMD [\"cat\", \"/pwd\"]\n"})
	s.must("build", "-t", "wd:1", ctx)
	s.runArgs(t, []string{"wd:1"}, 0, "/axx\n")
	// A flag strata build does not implement is refused.
	ctx = buildContext(t, map[string]string{"Dockerfile": "FROM busybox:base\nCOPY --exclude=secret . /app/\n", "secret": "s\n"})
	if r := s.run("build", ctx); r.code != 1 || !strings.Contains(r.stderr, "COPY --exclude is not supported") {
		t.Errorf("COPY --exclude: %v", r)
	}
	// --rm=false keeps the failed step's container past the next build.
	ctx = buildContext(t, map[string]string{"Dockerfile": "FROM busybox:base\nRUN exit 3\n"})
	r := s.run("build", "--rm=false", ctx)
	m := regexp.MustCompile(`container (build-[0-9a-f]+) is kept`).FindStringSubmatch(r.stderr)
	if r.code != 1 || m == nil {
		t.Fatalf("--rm=false: %v", r)
	}
	s.must("build", buildContext(t, map[string]string{"Dockerfile": "FROM busybox:base\nRUN true\n"}))
	if _, ok := s.ps()[m[1]]; !ok {
		t.Errorf("the kept container %s was removed by the next build", m[1])
	}
	s.must("rm", "-f", m[1])
	s.checkNothingLeft()
}

func runtimeGOARCH() string { return hostArch() }

// startBuild starts `strata build ARGS` and returns once reached, asked
// with what the build has printed so far, holds: the build is then at
// the point a test interrupts it. It fails the test, killing the build,
// if that takes over a minute.
func startBuild(t *testing.T, s *runStore, what string, reached func(out string) bool, args ...string) *exec.Cmd {
	t.Helper()
	cmd, stdout, stderr, err := cliCommand(t.TempDir(), cliOpts{}, s.args(append([]string{"build"}, args...))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdout.Close(); stderr.Close() })
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		b, _ := os.ReadFile(stdout.Name())
		if reached(string(b)) {
			return cmd
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			e, _ := os.ReadFile(stderr.Name())
			t.Fatalf("the build never %s:\n%s%s", what, b, e)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
