package integration

// A pair of union mounts over identical layers, side by side: kernel
// overlayfs (the oracle) and the mount program under test. Scenario tests
// (redirect_test.go, metacopy_test.go, hardlink_test.go) run each step on
// both, assert its errno on both, and compare the merged trees, after a
// remount too, and with the program's upper mounted under the kernel.
//
// Check the scenarios themselves against the oracle alone:
//
//	go test ./integration -run 'Redirect|Metacopy|Hardlink|UpperMounts' -ovpair.kernel-only -v

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var ovKernelOnly = flag.Bool("ovpair.kernel-only", false, "run the kernel side of the side-by-side scenario tests only, to check the scenarios against the oracle")

// Kernel options matching strata's defaults (issue 11 §2 and §4), and
// with the inode index for the hard-link tests (§3).
const (
	kernelRedirectOpts = "redirect_dir=on,metacopy=on,index=off"
	kernelIndexOpts    = "redirect_dir=on,metacopy=on,index=on"
)

// ovSide is one stack of a pair: lower layers (top first), upper, work dir
// and mountpoint.
type ovSide struct {
	name    string // "kernel" or "strata"
	kernel  bool
	lowers  []string
	upper   string
	work    string
	mnt     string
	opts    string // extra mount options
	mounted bool
}

func (s *ovSide) options() string {
	o := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(s.lowers, ":"), s.upper, s.work)
	if s.opts != "" {
		o += "," + s.opts
	}
	return o
}

// path is p below the mountpoint.
func (s *ovSide) path(p string) string { return filepath.Join(s.mnt, p) }

// mount mounts the side; the caller's t.Cleanup of the pair unmounts.
func (s *ovSide) mount(t testing.TB) {
	t.Helper()
	if s.mounted {
		t.Fatalf("%s: already mounted", s.name)
	}
	if s.kernel {
		kernelOverlayMount(t, s.mnt, s.options())
		s.mounted = true
		return
	}
	if err := strataMount(s.mnt, s.options()); err != nil {
		t.Fatalf("%s: %v", s.name, err)
	}
	s.mounted = true
}

// unmount unmounts the side if mounted.
func (s *ovSide) unmount(t testing.TB) {
	t.Helper()
	if s.mounted {
		unmountT(t, s.mnt)
		s.mounted = false
	}
}

// kernelOverlayMount mounts kernel overlayfs on mnt with opts; it skips the
// test when the kernel has no overlayfs.
func kernelOverlayMount(t testing.TB, mnt, opts string) {
	t.Helper()
	err := unix.Mount("overlay", mnt, "overlay", 0, opts)
	if errors.Is(err, unix.ENODEV) {
		t.Skip("kernel has no overlayfs")
	}
	if err != nil {
		t.Fatalf("mount -t overlay -o %s %s: %v (see dmesg)", opts, mnt, err)
	}
}

// strataMount runs the mount program in its background form.
func strataMount(mnt, opts string) error {
	out, err := os.CreateTemp("", "strata-ovpair-mount-")
	if err != nil {
		return err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, strataFuse, "-o", opts, mnt)
	cmd.Stdout, cmd.Stderr = out, out
	err = cmd.Run()
	msg, _ := os.ReadFile(out.Name())
	if err != nil {
		return fmt.Errorf("%s -o %s %s: %v\n%s", filepath.Base(strataFuse), opts, mnt, err, msg)
	}
	if _, ok := mountEntry(mnt); !ok {
		return fmt.Errorf("%s -o %s %s exited 0 but nothing is mounted there\n%s", filepath.Base(strataFuse), opts, mnt, msg)
	}
	return nil
}

// ovPair is a kernel side and a strata side over equal layers.
type ovPair struct {
	t     *testing.T
	k, s  *ovSide
	sides []*ovSide // the sides in use: both, or the kernel's alone with -ovpair.kernel-only
	// noInodeCheck leaves out the per-mount inode check of sameTree, for
	// layers where one lower dir shows at two names (a lower redirect).
	noInodeCheck bool
}

// ovLayers builds the lower layers of one side: dirs are the layer dirs,
// bottom first, already created. It runs once per side, so it must be
// deterministic.
type ovLayers func(t testing.TB, dirs []string)

// newOvPair lays out two stacks with nlower lower layers, filled by build,
// and mounts them: kernel overlayfs with kopts, strata with sopts.
func newOvPair(t *testing.T, nlower int, kopts, sopts string, build ovLayers) *ovPair {
	t.Helper()
	needFUSE(t)
	base := tempBase(t)
	if strings.ContainsAny(base, ",:") {
		t.Fatalf("temp dir %q has a comma or colon, which mount options cannot carry", base)
	}
	p := &ovPair{t: t}
	for _, name := range []string{"kernel", "strata"} {
		s := &ovSide{name: name, kernel: name == "kernel", opts: sopts}
		if s.kernel {
			s.opts = kopts
		}
		dir := filepath.Join(base, name)
		var bottomFirst []string
		for i := 0; i < nlower; i++ {
			l := filepath.Join(dir, fmt.Sprintf("l%d", i))
			mkdirs(t, l)
			bottomFirst = append(bottomFirst, l)
			s.lowers = append([]string{l}, s.lowers...)
		}
		s.upper, s.work, s.mnt = filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "mnt")
		mkdirs(t, s.upper, s.work, s.mnt)
		build(t, bottomFirst)
		if s.kernel {
			p.k = s
		} else {
			p.s = s
		}
	}
	p.sides = []*ovSide{p.k, p.s}
	if *ovKernelOnly {
		p.sides = p.sides[:1]
	}
	t.Cleanup(func() {
		for _, s := range p.sides {
			s.unmount(t)
		}
	})
	for _, s := range p.sides {
		s.mount(t)
	}
	return p
}

func mkdirs(t testing.TB, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// errnoName names an errno for messages ("ok" for none).
func errnoName(e unix.Errno) string {
	if e == 0 {
		return "ok"
	}
	if n := unix.ErrnoName(e); n != "" {
		return n
	}
	return fmt.Sprintf("errno %d", int(e))
}

// do runs op on each side's mountpoint and asserts its errno is want on
// each. A wrong errno on the kernel means the scenario is wrong; on strata,
// strata is. It stops the test at the first mismatch: later steps depend on
// this one.
func (p *ovPair) do(desc string, want unix.Errno, op func(root string) error) {
	p.t.Helper()
	for _, s := range p.sides {
		err := op(s.mnt)
		if got := dtErrnoOf(err); got != want {
			what := ""
			if s.kernel {
				what = " (the oracle disagrees: the scenario is wrong)"
			}
			detail := ""
			if err != nil && err.Error() != got.Error() {
				detail = " (" + err.Error() + ")"
			}
			p.t.Fatalf("%s: %s: got %s%s, want %s%s", s.name, desc, errnoName(got), detail, errnoName(want), what)
		}
	}
}

// Steps, named after the syscalls.

// rename renames from to to; a successful rename keeps the inode number
// (unionmount-testsuite checks it: a copy-up must not change st_ino).
func (p *ovPair) rename(from, to string, want unix.Errno) {
	p.t.Helper()
	p.do(fmt.Sprintf("rename(%q, %q)", from, to), want, func(r string) error {
		var before, after unix.Stat_t
		beforeErr := unix.Lstat(filepath.Join(r, from), &before)
		if err := unix.Rename(filepath.Join(r, from), filepath.Join(r, to)); err != nil {
			return err
		}
		if beforeErr == nil && unix.Lstat(filepath.Join(r, to), &after) == nil && after.Ino != before.Ino {
			return fmt.Errorf("st_ino %d became %d: %w", before.Ino, after.Ino, unix.ESTALE)
		}
		return nil
	})
}

func (p *ovPair) mkdir(d string, want unix.Errno) {
	p.t.Helper()
	p.do(fmt.Sprintf("mkdir(%q)", d), want, func(r string) error { return unix.Mkdir(filepath.Join(r, d), 0o755) })
}

func (p *ovPair) rmdir(d string, want unix.Errno) {
	p.t.Helper()
	p.do(fmt.Sprintf("rmdir(%q)", d), want, func(r string) error { return unix.Rmdir(filepath.Join(r, d)) })
}

func (p *ovPair) unlink(f string, want unix.Errno) {
	p.t.Helper()
	p.do(fmt.Sprintf("unlink(%q)", f), want, func(r string) error { return unix.Unlink(filepath.Join(r, f)) })
}

func (p *ovPair) link(from, to string, want unix.Errno) {
	p.t.Helper()
	p.do(fmt.Sprintf("link(%q, %q)", from, to), want, func(r string) error {
		return unix.Link(filepath.Join(r, from), filepath.Join(r, to))
	})
}

func (p *ovPair) rmtree(d string) {
	p.t.Helper()
	p.do(fmt.Sprintf("rm -r %q", d), 0, func(r string) error { return os.RemoveAll(filepath.Join(r, d)) })
}

// openDir opens d as a directory and lists it.
func (p *ovPair) openDir(d string, want unix.Errno) {
	p.t.Helper()
	p.do(fmt.Sprintf("opendir(%q)", d), want, func(r string) error {
		_, err := dtReaddirnames(filepath.Join(r, d))
		return err
	})
}

// readFile opens f read-only and, when it opens, checks its content.
func (p *ovPair) readFile(f string, want unix.Errno, content string) {
	p.t.Helper()
	p.do(fmt.Sprintf("read(%q)", f), want, func(r string) error {
		b, err := dtReadAll(filepath.Join(r, f))
		if err == nil && string(b) != content {
			return fmt.Errorf("read %q, want %q: %w", b, content, unix.EBADMSG)
		}
		return err
	})
}

// writeFile creates or truncates f and writes content.
func (p *ovPair) writeFile(f, content string, want unix.Errno) {
	p.t.Helper()
	p.do(fmt.Sprintf("write(%q, %q)", f, content), want, func(r string) error {
		return os.WriteFile(filepath.Join(r, f), []byte(content), 0o644)
	})
}

// appendFile opens f O_APPEND (no O_CREAT) and writes content.
func (p *ovPair) appendFile(f, content string, want unix.Errno) {
	p.t.Helper()
	p.do(fmt.Sprintf("append(%q, %q)", f, content), want, func(r string) error {
		fh, err := os.OpenFile(filepath.Join(r, f), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		_, err = fh.WriteString(content)
		return errors.Join(err, fh.Close())
	})
}

// sameTree compares the merged trees of the two sides and checks each
// side's inodes (hard-link groups, nlink).
func (p *ovPair) sameTree(when string) {
	p.t.Helper()
	trees := map[string]dtTree{}
	for _, s := range p.sides {
		tr, err := dtSnapshotMerged(s.mnt)
		if err != nil {
			p.t.Fatalf("%s: walk %s: %v", s.name, when, err)
		}
		for _, bad := range tr.checkInodes() {
			if p.noInodeCheck {
				break
			}
			p.t.Errorf("%s inodes %s: %s", s.name, when, bad)
		}
		trees[s.name] = tr
	}
	if len(p.sides) < 2 {
		return
	}
	if diffs := dtDiffTrees(trees["kernel"], trees["strata"], "kernel", "strata", nil); len(diffs) > 0 {
		p.t.Fatalf("merged trees differ %s:\n  %s\nkernel:\n%sstrata:\n%s", when, strings.Join(diffs, "\n  "), trees["kernel"].dump(), trees["strata"].dump())
	}
}

// remount unmounts both sides and mounts them again over the same layers,
// then compares the trees: nothing a scenario did may depend on the
// daemon's memory.
//
// Inode numbers that the kernel keeps across the remount must stay on
// strata too (unionmount-testsuite checks st_ino after mount cycles).
func (p *ovPair) remount() {
	p.t.Helper()
	before := map[string]dtTree{}
	for _, s := range p.sides {
		tr, err := dtSnapshotMerged(s.mnt)
		if err != nil {
			p.t.Fatalf("%s: walk before remount: %v", s.name, err)
		}
		before[s.name] = tr
		s.unmount(p.t)
		s.mount(p.t)
	}
	after := map[string]dtTree{}
	for _, s := range p.sides {
		tr, err := dtSnapshotMerged(s.mnt)
		if err != nil {
			p.t.Fatalf("%s: walk after remount: %v", s.name, err)
		}
		after[s.name] = tr
		if diffs := dtDiffTrees(before[s.name], tr, "before", "after", nil); len(diffs) > 0 {
			p.t.Fatalf("%s: tree changed across a remount:\n  %s", s.name, strings.Join(diffs, "\n  "))
		}
	}
	if len(p.sides) > 1 {
		kb, ka, sb, sa := before["kernel"], after["kernel"], before["strata"], after["strata"]
		for _, path := range dtSortedKeys(kb) {
			if ka[path] == nil || kb[path].key[1] != ka[path].key[1] || sb[path] == nil || sa[path] == nil {
				continue
			}
			if sb[path].key[1] != sa[path].key[1] {
				p.t.Errorf("strata: %s: st_ino %d became %d across a remount; the kernel keeps it", path, sb[path].key[1], sa[path].key[1])
			}
		}
	}
	p.sameTree("after remount")
}

// strataUnderKernel unmounts strata and mounts its layers and upper under
// kernel overlayfs with opts: the kernel must show the tree strata showed.
// Strata is mounted again afterwards.
func (p *ovPair) strataUnderKernel(opts string) {
	p.t.Helper()
	if len(p.sides) < 2 {
		return
	}
	want, err := dtSnapshotMerged(p.s.mnt)
	if err != nil {
		p.t.Fatalf("strata: walk: %v", err)
	}
	p.s.unmount(p.t)
	x := &ovSide{name: "kernel over strata's upper", kernel: true, lowers: p.s.lowers, upper: p.s.upper, work: p.s.work, mnt: p.s.mnt, opts: opts}
	x.mount(p.t)
	got, err := dtSnapshotMerged(x.mnt)
	x.unmount(p.t)
	if err != nil {
		p.t.Fatalf("%s: walk: %v", x.name, err)
	}
	if diffs := dtDiffTrees(want, got, "strata", "kernel", nil); len(diffs) > 0 {
		p.t.Errorf("kernel overlayfs (-o %s) shows another tree than strata did over the same upper:\n  %s\nstrata:\n%skernel:\n%s", opts, strings.Join(diffs, "\n  "), want.dump(), got.dump())
	}
	p.s.mount(p.t)
}

// kernelMutate mounts kernel overlayfs over lowers (top first) with upper
// as its upper and runs f on the mount; it makes a layer the way a kernel
// overlay upper is made (redirects, whiteouts, metacopy), to be used as a
// lower afterwards.
func kernelMutate(t testing.TB, lowers []string, upper, opts string, f func(mnt string) error) {
	t.Helper()
	tmp, err := os.MkdirTemp(filepath.Dir(upper), "mutate-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	work, mnt := filepath.Join(tmp, "work"), filepath.Join(tmp, "mnt")
	mkdirs(t, work, mnt)
	kernelOverlayMount(t, mnt, fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s,%s", strings.Join(lowers, ":"), upper, work, opts))
	err = f(mnt)
	unmountT(t, mnt)
	if err != nil {
		t.Fatalf("make a layer through kernel overlayfs: %v", err)
	}
}
