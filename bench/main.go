// Command bench compares strata-fuse with kernel overlayfs and
// fuse-overlayfs on the same machine in one run.
//
// Usage (as root):
//
//	go run ./bench [-strata PATH] [-fuse-overlayfs PATH] [-runs N] [-quick]
//	               [-only NAME,...] [-json FILE] [-dir SCRATCH]
//
// Every implementation mounts the same lower layer trees, each time with a
// fresh upper and work directory, and every measurement uses a fresh mount.
// "Cold" means remounted and the page cache dropped (sync, then 3 into
// /proc/sys/vm/drop_caches). Layer trees are cached in the scratch
// directory between runs, keyed by a version stamp.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// config holds the workload sizes.
type config struct {
	quick          bool
	runs           int
	bigSize        int64
	randOps        int
	walkFiles      int
	lstatFiles     int
	readdirEntries int
	createFiles    int
	srcSub         string // subtree of GOROOT/src for untar and git; "" for all
	timeout        time.Duration
}

func fullConfig() config {
	return config{
		runs:           3,
		bigSize:        1 << 30,
		randOps:        20000,
		walkFiles:      100000,
		lstatFiles:     2000,
		readdirEntries: 10000,
		createFiles:    20000,
		timeout:        10 * time.Minute,
	}
}

func quickConfig() config {
	return config{
		quick:          true,
		runs:           2,
		bigSize:        64 << 20,
		randOps:        5000,
		walkFiles:      5000,
		lstatFiles:     500,
		readdirEntries: 10000,
		createFiles:    5000,
		srcSub:         "crypto",
		timeout:        3 * time.Minute,
	}
}

type bench struct {
	cfg    config
	dir    string // scratch directory
	fxDir  string // cached fixtures
	runDir string // per-mount upper, work and mount point directories
	impls  []*impl
	fx     fixtures

	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	active map[*mount]struct{}
	seq    int

	dropFailed bool
	notes      []string
	lock       *os.File // flock on the scratch directory, held while running
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

// note records something odd about an implementation's behaviour, once.
func (b *bench) note(im *impl, workload, msg string) {
	s := fmt.Sprintf("%s, %s: %s", im.name, workload, msg)
	b.mu.Lock()
	defer b.mu.Unlock()
	if !slices.Contains(b.notes, s) {
		b.notes = append(b.notes, s)
		fmt.Fprintln(os.Stderr, "  note: "+s)
	}
}

// dropCaches writes back dirty data and drops the page, dentry and inode
// caches.
func (b *bench) dropCaches() {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil && !b.dropFailed {
		b.dropFailed = true
		b.mu.Lock()
		b.notes = append(b.notes, fmt.Sprintf("cannot drop caches (%v): \"cold\" rows were measured warm", err))
		b.mu.Unlock()
	}
}

func main() {
	os.Exit(run())
}

func run() int {
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: go run ./bench [flags]   (as root)\n\n"+
			"Compares kernel overlayfs, fuse-overlayfs and strata-fuse. Workloads for -only:\n  %s\n  (rss is reported with walk)\n\nflags:\n",
			strings.Join(workloadNames(), ", "))
		flag.PrintDefaults()
	}
	strataOpts := flag.String("strata-opts", "", "extra -o `options` for strata-fuse, e.g. passthrough=all")
	strataBin := flag.String("strata", "", "strata-fuse `binary`; empty builds ./cmd/strata-fuse of the current module; \"none\" skips it")
	fuseOvl := flag.String("fuse-overlayfs", "fuse-overlayfs", "fuse-overlayfs `binary` (looked up in PATH); \"none\" skips it")
	runs := flag.Int("runs", 3, "repetitions of each measurement; the median is reported (default 2 with -quick)")
	quick := flag.Bool("quick", false, "small sizes for a smoke test of about two minutes")
	only := flag.String("only", "", "comma-separated `workloads` to run (default all)")
	jsonOut := flag.String("json", "", "also write results as JSON to `file`")
	dir := flag.String("dir", "/var/tmp/strata-bench", "scratch `directory`; fixtures are cached here between runs")
	flag.Parse()
	if flag.NArg() != 0 {
		flag.Usage()
		return 2
	}

	cfg := fullConfig()
	if *quick {
		cfg = quickConfig()
	}
	flag.Visit(func(f *flag.Flag) {
		if f.Name == "runs" {
			cfg.runs = *runs
		}
	})
	if cfg.runs < 1 {
		fmt.Fprintln(os.Stderr, "bench: -runs must be at least 1")
		return 2
	}
	all := (&bench{cfg: cfg}).workloads()
	selected, err := selectWorkloads(all, *only)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: must run as root: it mounts filesystems and drops the page cache")
		return 1
	}

	b, err := newBench(cfg, *dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	defer b.closeAll()

	sigc := make(chan os.Signal, 2)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigc
		fmt.Fprintf(os.Stderr, "\nbench: %v: stopping and unmounting (again to force)\n", s)
		b.cancel()
		select {
		case <-sigc:
		case <-time.After(20 * time.Second):
		}
		b.emergencyCleanup()
		os.Exit(130)
	}()

	b.setupImpls(*strataBin, *fuseOvl, *strataOpts)
	res := b.runAll(selected)
	if b.ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "bench: interrupted")
		return 130
	}
	rep := b.report(res)
	rep.printTable(os.Stdout)
	if *jsonOut != "" {
		if err := rep.writeJSON(*jsonOut); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
	}
	return 0
}

func workloadNames() []string {
	var names []string
	for _, w := range (&bench{cfg: fullConfig()}).workloads() {
		names = append(names, w.name)
	}
	return names
}

func selectWorkloads(all []workload, only string) ([]workload, error) {
	if only == "" {
		return all, nil
	}
	want := map[string]bool{}
	for _, n := range strings.Split(only, ",") {
		n = strings.TrimSpace(n)
		if n == "rss" {
			n = "walk"
		}
		if n == "" {
			continue
		}
		if !slices.ContainsFunc(all, func(w workload) bool { return w.name == n }) {
			return nil, fmt.Errorf("unknown workload %q (have %s, rss)", n, strings.Join(workloadNames(), ", "))
		}
		want[n] = true
	}
	var out []workload
	for _, w := range all {
		if want[w.name] {
			out = append(out, w)
		}
	}
	return out, nil
}

func newBench(cfg config, dir string) (*bench, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if dir, err = filepath.EvalSymlinks(dir); err != nil {
		return nil, err
	}
	// Layer paths go into lowerdir= options unescaped.
	if strings.ContainsAny(dir, ",:= \t\n\\") {
		return nil, fmt.Errorf("scratch directory %q must not contain ',', ':', '=', '\\' or spaces", dir)
	}
	b := &bench{
		cfg:    cfg,
		dir:    dir,
		fxDir:  filepath.Join(dir, "fx"),
		runDir: filepath.Join(dir, "run"),
		active: map[*mount]struct{}{},
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	// One harness per scratch directory: a second one would unmount and
	// delete the first one's mounts. The lock dies with the process.
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("another benchmark is using scratch directory %s (%v)", dir, err)
	}
	b.lock = lock
	b.cleanupStale()
	if _, ok := mountedFS(b.runDir); ok {
		return nil, fmt.Errorf("%s is a mount point; refusing to clear it", b.runDir)
	}
	for _, e := range readMountinfo() {
		if strings.HasPrefix(e.dir, b.runDir+"/") {
			return nil, fmt.Errorf("%s is still mounted from an earlier run; unmount it first", e.dir)
		}
	}
	if err := os.RemoveAll(b.runDir); err != nil {
		return nil, err
	}
	for _, d := range []string{b.fxDir, b.runDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	b.logf("scratch directory: %s", dir)
	return b, nil
}

// closeAll unmounts whatever is still mounted, on the way out.
func (b *bench) closeAll() {
	b.mu.Lock()
	ms := make([]*mount, 0, len(b.active))
	for m := range b.active {
		ms = append(ms, m)
	}
	b.mu.Unlock()
	for _, m := range ms {
		if err := m.close(); err != nil {
			b.logf("cleanup: %v", err)
		}
	}
	for _, e := range readMountinfo() {
		if strings.HasPrefix(e.dir, b.runDir+"/") {
			b.logf("cleanup: %s is still mounted; leaving the run directory in place", e.dir)
			return
		}
	}
	os.RemoveAll(b.runDir)
}

// setupImpls finds, builds and probes the three implementations.
func (b *bench) setupImpls(strataBin, fuseOvl, strataOpts string) {
	var uts unix.Utsname
	unix.Uname(&uts)
	kernel := &impl{name: "kernel", kind: kindKernel, version: "Linux " + unix.ByteSliceToString(uts.Release[:])}
	fo := &impl{name: "fuse-overlayfs", kind: kindFUSE}
	st := &impl{name: "strata", kind: kindFUSE, opts: strataOpts}
	b.impls = []*impl{kernel, fo, st}

	if fuseOvl == "none" {
		fo.skip = "disabled with -fuse-overlayfs none"
	} else if p, err := exec.LookPath(fuseOvl); err != nil {
		fo.skip = fmt.Sprintf("%s not found (Debian package fuse-overlayfs)", fuseOvl)
	} else if fo.bin, err = filepath.Abs(p); err != nil {
		fo.skip = err.Error()
	}

	switch strataBin {
	case "none":
		st.skip = "disabled with -strata none"
	case "":
		p := filepath.Join(b.dir, "bin", "strata-fuse")
		b.logf("building strata-fuse ...")
		out, err := exec.Command("go", "build", "-o", p, "github.com/strata-fs/strata/cmd/strata-fuse").CombinedOutput()
		if err != nil {
			msg := string(out)
			if wd, err := os.Getwd(); err == nil {
				msg = strings.ReplaceAll(msg, wd, ".")
			}
			st.skip = "go build ./cmd/strata-fuse failed: " + firstLine(msg, err)
		} else {
			st.bin = p
		}
	default:
		p := strataBin
		if _, err := os.Stat(p); err == nil && !strings.Contains(p, "/") {
			p = "./" + p // a file in the current directory, not a PATH lookup
		}
		if p, err := exec.LookPath(p); err != nil {
			st.skip = fmt.Sprintf("%s: %v", strataBin, errors.Unwrap(err))
		} else if st.bin, err = filepath.Abs(p); err != nil {
			st.skip = err.Error()
		}
	}

	if _, err := os.Stat("/dev/fuse"); err != nil {
		for _, im := range []*impl{fo, st} {
			if im.skip == "" {
				im.skip = "no /dev/fuse"
			}
		}
	}
	for _, im := range b.impls {
		if im.skip != "" {
			continue
		}
		if im.kind == kindFUSE {
			im.version = programVersion(im.bin)
			if im == st && strataBin == "" {
				im.version = "strata-fuse built from the working tree"
			}
			if im.opts != "" {
				im.version += ", -o " + im.opts
			}
		}
		if err := b.probe(im); err != nil {
			im.skip = "probe mount failed: " + err.Error()
		}
	}
	for _, im := range b.impls {
		if im.skip != "" {
			b.logf("%-15s n/a: %s", im.name, im.skip)
		} else {
			b.logf("%-15s %s", im.name, im.version)
		}
	}
}

func firstLine(s string, err error) string {
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "#") {
			return l
		}
	}
	return err.Error()
}

// programVersion asks a FUSE program for its version.
func programVersion(bin string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
	if err != nil {
		return filepath.Base(bin) + " (no --version)"
	}
	// fuse-overlayfs also prints the versions of fusermount and libfuse;
	// prefer the line naming the program itself.
	var first string
	for _, l := range strings.Split(string(out), "\n") {
		l = strings.TrimSpace(l)
		if !strings.Contains(strings.ToLower(l), "version") {
			continue
		}
		if strings.HasPrefix(l, filepath.Base(bin)) {
			return l
		}
		if first == "" {
			first = l
		}
	}
	if first != "" {
		return first
	}
	return filepath.Base(bin) + " (no version in --version output)"
}

// probe checks that an implementation mounts a two-layer stack and shows
// the lower file and a new upper one.
func (b *bench) probe(im *impl) error {
	dir, err := b.fixture("probe", "probe", func(dir string) error {
		for _, l := range []string{"top", "bottom"} {
			if err := os.MkdirAll(filepath.Join(dir, l), 0o755); err != nil {
				return err
			}
		}
		return os.WriteFile(filepath.Join(dir, "bottom", "hello"), []byte("hello\n"), 0o644)
	})
	if err != nil {
		return err
	}
	return b.withMount(im, layers(dir, "top", "bottom"), func(m *mount) error {
		data, err := os.ReadFile(filepath.Join(m.dir, "hello"))
		if err != nil {
			return err
		}
		if string(data) != "hello\n" {
			return fmt.Errorf("read %q from a lower file", data)
		}
		return os.WriteFile(filepath.Join(m.dir, "new"), []byte("x"), 0o644)
	})
}

// result collects one metric's samples for every implementation.
type result struct {
	metric
	workload string
	samples  map[string][]float64
	errs     map[string]string
}

func (b *bench) runAll(ws []workload) []*result {
	var out []*result
	for _, w := range ws {
		if b.ctx.Err() != nil {
			break
		}
		rs := make(map[string]*result)
		for _, mt := range w.metrics {
			r := &result{metric: mt, workload: w.name, samples: map[string][]float64{}, errs: map[string]string{}}
			rs[mt.key] = r
			out = append(out, r)
		}
		b.logf("== %s", w.name)
		if err := w.prep(b); err != nil {
			b.logf("  %v", err)
			for _, r := range rs {
				for _, im := range b.impls {
					r.errs[im.name] = "fixture: " + err.Error()
				}
			}
			continue
		}
		failed := map[string]bool{}
		for run := 1; run <= b.cfg.runs && b.ctx.Err() == nil; run++ {
			for _, im := range b.impls {
				if im.skip != "" || failed[im.name] || b.ctx.Err() != nil {
					continue
				}
				o := newOutcome()
				w.run(b, im, o)
				if b.ctx.Err() != nil {
					break
				}
				var parts []string
				var anyErr error
				for _, e := range o.errs {
					anyErr = e
				}
				for _, mt := range w.metrics {
					r := rs[mt.key]
					if v, ok := o.vals[mt.key]; ok {
						r.samples[im.name] = append(r.samples[im.name], v)
						parts = append(parts, fmt.Sprintf("%s %s %s", mt.key, formatValue(v), mt.unit))
						continue
					}
					if mt.noKernel && im.kind == kindKernel {
						continue
					}
					e := o.errs[mt.key]
					if e == nil {
						e = anyErr
					}
					if e == nil {
						e = errors.New("no value")
					}
					if _, seen := r.errs[im.name]; !seen {
						r.errs[im.name] = e.Error()
					}
					parts = append(parts, fmt.Sprintf("%s ERROR %v", mt.key, e))
				}
				b.logf("  run %d/%d %-15s %s", run, b.cfg.runs, im.name, strings.Join(parts, ", "))
				if len(o.vals) == 0 {
					// Nothing worked; don't repeat a failure (or a timeout).
					failed[im.name] = true
				}
			}
		}
	}
	return out
}
