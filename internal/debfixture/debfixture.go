// Package debfixture finds or builds the Debian fixtures that the
// integration tests and the benchmark share: a debootstrap root filesystem
// kept as a tarball, and .deb files fetched with apt-get download.
//
// Both live in a cache directory outside any checkout (DefaultDir, or
// $STRATA_TEST_CACHE), because a debootstrap takes minutes and must not
// run on every test. Each entry is built under a temporary name in the
// cache directory and renamed into place when complete, so a killed build
// leaves no entry, only a temporary directory that the next build
// removes. An exclusive flock on the cache directory's lock file is held
// while looking and building, so two processes never build at once.
//
// The .deb files come from the host's apt sources, so they suit the
// rootfs only when the host runs the same Debian release (CI's machines
// and the developers' do: Debian 12, bookworm).
package debfixture

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultDir is the cache directory when $STRATA_TEST_CACHE is unset.
const DefaultDir = "/var/cache/strata-test"

// Dir returns the cache directory: $STRATA_TEST_CACHE or DefaultDir.
func Dir() string {
	if d := os.Getenv("STRATA_TEST_CACHE"); d != "" {
		return d
	}
	return DefaultDir
}

// tempPrefix starts the names of build directories in the cache
// directory; any such directory found under the lock is a leftover.
const tempPrefix = ".build-"

// Rootfs names a debootstrap root filesystem.
type Rootfs struct {
	Suite   string // e.g. "bookworm"
	Variant string // e.g. "minbase"
	Mirror  string // e.g. "http://deb.debian.org/debian"
}

// Bookworm is the minbase Debian 12 root filesystem the tests use.
var Bookworm = Rootfs{Suite: "bookworm", Variant: "minbase", Mirror: "http://deb.debian.org/debian"}

// args is the debootstrap command line for target.
func (r Rootfs) args(target string) []string {
	return []string{"--variant=" + r.Variant, r.Suite, target, r.Mirror}
}

// Name is the cache file name of the rootfs tarball: readable parts,
// then a digest of the whole debootstrap command line (the mirror
// included) and the host architecture it was built for.
func (r Rootfs) Name() string {
	h := sha256.Sum256([]byte(strings.Join(append(r.args("TARGET"), hostArch()), "\x00")))
	return fmt.Sprintf("debootstrap-%s-%s-%s-%s.tar", r.Variant, r.Suite, hostArch(), hex.EncodeToString(h[:6]))
}

// hostArch is dpkg's name for this machine's architecture, which
// debootstrap builds for by default.
func hostArch() string {
	out, err := exec.Command("dpkg", "--print-architecture").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

// Cache is an open cache directory with its lock held; Close releases it.
type Cache struct {
	dir  string
	lock *os.File
	logf func(format string, args ...any)
}

// Open creates dir if needed and takes its lock, waiting for another
// process that holds it. logf, if not nil, is told about builds.
func Open(dir string, logf func(format string, args ...any)) (*Cache, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("fixture cache: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("fixture cache: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return nil, errors.Join(fmt.Errorf("lock fixture cache %s: %w", dir, err), lock.Close())
	}
	c := &Cache{dir: dir, lock: lock, logf: logf}
	if err := c.removeLeftovers(); err != nil {
		return nil, errors.Join(err, c.Close())
	}
	return c, nil
}

// Close releases the cache's lock.
func (c *Cache) Close() error { return c.lock.Close() }

// removeLeftovers deletes the build directories of killed builds. A
// killed debootstrap may leave proc and sys mounted in its target: those
// are detached first, so that nothing is removed through them.
func (c *Cache) removeLeftovers() error {
	ents, err := os.ReadDir(c.dir)
	if err != nil {
		return fmt.Errorf("fixture cache: %w", err)
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), tempPrefix) {
			continue
		}
		p := filepath.Join(c.dir, e.Name())
		if err := detachUnder(p); err != nil {
			return err
		}
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("remove leftover build %s: %w", p, err)
		}
	}
	return nil
}

// detachUnder lazily unmounts every mount at or below dir, deepest first.
func detachUnder(dir string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var mps []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeOctal(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			mps = append(mps, mp)
		}
	}
	for i := len(mps) - 1; i >= 0; i-- {
		if err := unix.Unmount(mps[i], unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unmount leftover %s: %w", mps[i], err)
		}
	}
	return nil
}

// unescapeOctal undoes mountinfo's \ooo escapes.
func unescapeOctal(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var n byte
			ok := true
			for _, d := range s[i+1 : i+4] {
				if d < '0' || d > '7' {
					ok = false
					break
				}
				n = n*8 + byte(d-'0')
			}
			if ok {
				b.WriteByte(n)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// RootfsTarball returns the path of the cached tarball of r, running
// debootstrap and packing its result first when there is none. The
// tarball is plain (uncompressed) PAX with numeric owners and extended
// attributes, entries named "./...", as `strata import` and `tar -x`
// take it.
func (c *Cache) RootfsTarball(ctx context.Context, r Rootfs) (string, error) {
	final := filepath.Join(c.dir, r.Name())
	if _, err := os.Stat(final); err == nil {
		return final, nil
	}
	for _, tool := range []string{"debootstrap", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			return "", fmt.Errorf("build %s: %s not found (apt-get install %s)", r.Name(), tool, tool)
		}
	}
	tmp, err := os.MkdirTemp(c.dir, tempPrefix)
	if err != nil {
		return "", fmt.Errorf("build %s: %w", r.Name(), err)
	}
	defer func() {
		if err := detachUnder(tmp); err == nil {
			os.RemoveAll(tmp)
		}
	}()
	root := filepath.Join(tmp, "rootfs")
	c.logf("debfixture: debootstrap %s (a few minutes, once per cache)", strings.Join(r.args(root), " "))
	if err := c.run(ctx, "", "debootstrap", r.args(root)...); err != nil {
		return "", fmt.Errorf("build %s: %w", r.Name(), err)
	}
	tarball := filepath.Join(tmp, "rootfs.tar")
	if err := c.run(ctx, "", "tar", "--create", "--file", tarball, "--directory", root,
		"--format=pax", "--numeric-owner", "--sort=name", "--xattrs", "--xattrs-include=*", "."); err != nil {
		return "", fmt.Errorf("build %s: %w", r.Name(), err)
	}
	if err := syncFile(tarball); err != nil {
		return "", fmt.Errorf("build %s: %w", r.Name(), err)
	}
	if err := os.Rename(tarball, final); err != nil {
		return "", fmt.Errorf("build %s: %w", r.Name(), err)
	}
	c.logf("debfixture: cached %s", final)
	return final, nil
}

// Debs returns the path of a cached .deb for each package named, in
// order, fetching the missing ones with apt-get download (from the
// host's apt sources: run apt-get update first on a fresh machine).
func (c *Cache) Debs(ctx context.Context, pkgs ...string) ([]string, error) {
	dir := filepath.Join(c.dir, "debs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("deb cache: %w", err)
	}
	var out []string
	for _, pkg := range pkgs {
		p, err := c.deb(ctx, dir, pkg)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// deb finds or fetches one package's .deb in dir.
func (c *Cache) deb(ctx context.Context, dir, pkg string) (string, error) {
	if p, err := findDeb(dir, pkg); err != nil || p != "" {
		return p, err
	}
	tmp, err := os.MkdirTemp(c.dir, tempPrefix)
	if err != nil {
		return "", fmt.Errorf("fetch %s: %w", pkg, err)
	}
	defer os.RemoveAll(tmp)
	c.logf("debfixture: apt-get download %s", pkg)
	// As root, apt would drop to its _apt user, which cannot write to a
	// temporary directory of root's; it is a local download, so stay root.
	if err := c.run(ctx, tmp, "apt-get", "-q", "-o", "APT::Sandbox::User=root", "download", pkg); err != nil {
		return "", fmt.Errorf("fetch %s (is the apt package list current? apt-get update): %w", pkg, err)
	}
	got, err := findDeb(tmp, pkg)
	if err != nil {
		return "", err
	}
	if got == "" {
		return "", fmt.Errorf("fetch %s: apt-get download left no %s_*.deb", pkg, pkg)
	}
	if err := syncFile(got); err != nil {
		return "", fmt.Errorf("fetch %s: %w", pkg, err)
	}
	final := filepath.Join(dir, filepath.Base(got))
	if err := os.Rename(got, final); err != nil {
		return "", fmt.Errorf("fetch %s: %w", pkg, err)
	}
	return final, nil
}

// findDeb returns the one PKG_*.deb in dir, or "" when there is none.
func findDeb(dir, pkg string) (string, error) {
	m, err := filepath.Glob(filepath.Join(dir, pkg+"_*.deb"))
	if err != nil {
		return "", err
	}
	switch len(m) {
	case 0:
		return "", nil
	case 1:
		return m[0], nil
	}
	return "", fmt.Errorf("deb cache %s: %d versions of %s (%s); remove all but one", dir, len(m), pkg, strings.Join(m, ", "))
}

// run runs a command in dir ("" for the current one), with its output
// in the error when it fails. The command runs in a process group of its
// own, which is killed when ctx ends, and it inherits the cache's lock:
// should this process die first, the lock stays held until the command
// and its children are gone, so no other process removes a build
// directory they still write to.
func (c *Cache) run(ctx context.Context, dir, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.ExtraFiles = []*os.File{c.lock}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		tail := out.String()
		if len(tail) > 4000 {
			tail = "..." + tail[len(tail)-4000:]
		}
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, tail)
	}
	return nil
}

// syncFile makes a file's data durable before it is renamed into place.
func syncFile(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	return errors.Join(f.Sync(), f.Close())
}
