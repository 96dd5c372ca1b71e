// Command build times building images from Dockerfiles: strata build
// beside buildah bud (overlay driver, fuse-overlayfs as its mount
// program) in the same run, from the same busybox base image. For each
// Dockerfile it times a cold build (a fresh store holding only the base
// image), a fully cached rebuild, and a rebuild after one copied file
// changed.
//
// Dockerfile 1 is a small application: WORKDIR, COPY, a RUN doing some
// shell work, ENV, EXPOSE, CMD. Dockerfile 2 writes -files small files
// in two RUN steps, as pip or npm install do, then copies one file and
// changes one file in a last RUN: its rebuild after the copied file
// changed measures what committing a small change on a large layer
// costs.
//
// Usage (as root, with busybox-static, buildah and fuse-overlayfs
// installed):
//
//	go run ./bench/build -strata PATH [-runs N] [-dir SCRATCH] [-files N]
package main

import (
	"archive/tar"
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	strata := flag.String("strata", "strata", "the strata binary")
	runs := flag.Int("runs", 3, "runs of each, the median is reported")
	dir := flag.String("dir", "", "scratch directory (default: a new one under $TMPDIR)")
	files := flag.Int("files", 10000, "small files the RUN steps of Dockerfile 2 write")
	flag.Parse()
	if err := run(*strata, *runs, *dir, *files); err != nil {
		fmt.Fprintln(os.Stderr, "bench/build:", err)
		os.Exit(1)
	}
}

const busybox = "/bin/busybox"

// The applets the Dockerfiles use, linked to busybox in the base image.
var applets = []string{"sh", "cat", "cp", "echo", "ls", "mkdir", "rm", "seq", "true", "wc"}

// buildahBase are buildah's global options: a private root and runroot,
// the overlay driver with fuse-overlayfs as its mount program.
func buildahBase(root string) []string {
	return []string{"--root", filepath.Join(root, "storage"), "--runroot", filepath.Join(root, "run"),
		"--storage-driver", "overlay", "--storage-opt", "overlay.mount_program=/usr/bin/fuse-overlayfs"}
}

// dockerfile is one benchmark's build context.
type dockerfile struct {
	name    string
	ctx     string
	changed string // the copied file the third build changes, relative to ctx
	layers  int    // COPY and RUN steps: a cached rebuild reuses them all
}

func run(strata string, runs int, dir string, files int) error {
	for _, t := range []string{busybox, "buildah", "fuse-overlayfs"} {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("%s is needed: apt-get install busybox-static buildah fuse-overlayfs", t)
		}
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("run as root: both builders mount, and the page cache is dropped before each build")
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "strata-bench-build-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	strata, err = filepath.Abs(strata)
	if err != nil {
		return err
	}
	e := &env{bin: strata, dir: dir}
	base, err := e.makeBase()
	if err != nil {
		return err
	}
	dfs, err := e.makeContexts(files)
	if err != nil {
		return err
	}
	builders := []builder{
		{name: "strata build", fresh: e.strataFresh, build: e.strataBuild, cached: `(?m)^#\d+ CACHED`},
		{name: "buildah bud --layers", fresh: e.buildahFresh, build: e.buildahBuild, cached: `(?m)^--> Using cache`},
	}
	fmt.Printf("base image: busybox-static, %d applets, as an OCI archive of %s; median of %d runs\n\n", len(applets), mib(fileSize(base)), runs)
	// times[dockerfile][builder][phase] over the runs.
	times := make([][][3][]time.Duration, len(dfs))
	last := make([][3]string, len(dfs)) // strata's output of the last run, per phase
	for i := range times {
		times[i] = make([][3][]time.Duration, len(builders))
	}
	for r := 0; r < runs; r++ {
		for di, df := range dfs {
			for k := range builders {
				// Alternate which builder goes first.
				bi := (k + r) % len(builders)
				b := builders[bi]
				ts, outs, err := e.measure(b, df, base, r)
				if err != nil {
					return fmt.Errorf("%s, %s, run %d: %w", b.name, df.name, r+1, err)
				}
				for p := range ts {
					times[di][bi][p] = append(times[di][bi][p], ts[p])
				}
				if bi == 0 {
					last[di] = outs
				}
			}
		}
	}
	fmt.Printf("| Dockerfile | build | %s | %s | strata/buildah |\n|---|---|---|---|---|\n", builders[0].name, builders[1].name)
	for di, df := range dfs {
		for p, phase := range phases {
			s, b := median(times[di][0][p]), median(times[di][1][p])
			fmt.Printf("| %s | %s | %.2f s | %.2f s | %.2fx |\n", df.name, phase, s.Seconds(), b.Seconds(), s.Seconds()/b.Seconds())
		}
	}
	fmt.Println()
	// Where strata's time goes: the steps of its last run.
	for di, df := range dfs {
		for p, phase := range phases {
			fmt.Printf("strata steps, %s, %s: %s\n", df.name, phase, stepTimes(last[di][p]))
		}
	}
	return nil
}

var phases = [3]string{"cold", "cached", "one file changed"}

type builder struct {
	name string
	// fresh makes a new store for run i holding only the base image,
	// from the OCI archive base, and returns its root.
	fresh func(i int, base string) (string, error)
	build func(root, ctx string) (string, error)
	// cached matches a step the builder took from its cache.
	cached string
}

// measure times the three builds of df by b in a fresh store: cold,
// cached, and after one copied file changed. The page cache is dropped
// before each.
func (e *env) measure(b builder, df dockerfile, base string, i int) ([3]time.Duration, [3]string, error) {
	var ts [3]time.Duration
	var outs [3]string
	changed := filepath.Join(df.ctx, df.changed)
	if err := os.WriteFile(changed, []byte("first\n"), 0o644); err != nil {
		return ts, outs, err
	}
	root, err := b.fresh(i, base)
	if err != nil {
		return ts, outs, err
	}
	cachedRE := regexp.MustCompile(b.cached)
	for p := range phases {
		if p == 2 {
			if err := os.WriteFile(changed, []byte(fmt.Sprintf("changed in run %d\n", i)), 0o644); err != nil {
				return ts, outs, err
			}
		}
		dropCaches()
		start := time.Now()
		out, err := b.build(root, df.ctx)
		ts[p] = time.Since(start)
		if err != nil {
			return ts, outs, err
		}
		outs[p] = out
		// Check the cache did what it should: nothing reused cold,
		// everything cached, and then not everything.
		n := len(cachedRE.FindAllString(out, -1))
		switch {
		case p == 0 && n != 0, p == 1 && n < df.layers, p == 2 && n >= df.layers:
			return ts, outs, fmt.Errorf("%s build: %d steps cached of %d:\n%s", phases[p], n, df.layers, out)
		}
	}
	return ts, outs, e.clean(root)
}

type env struct {
	bin, dir string
}

// makeBase writes the base image's root filesystem, imports it into a
// seed store and exports it as an OCI archive, which both builders
// import: the same image, the same digests.
func (e *env) makeBase() (string, error) {
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return "", err
	}
	rootfs := filepath.Join(e.dir, "rootfs.tar")
	f, err := os.Create(rootfs)
	if err != nil {
		return "", err
	}
	tw := tar.NewWriter(f)
	mod := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	hdrs := []*tar.Header{}
	for _, d := range []string{"bin/", "etc/", "tmp/", "root/"} {
		hdrs = append(hdrs, &tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755})
	}
	hdrs = append(hdrs, &tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bb))})
	for _, a := range applets {
		hdrs = append(hdrs, &tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777})
	}
	passwd := []byte("root:x:0:0:root:/root:/bin/sh\n")
	hdrs = append(hdrs, &tar.Header{Name: "etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(passwd))})
	for _, h := range hdrs {
		h.ModTime = mod
		if h.Name == "tmp/" {
			h.Mode = 0o1777
		}
		if err := tw.WriteHeader(h); err != nil {
			return "", err
		}
		switch h.Name {
		case "bin/busybox":
			_, err = tw.Write(bb)
		case "etc/passwd":
			_, err = tw.Write(passwd)
		}
		if err != nil {
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	seed := filepath.Join(e.dir, "seed")
	if _, err := e.strata(seed, "import", rootfs, "base:1"); err != nil {
		return "", err
	}
	archive := filepath.Join(e.dir, "base.tar")
	if _, err := e.strata(seed, "export", "base:1", "oci-archive:"+archive); err != nil {
		return "", err
	}
	return archive, nil
}

// Dockerfile 1, the test Dockerfile: a small application.
const dockerfile1 = `FROM base:1
WORKDIR /srv/app
COPY index.html ./
COPY bin/ /usr/local/bin/
RUN i=0; while [ $i -lt 2000 ]; do echo "line $i" >> work.log; i=$((i+1)); done && cat /usr/local/bin/tool > tool.copy
ENV APP=/srv/app MODE=bench
EXPOSE 80
CMD ["cat", "work.log"]
`

// dockerfile2 writes files small files in two RUN steps, then copies
// one file and changes one of the small files.
func dockerfile2(files int) string {
	half := files / 2
	return fmt.Sprintf(`FROM base:1
RUN mkdir /data && for i in $(seq 1 %d); do echo $i > /data/f$i; done
RUN for i in $(seq %d %d); do echo $i > /data/f$i; done
COPY stamp.txt /stamp.txt
RUN cp /stamp.txt /data/f1
CMD ["ls", "/data"]
`, half, half+1, files)
}

func (e *env) makeContexts(files int) ([]dockerfile, error) {
	dfs := []dockerfile{
		{name: "1: app", ctx: filepath.Join(e.dir, "ctx-app"), changed: "index.html", layers: 4},
		{name: fmt.Sprintf("2: %dk small files", files/1000), ctx: filepath.Join(e.dir, "ctx-files"), changed: "stamp.txt", layers: 4},
	}
	content := []map[string]string{
		{"Dockerfile": dockerfile1, "index.html": "first\n", "bin/tool": "#!/bin/sh\necho tool\n", "bin/helper": "#!/bin/sh\necho helper\n"},
		{"Dockerfile": dockerfile2(files), "stamp.txt": "first\n"},
	}
	for i, df := range dfs {
		for name, body := range content[i] {
			p := filepath.Join(df.ctx, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return nil, err
			}
			mode := os.FileMode(0o644)
			if strings.HasPrefix(name, "bin/") {
				mode = 0o755
			}
			if err := os.WriteFile(p, []byte(body), mode); err != nil {
				return nil, err
			}
		}
	}
	return dfs, nil
}

func (e *env) freshDir(name string, i int) (string, error) {
	d := filepath.Join(e.dir, fmt.Sprintf("%s-%d", name, i))
	if _, err := os.Stat(d); err == nil {
		if err := e.clean(d); err != nil {
			return "", err
		}
	}
	return d, os.MkdirAll(d, 0o755)
}

func (e *env) strataFresh(i int, base string) (string, error) {
	root, err := e.freshDir("strata", i)
	if err != nil {
		return "", err
	}
	_, err = e.strata(root, "import", "oci-archive:"+base, "base:1")
	return root, err
}

func (e *env) strataBuild(root, ctx string) (string, error) {
	out, err := e.strata(root, "build", "-t", "x", ctx)
	return string(out), err
}

func (e *env) buildahFresh(i int, base string) (string, error) {
	root, err := e.freshDir("buildah", i)
	if err != nil {
		return "", err
	}
	if _, err := buildah(root, "", "pull", "-q", "oci-archive:"+base); err != nil {
		return "", err
	}
	// The archive names the image docker.io/library/base:1, which the
	// short name base:1 finds; tag it localhost/base:1 as well, as
	// buildah names what it builds.
	_, err = buildah(root, "", "tag", "docker.io/library/base:1", "localhost/base:1")
	return root, err
}

func (e *env) buildahBuild(root, ctx string) (string, error) {
	return buildah(root, ctx, "bud", "--layers", "-t", "x", ".")
}

func (e *env) strata(root string, args ...string) ([]byte, error) {
	cmd := exec.Command(e.bin, append([]string{"--root", root}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("strata %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

func buildah(root, dir string, args ...string) (string, error) {
	cmd := exec.Command("buildah", append(buildahBase(root), args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("buildah %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// clean removes a store once nothing is mounted under it: a build that
// left a mount is a failure, and removing through it would reach what
// it serves.
func (e *env) clean(root string) error {
	if strings.Contains(root, "buildah-") {
		// buildah leaves its image layers mounted by fuse-overlayfs
		// until told otherwise.
		buildah(root, "", "umount", "--all")
		buildah(root, "", "rm", "--all")
	}
	if m := mountsUnder(root); len(m) > 0 {
		return fmt.Errorf("still mounted under %s: %s", root, strings.Join(m, ", "))
	}
	return os.RemoveAll(root)
}

func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var ms []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			ms = append(ms, fields[4])
		}
	}
	return ms
}

var stepRE = regexp.MustCompile(`(?m)^#(\d+) (?:DONE ([0-9.]+)s|CACHED)`)

// stepTimes lists the steps strata timed in out, as #N=SECONDS.
func stepTimes(out string) string {
	var s []string
	for _, m := range stepRE.FindAllStringSubmatch(out, -1) {
		if m[2] != "" {
			s = append(s, fmt.Sprintf("#%s=%ss", m[1], m[2]))
		} else {
			s = append(s, fmt.Sprintf("#%s=cached", m[1]))
		}
	}
	return strings.Join(s, " ")
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func dropCaches() {
	syscall.Sync()
	_ = os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
