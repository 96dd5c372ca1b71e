package integration

// TestDifferential runs the same seeded random operation sequence on kernel
// overlayfs (the reference) and on the mount program under test, both over
// identical generated lower layers, and compares every op's errno, every
// read's result, the merged trees (every 25 ops and at the end) and, after
// unmounting, the upper dirs. A seed stops at its first divergence and
// reports the op, both results, the fixture, the op log and both trees.
//
// Run more:   go test ./integration -run Differential -difftest.seeds=50 -difftest.ops=1000
// Reproduce:  go test ./integration -run Differential -difftest.seed=N -difftest.seeds=1 -v
// Peer check: STRATA_FUSE=$(command -v fuse-overlayfs) go test ./integration -run Differential -v
// Look past a known divergence: -difftest.without=hardlink,link (fixture and
// op kinds to leave out). Keep the layers and uppers for inspection:
// -difftest.keep.
//
// The kernel is mounted with redirect_dir=on,index=on,metacopy=on, the
// features strata has by default (directory renames, hard links joined
// across copy-up, metadata-only copy-up), pinned so the reference does not
// depend on the kernel's build options; every directory rename must then
// do what the kernel does. In the uppers, a file carrying the metacopy
// xattr is compared by the data the merged tree showed for it, not by its
// (sparse) content. For a program without redirects (fuse-overlayfs), give
// -difftest.kernel-opts=redirect_dir=off,index=off,metacopy=off: the
// allowed differences 1-5 below then apply. An op that takes longer than
// dtOpTimeout on the program's mount fails the seed, and its FUSE
// connection is aborted.
//
// Allowed differences; anything else fails the seed:
//
//	#  situation                                   kernel    program    what the test does
//	-  ------------------------------------------  --------  ---------  ------------------------------------------
//	1  rename/renameat2 of a dir that is not       EXDEV     EXDEV      nothing
//	   purely upper (merged or lower), or an
//	   exchange with one
//	2  same                                        EXDEV     success    replays the rename on the kernel mount
//	                                                                    (mkdir, rename of each non-dir, link for
//	                                                                    hard-link aliases, copy of mode, owner and
//	                                                                    user xattrs, rmdir) and marks both names
//	                                                                    "emulated"
//	3  same, target is a non-empty dir (the        EXDEV     ENOTEMPTY  nothing
//	   kernel checks EXDEV first)
//	4  dir rename where src or dst is at, under    success   EXDEV      replays the rename on the program's mount
//	   or above an emulated name                                        the same way
//	5  upper entries at or under an emulated name  -         -          not compared: a replayed rename is a copy
//	                                                                    in the kernel's upper and may be a
//	                                                                    redirect in the program's
//	6  whiteout and opaque dialects in the upper   -         -          normalised (dtSnapshotUpper); whiteouts
//	                                                                    with nothing beneath and opaque marks on
//	                                                                    dirs with no lower dir beneath are dropped
//	                                                                    (see dropNoops)
//	7  xattrs trusted.overlay.*, user.overlay.*,   -         -          never compared
//	   user.fuseoverlayfs.*
//	8  mtimes                                      -         -          compared for regular files and symlinks
//	                                                                    only when one side shows an explicit time
//	                                                                    (fixture or utimes op); dir mtimes never
//	9  st_ino/st_dev, dir size and nlink, atime,   -         -          not compared across mounts; inode identity
//	   ctime                                                            is compared as hard-link groups, and each
//	                                                                    mount is checked for consistent inodes
//	10 mtime of a file a change of metadata left   now       kept       accepted where the kernel's inode had a
//	   a metacopy file, after an open for writing                      change of metadata and nothing else
//	   copied its data up (nothing written)                            differs (dtDiffer.metacopyMtime)
//	11 uppers: names of a lower hard link          index     upper      prog's extra names dropped from its upper
//	   copied up through another name                                  (dtTree.dropLinkedAliases)
//	12 uppers: opaque mark of a new directory       opaque    not        cleared on both sides beneath a directory
//	   beneath a redirected directory                                  a redirect moved; one naming the directory's
//	                                                                    own place (the kernel leaves it after a
//	                                                                    rename that fails with ENOTEMPTY) moves
//	                                                                    nothing (dropOpaqueBeneathRedirects)

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var (
	diffSeeds     = flag.Int("difftest.seeds", 24, "number of seeds TestDifferential runs")
	diffSeed      = flag.Int64("difftest.seed", 1, "first seed TestDifferential runs")
	diffOps       = flag.Int("difftest.ops", 300, "operations per seed in TestDifferential")
	diffNot       = flag.String("difftest.without", "", "comma-separated fixture kinds (dir file symlink hardlink fifo whiteout opaque) and op kinds (create rename link ...) to leave out, to look past a known divergence")
	diffKopts     = flag.String("difftest.kernel-opts", "redirect_dir=on,index=on,metacopy=on", "extra mount options of the reference kernel overlayfs (redirect_dir=off: directory renames may differ as the allowed differences say)")
	diffShrink    = flag.Bool("difftest.shrink", false, "on a divergence, look for a shorter op sequence that still diverges and report it")
	diffShrinkFor = flag.Duration("difftest.shrink-time", 2*time.Minute, "time budget of -difftest.shrink per failing seed")
	diffKeep      = flag.Bool("difftest.keep", false, "keep TestDifferential's layers, uppers and work dirs")
	diffProgOpts  = flag.String("difftest.prog-opts", "", "extra -o options of the program under test, e.g. passthrough=all")
)

// dtMode is how a seed is run: the reference kernel's options, and whether
// directory renames must match the kernel exactly (no allowed differences
// 1-5).
type dtMode struct {
	test   string // the test function, for the reproduce line
	kopts  string
	strict bool
}

// dtDefaultMode is TestDifferential's: kernel without redirects.
func dtDefaultMode() dtMode {
	return dtMode{test: "TestDifferential$", kopts: *diffKopts, strict: !strings.Contains(*diffKopts, "redirect_dir=off")}
}

// dtWithout reports whether -difftest.without names kind.
func dtWithout(kind string) bool {
	return slices.Contains(strings.Split(*diffNot, ","), kind)
}

const (
	dtCheckEvery = 25               // ops between two comparisons of the merged trees
	dtOpTimeout  = 20 * time.Second // an op on a mount taking longer is a hang
)

func TestDifferential(t *testing.T) {
	needFUSE(t)
	if _, err := os.Stat(strataFuse); err != nil {
		t.Fatalf("mount program under test: %v", err)
	}
	for i := 0; i < *diffSeeds; i++ {
		seed := *diffSeed + int64(i)
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			dtRunDifferential(t, dtDefaultMode(), seed, *diffOps)
		})
	}
}

// TestDifferentialPassthroughAll runs a few seeds with strata's
// passthrough=all, whose open files take another path through the kernel.
// Skipped for another mount program, which has no such option.
func TestDifferentialPassthroughAll(t *testing.T) {
	needFUSE(t)
	if os.Getenv("STRATA_FUSE") != "" || *diffProgOpts != "" {
		t.Skip("runs strata-fuse's own passthrough=all; not for another program or explicit options")
	}
	*diffProgOpts = "passthrough=all"
	defer func() { *diffProgOpts = "" }()
	for i := 0; i < 4; i++ {
		seed := *diffSeed + 1000 + int64(i)
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			dtRunDifferential(t, dtDefaultMode(), seed, *diffOps)
		})
	}
}

// ---------------------------------------------------------------------------
// Mounts.

// side is one of the two stacks: lower copies, upper, work dir, mountpoint.
type dtSide struct {
	name    string // "kernel" or "prog"
	layers  []string
	upper   string
	work    string
	mnt     string
	mounted bool
	kopts   string // extra mount options of a kernel side
	dev     uint64 // st_dev of the mounted root; its minor is the FUSE connection
	fuse    bool
	hung    bool
}

func dtNewSide(t *testing.T, base, name string, fx *dtFixture) *dtSide {
	t.Helper()
	s := &dtSide{name: name}
	dir := filepath.Join(base, name)
	for i := range fx.Layers {
		l := filepath.Join(dir, fmt.Sprintf("l%d", i))
		if err := os.MkdirAll(l, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := fx.materialize(i, l); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		s.layers = append(s.layers, l)
	}
	s.upper, s.work, s.mnt = filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "mnt")
	for _, d := range []string{s.upper, s.work, s.mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// options returns the overlay mount options; lowerdir lists the top first.
func (s *dtSide) options() string {
	var lowers []string
	for i := len(s.layers) - 1; i >= 0; i-- {
		lowers = append(lowers, s.layers[i])
	}
	return fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(lowers, ":"), s.upper, s.work)
}

func (s *dtSide) mountKernel(t *testing.T) {
	t.Helper()
	opts := s.options()
	if s.kopts != "" {
		opts += "," + s.kopts
	}
	err := unix.Mount("overlay", s.mnt, "overlay", 0, opts)
	if err == unix.ENODEV {
		t.Skip("kernel has no overlayfs")
	}
	if err != nil {
		t.Fatalf("mount -t overlay -o %s %s: %v", opts, s.mnt, err)
	}
	s.mounted = true
	t.Cleanup(func() { s.unmount(t) })
	s.statRoot(t)
}

func (s *dtSide) mountProg(t *testing.T) {
	t.Helper()
	// Output goes to a file, not a pipe: a daemon that keeps the pipe open
	// must not make Run wait for it.
	out, err := os.CreateTemp("", "strata-difftest-mount-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(out.Name())
	defer out.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	opts := s.options()
	if *diffProgOpts != "" {
		opts += "," + *diffProgOpts
	}
	cmd := exec.CommandContext(ctx, strataFuse, "-o", opts, s.mnt)
	cmd.Stdout, cmd.Stderr = out, out
	err = cmd.Run()
	msg, _ := os.ReadFile(out.Name())
	if err != nil {
		t.Fatalf("%s -o %s %s: %v\n%s", strataFuse, s.options(), s.mnt, err, msg)
	}
	if !dtIsMountpoint(s.mnt) {
		t.Fatalf("%s -o %s %s returned but nothing is mounted there\n%s", strataFuse, s.options(), s.mnt, msg)
	}
	s.mounted, s.fuse = true, true
	t.Cleanup(func() { s.unmount(t) })
	s.statRoot(t)
}

func (s *dtSide) statRoot(t *testing.T) {
	t.Helper()
	var st unix.Stat_t
	if !s.do(func() { _ = unix.Stat(s.mnt, &st) }) {
		t.Fatalf("%s: stat of the mounted root hung", s.name)
	}
	s.dev = st.Dev
}

// dtLowerView returns the merged lower layers of s, path -> type, read from a
// read-only kernel overlay of the lowers alone.
func dtLowerView(t *testing.T, base string, s *dtSide) map[string]string {
	t.Helper()
	mnt := filepath.Join(base, "lowerview")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := strings.Split(s.options(), ",")[0]
	if err := unix.Mount("overlay", mnt, "overlay", unix.MS_RDONLY, opts); err != nil {
		t.Fatalf("mount -t overlay -o ro,%s %s: %v", opts, mnt, err)
	}
	lv := &dtSide{name: "lowerview", mnt: mnt, mounted: true}
	defer lv.unmount(t)
	m, err := dtListTypes(mnt)
	if err != nil {
		t.Fatalf("walk lowers-only overlay: %v", err)
	}
	return m
}

func dtIsMountpoint(p string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == p {
			return true
		}
	}
	return false
}

// unmount unmounts the side, lazily if it stays busy. It is safe to call
// twice.
func (s *dtSide) unmount(t testing.TB) {
	if !s.mounted {
		return
	}
	var err error
	for i := 0; i < 20; i++ {
		if err = unix.Unmount(s.mnt, 0); err != unix.EBUSY {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil && err != unix.EINVAL {
		t.Logf("umount %s: %v; detaching", s.mnt, err)
		if err := unix.Unmount(s.mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("umount -l %s: %v", s.mnt, err)
		}
	}
	s.mounted = false
}

// do runs f, which uses the mount; if f hangs, the FUSE connection is
// aborted and do returns false. After a hang every later do returns false.
func (s *dtSide) do(f func()) bool {
	if s.hung {
		return false
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
		return true
	case <-time.After(dtOpTimeout):
	}
	s.hung = true
	s.abort()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	return false
}

// abort aborts the side's FUSE connection through fusectl, mounting fusectl
// for the moment if needed.
func (s *dtSide) abort() {
	if !s.fuse {
		return
	}
	const ctl = "/sys/fs/fuse/connections"
	conn := filepath.Join(ctl, strconv.FormatUint(uint64(unix.Minor(s.dev)), 10), "abort")
	if _, err := os.Stat(conn); err != nil {
		if unix.Mount("fusectl", ctl, "fusectl", 0, "") == nil {
			defer unix.Unmount(ctl, 0)
		}
	}
	_ = os.WriteFile(conn, []byte("1"), 0)
}

// ---------------------------------------------------------------------------
// Operations as data.

type dtOp struct {
	Kind   string
	Path   string
	Path2  string // rename/link target; symlink: the link's path (Path is its target)
	Flags  int
	Mode   uint32
	Off    int64
	Data   []byte
	UID    int
	GID    int
	Times  [2]unix.Timespec
	XName  string
	XValue string
	Check  bool // the merged trees were compared after this op
}

func (o *dtOp) String() string {
	switch o.Kind {
	case "create":
		return fmt.Sprintf("create(%q, O_CREAT%s, %04o, %q)", o.Path, dtOpenFlagNames(o.Flags), o.Mode, o.Data)
	case "write":
		return fmt.Sprintf("pwrite(open(%q, O_WRONLY%s), %q, %d)", o.Path, dtOpenFlagNames(o.Flags), o.Data, o.Off)
	case "truncate":
		return fmt.Sprintf("truncate(%q, %d)", o.Path, o.Off)
	case "rename":
		return fmt.Sprintf("renameat2(%q, %q, %s)", o.Path, o.Path2, dtRenameFlagNames(o.Flags))
	case "link", "symlink":
		return fmt.Sprintf("%s(%q, %q)", o.Kind, o.Path, o.Path2)
	case "mkdir", "mkfifo", "chmod":
		return fmt.Sprintf("%s(%q, %04o)", o.Kind, o.Path, o.Mode)
	case "chown":
		name := "lchown"
		if o.Flags == 1 {
			name = "chown"
		}
		return fmt.Sprintf("%s(%q, %d, %d)", name, o.Path, o.UID, o.GID)
	case "utimes":
		nf := ""
		if o.Flags != 0 {
			nf = ", AT_SYMLINK_NOFOLLOW"
		}
		return fmt.Sprintf("utimensat(%q, [%s, %s]%s)", o.Path, dtTsString(o.Times[0]), dtTsString(o.Times[1]), nf)
	case "setxattr":
		return fmt.Sprintf("lsetxattr(%q, %q, %q, %s)", o.Path, o.XName, o.XValue, []string{"0", "XATTR_CREATE", "XATTR_REPLACE"}[o.Flags])
	case "removexattr":
		return fmt.Sprintf("lremovexattr(%q, %q)", o.Path, o.XName)
	case "execnew":
		what := "script"
		if o.Flags == 1 {
			what = "a copy of /bin/true"
		}
		return fmt.Sprintf("execnew(%q, %s)", o.Path, what)
	}
	return fmt.Sprintf("%s(%q)", o.Kind, o.Path)
}

func dtOpenFlagNames(f int) string {
	var s string
	for _, x := range []struct {
		f    int
		name string
	}{{unix.O_EXCL, "O_EXCL"}, {unix.O_TRUNC, "O_TRUNC"}, {unix.O_APPEND, "O_APPEND"}} {
		if f&x.f != 0 {
			s += "|" + x.name
		}
	}
	return s
}

func dtRenameFlagNames(f int) string {
	switch f {
	case unix.RENAME_NOREPLACE:
		return "RENAME_NOREPLACE"
	case unix.RENAME_EXCHANGE:
		return "RENAME_EXCHANGE"
	}
	return "0"
}

func dtTsString(ts unix.Timespec) string {
	switch ts.Nsec {
	case unix.UTIME_OMIT:
		return "UTIME_OMIT"
	case unix.UTIME_NOW:
		return "UTIME_NOW"
	}
	return fmt.Sprintf("%d.%09d", ts.Sec, ts.Nsec)
}

// result is what an op returned: its errno and, for reads, what it read.
type dtResult struct {
	Err unix.Errno
	Out string
}

func (r dtResult) String() string {
	s := "ok"
	if r.Err != 0 {
		s = unix.ErrnoName(r.Err)
		if s == "" {
			s = fmt.Sprintf("errno %d", int(r.Err))
		}
	}
	if r.Out != "" {
		s += " " + r.Out
	}
	return s
}

// dtOpSpec is one kind of op: its weight in the random mix, whether it changes
// the tree, how to draw one, and how to run it on a mount.
type dtOpSpec struct {
	kind    string
	weight  int
	mutates bool
	gen     func(g *dtOpGen) dtOp
	run     func(root string, o *dtOp) dtResult
}

var dtOpSpecs = []dtOpSpec{
	{"create", 10, true, dtGenCreate, dtRunCreate},
	{"write", 8, true, dtGenWrite, dtRunWrite},
	{"truncate", 4, true, dtGenTruncate, dtRunTruncate},
	{"rename", 12, true, dtGenRename, dtRunRename},
	{"unlink", 6, true, dtGenUnlink, dtRunUnlink},
	{"mkdir", 6, true, dtGenMkdir, dtRunMkdir},
	{"rmdir", 5, true, dtGenRmdir, dtRunRmdir},
	{"link", 4, true, dtGenLink, dtRunLink},
	{"symlink", 4, true, dtGenSymlink, dtRunSymlink},
	{"chmod", 4, true, dtGenChmod, dtRunChmod},
	{"chown", 3, true, dtGenChown, dtRunChown},
	{"utimes", 4, true, dtGenUtimes, dtRunUtimes},
	{"setxattr", 5, true, dtGenSetxattr, dtRunSetxattr},
	{"removexattr", 3, true, dtGenRemovexattr, dtRunRemovexattr},
	{"mkfifo", 2, true, dtGenMkfifo, dtRunMkfifo},
	{"read", 6, false, dtGenRead, dtRunRead},
	{"readdir", 5, false, dtGenReaddir, dtRunReaddir},
	{"lstat", 5, false, dtGenLstat, dtRunLstat},
	{"stat", 2, false, dtGenLstat, dtRunStat},
	{"readlink", 2, false, dtGenReadlink, dtRunReadlink},
	{"listxattr", 3, false, dtGenLstat, dtRunListxattr},
	{"exec", 3, false, dtGenExec, dtRunExec},
	{"execnew", 3, true, dtGenExecNew, dtRunExecNew},
}

var (
	dtOpFileModes = []uint32{0o644, 0o600, 0o755, 0o444, 0o640, 0o000, 0o4755, 0o2755, 0o1777}
	dtOpDirModes  = []uint32{0o755, 0o700, 0o775, 0o555, 0o1777}
	dtOpOwners    = []int{0, 1000, 1001, -1}
	dtSymTargets  = []string{"a", "b", "c", "x", "zz", "a/b", "d/e"}
	dtCreateFlags = []int{0, unix.O_EXCL, unix.O_TRUNC, unix.O_APPEND, unix.O_EXCL | unix.O_TRUNC, unix.O_TRUNC | unix.O_APPEND}
)

// dtOpGen draws ops. It knows the live tree as the kernel mount shows it and a
// pool of names (the fixture's, including whited-out ones, and new ones).
type dtOpGen struct {
	rng   *rand.Rand
	pool  []string
	live  []string          // paths, sorted, without "."
	kinds map[string]string // path -> type; "." included
}

func (g *dtOpGen) refresh(root string) error {
	g.live, g.kinds = nil, map[string]string{}
	var walk func(rel string) error
	walk = func(rel string) error {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(root, rel), &st); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		typ := dtFileType(st.Mode)
		g.kinds[rel] = typ
		if rel != "." {
			g.live = append(g.live, rel)
		}
		if typ != "dir" {
			return nil
		}
		names, err := dtReaddirnames(filepath.Join(root, rel))
		if err != nil {
			return err
		}
		for _, n := range names {
			if err := walk(path.Join(rel, n)); err != nil {
				return err
			}
		}
		return nil
	}
	err := walk(".")
	slices.Sort(g.live)
	return err
}

// pick returns a live path of one of types (any type if none), or now and
// then a fresh path.
func (g *dtOpGen) pick(types ...string) string {
	var c []string
	for _, p := range g.live {
		if len(types) == 0 || slices.Contains(types, g.kinds[p]) {
			c = append(c, p)
		}
	}
	if len(c) == 0 || g.rng.IntN(100) < 15 {
		return g.fresh()
	}
	return c[g.rng.IntN(len(c))]
}

// fresh returns a pool name in a live dir; it may exist.
func (g *dtOpGen) fresh() string {
	dirs := []string{"."}
	for _, p := range g.live {
		if g.kinds[p] == "dir" && strings.Count(p, "/") < 3 {
			dirs = append(dirs, p)
		}
	}
	return path.Join(dirs[g.rng.IntN(len(dirs))], g.pool[g.rng.IntN(len(g.pool))])
}

// emptyDir returns a live dir with no entries, "" if there is none.
func (g *dtOpGen) emptyDir() string {
	var c []string
	for i, p := range g.live {
		if g.kinds[p] == "dir" && (i+1 == len(g.live) || !strings.HasPrefix(g.live[i+1], p+"/")) {
			c = append(c, p)
		}
	}
	if len(c) == 0 {
		return ""
	}
	return c[g.rng.IntN(len(c))]
}

func (g *dtOpGen) freshOr(pct int, types ...string) string {
	if g.rng.IntN(100) < pct {
		return g.fresh()
	}
	return g.pick(types...)
}

func (g *dtOpGen) data(max int) []byte {
	n := g.rng.IntN(max + 1)
	b := make([]byte, n)
	for i := range b {
		b[i] = "abcdefghijklmnopqrstuvwxyz0123456789\n"[g.rng.IntN(37)]
	}
	return b
}

func (g *dtOpGen) explicit() unix.Timespec {
	return unix.Timespec{Sec: dtExplicitBase + int64(g.rng.IntN(dtExplicitSpan)), Nsec: int64(g.rng.IntN(1e9))}
}

func dtGenCreate(g *dtOpGen) dtOp {
	o := dtOp{Kind: "create", Path: g.freshOr(50), Flags: dtCreateFlags[g.rng.IntN(len(dtCreateFlags))], Mode: dtOpFileModes[g.rng.IntN(len(dtOpFileModes))]}
	if g.rng.IntN(3) > 0 {
		o.Data = g.data(40)
	}
	return o
}

func dtGenWrite(g *dtOpGen) dtOp {
	flags := []int{0, 0, unix.O_APPEND, unix.O_TRUNC}
	return dtOp{Kind: "write", Path: g.pick("file"), Flags: flags[g.rng.IntN(len(flags))], Off: int64(g.rng.IntN(100)), Data: g.data(40)}
}

func dtGenTruncate(g *dtOpGen) dtOp {
	return dtOp{Kind: "truncate", Path: g.pick("file"), Off: int64(g.rng.IntN(150))}
}

func dtGenRename(g *dtOpGen) dtOp {
	o := dtOp{Kind: "rename"}
	if g.rng.IntN(100) < 35 {
		o.Path = g.pick("dir")
	} else {
		o.Path = g.pick()
	}
	o.Path2 = g.freshOr(50)
	switch r := g.rng.IntN(10); {
	case r < 2:
		o.Flags = unix.RENAME_NOREPLACE
	case r < 4:
		o.Flags = unix.RENAME_EXCHANGE
	}
	return o
}

func dtGenUnlink(g *dtOpGen) dtOp {
	if g.rng.IntN(5) == 0 {
		return dtOp{Kind: "unlink", Path: g.pick()}
	}
	return dtOp{Kind: "unlink", Path: g.pick("file", "symlink", "fifo")}
}

func dtGenMkdir(g *dtOpGen) dtOp {
	return dtOp{Kind: "mkdir", Path: g.freshOr(70), Mode: dtOpDirModes[g.rng.IntN(len(dtOpDirModes))]}
}

func dtGenRmdir(g *dtOpGen) dtOp {
	if g.rng.IntN(2) == 0 {
		if p := g.emptyDir(); p != "" {
			return dtOp{Kind: "rmdir", Path: p}
		}
	}
	return dtOp{Kind: "rmdir", Path: g.pick("dir")}
}

func dtGenLink(g *dtOpGen) dtOp {
	return dtOp{Kind: "link", Path: g.pick("file", "symlink", "fifo"), Path2: g.freshOr(70)}
}

func dtGenSymlink(g *dtOpGen) dtOp {
	return dtOp{Kind: "symlink", Path: dtSymTargets[g.rng.IntN(len(dtSymTargets))], Path2: g.freshOr(70)}
}

func dtGenChmod(g *dtOpGen) dtOp {
	return dtOp{Kind: "chmod", Path: g.pick(), Mode: dtOpFileModes[g.rng.IntN(len(dtOpFileModes))]}
}

func dtGenChown(g *dtOpGen) dtOp {
	return dtOp{Kind: "chown", Path: g.pick(), UID: dtOpOwners[g.rng.IntN(len(dtOpOwners))], GID: dtOpOwners[g.rng.IntN(len(dtOpOwners))], Flags: g.rng.IntN(2)}
}

func dtGenUtimes(g *dtOpGen) dtOp {
	o := dtOp{Kind: "utimes", Path: g.pick(), Times: [2]unix.Timespec{g.explicit(), g.explicit()}}
	if g.rng.IntN(4) == 0 {
		o.Times[0] = unix.Timespec{Nsec: unix.UTIME_OMIT}
	}
	if g.rng.IntN(6) == 0 {
		o.Times[1] = unix.Timespec{Nsec: unix.UTIME_NOW}
	}
	if g.rng.IntN(2) == 0 {
		o.Flags = unix.AT_SYMLINK_NOFOLLOW
	}
	return o
}

func dtGenSetxattr(g *dtOpGen) dtOp {
	return dtOp{Kind: "setxattr", Path: g.pick(), XName: fmt.Sprintf("user.k%d", g.rng.IntN(4)), XValue: string(g.data(12)), Flags: g.rng.IntN(3)}
}

func dtGenRemovexattr(g *dtOpGen) dtOp {
	return dtOp{Kind: "removexattr", Path: g.pick(), XName: fmt.Sprintf("user.k%d", g.rng.IntN(4))}
}

func dtGenMkfifo(g *dtOpGen) dtOp {
	return dtOp{Kind: "mkfifo", Path: g.freshOr(70), Mode: 0o644}
}

func dtGenRead(g *dtOpGen) dtOp    { return dtOp{Kind: "read", Path: g.pick("file", "symlink")} }
func dtGenReaddir(g *dtOpGen) dtOp { return dtOp{Kind: "readdir", Path: g.pick("dir")} }
func dtGenLstat(g *dtOpGen) dtOp   { return dtOp{Kind: "lstat", Path: g.pick()} }
func dtGenReadlink(g *dtOpGen) dtOp {
	return dtOp{Kind: "readlink", Path: g.pick("symlink")}
}

func dtErrRes(err error) dtResult { return dtResult{Err: dtErrnoOf(err)} }

// dtWriteAndClose writes data to fd (at off unless off < 0) and closes it.
func dtWriteAndClose(fd int, data []byte, off int64) dtResult {
	var r dtResult
	if len(data) > 0 || off >= 0 {
		var n int
		var err error
		if off < 0 {
			n, err = unix.Write(fd, data)
		} else {
			n, err = unix.Pwrite(fd, data, off)
		}
		r = dtResult{Err: dtErrnoOf(err), Out: fmt.Sprintf("wrote %d", n)}
	}
	if err := unix.Close(fd); err != nil && r.Err == 0 {
		r = dtResult{Err: dtErrnoOf(err), Out: r.Out + " (close)"}
	}
	return r
}

func dtRunCreate(root string, o *dtOp) dtResult {
	fd, err := unix.Open(filepath.Join(root, o.Path), unix.O_CREAT|unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|o.Flags, o.Mode)
	if err != nil {
		return dtErrRes(err)
	}
	return dtWriteAndClose(fd, o.Data, -1)
}

func dtRunWrite(root string, o *dtOp) dtResult {
	fd, err := unix.Open(filepath.Join(root, o.Path), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|o.Flags, 0)
	if err != nil {
		return dtErrRes(err)
	}
	return dtWriteAndClose(fd, o.Data, o.Off)
}

func dtRunTruncate(root string, o *dtOp) dtResult {
	return dtErrRes(unix.Truncate(filepath.Join(root, o.Path), o.Off))
}

func dtRunRename(root string, o *dtOp) dtResult {
	return dtErrRes(unix.Renameat2(unix.AT_FDCWD, filepath.Join(root, o.Path), unix.AT_FDCWD, filepath.Join(root, o.Path2), uint(o.Flags)))
}

func dtRunUnlink(root string, o *dtOp) dtResult {
	return dtErrRes(unix.Unlink(filepath.Join(root, o.Path)))
}
func dtRunMkdir(root string, o *dtOp) dtResult {
	return dtErrRes(unix.Mkdir(filepath.Join(root, o.Path), o.Mode))
}
func dtRunRmdir(root string, o *dtOp) dtResult {
	return dtErrRes(unix.Rmdir(filepath.Join(root, o.Path)))
}
func dtRunLink(root string, o *dtOp) dtResult {
	return dtErrRes(unix.Link(filepath.Join(root, o.Path), filepath.Join(root, o.Path2)))
}
func dtRunSymlink(root string, o *dtOp) dtResult {
	return dtErrRes(unix.Symlink(o.Path, filepath.Join(root, o.Path2)))
}
func dtRunChmod(root string, o *dtOp) dtResult {
	return dtErrRes(unix.Chmod(filepath.Join(root, o.Path), o.Mode))
}
func dtRunChown(root string, o *dtOp) dtResult {
	if o.Flags == 1 {
		return dtErrRes(unix.Chown(filepath.Join(root, o.Path), o.UID, o.GID))
	}
	return dtErrRes(unix.Lchown(filepath.Join(root, o.Path), o.UID, o.GID))
}
func dtRunUtimes(root string, o *dtOp) dtResult {
	return dtErrRes(unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(root, o.Path), o.Times[:], o.Flags))
}
func dtRunSetxattr(root string, o *dtOp) dtResult {
	return dtErrRes(unix.Lsetxattr(filepath.Join(root, o.Path), o.XName, []byte(o.XValue), o.Flags))
}
func dtRunRemovexattr(root string, o *dtOp) dtResult {
	return dtErrRes(unix.Lremovexattr(filepath.Join(root, o.Path), o.XName))
}

// Exec: a file of the tree run as a program (a lower file, a copy-up, a
// script written by execnew, whatever the mode bits allow), and a program
// written and then run, a "#!" script or a dynamically linked binary.

// dtExecScript is what execnew writes unless it writes an ELF binary.
const dtExecScript = "#!/bin/sh\necho \"ran $# args\"\n"

func dtGenExec(g *dtOpGen) dtOp { return dtOp{Kind: "exec", Path: g.pick("file")} }

func dtGenExecNew(g *dtOpGen) dtOp {
	return dtOp{Kind: "execnew", Path: g.freshOr(50), Flags: g.rng.IntN(2)}
}

// dtTrueELF is the host's /bin/true, a dynamically linked program.
var dtTrueELF = sync.OnceValues(func() ([]byte, error) { return os.ReadFile("/bin/true") })

func dtRunExec(root string, o *dtOp) dtResult {
	ctx, cancel := context.WithTimeout(context.Background(), dtOpTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(root, o.Path), "x").Output()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return dtResult{Out: fmt.Sprintf("exit %d %q", ee.ExitCode(), out)}
	case err != nil:
		return dtErrRes(err)
	}
	return dtResult{Out: fmt.Sprintf("exit 0 %q", out)}
}

func dtRunExecNew(root string, o *dtOp) dtResult {
	data := []byte(dtExecScript)
	if o.Flags == 1 {
		elf, err := dtTrueELF()
		if err != nil {
			return dtResult{Err: unix.EIO, Out: "read /bin/true: " + err.Error()}
		}
		data = elf
	}
	fd, err := unix.Open(filepath.Join(root, o.Path), unix.O_CREAT|unix.O_TRUNC|unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o755)
	if err != nil {
		return dtErrRes(err)
	}
	if r := dtWriteAndClose(fd, data, -1); r.Err != 0 {
		return r
	}
	r := dtRunExec(root, o)
	r.Out = "written, " + r.Out
	return r
}

func dtRunMkfifo(root string, o *dtOp) dtResult {
	return dtErrRes(unix.Mkfifo(filepath.Join(root, o.Path), o.Mode))
}

func dtRunRead(root string, o *dtOp) dtResult {
	fd, err := unix.Open(filepath.Join(root, o.Path), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return dtErrRes(err)
	}
	defer unix.Close(fd)
	var data []byte
	buf := make([]byte, 4096)
	for len(data) < 1<<20 {
		n, err := unix.Read(fd, buf)
		if err != nil {
			return dtResult{Err: dtErrnoOf(err), Out: fmt.Sprintf("after %d bytes", len(data))}
		}
		if n == 0 {
			break
		}
		data = append(data, buf[:n]...)
	}
	if len(data) > 64 {
		return dtResult{Out: fmt.Sprintf("%d bytes sha=%s", len(data), dtHashOf(data))}
	}
	return dtResult{Out: fmt.Sprintf("%d bytes %q", len(data), data)}
}

func dtRunReaddir(root string, o *dtOp) dtResult {
	dir := filepath.Join(root, o.Path)
	names, err := dtReaddirnames(dir)
	if err != nil {
		return dtErrRes(err)
	}
	var out []string
	for _, n := range names {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, n), &st); err != nil {
			out = append(out, n+":<"+unix.ErrnoName(dtErrnoOf(err))+">")
			continue
		}
		out = append(out, n+":"+dtFileType(st.Mode))
	}
	return dtResult{Out: "[" + strings.Join(out, " ") + "]"}
}

func dtRunLstat(root string, o *dtOp) dtResult {
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(root, o.Path), &st); err != nil {
		return dtErrRes(err)
	}
	return dtResult{Out: dtStatNode(&st).String()}
}

func dtRunStat(root string, o *dtOp) dtResult {
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(root, o.Path), &st); err != nil {
		return dtErrRes(err)
	}
	return dtResult{Out: dtStatNode(&st).String()}
}

func dtRunReadlink(root string, o *dtOp) dtResult {
	t, err := dtReadlink(filepath.Join(root, o.Path))
	if err != nil {
		return dtErrRes(err)
	}
	return dtResult{Out: strconv.Quote(t)}
}

func dtRunListxattr(root string, o *dtOp) dtResult {
	x, err := dtXattrs(filepath.Join(root, o.Path))
	if err != nil {
		return dtErrRes(err)
	}
	return dtResult{Out: "{" + dtFormatXattrs(x) + "}"}
}

// ---------------------------------------------------------------------------
// The run of one seed.

type dtDiffer struct {
	t       *testing.T
	mode    dtMode
	seed    int64
	fx      *dtFixture
	base    string
	k, p    *dtSide
	gen     *dtOpGen
	ops     []dtOp // the ops run so far
	log     []string
	emul    []string          // names touched by replayed renames (allowed differences 2, 4, 5)
	lower   map[string]string // merged lower layers: path -> type
	failed  bool
	failMsg string
	quiet   bool               // record the failure in failMsg only (shrinking)
	title   string             // names the sequence in reports
	stats   map[string]*[2]int // op kind -> [runs, kernel successes]
	allowed map[string]int     // note -> count
	lastIdx int
	// metaIno holds the kernel's inode numbers of files that a change of
	// metadata may have left metacopy files (allowed difference 10).
	metaIno map[uint64]bool
	// lastMerged are the kernel's and the program's merged trees of the
	// last comparison (metacopy files in the uppers are resolved by them).
	lastMerged [2]dtTree
}

// dtNewDiffer lays out both stacks over fx, mounts them and walks the kernel
// mount. The returned func unmounts and removes everything (it also runs at
// cleanup).
func dtNewDiffer(t *testing.T, mode dtMode, seed int64, fx *dtFixture) (*dtDiffer, func()) {
	t.Helper()
	base, err := os.MkdirTemp("", fmt.Sprintf("strata-difftest-%d-", seed))
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(base, ",:") {
		t.Fatalf("temp dir %q has a comma or colon, which mount options cannot carry", base)
	}
	d := &dtDiffer{t: t, mode: mode, seed: seed, fx: fx, base: base, title: fmt.Sprintf("seed %d", seed)}
	var once bool
	teardown := func() {
		if once {
			return
		}
		once = true
		for _, s := range []*dtSide{d.k, d.p} {
			if s != nil {
				s.unmount(t)
			}
		}
		if *diffKeep {
			t.Logf("work dirs kept in %s", base)
		} else {
			os.RemoveAll(base)
		}
	}
	t.Cleanup(teardown)
	d.k = dtNewSide(t, base, "kernel", fx)
	d.k.kopts = mode.kopts
	d.p = dtNewSide(t, base, "prog", fx)
	d.k.mountKernel(t)
	d.p.mountProg(t)
	pool := append(slices.Clone(fxNames), "x", "y")
	d.gen = &dtOpGen{rng: rand.New(rand.NewPCG(uint64(seed), 2)), pool: pool}
	if err := d.gen.refresh(d.k.mnt); err != nil {
		if errors.Is(err, unix.ENOENT) {
			// Seen with some generated opaque-dir layouts: the kernel
			// lists a name its own lookup does not find. There is no
			// reference to compare with.
			t.Skipf("kernel overlayfs is inconsistent on this fixture (%v)", err)
		}
		t.Fatalf("walk kernel mount: %v", err)
	}
	d.lower = dtLowerView(t, base, d.k)
	return d, teardown
}

func dtRunDifferential(t *testing.T, mode dtMode, seed int64, nops int) {
	fx := dtGenFixture(rand.New(rand.NewPCG(uint64(seed), 1)))
	d, teardown := dtNewDiffer(t, mode, seed, fx)
	d.run(nops)
	teardown()
	if d.failed && *diffShrink {
		dtShrink(t, mode, seed, fx, d.ops)
	}
}

// run draws and runs nops ops, comparing as it goes.
func (d *dtDiffer) run(nops int) {
	if !d.compareMerged("before the first op") {
		return
	}
	weights := make([]int, len(dtOpSpecs))
	for i, s := range dtOpSpecs {
		if !dtWithout(s.kind) {
			weights[i] = s.weight
		}
	}
	for i := 0; i < nops; i++ {
		j := dtPickWeighted(d.gen.rng, weights)
		if j < 0 {
			break
		}
		o := dtOpSpecs[j].gen(d.gen)
		o.Kind = dtOpSpecs[j].kind
		if !d.stepAndRefresh(i, &o) {
			return
		}
		if (i+1)%dtCheckEvery == 0 {
			d.ops[len(d.ops)-1].Check = true
			if !d.compareMerged(fmt.Sprintf("after op #%d", i)) {
				return
			}
		}
	}
	if !d.compareMerged("after the last op") {
		return
	}
	if d.compareUppers() {
		d.summary()
	}
}

// stepAndRefresh runs op o as op #i and updates the generator's view of the
// kernel tree; false stops the sequence.
func (d *dtDiffer) stepAndRefresh(i int, o *dtOp) bool {
	d.lastIdx = i
	d.ops = append(d.ops, *o)
	spec := dtSpecOf(o.Kind)
	if !d.step(i, spec, o) {
		return false
	}
	if spec.mutates {
		if err := d.gen.refresh(d.k.mnt); err != nil {
			d.fail(fmt.Sprintf("after op #%d: walk kernel mount: %v", i, err), nil)
			return false
		}
	}
	return true
}

func dtSpecOf(kind string) dtOpSpec {
	for _, s := range dtOpSpecs {
		if s.kind == kind {
			return s
		}
	}
	panic("no op kind " + kind)
}

// dtReplay runs ops on fresh stacks over fx and returns the failure, "" if
// none. It compares as a seed's run does: errnos, reads, and the trees
// before the first op, after ops marked Check and at the end (the walks
// matter: they look up and read every name).
func dtReplay(t *testing.T, mode dtMode, seed int64, fx *dtFixture, ops []dtOp, quiet bool, title string) string {
	d, teardown := dtNewDiffer(t, mode, seed, fx)
	defer teardown()
	d.quiet, d.title = quiet, title
	if !d.compareMerged("before the first op") {
		return d.failMsg
	}
	for i := range ops {
		o := ops[i]
		if !d.stepAndRefresh(i, &o) {
			return d.failMsg
		}
		if o.Check && !d.compareMerged(fmt.Sprintf("after op #%d", i)) {
			return d.failMsg
		}
	}
	if d.compareMerged("after the last op") {
		d.compareUppers()
	}
	return d.failMsg
}

// dtShrink looks for a short subsequence of ops that still diverges (delta
// debugging, within a time budget) and reports it.
func dtShrink(t *testing.T, mode dtMode, seed int64, fx *dtFixture, ops []dtOp) {
	deadline := time.Now().Add(*diffShrinkFor)
	idx := make([]int, len(ops)) // indexes into ops of the current candidate
	for i := range idx {
		idx[i] = i
	}
	fails := func(cand []int) bool {
		sub := make([]dtOp, len(cand))
		for i, j := range cand {
			sub[i] = ops[j]
		}
		return dtReplay(t, mode, seed, fx, sub, true, "") != ""
	}
	if !fails(idx) {
		t.Logf("seed %d: replaying the %d ops on fresh mounts does not diverge; not shrunk", seed, len(ops))
		return
	}
	tries := 1
	for n := 2; len(idx) >= 2 && time.Now().Before(deadline); {
		chunk := (len(idx) + n - 1) / n
		reduced := false
		for start := 0; start < len(idx) && time.Now().Before(deadline); start += chunk {
			cand := append(slices.Clone(idx[:start]), idx[min(start+chunk, len(idx)):]...)
			tries++
			if fails(cand) {
				idx, n, reduced = cand, max(n-1, 2), true
				break
			}
		}
		if !reduced {
			if n >= len(idx) {
				break
			}
			n = min(2*n, len(idx))
		}
	}
	sub := make([]dtOp, len(idx))
	for i, j := range idx {
		sub[i] = ops[j]
	}
	title := fmt.Sprintf("seed %d shrunk to %d of its ops (%v, after %d replays)", seed, len(idx), idx, tries)
	if dtReplay(t, mode, seed, fx, sub, false, title) == "" {
		var b strings.Builder
		for i, o := range sub {
			fmt.Fprintf(&b, "\n  #%03d %s", i, &o)
		}
		t.Logf("%s: the last replay did not diverge, so the divergence depends on timing; the sequence:%s", title, b.String())
	}
}

// step runs o on both mounts and compares; false stops the seed.
func (d *dtDiffer) step(i int, spec dtOpSpec, o *dtOp) bool {
	srcType, dstType := d.gen.kinds[o.Path], d.gen.kinds[o.Path2]
	var kr, pr dtResult
	if !d.k.do(func() { kr = spec.run(d.k.mnt, o) }) {
		d.logOp(i, o, dtResult{Out: "HANG"}, dtResult{}, "")
		d.fail(fmt.Sprintf("op #%d %s: hung on kernel for %v (a harness bug)", i, o, dtOpTimeout), nil)
		return false
	}
	if !d.p.do(func() { pr = spec.run(d.p.mnt, o) }) {
		d.logOp(i, o, kr, dtResult{Out: "HANG"}, "")
		d.fail(fmt.Sprintf("op #%d %s: hung on prog for %v (connection aborted)", i, o, dtOpTimeout), nil)
		return false
	}
	if kr == pr {
		d.noteMetacopy(o, kr)
		d.logOp(i, o, kr, pr, "")
		if o.Kind == "rename" && kr.Err == 0 && (d.emulated(o.Path) || d.emulated(o.Path2)) {
			d.emul = append(d.emul, o.Path, o.Path2)
		}
		return true
	}
	if note, ok := d.metacopyStat(o, kr, pr); ok {
		d.logOp(i, o, kr, pr, note)
		return true
	}
	if note, ok := d.renameRule(o, kr, pr, srcType, dstType); ok {
		d.logOp(i, o, kr, pr, note)
		return !d.failed
	}
	d.logOp(i, o, kr, pr, "")
	d.fail(fmt.Sprintf("op #%d %s:\n  kernel: %s\n  prog:   %s", i, o, kr, pr), nil)
	return false
}

// dtLinksInodes returns the inode numbers of the entries of strata's links
// directory in the work dir work: the copies of lower hard links.
func dtLinksInodes(work string) map[uint64]bool {
	out := map[uint64]bool{}
	ents, _ := os.ReadDir(filepath.Join(work, "strata.links"))
	for _, e := range ents {
		var st unix.Stat_t
		if unix.Lstat(filepath.Join(work, "strata.links", e.Name()), &st) == nil {
			out[st.Ino] = true
		}
	}
	return out
}

// noteMetacopy records the kernel's inode of the file a successful change
// of metadata (or a rename or link) made, which kernel overlayfs with
// metacopy=on may have copied up without its data (allowed difference 10).
func (d *dtDiffer) noteMetacopy(o *dtOp, kr dtResult) {
	if kr.Err != 0 || !d.mode.strict {
		return
	}
	paths := []string{o.Path}
	switch o.Kind {
	case "chmod", "chown", "utimes", "setxattr", "removexattr", "link":
	case "rename":
		paths = []string{o.Path2}
		if o.Flags&unix.RENAME_EXCHANGE != 0 {
			paths = append(paths, o.Path) // the file moved there too
		}
	default:
		return
	}
	for _, p := range paths {
		var st unix.Stat_t
		if unix.Lstat(filepath.Join(d.k.mnt, p), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
			if d.metaIno == nil {
				d.metaIno = map[uint64]bool{}
			}
			d.metaIno[st.Ino] = true
		}
	}
}

// metacopyMtime is allowed difference 10: the kernel (Linux 6.18) gives
// a metacopy file the current mtime when an open for writing copies its
// data up, even if nothing is written; strata keeps the file's mtime, as
// any copy-up does. So a file the kernel shows without its explicit time
// and the program with it is the same if the kernel's inode is one a
// change of metadata touched and nothing else differs.
func (d *dtDiffer) metacopyMtime(k, p dtTree) func(string) bool {
	return func(path string) bool {
		w, g := k[path], p[path]
		if w == nil || g == nil || w.Type != "file" || w.Mtime != "" || g.Mtime == "" || !d.metaIno[w.key[1]] {
			return false
		}
		c := *w
		c.Mtime = g.Mtime
		if c.String() != g.String() {
			return false
		}
		d.allowed["allowed difference 10: mtime of a metacopy file's data copy-up"]++
		return true
	}
}

// dtMtimeField is the mtime a stat result shows when it is explicit.
var dtMtimeField = regexp.MustCompile(` mtime=[0-9.]+`)

// metacopyStat is allowed difference 10 in a stat's result: the kernel
// shows the file without its explicit mtime, the program with it, and the
// kernel's inode is one a change of metadata touched.
func (d *dtDiffer) metacopyStat(o *dtOp, kr, pr dtResult) (string, bool) {
	if !d.mode.strict || (o.Kind != "lstat" && o.Kind != "stat") || kr.Err != 0 || pr.Err != 0 ||
		dtMtimeField.MatchString(kr.Out) || !dtMtimeField.MatchString(pr.Out) ||
		dtMtimeField.ReplaceAllString(pr.Out, "") != kr.Out {
		return "", false
	}
	var st unix.Stat_t
	if unix.Lstat(filepath.Join(d.k.mnt, o.Path), &st) != nil || !d.metaIno[st.Ino] {
		return "", false
	}
	return "allowed difference 10: mtime of a metacopy file's data copy-up", true
}

// renameRule applies the allowed differences of directory renames.
func (d *dtDiffer) renameRule(o *dtOp, kr, pr dtResult, srcType, dstType string) (string, bool) {
	if o.Kind != "rename" || d.mode.strict {
		return "", false
	}
	exchange := o.Flags == unix.RENAME_EXCHANGE
	if srcType != "dir" && !(exchange && dstType == "dir") {
		return "", false
	}
	switch {
	case kr.Err == unix.EXDEV && pr.Err == 0:
		var err error
		if !d.k.do(func() { err = dtEmulateRename(d.k.mnt, o) }) {
			err = fmt.Errorf("hung")
		}
		if err != nil {
			d.fail(fmt.Sprintf("replaying %s on the kernel mount: %v", o, err), nil)
		}
		d.emul = append(d.emul, o.Path, o.Path2)
		return "allowed difference 2: replayed on kernel", true
	case kr.Err == unix.EXDEV && pr.Err == unix.ENOTEMPTY && !exchange && dstType == "dir":
		if names, err := dtReaddirnames(filepath.Join(d.k.mnt, o.Path2)); err == nil && len(names) > 0 {
			return "allowed difference 3", true
		}
	case kr.Err == 0 && pr.Err == unix.EXDEV && (d.emulated(o.Path) || d.emulated(o.Path2)):
		var err error
		if !d.p.do(func() { err = dtEmulateRename(d.p.mnt, o) }) {
			err = fmt.Errorf("hung")
		}
		if err != nil {
			d.fail(fmt.Sprintf("replaying %s on the prog mount: %v", o, err), nil)
		}
		d.emul = append(d.emul, o.Path, o.Path2)
		return "allowed difference 4: replayed on prog", true
	}
	return "", false
}

// emulated reports whether p is at, under or above a name touched by a
// replayed rename.
func (d *dtDiffer) emulated(p string) bool {
	for _, e := range d.emul {
		if p == e || strings.HasPrefix(p, e+"/") || strings.HasPrefix(e, p+"/") || p == "." {
			return true
		}
	}
	return false
}

// underEmulated reports whether p is at or under a name touched by a
// replayed rename (allowed difference 5).
func (d *dtDiffer) underEmulated(p string) bool {
	for _, e := range d.emul {
		if p == e || strings.HasPrefix(p, e+"/") {
			return true
		}
	}
	return false
}

func (d *dtDiffer) logOp(i int, o *dtOp, kr, pr dtResult, note string) {
	if d.stats == nil {
		d.stats, d.allowed = map[string]*[2]int{}, map[string]int{}
	}
	st := d.stats[o.Kind]
	if st == nil {
		st = new([2]int)
		d.stats[o.Kind] = st
	}
	st[0]++
	if kr.Err == 0 {
		st[1]++
	}
	if note != "" {
		d.allowed[note]++
	}
	line := fmt.Sprintf("#%03d %s => %s", i, o, kr)
	if kr != pr {
		line = fmt.Sprintf("#%03d %s => kernel: %s | prog: %s", i, o, kr, pr)
	}
	if note != "" {
		line += "  [" + note + "]"
	}
	d.log = append(d.log, line)
}

func (d *dtDiffer) snapshots() (k, p dtTree, kerr, perr error) {
	if !d.k.do(func() { k, kerr = dtSnapshotMerged(d.k.mnt) }) {
		kerr = fmt.Errorf("walk hung")
	}
	if !d.p.do(func() { p, perr = dtSnapshotMerged(d.p.mnt) }) {
		perr = fmt.Errorf("walk hung")
	}
	return k, p, kerr, perr
}

// compareMerged compares the merged trees and each mount's inodes.
func (d *dtDiffer) compareMerged(when string) bool {
	k, p, kerr, perr := d.snapshots()
	d.lastMerged = [2]dtTree{k, p}
	var diffs []string
	if kerr != nil {
		diffs = append(diffs, "kernel walk: "+kerr.Error())
	}
	if perr != nil {
		diffs = append(diffs, "prog walk: "+perr.Error())
	}
	diffs = append(diffs, dtDiffTrees(k, p, "kernel", "prog", d.metacopyMtime(k, p))...)
	for _, s := range k.checkInodes() {
		diffs = append(diffs, "kernel inodes: "+s)
	}
	for _, s := range p.checkInodes() {
		diffs = append(diffs, "prog inodes: "+s)
	}
	if len(diffs) == 0 {
		return true
	}
	d.fail(fmt.Sprintf("merged trees differ %s:\n  %s", when, strings.Join(diffs, "\n  ")), [][2]string{
		{"kernel merged tree", k.dump()},
		{"prog merged tree", p.dump()},
	})
	return false
}

// compareUppers unmounts both sides and compares their normalised uppers.
func (d *dtDiffer) compareUppers() bool {
	d.k.unmount(d.t)
	d.p.unmount(d.t)
	k, kerr := dtSnapshotUpper(d.k.upper)
	p, perr := dtSnapshotUpper(d.p.upper)
	k.dropNoops(d.lower)
	p.dropNoops(d.lower)
	if d.mode.strict {
		k.resolveMetacopy(d.k.upper, d.lastMerged[0])
		p.resolveMetacopy(d.p.upper, d.lastMerged[1])
		// strata links every name of a copied-up lower hard link into
		// the upper; the kernel keeps them in its index.
		p.dropLinkedAliases(k, dtLinksInodes(d.p.work))
		// The kernel makes a new directory opaque in a merged parent,
		// as an optimisation; beneath a renamed directory the lowers
		// that dropNoops compares by path are not the ones that merge.
		k.dropOpaqueBeneathRedirects(d.k.upper)
		p.dropOpaqueBeneathRedirects(d.p.upper)
		// With index=on the kernel's upper files of lower hard links
		// have a further link in the work dir's index; the names that
		// share an inode in the upper are still compared (Links).
		for _, n := range k {
			n.Nlink = 0
		}
		for _, n := range p {
			n.Nlink = 0
		}
	}
	var diffs []string
	if kerr != nil {
		diffs = append(diffs, "kernel upper walk: "+kerr.Error())
	}
	if perr != nil {
		diffs = append(diffs, "prog upper walk: "+perr.Error())
	}
	diffs = append(diffs, dtDiffTrees(k, p, "kernel", "prog", d.underEmulated)...)
	if len(diffs) == 0 {
		return true
	}
	d.fail(fmt.Sprintf("normalised upper dirs differ after unmounting:\n  %s", strings.Join(diffs, "\n  ")), [][2]string{
		{"kernel upper (normalised)", k.dump()},
		{"prog upper (normalised)", p.dump()},
	})
	return false
}

// summary logs how many ops of each kind ran and succeeded on the kernel,
// and the allowed differences met, to show what a seed exercised.
func (d *dtDiffer) summary() {
	var parts []string
	for _, k := range dtSortedKeys(d.stats) {
		parts = append(parts, fmt.Sprintf("%s %d/%d", k, d.stats[k][1], d.stats[k][0]))
	}
	var allowed []string
	for _, k := range dtSortedKeys(d.allowed) {
		allowed = append(allowed, fmt.Sprintf("%d× %s", d.allowed[k], k))
	}
	d.t.Logf("ops (kernel ok/run): %s; allowed differences: [%s]", strings.Join(parts, ", "), strings.Join(allowed, "; "))
}

// fail reports a mismatch with everything needed to reproduce and read it.
func (d *dtDiffer) fail(msg string, dumps [][2]string) {
	d.failed = true
	d.failMsg = msg
	if d.quiet {
		return
	}
	if dumps == nil {
		k, p, kerr, perr := d.snapshots()
		ks, ps := k.dump(), p.dump()
		if kerr != nil {
			ks += "  (walk failed: " + kerr.Error() + ")\n"
		}
		if perr != nil {
			ps += "  (walk failed: " + perr.Error() + ")\n"
		}
		dumps = [][2]string{{"kernel merged tree", ks}, {"prog merged tree", ps}}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s\n\n", d.title, msg)
	if d.title == fmt.Sprintf("seed %d", d.seed) {
		if d.mode.strict {
			fmt.Fprintf(&b, "reproduce: STRATA_FUSE=%s go test ./integration -run %s -difftest.seed=%d -difftest.redirect-seeds=1 -difftest.redirect-ops=%d -difftest.without=%q -v\n", strataFuse, d.mode.test, d.seed, d.lastIdx+1, *diffNot)
		} else {
			fmt.Fprintf(&b, "reproduce: STRATA_FUSE=%s go test ./integration -run %s -difftest.seed=%d -difftest.seeds=1 -difftest.ops=%d -difftest.without=%q -v\n", strataFuse, d.mode.test, d.seed, d.lastIdx+1, *diffNot)
		}
	} else {
		b.WriteString("reproduce: run the seed as above with -difftest.shrink; the op numbers below are this sequence's own\n")
	}
	if !*diffShrink {
		b.WriteString("(add -difftest.shrink for a shorter sequence)\n")
	}
	fmt.Fprintf(&b, "\nfixture:\n%s\n", d.fx)
	fmt.Fprintf(&b, "ops:\n  %s\n\n", strings.Join(d.log, "\n  "))
	for _, dump := range dumps {
		fmt.Fprintf(&b, "%s:\n%s\n", dump[0], dump[1])
	}
	d.t.Error(b.String())
}

// ---------------------------------------------------------------------------
// Replaying a directory rename as moves (allowed differences 2 and 4).

// dtEmulateRename does what rename(o.Path, o.Path2, o.Flags) does, through
// root, without renaming a directory.
func dtEmulateRename(root string, o *dtOp) error {
	src, dst := filepath.Join(root, o.Path), filepath.Join(root, o.Path2)
	moved := map[[2]uint64]string{}
	if o.Flags == unix.RENAME_EXCHANGE {
		tmp := filepath.Join(root, ".difftest-exchange")
		for _, m := range [][2]string{{src, tmp}, {dst, src}, {tmp, dst}} {
			if err := dtMoveEntry(m[0], m[1], moved); err != nil {
				return err
			}
		}
		return nil
	}
	var st unix.Stat_t
	if err := unix.Lstat(dst, &st); err == nil {
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			err = unix.Rmdir(dst)
		} else {
			err = unix.Unlink(dst)
		}
		if err != nil {
			return fmt.Errorf("remove target: %w", err)
		}
	}
	return dtMoveEntry(src, dst, moved)
}

// dtMoveEntry moves from to to: non-dirs by rename (or, for a further name of
// an inode already moved, by link and unlink), dirs by mkdir, moving their
// entries, copying mode, owner and user xattrs, and rmdir.
func dtMoveEntry(from, to string, moved map[[2]uint64]string) error {
	var st unix.Stat_t
	if err := unix.Lstat(from, &st); err != nil {
		return fmt.Errorf("lstat %s: %w", from, err)
	}
	key := [2]uint64{st.Dev, st.Ino}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if prev, ok := moved[key]; ok && st.Nlink > 1 {
			if err := unix.Link(prev, to); err != nil {
				return fmt.Errorf("link %s %s: %w", prev, to, err)
			}
			return unix.Unlink(from)
		}
		if err := unix.Rename(from, to); err != nil {
			return fmt.Errorf("rename %s %s: %w", from, to, err)
		}
		moved[key] = to
		return nil
	}
	if err := unix.Mkdir(to, 0o700); err != nil {
		return fmt.Errorf("mkdir %s: %w", to, err)
	}
	names, err := dtReaddirnames(from)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := dtMoveEntry(filepath.Join(from, n), filepath.Join(to, n), moved); err != nil {
			return err
		}
	}
	x, err := dtXattrs(from)
	if err != nil {
		return err
	}
	for _, k := range dtSortedKeys(x) {
		if !dtBookkeepingXattr(k) {
			if err := unix.Lsetxattr(to, k, []byte(x[k]), 0); err != nil {
				return fmt.Errorf("setxattr %s %s: %w", to, k, err)
			}
		}
	}
	if err := unix.Lchown(to, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if err := unix.Chmod(to, st.Mode&0o7777); err != nil {
		return err
	}
	return unix.Rmdir(from)
}
