package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// More tests of strata build through the built binary: ADD, heredocs,
// the config instructions, the context and Dockerfile from stdin, the
// flags, a kill mid-COPY, and the built image under podman.

// buildTar is a tar of files (name to content, a name ending in / a
// directory), gzipped if gz.
func buildTar(t *testing.T, gz bool, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.Writer = &buf
	var zw *gzip.Writer
	if gz {
		zw = gzip.NewWriter(&buf)
		w = zw
	}
	tw := tar.NewWriter(w)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		h := &tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg, ModTime: time.Unix(1700000000, 0)}
		if strings.HasSuffix(n, "/") {
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(files[n]))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if zw != nil {
		zw.Close()
	}
	return buf.Bytes()
}

// dockerConfig is the config of an image as stored: the OCI fields and
// docker's (Healthcheck, OnBuild, Shell), read from the store's blob of
// the image's config (the image ID is its digest).
type dockerConfig struct {
	Config struct {
		Entrypoint  []string
		Cmd         []string
		Labels      map[string]string
		Shell       []string
		OnBuild     []string
		Healthcheck *struct {
			Test     []string
			Interval int64
			Timeout  int64
			Retries  int
		}
	} `json:"config"`
}

func (s *runStore) dockerConfig(t *testing.T, ref string) dockerConfig {
	t.Helper()
	id := strings.TrimSpace(s.must("inspect", "--format", "{{.Id}}", ref))
	b, err := os.ReadFile(filepath.Join(s.root, "blobs", "sha256", strings.TrimPrefix(id, "sha256:")))
	if err != nil {
		t.Fatalf("the config of %s: %v", ref, err)
	}
	var c dockerConfig
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatalf("the config of %s: %v\n%s", ref, err, b)
	}
	return c
}

// TestBuildAdd: ADD extracts a local tar, plain or gzipped, copies a
// plain file, and refuses a URL.
func TestBuildAdd(t *testing.T) {
	s := newRunStore(t)
	ctx := buildContext(t, map[string]string{
		"Dockerfile": "FROM busybox:base\nADD a.tar /x/\nADD b.tar.gz /y\nADD plain.txt /z/\nADD not.tar.gz /n.tar.gz\n" +
			"CMD [\"cat\", \"/x/inner/a.txt\", \"/y/b.txt\", \"/z/plain.txt\", \"/n.tar.gz\"]\n",
		"plain.txt":  "plain\n",
		"not.tar.gz": "not a tar\n",
	})
	os.WriteFile(filepath.Join(ctx, "a.tar"), buildTar(t, false, map[string]string{"inner/": "", "inner/a.txt": "from a.tar\n"}), 0o644)
	os.WriteFile(filepath.Join(ctx, "b.tar.gz"), buildTar(t, true, map[string]string{"b.txt": "from b.tar.gz\n"}), 0o644)
	s.must("build", "-t", "add:1", ctx)
	s.runArgs(t, []string{"add:1"}, 0, "from a.tar\nfrom b.tar.gz\nplain\nnot a tar\n")
	// The tars themselves are not copied.
	s.runArgs(t, []string{"add:1", "sh", "-c", "ls /x /y"}, 0, "/x:\ninner\n\n/y:\nb.txt\n")

	url := buildContext(t, map[string]string{"Dockerfile": "FROM busybox:base\nADD https://example.com/f.txt /f.txt\n"})
	r := s.run("build", "-t", "add:url", url)
	if r.code != 1 || !strings.Contains(r.stderr, "ADD of a URL needs the network") || !strings.Contains(r.stderr, "COPY it") {
		t.Errorf("ADD of a URL: want exit 1 and a message saying to download it and COPY it: %v", r)
	}
	if rr := s.run("inspect", "add:url"); rr.code == 0 {
		t.Errorf("a refused ADD tagged add:url")
	}
	s.checkNothingLeft()
}

// TestBuildHeredoc: RUN <<EOF runs the body as the script; a heredoc
// in a command feeds it; COPY <<EOF writes a file.
func TestBuildHeredoc(t *testing.T) {
	s := newRunStore(t)
	df := "FROM busybox:base\nENV WHO=world\n" +
		"RUN <<EOF\necho one > /h1\necho \"two $WHO\" >> /h1\nEOF\n" +
		"RUN cat <<EOF > /h2\nfed $WHO\nEOF\n" +
		"RUN <<-EOT\n\techo tabbed > /h3\n\tEOT\n" +
		"RUN <<PROG\n#!/bin/busybox sh\necho \"prog $0\" > /h4\nPROG\n" +
		"COPY <<EOF /etc/greeting\nhello $WHO\nsecond line\nEOF\n" +
		"COPY <<'EOF' greeting2\nraw $WHO\nEOF\n" +
		"CMD [\"cat\", \"/h1\", \"/h2\", \"/h3\", \"/h4\", \"/etc/greeting\", \"/greeting2\"]\n"
	ctx := buildContext(t, map[string]string{"Dockerfile": df})
	s.must("build", "-t", "hd:1", ctx)
	s.runArgs(t, []string{"hd:1"}, 0, "one\ntwo world\nfed world\ntabbed\nprog /dev/pipes/PROG\nhello world\nsecond line\nraw $WHO\n")
	s.runArgs(t, []string{"hd:1", "stat", "-c", "%a %u:%g", "/etc/greeting"}, 0, "644 0:0\n")
	// A rebuild is cached; a changed COPY heredoc body is not.
	out := s.must("build", ctx)
	if cached, _ := steps(out); cached != 8 {
		t.Errorf("rebuild: %d cached, want 8:\n%s", cached, out)
	}
	os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(strings.Replace(df, "second line", "changed line", 1)), 0o644)
	out = s.must("build", "-t", "hd:2", ctx)
	if cached, _ := steps(out); cached != 5 {
		t.Errorf("after the COPY heredoc changed: %d cached, want 5:\n%s", cached, out)
	}
	s.runArgs(t, []string{"hd:2", "cat", "/etc/greeting"}, 0, "hello world\nchanged line\n")
	s.checkNothingLeft()
}

// TestBuildConfigInstructions: ENTRYPOINT with CMD as its arguments,
// SHELL, HEALTHCHECK, USER by name, COPY --chown by names.
func TestBuildConfigInstructions(t *testing.T) {
	s := newRunStore(t)
	ctx := buildContext(t, map[string]string{
		"Dockerfile": "FROM busybox:base\n" +
			"COPY --chown=alice:staff f.txt /home/alice/f.txt\n" +
			"SHELL [\"/bin/sh\", \"-e\", \"-c\"]\n" +
			"RUN case $- in *e*) echo errexit on > /shell.txt;; *) echo errexit off > /shell.txt;; esac\n" +
			"USER alice\n" +
			"RUN id -u > /home/alice/uid && id -un >> /home/alice/uid\n" +
			"HEALTHCHECK --interval=5s --timeout=2s --retries=4 CMD cat /home/alice/uid || exit 1\n" +
			"ENTRYPOINT [\"echo\", \"ep\"]\n" +
			"CMD [\"default\"]\n",
		"f.txt": "f\n",
	})
	s.must("build", "-t", "cfg:1", ctx)
	s.runArgs(t, []string{"cfg:1"}, 0, "ep default\n")
	s.runArgs(t, []string{"cfg:1", "given"}, 0, "ep given\n")
	s.runArgs(t, []string{"--entrypoint", "cat", "cfg:1", "/home/alice/uid", "/shell.txt"}, 0, "1000\nalice\nerrexit on\n")
	s.runArgs(t, []string{"--entrypoint", "stat", "cfg:1", "-c", "%u:%g", "/home/alice/f.txt", "/home/alice"}, 0, "1000:50\n1000:50\n")
	c := s.dockerConfig(t, "cfg:1")
	if strings.Join(c.Config.Shell, " ") != "/bin/sh -e -c" {
		t.Errorf("Shell: %q", c.Config.Shell)
	}
	if h := c.Config.Healthcheck; h == nil || strings.Join(h.Test, "|") != "CMD-SHELL|cat /home/alice/uid || exit 1" ||
		h.Interval != int64(5*time.Second) || h.Timeout != int64(2*time.Second) || h.Retries != 4 {
		t.Errorf("Healthcheck: %+v", h)
	}
	// A shell-form ENTRYPOINT runs in the SHELL; CMD's words reach it
	// only as $0 and on, as in docker.
	ctx2 := buildContext(t, map[string]string{"Dockerfile": "FROM cfg:1\nENTRYPOINT echo shell form\nCMD [\"ignored\"]\n"})
	s.must("build", "-t", "cfg:2", ctx2)
	s.runArgs(t, []string{"cfg:2"}, 0, "shell form\n")
	if c := s.builtConfig(t, "cfg:2"); strings.Join(c.Config.Entrypoint, "|") != "/bin/sh|-e|-c|echo shell form" {
		t.Errorf("a shell-form ENTRYPOINT under SHELL: %q", c.Config.Entrypoint)
	}
	// ENTRYPOINT resets the CMD of the base image, as docker's does.
	ctx3 := buildContext(t, map[string]string{"Dockerfile": "FROM cfg:1\nENTRYPOINT [\"echo\", \"new\"]\n"})
	s.must("build", "-t", "cfg:3", ctx3)
	s.runArgs(t, []string{"cfg:3"}, 0, "new\n")
	s.checkNothingLeft()
}

// TestBuildOnBuild: ONBUILD is recorded in an image and run when a
// build is FROM it, and does not pass on to the image built.
func TestBuildOnBuild(t *testing.T) {
	s := newRunStore(t)
	base := buildContext(t, map[string]string{"Dockerfile": "FROM busybox:base\nONBUILD COPY marker.txt /marker.txt\nONBUILD RUN echo triggered >> /trig.txt\n"})
	s.must("build", "-t", "ob:base", base)
	if c := s.dockerConfig(t, "ob:base"); len(c.Config.OnBuild) != 2 || c.Config.OnBuild[1] != "RUN echo triggered >> /trig.txt" {
		t.Errorf("OnBuild: %q", c.Config.OnBuild)
	}
	s.runArgs(t, []string{"ob:base", "ls", "/trig.txt"}, 1, "")
	child := buildContext(t, map[string]string{"Dockerfile": "FROM ob:base\nCMD [\"cat\", \"/marker.txt\", \"/trig.txt\"]\n", "marker.txt": "marker\n"})
	s.must("build", "-t", "ob:child", child)
	s.runArgs(t, []string{"ob:child"}, 0, "marker\ntriggered\n")
	if c := s.dockerConfig(t, "ob:child"); len(c.Config.OnBuild) != 0 {
		t.Errorf("the triggers passed on to ob:child: %q", c.Config.OnBuild)
	}
	grand := buildContext(t, map[string]string{"Dockerfile": "FROM ob:child\nRUN cat /trig.txt\n"})
	s.must("build", "-t", "ob:grand", grand)
	s.runArgs(t, []string{"ob:grand", "cat", "/trig.txt"}, 0, "triggered\n")
	s.checkNothingLeft()
}

// TestBuildStdin: -f - reads the Dockerfile from stdin, context - a tar
// from stdin; -f names another Dockerfile whose own .dockerignore
// applies.
func TestBuildStdin(t *testing.T) {
	s := newRunStore(t)
	ctx := buildContext(t, map[string]string{
		"a.txt": "a\n", "b.txt": "b\n", ".dockerignore": "a.txt\n",
		"sub/Other.dockerfile":              "FROM busybox:base\nCOPY . /ctx/\nCMD [\"ls\", \"/ctx\"]\n",
		"sub/Other.dockerfile.dockerignore": "b.txt\nsub\n",
	})
	// .dockerignore applies to a Dockerfile from stdin: a.txt is excluded.
	r := s.runWith(cliOpts{stdin: strings.NewReader("FROM busybox:base\nCOPY a.txt /a.txt\n")}, "build", "-f", "-", ctx)
	if r.code != 1 || !strings.Contains(r.stderr, "excluded by .dockerignore") {
		t.Errorf("COPY of an excluded file with -f -: %v", r)
	}
	os.Remove(filepath.Join(ctx, ".dockerignore"))
	s.mustWith(cliOpts{stdin: strings.NewReader("FROM busybox:base\nCOPY a.txt b.txt /ctx/\nCMD [\"ls\", \"/ctx\"]\n")}, "build", "-f", "-", "-t", "in:df", ctx)
	s.runArgs(t, []string{"in:df"}, 0, "a.txt\nb.txt\n")

	tarCtx := buildTar(t, true, map[string]string{"Dockerfile": "FROM busybox:base\nCOPY t.txt /t.txt\nCMD [\"cat\", \"/t.txt\"]\n", "t.txt": "from the tar\n"})
	s.mustWith(cliOpts{stdin: bytes.NewReader(tarCtx)}, "build", "-t", "in:tar", "-")
	s.runArgs(t, []string{"in:tar"}, 0, "from the tar\n")
	if r := s.run("build", "-f", "-", "-"); r.code != 2 && r.code != 1 || !strings.Contains(r.stderr, "cannot both come from standard input") {
		t.Errorf("-f - with context -: %v", r)
	}

	s.must("build", "-f", filepath.Join(ctx, "sub", "Other.dockerfile"), "-t", "in:other", ctx)
	s.runArgs(t, []string{"in:other"}, 0, "a.txt\n")
	s.checkNothingLeft()
}

// TestBuildFlags: --rm=false keeps a failed build's container, --label,
// --iidfile and -q.
func TestBuildFlags(t *testing.T) {
	s := newRunStore(t)
	ctx := buildContext(t, map[string]string{"Dockerfile": "FROM busybox:base\nLABEL from=file\nRUN echo x > /x\n"})
	iid := filepath.Join(t.TempDir(), "iid")
	out := s.must("build", "-q", "--label", "a=1", "--label", "from=flag", "--iidfile", iid, "-t", "fl:1", ctx)
	id := strings.TrimSpace(out)
	if !strings.HasPrefix(id, "sha256:") || len(id) != 71 || strings.Count(out, "\n") != 1 {
		t.Errorf("-q printed more than the ID: %q", out)
	}
	if b, err := os.ReadFile(iid); err != nil || string(b) != id {
		t.Errorf("--iidfile: %q, %v; want %s", b, err, id)
	}
	if got := strings.TrimSpace(s.must("inspect", "--format", "{{.Id}}", "fl:1")); got != id {
		t.Errorf("fl:1 is %s, -q printed %s", got, id)
	}
	if c := s.builtConfig(t, "fl:1"); c.Config.Labels["a"] != "1" || c.Config.Labels["from"] != "flag" {
		t.Errorf("--label: %v", c.Config.Labels)
	}

	bad := buildContext(t, map[string]string{"Dockerfile": "FROM busybox:base\nRUN echo kept > /k; exit 3\n"})
	if r := s.run("build", bad); r.code != 1 {
		t.Errorf("a failing build: %v", r)
	}
	if ps := s.ps(); len(ps) != 0 {
		t.Errorf("a failed build left containers (--rm is the default): %v", ps)
	}
	r := s.run("build", "--rm=false", bad)
	if r.code != 1 || !strings.Contains(r.stderr, "status 3") {
		t.Errorf("a failing build with --rm=false: %v", r)
	}
	ps := s.ps()
	if len(ps) != 1 {
		t.Fatalf("--rm=false: want the failed step's container kept, got %v", ps)
	}
	for name := range ps {
		if !strings.Contains(r.stderr, name) {
			t.Errorf("the error does not name the kept container %s: %s", name, r.stderr)
		}
		mp := strings.TrimSpace(s.must("mount", name))
		if b, err := os.ReadFile(filepath.Join(mp, "k")); err != nil || string(b) != "kept\n" {
			t.Errorf("the kept container lacks what its RUN wrote: %q %v", b, err)
		}
		s.must("unmount", name)
		s.must("rm", name)
	}
	s.checkNothingLeft()
}

// TestBuildKilledMidCopy kills a build while it copies a big file:
// afterwards the store checks consistent, and the next build works.
func TestBuildKilledMidCopy(t *testing.T) {
	s := newRunStore(t)
	ctx := buildContext(t, map[string]string{"Dockerfile": "FROM busybox:base\nCOPY big.bin /big.bin\n"})
	f, err := os.Create(filepath.Join(ctx, "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, 200<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// The COPY is under way once a container's upper holds part of the
	// file.
	var partial int64
	cmd := startBuild(t, s, "wrote part of big.bin", func(string) bool {
		filepath.Walk(s.root, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() && fi.Size() > 0 && fi.Size() < 200<<20 && strings.Contains(p, "big.bin") {
				partial = fi.Size()
			}
			return nil
		})
		return partial > 0
	}, "--no-cache", ctx)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	t.Logf("killed with %d MB of big.bin copied", partial>>20)
	if r := s.imgRun("check", "--repair"); r.code != 0 {
		t.Errorf("check --repair: %v", r)
	}
	// The next build removes the step container the killed one left.
	s.must("build", "-t", "big:1", ctx)
	s.runArgs(t, []string{"big:1", "stat", "-c", "%s", "/big.bin"}, 0, "209715200\n")
	s.checkNothingLeft()
}

// TestBuildPodman: the built image, exported as an OCI archive and
// loaded by podman, runs there as under strata run.
func TestBuildPodman(t *testing.T) {
	needTool(t, "podman", "conmon", "runc")
	s := newRunStore(t)
	ctx := buildContext(t, map[string]string{
		"Dockerfile": "FROM busybox:base\nENV WHO=podman\nWORKDIR /app\nCOPY msg.txt .\nRUN echo \"built for $WHO\" > built.txt\nUSER alice\n" +
			"ENTRYPOINT [\"sh\", \"-c\", \"cat msg.txt built.txt; pwd; id -u; echo $0\"]\nCMD [\"arg\"]\n",
		"msg.txt": "message\n",
	})
	s.must("build", "-t", "pm:1", ctx)
	want := "message\nbuilt for podman\n/app\n1000\narg\n"
	s.runArgs(t, []string{"pm:1"}, 0, want)
	archive := filepath.Join(t.TempDir(), "img.tar")
	s.must("export", "pm:1", archive)
	e := newContainersEnv(t)
	pm := func(args ...string) toolResult {
		t.Helper()
		return runToolEnv(t, e.env, "podman", append([]string{
			"--root", e.path("root"), "--runroot", e.path("runroot"), "--tmpdir", e.path("tmp"),
			"--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
		}, args...)...)
	}
	r := pm("load", "-i", archive)
	if r.err != nil {
		t.Fatalf("podman load: %v", r)
	}
	// The loaded image's name: podman prints "Loaded image: NAME".
	name := ""
	for _, l := range strings.Split(r.stdout, "\n") {
		if n, ok := strings.CutPrefix(l, "Loaded image: "); ok {
			name = strings.TrimSpace(n)
		}
	}
	if name == "" {
		t.Fatalf("podman load printed no image name: %v", r)
	}
	r = pm("run", "--rm", "--network", "none", name)
	if r.err != nil || r.stdout != want {
		t.Errorf("podman run %s: got %v\nwant stdout %q", name, r, want)
	}
	r = pm("run", "--rm", "--network", "none", name, "other")
	if r.err != nil || !strings.HasSuffix(r.stdout, "other\n") {
		t.Errorf("podman run with an argument: %v", r)
	}
	s.checkNothingLeft()
}
