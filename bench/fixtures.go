package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// fixtureVersion is written into every fixture's stamp. Bump it, or the
// params string of one fixture, whenever a builder below changes, so that
// cached fixtures get rebuilt.
const fixtureVersion = "strata-bench fixture v1"

const bigName = "big.bin"

// fixtures holds the layer trees shared by all implementations. Lowers are
// listed topmost first, as in a lowerdir= option.
type fixtures struct {
	bigLowers  []string
	bigLower   string // the 1 GiB file itself, in the bottom layer
	bigFirst   byte   // its first byte, to detect writes to the lower layer
	walkLowers []string
	walkWant   int // entries WalkDir should see through the union, root included
	lstatBase  string
	lstatExtra []string // lstatExtra[i] is the layer i+1 levels above lstatBase
	rdLowers   []string
	rdWant     int
	rdDir      string // the merged directory, relative to the mount
	emptyLower []string
	tarball    string
	gitLowers  []string
	gitRepo    string // repository, relative to the mount
	// debianLower is a debootstrap root filesystem; deb a .deb to install.
	debianLower []string
	deb         string
}

// fixture returns the directory of a cached fixture, building it first
// unless one with the same stamp already exists.
func (b *bench) fixture(name, params string, build func(dir string) error) (string, error) {
	dir := filepath.Join(b.fxDir, name)
	stamp := fixtureVersion + "\n" + params + "\n"
	stampFile := filepath.Join(dir, ".stamp")
	if data, err := os.ReadFile(stampFile); err == nil && string(data) == stamp {
		return dir, nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return "", err
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", err
	}
	b.logf("building fixture %s ...", name)
	start := time.Now()
	if err := build(tmp); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("fixture %s: %w", name, err)
	}
	if err := os.WriteFile(filepath.Join(tmp, ".stamp"), []byte(stamp), 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	unix.Sync()
	b.logf("built fixture %s in %.1fs", name, time.Since(start).Seconds())
	return dir, nil
}

// invalidate drops a fixture's stamp so the next run rebuilds it.
func (b *bench) invalidate(dir string) {
	os.Remove(filepath.Join(dir, ".stamp"))
}

func layers(dir string, names ...string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = filepath.Join(dir, n)
	}
	return out
}

// fxBig: a bottom layer with one large file of pseudo-random bytes, under a
// small top layer.
func (b *bench) fxBig() error {
	if b.fx.bigLowers != nil {
		return nil
	}
	size := b.cfg.bigSize
	dir, err := b.fixture(fmt.Sprintf("big-%dM", size>>20), fmt.Sprintf("size=%d seed=1", size), func(dir string) error {
		if err := os.MkdirAll(filepath.Join(dir, "L0"), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "L0", "README"), []byte("top layer\n"), 0o644); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(dir, "L1"), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(filepath.Join(dir, "L1", bigName), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			return err
		}
		var seed [32]byte
		seed[0] = 1
		if _, err := io.CopyBuffer(f, io.LimitReader(rand.NewChaCha8(seed), size), make([]byte, 4<<20)); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	})
	if err != nil {
		return err
	}
	b.fx.bigLowers = layers(dir, "L0", "L1")
	b.fx.bigLower = filepath.Join(dir, "L1", bigName)
	f, err := os.Open(b.fx.bigLower)
	if err != nil {
		return err
	}
	defer f.Close()
	var one [1]byte
	if _, err := f.ReadAt(one[:], 0); err != nil {
		return err
	}
	b.fx.bigFirst = one[0]
	return nil
}

// checkBigLower verifies that a copy-up left the lower file untouched.
func (b *bench) checkBigLower() error {
	st, err := os.Lstat(b.fx.bigLower)
	if err != nil {
		return err
	}
	f, err := os.Open(b.fx.bigLower)
	if err != nil {
		return err
	}
	defer f.Close()
	var one [1]byte
	if _, err := f.ReadAt(one[:], 0); err != nil {
		return err
	}
	if st.Size() != b.cfg.bigSize || st.Mode().Perm() != 0o644 || one[0] != b.fx.bigFirst {
		b.invalidate(filepath.Dir(filepath.Dir(b.fx.bigLower)))
		return errors.New("LOWER LAYER WAS MODIFIED through the mount (fixture will be rebuilt next run)")
	}
	return nil
}

// walkShape returns the directory layout of the walk fixture: top-level
// directories, subdirectories in each, and files per leaf per layer.
func (c *config) walkShape() (top, sub, perLeaf int) {
	leaves := max(c.walkFiles/500, 10)
	top = max(leaves/10, 1)
	sub = 10
	perLeaf = max(c.walkFiles/walkLayers/(top*sub), 1)
	return
}

const walkLayers = 10

// fxWalk: ten layers sharing one directory tree; every layer adds its own
// files to every leaf directory, and each leaf also holds a file that all
// layers have, so upper copies shadow lower ones.
func (b *bench) fxWalk() error {
	if b.fx.walkLowers != nil {
		return nil
	}
	top, sub, perLeaf := b.cfg.walkShape()
	names := make([]string, walkLayers)
	for i := range names {
		names[i] = fmt.Sprintf("L%d", i)
	}
	dir, err := b.fixture(fmt.Sprintf("walk-%d", b.cfg.walkFiles),
		fmt.Sprintf("layers=%d top=%d sub=%d perleaf=%d", walkLayers, top, sub, perLeaf),
		func(dir string) error {
			return parallel(walkLayers, func(l int) error {
				content := bytes.Repeat([]byte{'a' + byte(l)}, 64)
				for t := range top {
					for s := range sub {
						leaf := filepath.Join(dir, names[l], fmt.Sprintf("t%02d", t), fmt.Sprintf("s%d", s))
						if err := os.MkdirAll(leaf, 0o755); err != nil {
							return err
						}
						if err := os.WriteFile(filepath.Join(leaf, "shared.txt"), content, 0o644); err != nil {
							return err
						}
						for i := range perLeaf {
							name := fmt.Sprintf("l%d-f%04d.dat", l, i)
							if err := os.WriteFile(filepath.Join(leaf, name), content, 0o644); err != nil {
								return err
							}
						}
					}
				}
				return nil
			})
		})
	if err != nil {
		return err
	}
	b.fx.walkLowers = layers(dir, names...)
	leaves := top * sub
	b.fx.walkWant = 1 + top + leaves + leaves + leaves*perLeaf*walkLayers
	return nil
}

// parallel runs fn(0..n-1) on up to GOMAXPROCS goroutines.
func parallel(n int, fn func(i int) error) error {
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[i] = fn(i)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

const lstatMaxLayers = 100

// fxLstat: a bottom layer whose directory d holds the lstat targets, and 99
// layers that each have the same directory d with one file of their own.
func (b *bench) fxLstat() error {
	if b.fx.lstatBase != "" {
		return nil
	}
	n := b.cfg.lstatFiles
	dir, err := b.fixture(fmt.Sprintf("lstat-%d", n), fmt.Sprintf("files=%d layers=%d", n, lstatMaxLayers), func(dir string) error {
		d := filepath.Join(dir, "L00", "d")
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		for i := range n {
			if err := os.WriteFile(filepath.Join(d, lstatName(i)), nil, 0o644); err != nil {
				return err
			}
		}
		for l := 1; l < lstatMaxLayers; l++ {
			d := filepath.Join(dir, fmt.Sprintf("L%02d", l), "d")
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("m%02d", l)), nil, 0o644); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	b.fx.lstatBase = filepath.Join(dir, "L00")
	b.fx.lstatExtra = nil
	for l := 1; l < lstatMaxLayers; l++ {
		b.fx.lstatExtra = append(b.fx.lstatExtra, filepath.Join(dir, fmt.Sprintf("L%02d", l)))
	}
	return nil
}

func lstatName(i int) string { return fmt.Sprintf("f%05d", i) }

// lstatLowers is the stack of n layers, topmost first, with the targets in
// the bottom one.
func (b *bench) lstatLowers(n int) []string {
	out := make([]string, 0, n)
	for l := n - 1; l >= 1; l-- {
		out = append(out, b.fx.lstatExtra[l-1])
	}
	return append(out, b.fx.lstatBase)
}

// fxReaddir: one directory in three layers. With E entries merged, the
// bottom layer has E/2 files, the middle 2E/5 files and whiteouts for E/10
// of the bottom ones, and the top 3E/10 files and whiteouts for E/20 of each
// layer below; E names remain.
func (b *bench) fxReaddir() error {
	if b.fx.rdLowers != nil {
		return nil
	}
	e := b.cfg.readdirEntries
	nA, nB, nC := e/2, e*2/5, e-e/2-e*2/5+e/10+e/20+e/20 // so that the merged total is e
	wB, wCa, wCb := e/10, e/20, e/20
	dir, err := b.fixture(fmt.Sprintf("readdir-%d", e), fmt.Sprintf("a=%d b=%d c=%d wb=%d wca=%d wcb=%d", nA, nB, nC, wB, wCa, wCb), func(dir string) error {
		mk := func(layer, prefix string, n int) error {
			d := filepath.Join(dir, layer, "dir")
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
			for i := range n {
				if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("%s%05d", prefix, i)), nil, 0o644); err != nil {
					return err
				}
			}
			return nil
		}
		// Overlayfs whiteouts: character devices 0/0.
		wh := func(layer, prefix string, from, n int) error {
			for i := from; i < from+n; i++ {
				p := filepath.Join(dir, layer, "dir", fmt.Sprintf("%s%05d", prefix, i))
				if err := unix.Mknod(p, unix.S_IFCHR|0o000, 0); err != nil {
					return fmt.Errorf("whiteout: %w", err)
				}
			}
			return nil
		}
		for _, step := range []func() error{
			func() error { return mk("a", "a", nA) },
			func() error { return mk("b", "b", nB) },
			func() error { return mk("c", "c", nC) },
			func() error { return wh("b", "a", 0, wB) },
			func() error { return wh("c", "a", wB, wCa) },
			func() error { return wh("c", "b", 0, wCb) },
		} {
			if err := step(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	b.fx.rdLowers = layers(dir, "c", "b", "a")
	b.fx.rdWant = nA - wB - wCa + nB - wCb + nC
	b.fx.rdDir = "dir"
	return nil
}

// fxEmpty: a single empty lower layer, for workloads that only write.
func (b *bench) fxEmpty() error {
	if b.fx.emptyLower != nil {
		return nil
	}
	dir, err := b.fixture("empty", "empty", func(dir string) error {
		return os.Mkdir(filepath.Join(dir, "L0"), 0o755)
	})
	if err != nil {
		return err
	}
	b.fx.emptyLower = layers(dir, "L0")
	return nil
}

// goSource returns the Go source tree the tar and git workloads use and a
// short label for it.
func (b *bench) goSource() (src, label string, err error) {
	out, err := exec.Command("go", "env", "GOROOT", "GOVERSION").Output()
	if err != nil {
		return "", "", fmt.Errorf("go env: %w", err)
	}
	f := strings.Fields(string(out))
	if len(f) != 2 {
		return "", "", fmt.Errorf("go env: unexpected output %q", out)
	}
	src = filepath.Join(f[0], "src")
	label = f[1] + "-src"
	if b.cfg.srcSub != "" {
		src = filepath.Join(src, b.cfg.srcSub)
		label += "-" + strings.ReplaceAll(b.cfg.srcSub, "/", "-")
	}
	if _, err := os.Stat(src); err != nil {
		return "", "", err
	}
	return src, label, nil
}

// fxTar: a tarball of the Go source tree.
func (b *bench) fxTar() error {
	if b.fx.tarball != "" {
		return nil
	}
	if err := b.fxEmpty(); err != nil {
		return err
	}
	src, label, err := b.goSource()
	if err != nil {
		return err
	}
	dir, err := b.fixture("tar-"+label, "tar "+label, func(dir string) error {
		cmd := exec.Command("tar", "-cf", filepath.Join(dir, "src.tar"), "-C", filepath.Dir(src), filepath.Base(src))
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("tar: %v: %s", err, out)
		}
		return nil
	})
	if err != nil {
		return err
	}
	b.fx.tarball = filepath.Join(dir, "src.tar")
	return nil
}

// gitEnv is the environment for every git command: no system or user
// configuration, a fixed identity and fixed dates.
func (b *bench) gitEnv() []string {
	env := []string{
		"HOME=" + filepath.Join(b.dir, "home"),
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=strata bench", "GIT_AUTHOR_EMAIL=bench@strata.invalid",
		"GIT_COMMITTER_NAME=strata bench", "GIT_COMMITTER_EMAIL=bench@strata.invalid",
		"GIT_AUTHOR_DATE=2024-01-01T00:00:00Z", "GIT_COMMITTER_DATE=2024-01-01T00:00:00Z",
		"LC_ALL=C",
	}
	for _, k := range []string{"PATH", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// fxGit: a lower layer holding a committed git repository of the Go source.
func (b *bench) fxGit() error {
	if b.fx.gitLowers != nil {
		return nil
	}
	src, label, err := b.goSource()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(b.dir, "home"), 0o755); err != nil {
		return err
	}
	dir, err := b.fixture("git-"+label, "git rev2 "+label, func(dir string) error {
		repo := filepath.Join(dir, "L0", "go")
		if err := os.MkdirAll(filepath.Dir(repo), 0o755); err != nil {
			return err
		}
		run := func(name string, args ...string) error {
			cmd := exec.Command(name, args...)
			cmd.Dir = filepath.Dir(repo)
			if name == "git" {
				cmd.Dir = repo
			}
			cmd.Env = b.gitEnv()
			out, err := cmd.CombinedOutput()
			if err != nil {
				return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
			}
			return nil
		}
		// cp -a keeps the source's (old) modification times, so no index
		// entry is racily clean.
		if err := run("cp", "-a", src, repo); err != nil {
			return err
		}
		// No automatic gc: it would detach and repack in the background,
		// deleting loose objects from the lower layer during the runs.
		// Pack once in the foreground instead, like a clone.
		for _, args := range [][]string{
			{"init", "-q"},
			{"config", "gc.auto", "0"},
			{"config", "maintenance.auto", "false"},
			{"add", "-A"},
			{"commit", "-q", "-m", "Go source"},
			{"gc", "-q"},
		} {
			if err := run("git", args...); err != nil {
				return err
			}
		}
		time.Sleep(1100 * time.Millisecond)
		if err := run("git", "update-index", "-q", "--refresh"); err != nil {
			return err
		}
		cmd := exec.Command("git", "status", "--porcelain")
		cmd.Dir, cmd.Env = repo, b.gitEnv()
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("git status: %v", err)
		}
		if len(out) != 0 {
			return fmt.Errorf("fresh repository is not clean: %.200s", out)
		}
		return nil
	})
	if err != nil {
		return err
	}
	b.fx.gitLowers = layers(dir, "L0")
	b.fx.gitRepo = "go"
	return nil
}

// warmTree walks a directory tree directly (not through a union), so the
// lower filesystem's dentry and inode caches, and with contents its page
// cache, are warm before a timed run.
func warmTree(root string, contents bool) error {
	buf := make([]byte, 1<<20)
	return filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if _, err := os.Lstat(p); err != nil {
			return err
		}
		if contents && d.Type().IsRegular() {
			return readAll(p, buf)
		}
		return nil
	})
}

// readAll reads a file sequentially with buf and returns the byte count.
func readAll(p string, buf []byte) error {
	_, err := readFile(p, buf)
	return err
}

func readFile(p string, buf []byte) (int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n int64
	for {
		k, err := f.Read(buf)
		n += int64(k)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}
