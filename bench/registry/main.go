// Command registry times pulling and pushing an image through a
// registry server on loopback: strata pull and push beside skopeo copy
// with strata import or export, and beside podman pull and push, in the
// same run, each from a fresh store (and for pushes a fresh registry).
//
// Usage (as root, with docker-registry, skopeo and podman installed):
//
//	go run ./bench/registry -strata PATH [-runs N] [-dir SCRATCH] [-mb N]
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	strata := flag.String("strata", "strata", "the strata binary")
	runs := flag.Int("runs", 3, "runs of each, the median is reported")
	dir := flag.String("dir", "", "scratch directory (default: a new one under $TMPDIR)")
	mb := flag.Int("mb", 64, "MiB of incompressible data in the image, besides Go's source tree")
	flag.Parse()
	if err := run(*strata, *runs, *dir, *mb); err != nil {
		fmt.Fprintln(os.Stderr, "bench/registry:", err)
		os.Exit(1)
	}
}

type env struct {
	bin, dir string
	reg      *registry
}

func run(strata string, runs int, dir string, mb int) error {
	for _, t := range []string{"docker-registry", "skopeo", "podman"} {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("%s is needed: apt-get install docker-registry skopeo podman", t)
		}
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "strata-bench-registry-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	strata, err := filepath.Abs(strata)
	if err != nil {
		return err
	}
	e := &env{bin: strata, dir: dir}
	e.reg, err = startRegistry(filepath.Join(dir, "registry"))
	if err != nil {
		return err
	}
	defer e.reg.stop()
	// The image: Go's source tree (compressible, many files), and mb
	// MiB of random bytes in 4 files (not).
	src, size, err := e.makeImage(mb)
	if err != nil {
		return err
	}
	ref := e.reg.host + "/bench/image:1"
	if out, err := e.strata(filepath.Join(dir, "seed"), "push", "--tls-verify=false", src, ref); err != nil {
		return fmt.Errorf("seed the registry: %v\n%s", err, out)
	}
	fmt.Printf("image: %d layers, %s as stored; registry on %s; median of %d runs\n\n", 3, mib(size), e.reg.host, runs)
	pulls := []contender{
		{name: "strata pull", run: func(i int) error {
			_, err := e.strataErr(e.fresh("pull-strata", i), "pull", "--tls-verify=false", ref)
			return err
		}},
		{name: "skopeo copy + strata import", run: func(i int) error {
			root := e.fresh("pull-skopeo", i)
			lay := filepath.Join(root, "layout")
			if out, err := exec.Command("skopeo", "copy", "--src-tls-verify=false", "--preserve-digests", "docker://"+ref, "oci:"+lay+":1").CombinedOutput(); err != nil {
				return fmt.Errorf("skopeo: %v: %s", err, out)
			}
			_, err := e.strataErr(root, "import", lay, "bench/image:1")
			return err
		}},
		{name: "podman pull", run: func(i int) error {
			root := e.fresh("pull-podman", i)
			return podman(root, "pull", "-q", "--tls-verify=false", ref)
		}},
	}
	if err := compare("pull", runs, size, pulls); err != nil {
		return err
	}
	// Pushes, each into an empty registry, from a store that holds the
	// image.
	strataStore := e.fresh("push-strata-store", 0)
	if _, err := e.strataErr(strataStore, "pull", "--tls-verify=false", ref); err != nil {
		return err
	}
	podmanStore := e.fresh("push-podman-store", 0)
	if err := podman(podmanStore, "pull", "-q", "--tls-verify=false", ref); err != nil {
		return err
	}
	// Pushes go to a second registry, emptied before each push: the
	// first has every blob already.
	target, err := startRegistry(filepath.Join(dir, "target"))
	if err != nil {
		return err
	}
	defer target.stop()
	dest := func() string { return target.host + "/pushed/image:1" }
	empty := target.restartEmpty
	pushes := []contender{
		{name: "strata push", run: func(i int) error {
			_, err := e.strataErr(strataStore, "push", "--tls-verify=false", ref, dest())
			return err
		}},
		{name: "strata export + skopeo copy", run: func(i int) error {
			lay := filepath.Join(e.fresh("push-skopeo", i), "layout")
			if _, err := e.strataErr(strataStore, "export", ref, lay); err != nil {
				return err
			}
			if out, err := exec.Command("skopeo", "copy", "--dest-tls-verify=false", "--preserve-digests", "oci:"+lay, "docker://"+dest()).CombinedOutput(); err != nil {
				return fmt.Errorf("skopeo: %v: %s", err, out)
			}
			return nil
		}},
		{name: "podman push", run: func(i int) error {
			return podman(podmanStore, "push", "-q", "--tls-verify=false", ref, dest())
		}},
	}
	for i := range pushes {
		pushes[i].setup = empty
	}
	return compare("push", runs, size, pushes)
}

type contender struct {
	// name, run: the contender; setup, if set, runs before each run, untimed.
	name  string
	run   func(i int) error
	setup func() error
}

// compare times each contender runs times, interleaved, and prints
// medians, throughput and ratios to the first.
func compare(what string, runs int, size int64, cs []contender) error {
	times := make([][]time.Duration, len(cs))
	for r := 0; r < runs; r++ {
		for i, c := range cs {
			if c.setup != nil {
				if err := c.setup(); err != nil {
					return err
				}
			}
			dropCaches()
			start := time.Now()
			if err := c.run(r); err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			times[i] = append(times[i], time.Since(start))
		}
	}
	fmt.Printf("%-30s %10s %12s %8s\n", what, "median", "throughput", "ratio")
	base := median(times[0])
	for i, c := range cs {
		m := median(times[i])
		fmt.Printf("%-30s %9.2fs %9.1fMB/s %7.2fx\n", c.name, m.Seconds(), float64(size)/1e6/m.Seconds(), m.Seconds()/base.Seconds())
	}
	fmt.Println()
	return nil
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

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// fresh returns a new empty directory for run i of name.
func (e *env) fresh(name string, i int) string {
	d := filepath.Join(e.dir, fmt.Sprintf("%s-%d", name, i))
	if fi, err := os.Stat(d); err == nil && fi.IsDir() {
		// A strata or podman store from an earlier run: its mounts are gone.
		_ = os.RemoveAll(d)
	}
	_ = os.MkdirAll(d, 0o755)
	return d
}

func (e *env) strata(root string, args ...string) ([]byte, error) {
	cmd := exec.Command(e.bin, args...)
	cmd.Env = append(os.Environ(), "STRATA_ROOT="+root)
	return cmd.CombinedOutput()
}

func (e *env) strataErr(root string, args ...string) ([]byte, error) {
	out, err := e.strata(root, args...)
	if err != nil {
		return out, fmt.Errorf("strata %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

func podman(root string, args ...string) error {
	base := []string{"--root", filepath.Join(root, "storage"), "--runroot", filepath.Join(root, "run"), "--storage-driver", "overlay"}
	out, err := exec.Command("podman", append(base, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// makeImage stores the benchmark image in a strata store under dir and
// returns its name and compressed size.
func (e *env) makeImage(mb int) (string, int64, error) {
	root := filepath.Join(e.dir, "seed")
	tarPath := filepath.Join(e.dir, "src.tar.gz")
	if err := writeTree(tarPath, filepath.Join(runtime.GOROOT(), "src"), "usr/local/go/src"); err != nil {
		return "", 0, err
	}
	if _, err := e.strataErr(root, "import", tarPath, "bench/base:1"); err != nil {
		return "", 0, err
	}
	// Two more layers, committed from containers: random data, then a
	// small change.
	rng := rand.New(rand.NewSource(1))
	steps := []func(dir string) error{
		func(dir string) error {
			for i := 0; i < 4; i++ {
				b := make([]byte, mb<<20/4)
				rng.Read(b)
				if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("random%d", i)), b, 0o644); err != nil {
					return err
				}
			}
			return nil
		},
		func(dir string) error { return os.WriteFile(filepath.Join(dir, "etc-motd"), []byte("bench\n"), 0o644) },
	}
	from := "bench/base:1"
	for i, step := range steps {
		c := fmt.Sprintf("bench-build-%d", i)
		mnt := filepath.Join(e.dir, "mnt-"+c)
		if err := os.MkdirAll(mnt, 0o755); err != nil {
			return "", 0, err
		}
		if _, err := e.strataErr(root, "create", "--name", c, from); err != nil {
			return "", 0, err
		}
		if _, err := e.strataErr(root, "mount", c, mnt); err != nil {
			return "", 0, err
		}
		err := step(mnt)
		_, uerr := e.strataErr(root, "unmount", c)
		if err != nil || uerr != nil {
			return "", 0, fmt.Errorf("build layer %d: %v %v", i, err, uerr)
		}
		to := fmt.Sprintf("bench/image:%d", i+2)
		if _, err := e.strataErr(root, "commit", c, to); err != nil {
			return "", 0, err
		}
		from = to
	}
	// The seed store holds this image's blobs and no other.
	return from, dirSize(filepath.Join(root, "blobs")), nil
}

func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// writeTree writes the tree at dir into a gzip-compressed tar at path,
// under prefix.
func writeTree(path, dir, prefix string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() && !fi.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		hdr, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(filepath.Join(prefix, rel))
		hdr.Uname, hdr.Gname = "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, bytes.NewReader(b))
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

// registry is a docker-registry server on a loopback port.
type registry struct {
	dir, host string
	cmd       *exec.Cmd
}

func startRegistry(dir string) (*registry, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	host := l.Addr().String()
	l.Close()
	r := &registry{dir: dir, host: host}
	return r, r.start()
}

func (r *registry) start() error {
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return err
	}
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s/data\nhttp:\n  addr: %s\n", r.dir, r.host)
	p := filepath.Join(r.dir, "config.yml")
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		return err
	}
	r.cmd = exec.Command("docker-registry", "serve", p)
	logf, err := os.Create(filepath.Join(r.dir, "log"))
	if err != nil {
		return err
	}
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	if err := r.cmd.Start(); err != nil {
		return err
	}
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", r.host); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("docker-registry did not start on %s (see %s)", r.host, filepath.Join(r.dir, "log"))
}

func (r *registry) stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { r.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			r.cmd.Process.Kill()
			<-done
		}
		r.cmd = nil
	}
}

// restartEmpty stops the registry, empties its storage and starts it
// again on the same port.
func (r *registry) restartEmpty() error {
	r.stop()
	if err := os.RemoveAll(filepath.Join(r.dir, "data")); err != nil {
		return err
	}
	return r.start()
}
