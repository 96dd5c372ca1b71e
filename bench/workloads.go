package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// metric is one row of the result table.
type metric struct {
	key    string // stable identifier, used in -json output
	title  string
	unit   string
	higher bool // higher is better (a rate); otherwise a time, lower is better
	// noKernel marks rows the kernel has no value for (daemon memory).
	noKernel bool
}

// outcome is what one repetition of a workload produced for one
// implementation: a value or an error for each of its metrics.
type outcome struct {
	vals map[string]float64
	errs map[string]error
}

func newOutcome() *outcome {
	return &outcome{vals: map[string]float64{}, errs: map[string]error{}}
}

func (o *outcome) set(key string, v float64) { o.vals[key] = v }

func (o *outcome) fail(key string, err error) {
	if err != nil {
		o.errs[key] = err
	}
}

// workload is one numbered item of the benchmark.
type workload struct {
	name    string // for -only
	metrics []metric
	prep    func(b *bench) error // builds fixtures
	run     func(b *bench, im *impl, o *outcome)
}

func sizeLabel(n int64) string {
	if n >= 1<<30 && n%(1<<30) == 0 {
		return fmt.Sprintf("%d GiB", n>>30)
	}
	return fmt.Sprintf("%d MiB", n>>20)
}

func count(n int) string {
	if n >= 1000 && n%1000 == 0 {
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

func (b *bench) workloads() []workload {
	c := &b.cfg
	big := sizeLabel(c.bigSize)
	src := "Go src"
	if c.srcSub != "" {
		src = "Go src/" + c.srcSub
	}
	var lstatMetrics []metric
	for _, n := range lstatDepths {
		lstatMetrics = append(lstatMetrics, metric{
			key: fmt.Sprintf("lstat_%d_layers", n), unit: "µs/op",
			title: fmt.Sprintf("lstat, %d layer%s", n, map[bool]string{true: "s"}[n > 1]),
		})
	}
	return []workload{
		{
			name: "seqread",
			metrics: []metric{
				{key: "seqread_cold", title: "seq read " + big + ", cold", unit: "MB/s", higher: true},
				{key: "seqread_warm", title: "seq read " + big + ", warm", unit: "MB/s", higher: true},
			},
			prep: (*bench).fxBig,
			run:  (*bench).runSeqRead,
		},
		{
			name: "randread",
			metrics: []metric{
				{key: "randread_cold", title: fmt.Sprintf("random 4k read x%s, cold", count(c.randOps)), unit: "kops/s", higher: true},
				{key: "randread_warm", title: fmt.Sprintf("random 4k read x%s, warm", count(c.randOps)), unit: "kops/s", higher: true},
			},
			prep: (*bench).fxBig,
			run:  (*bench).runRandRead,
		},
		{
			name: "walk",
			metrics: []metric{
				{key: "walk", title: fmt.Sprintf("walk+lstat %s files, %d layers", count(c.walkFiles), walkLayers), unit: "s"},
				{key: "rss", title: "daemon peak RSS after walk", unit: "MiB", noKernel: true},
			},
			prep: (*bench).fxWalk,
			run:  (*bench).runWalk,
		},
		{
			name:    "lstat",
			metrics: lstatMetrics,
			prep:    (*bench).fxLstat,
			run:     (*bench).runLstat,
		},
		{
			name: "readdir",
			metrics: []metric{
				{key: "readdir", title: fmt.Sprintf("readdir %s entries, 3 layers+whiteouts", count(c.readdirEntries)), unit: "ms"},
			},
			prep: (*bench).fxReaddir,
			run:  (*bench).runReaddir,
		},
		{
			name: "create",
			metrics: []metric{
				{key: "create", title: fmt.Sprintf("create %s files of 100 B", count(c.createFiles)), unit: "s"},
			},
			prep: (*bench).fxEmpty,
			run:  (*bench).runCreate,
		},
		{
			name: "copyup",
			metrics: []metric{
				{key: "copyup", title: "copy-up " + big + " on 1-byte write", unit: "s"},
			},
			prep: (*bench).fxBig,
			run:  (*bench).runCopyUp,
		},
		{
			name: "chmod",
			metrics: []metric{
				{key: "chmod", title: "chmod " + big + " lower file", unit: "s"},
			},
			prep: (*bench).fxBig,
			run:  (*bench).runChmod,
		},
		{
			name: "untar",
			metrics: []metric{
				{key: "untar", title: "untar " + src, unit: "s"},
			},
			prep: (*bench).fxTar,
			run:  (*bench).runUntar,
		},
		{
			name: "gitstatus",
			metrics: []metric{
				{key: "gitstatus", title: "git status, " + src + " repo", unit: "s"},
			},
			prep: (*bench).fxGit,
			run:  (*bench).runGitStatus,
		},
		{
			name: "dpkg",
			metrics: []metric{
				{key: "dpkg", title: "dpkg -i " + dpkgPackage + " (40 MB), chroot", unit: "s"},
				{key: "dpkg_unsafe", title: "same, dpkg --force-unsafe-io (no fsync)", unit: "s"},
			},
			prep: (*bench).fxDebian,
			run:  (*bench).runDpkg,
		},
	}
}

var lstatDepths = []int{1, 10, 50, 100}

// withMount runs fn on a fresh mount of lowers, under the watchdog, and
// unmounts afterwards. Dirty data from earlier runs is flushed first.
func (b *bench) withMount(im *impl, lowers []string, fn func(m *mount) error) error {
	unix.Sync()
	m, err := b.mount(im, lowers)
	if err != nil {
		return fmt.Errorf("mount: %w", err)
	}
	watchdog := time.AfterFunc(b.cfg.timeout, m.abort)
	err = fn(m)
	watchdog.Stop()
	if err == nil {
		err = m.ctx.Err()
	}
	if err != nil {
		switch {
		case m.aborted:
			err = fmt.Errorf("timed out after %v, daemon killed: %w", b.cfg.timeout, err)
		case m.daemonExited():
			err = fmt.Errorf("%w; daemon exited (%v)%s", err, m.cmd.ProcessState, m.outputNote())
		}
	}
	if cerr := m.close(); cerr != nil {
		if err == nil {
			err = cerr
		} else {
			b.logf("  cleanup after error: %v", cerr)
		}
	}
	return err
}

// timeRead reads the whole big file through the mount and returns MB/s.
func (b *bench) timeRead(p string) (float64, error) {
	buf := make([]byte, 1<<20)
	start := time.Now()
	n, err := readFile(p, buf)
	d := time.Since(start)
	if err != nil {
		return 0, err
	}
	if n != b.cfg.bigSize {
		return 0, fmt.Errorf("read %d bytes, want %d", n, b.cfg.bigSize)
	}
	return float64(n) / 1e6 / d.Seconds(), nil
}

// 1. Sequential read of the big lower file, cold and warm.
func (b *bench) runSeqRead(im *impl, o *outcome) {
	for _, cold := range []bool{true, false} {
		key := map[bool]string{true: "seqread_cold", false: "seqread_warm"}[cold]
		o.fail(key, b.withMount(im, b.fx.bigLowers, func(m *mount) error {
			p := filepath.Join(m.dir, bigName)
			if cold {
				b.dropCaches()
			} else if err := readAll(p, make([]byte, 1<<20)); err != nil {
				return err
			}
			v, err := b.timeRead(p)
			if err == nil {
				o.set(key, v)
			}
			return err
		}))
	}
}

// randOffsets are the 4 KiB-aligned offsets of the random read workload,
// the same sequence for every implementation and run.
func (b *bench) randOffsets() []int64 {
	r := rand.New(rand.NewPCG(4096, 1))
	blocks := b.cfg.bigSize / 4096
	offs := make([]int64, b.cfg.randOps)
	for i := range offs {
		offs[i] = r.Int64N(blocks) * 4096
	}
	return offs
}

// 2. Random aligned 4 KiB preads in the big file, cold and warm.
func (b *bench) runRandRead(im *impl, o *outcome) {
	offs := b.randOffsets()
	for _, cold := range []bool{true, false} {
		key := map[bool]string{true: "randread_cold", false: "randread_warm"}[cold]
		o.fail(key, b.withMount(im, b.fx.bigLowers, func(m *mount) error {
			p := filepath.Join(m.dir, bigName)
			if !cold {
				if err := readAll(p, make([]byte, 1<<20)); err != nil {
					return err
				}
			}
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			if cold {
				b.dropCaches()
			}
			buf := make([]byte, 4096)
			start := time.Now()
			for _, off := range offs {
				n, err := unix.Pread(int(f.Fd()), buf, off)
				if err != nil {
					return err
				}
				if n != len(buf) {
					return fmt.Errorf("short read at %d: %d bytes", off, n)
				}
			}
			d := time.Since(start)
			o.set(key, float64(len(offs))/1e3/d.Seconds())
			return nil
		}))
	}
}

// walkMount walks the merged tree with WalkDir and lstats every entry,
// like find, and returns the time and the number of entries.
func (b *bench) walkMount(m *mount) (time.Duration, int, error) {
	for _, l := range b.fx.walkLowers {
		if err := warmTree(l, false); err != nil {
			return 0, 0, err
		}
	}
	n := 0
	start := time.Now()
	err := filepath.WalkDir(m.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if _, err := os.Lstat(p); err != nil {
			return err
		}
		n++
		if n%1024 == 0 {
			return m.ctx.Err()
		}
		return nil
	})
	return time.Since(start), n, err
}

// 3. Metadata walk over ten layers, and 11. the FUSE daemon's peak RSS
// at the end of it.
func (b *bench) runWalk(im *impl, o *outcome) {
	o.fail("walk", b.withMount(im, b.fx.walkLowers, func(m *mount) error {
		d, n, err := b.walkMount(m)
		if err != nil {
			return err
		}
		if n != b.fx.walkWant {
			b.note(im, "walk", fmt.Sprintf("walk saw %d entries, want %d", n, b.fx.walkWant))
		}
		o.set("walk", d.Seconds())
		if im.kind == kindKernel {
			return nil
		}
		pid := m.pid()
		if pid == 0 {
			o.fail("rss", errors.New("daemon process not available"))
			return nil
		}
		hwm, err := vmHWM(pid)
		if err != nil {
			o.fail("rss", err)
			return nil
		}
		o.set("rss", float64(hwm)/(1<<20))
		return nil
	}))
}

// 4. lstat of distinct bottom-layer files through 1, 10, 50, 100 layers.
func (b *bench) runLstat(im *impl, o *outcome) {
	order := rand.New(rand.NewPCG(2000, 1)).Perm(b.cfg.lstatFiles)
	for _, depth := range lstatDepths {
		key := fmt.Sprintf("lstat_%d_layers", depth)
		lowers := b.lstatLowers(depth)
		o.fail(key, b.withMount(im, lowers, func(m *mount) error {
			for _, l := range lowers {
				if err := warmTree(l, false); err != nil {
					return err
				}
			}
			d := filepath.Join(m.dir, "d")
			if _, err := os.Lstat(d); err != nil {
				return err
			}
			paths := make([]string, len(order))
			for i, k := range order {
				paths[i] = filepath.Join(d, lstatName(k))
			}
			var st unix.Stat_t
			start := time.Now()
			for _, p := range paths {
				if err := unix.Lstat(p, &st); err != nil {
					return &fs.PathError{Op: "lstat", Path: p, Err: err}
				}
			}
			el := time.Since(start)
			o.set(key, float64(el.Nanoseconds())/1e3/float64(len(paths)))
			return nil
		}))
		if b.ctx.Err() != nil {
			return
		}
	}
}

// 5. Reading a merged directory with whiteouts.
func (b *bench) runReaddir(im *impl, o *outcome) {
	o.fail("readdir", b.withMount(im, b.fx.rdLowers, func(m *mount) error {
		for _, l := range b.fx.rdLowers {
			if err := warmTree(l, false); err != nil {
				return err
			}
		}
		start := time.Now()
		f, err := os.Open(filepath.Join(m.dir, b.fx.rdDir))
		if err != nil {
			return err
		}
		names, err := f.Readdirnames(-1)
		f.Close()
		d := time.Since(start)
		if err != nil {
			return err
		}
		if len(names) != b.fx.rdWant {
			b.note(im, "readdir", fmt.Sprintf("readdir returned %d entries, want %d", len(names), b.fx.rdWant))
		}
		o.set("readdir", d.Seconds()*1e3)
		return nil
	}))
}

// 6. Creating many small files in one new directory.
func (b *bench) runCreate(im *impl, o *outcome) {
	o.fail("create", b.withMount(im, b.fx.emptyLower, func(m *mount) error {
		dir := filepath.Join(m.dir, "new")
		if err := os.Mkdir(dir, 0o755); err != nil {
			return err
		}
		data := bytes.Repeat([]byte("x"), 99)
		data = append(data, '\n')
		start := time.Now()
		for i := range b.cfg.createFiles {
			f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("f%06d", i)), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			if _, err := f.Write(data); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			if i%1024 == 0 && m.ctx.Err() != nil {
				return m.ctx.Err()
			}
		}
		o.set("create", time.Since(start).Seconds())
		return nil
	}))
}

// warmBig makes sure the lower big file is in the page cache, so copy-up
// times measure the filesystem rather than the disk.
func (b *bench) warmBig() error {
	return readAll(b.fx.bigLower, make([]byte, 1<<20))
}

// 7. Copy-up of the big file on its first write.
func (b *bench) runCopyUp(im *impl, o *outcome) {
	o.fail("copyup", b.withMount(im, b.fx.bigLowers, func(m *mount) error {
		if err := b.warmBig(); err != nil {
			return err
		}
		unix.Sync()
		p := filepath.Join(m.dir, bigName)
		start := time.Now()
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		if _, err := f.Write([]byte{^b.fx.bigFirst}); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		d := time.Since(start)
		if err := b.checkBigLower(); err != nil {
			return err
		}
		if st, err := os.Lstat(p); err != nil {
			return err
		} else if st.Size() != b.cfg.bigSize {
			b.note(im, "copyup", fmt.Sprintf("size after copy-up is %d, want %d", st.Size(), b.cfg.bigSize))
		}
		o.set("copyup", d.Seconds())
		return nil
	}))
}

// 8. chmod of the big lower file, which copies it up too.
func (b *bench) runChmod(im *impl, o *outcome) {
	o.fail("chmod", b.withMount(im, b.fx.bigLowers, func(m *mount) error {
		if err := b.warmBig(); err != nil {
			return err
		}
		unix.Sync()
		p := filepath.Join(m.dir, bigName)
		start := time.Now()
		if err := os.Chmod(p, 0o600); err != nil {
			return err
		}
		d := time.Since(start)
		if err := b.checkBigLower(); err != nil {
			return err
		}
		if st, err := os.Lstat(p); err != nil {
			return err
		} else if st.Mode().Perm() != 0o600 || st.Size() != b.cfg.bigSize {
			b.note(im, "chmod", fmt.Sprintf("after chmod: mode %v size %d", st.Mode().Perm(), st.Size()))
		}
		o.set("chmod", d.Seconds())
		return nil
	}))
}

// command runs a program under the mount's context, returning its stdout.
func command(m *mount, dir string, env []string, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(m.ctx, name, args...)
	cmd.Dir, cmd.Env = dir, env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 400 {
			msg = msg[:400] + "..."
		}
		return stdout.Bytes(), fmt.Errorf("%s: %v: %s", name, err, msg)
	}
	return stdout.Bytes(), nil
}

// 9. Extracting the Go source tarball into the mount with tar.
func (b *bench) runUntar(im *impl, o *outcome) {
	o.fail("untar", b.withMount(im, b.fx.emptyLower, func(m *mount) error {
		if err := readAll(b.fx.tarball, make([]byte, 1<<20)); err != nil {
			return err
		}
		start := time.Now()
		if _, err := command(m, m.dir, nil, "tar", "-xf", b.fx.tarball, "-C", m.dir); err != nil {
			return err
		}
		o.set("untar", time.Since(start).Seconds())
		return nil
	}))
}

// 10. git status of a committed repository in a lower layer.
func (b *bench) runGitStatus(im *impl, o *outcome) {
	o.fail("gitstatus", b.withMount(im, b.fx.gitLowers, func(m *mount) error {
		for _, l := range b.fx.gitLowers {
			if err := warmTree(l, true); err != nil {
				return err
			}
		}
		repo := filepath.Join(m.dir, b.fx.gitRepo)
		start := time.Now()
		out, err := command(m, repo, b.gitEnv(), "git", "status", "--porcelain")
		d := time.Since(start)
		if err != nil {
			return err
		}
		if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(out) > 0 {
			b.note(im, "gitstatus", fmt.Sprintf("git status listed %d paths in a clean repository, e.g. %q", len(lines), lines[0]))
		}
		o.set("gitstatus", d.Seconds())
		return nil
	}))
}
