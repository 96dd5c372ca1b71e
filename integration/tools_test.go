package integration

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Tests of strata under the tools people run it with: podman and buildah
// with strata-fuse as the overlay driver's mount program, side by side with
// fuse-overlayfs in the same run; runc and containerd's ctr on a root
// filesystem that `strata mount` serves; and programs (static, a script,
// dynamically linked) exec'd straight from a strata-fuse mount. Images are
// made offline from Debian's busybox-static.

// toolTimeout bounds one run of a tool.
const toolTimeout = 2 * time.Minute

// toolRootfsFiles are the files of the test image besides busybox and its
// applet links; the scenarios read, change and delete them.
var toolRootfsFiles = map[string]string{
	"etc/passwd":   "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
	"etc/group":    "root:x:0:\nnobody:x:65534:\n",
	"etc/base.txt": "base\n",
	"srv/dir/a":    "a\n",
	"srv/dir/b":    "b\n",
	"srv/owned":    "owned\n",
	"srv/linked":   "linked\n",
	"dev/":         "",
	"proc/":        "",
	"sys/":         "",
	"run/":         "",
	"tmp/":         "",
}

// busyboxRootfs writes a root filesystem to dir: bin/busybox, a symlink
// for each of its applets, and toolRootfsFiles. It returns the MD5 of
// busybox, which the scenarios read back.
func busyboxRootfs(t testing.TB, dir string) string {
	t.Helper()
	bb := staticBusybox(t)
	writeTree(t, dir, toolRootfsFiles)
	b, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin/busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bb, "--list").Output()
	if err != nil {
		t.Fatalf("busybox --list: %v", err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "busybox" || strings.Contains(applet, "/") {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", applet)); err != nil {
			t.Fatal(err)
		}
	}
	sum := md5.Sum(b)
	return hex.EncodeToString(sum[:])
}

// busyboxTar writes busyboxRootfs as a tarball and returns its path and
// busybox's MD5.
func busyboxTar(t testing.TB) (string, string) {
	t.Helper()
	needTool(t, "tar")
	dir := t.TempDir()
	sum := busyboxRootfs(t, filepath.Join(dir, "rootfs"))
	tarball := filepath.Join(dir, "rootfs.tar")
	if out, err := exec.Command("tar", "--numeric-owner", "-C", filepath.Join(dir, "rootfs"), "-cf", tarball, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	return tarball, sum
}

// toolResult is the outcome of one run of a tool.
type toolResult struct {
	cmd            string
	stdout, stderr string
	err            error
}

func (r toolResult) String() string {
	return fmt.Sprintf("%s: %v\nstdout:\n%sstderr:\n%s", r.cmd, r.err, r.stdout, r.stderr)
}

// runToolEnv runs a tool to completion with env added to the
// environment. Output goes to files, not pipes: a daemon the tool starts
// (conmon, a mount program, a shim) could hold a pipe open.
func runToolEnv(t testing.TB, env []string, name string, args ...string) toolResult {
	t.Helper()
	r := toolResult{cmd: name + " " + strings.Join(args, " ")}
	dir := t.TempDir()
	stdout, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...) // killed by PID on timeout
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	r.err = cmd.Run()
	if ctx.Err() != nil {
		r.err = fmt.Errorf("%w after %v", ctx.Err(), toolTimeout)
	}
	b, _ := os.ReadFile(stdout.Name())
	r.stdout = string(b)
	b, _ = os.ReadFile(stderr.Name())
	r.stderr = string(b)
	return r
}

// hasCapSysResource reports whether this process may raise resource
// limits above their hard limit.
func hasCapSysResource() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<unix.CAP_SYS_RESOURCE) != 0
		}
	}
	return false
}

// containersEnv is a private containers-storage root with its own
// configuration for podman and buildah: nothing of the host's storage,
// containers.conf, networks or events is used or changed.
type containersEnv struct {
	t    *testing.T
	base string
	env  []string // CONTAINERS_CONF and friends
}

func newContainersEnv(t *testing.T) *containersEnv {
	t.Helper()
	// conmon refuses a runroot longer than 50 bytes (its socket paths must
	// fit in sun_path), too short for t.TempDir's names.
	parent := os.TempDir()
	if len(parent) > 20 {
		parent = "/tmp"
	}
	base, err := os.MkdirTemp(parent, "strata-ctrs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(base); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	e := &containersEnv{t: t, base: base}
	for _, d := range []string{"root", "runroot", "tmp", "networks"} {
		if err := os.Mkdir(e.path(d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// Podman's default RLIMIT_NOFILE and RLIMIT_NPROC for a root
	// container need CAP_SYS_RESOURCE to set, which containers and some CI
	// machines lack: runc then fails ("error setting rlimit type 7").
	// Without the capability, both are set here below the hard limits
	// (with only one set, runc failed on the other).
	ulimits := ""
	if !hasCapSysResource() {
		ulimits = `default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]`
	}
	conf := fmt.Sprintf(`[containers]
%s
netns = "none"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = %q
tmp_dir = %q
volume_path = %q

[network]
network_config_dir = %q
`, ulimits, e.path("events.log"), e.path("tmp"), e.path("volumes"), e.path("networks"))
	// containers-storage wants graphroot and runroot in its file even when
	// the command line gives them.
	storage := fmt.Sprintf("[storage]\ndriver = \"overlay\"\ngraphroot = %q\nrunroot = %q\n", e.path("root"), e.path("runroot"))
	writeTree(t, base, map[string]string{"containers.conf": conf, "storage.conf": storage, "registries.conf": ""})
	e.env = []string{
		"CONTAINERS_CONF=" + e.path("containers.conf"),
		"CONTAINERS_STORAGE_CONF=" + e.path("storage.conf"),
		"CONTAINERS_REGISTRIES_CONF=" + e.path("registries.conf"),
		"TMPDIR=" + e.path("tmp"),
	}
	// Runs last: whatever the tools left mounted below the private root
	// (containers' merged directories, the driver's private bind mount).
	t.Cleanup(func() {
		mps := mountsUnder(base)
		sort.Sort(sort.Reverse(sort.StringSlice(mps)))
		for _, mp := range mps {
			if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				t.Errorf("cleanup: unmount %s: %v", mp, err)
			}
		}
	})
	return e
}

func (e *containersEnv) path(name string) string { return filepath.Join(e.base, name) }

// podman runs podman on the private root with prog as the overlay
// driver's mount program.
func (e *containersEnv) podman(prog string, args ...string) toolResult {
	e.t.Helper()
	return runToolEnv(e.t, e.env, "podman", append([]string{
		"--root", e.path("root"), "--runroot", e.path("runroot"), "--tmpdir", e.path("tmp"),
		"--storage-driver", "overlay", "--storage-opt", "overlay.mount_program=" + prog,
		"--cgroup-manager", "cgroupfs", "--events-backend", "file",
	}, args...)...)
}

// buildah runs buildah on the private root with prog as the overlay
// driver's mount program.
func (e *containersEnv) buildah(prog string, args ...string) toolResult {
	e.t.Helper()
	return runToolEnv(e.t, e.env, "buildah", append([]string{
		"--root", e.path("root"), "--runroot", e.path("runroot"),
		"--storage-driver", "overlay", "--storage-opt", "overlay.mount_program=" + prog,
	}, args...)...)
}

// mountProgram is a program the overlay driver can be told to mount with.
type mountProgram struct{ name, path string }

// mountPrograms are strata-fuse under test and fuse-overlayfs, the
// reference.
func mountPrograms(t testing.TB) []mountProgram {
	t.Helper()
	fo := needTool(t, "fuse-overlayfs")[0]
	return []mountProgram{{"strata-fuse", strataFuse}, {"fuse-overlayfs", fo}}
}

// rootFSType is a shell command printing the fstype of /: it shows which
// mount program serves the container.
const rootFSType = `awk '$2 == "/" {print $3}' /proc/mounts`

// toolStep is one case of a scenario: shell commands run in a container
// and the output they must give.
type toolStep struct {
	name string
	sh   string
	want string
}

// stepScript joins steps into one script that prints "== NAME" before
// each, so that one container run checks many cases. Errors go to
// stdout, in order, as part of a step's output.
func stepScript(steps []toolStep) string {
	var b strings.Builder
	b.WriteString("exec 2>&1\n")
	for _, s := range steps {
		fmt.Fprintf(&b, "echo '== %s'\n%s\n", s.name, s.sh)
	}
	return b.String()
}

// splitSteps cuts the output of stepScript into the output of each step.
func splitSteps(out string) map[string]string {
	got := map[string]string{}
	cur := ""
	for _, line := range strings.SplitAfter(out, "\n") {
		if name, ok := strings.CutPrefix(line, "== "); ok {
			cur = strings.TrimSuffix(name, "\n")
			got[cur] = ""
			continue
		}
		got[cur] += line
	}
	return got
}

// toolTable records, for each case, whether it passed under each mount
// program, and what it printed, to compare the programs.
type toolTable struct {
	t     *testing.T
	cases []string
	progs []string
	pass  map[string]map[string]bool
	out   map[string]map[string]string
	na    map[string]map[string]string // cases that do not apply to a program, and why
}

func newToolTable(t *testing.T, progs []mountProgram) *toolTable {
	tt := &toolTable{t: t, pass: map[string]map[string]bool{}, out: map[string]map[string]string{}, na: map[string]map[string]string{}}
	for _, p := range progs {
		tt.progs = append(tt.progs, p.name)
	}
	return tt
}

// check records case c under prog: it passes when err is nil and got is
// want. compare says whether the output must also be the same under every
// program (not so for what names the program).
func (tt *toolTable) check(t *testing.T, c, prog string, got, want string, err error, compare bool) bool {
	t.Helper()
	tt.addCase(c)
	ok := err == nil && got == want
	tt.pass[c][prog] = ok
	if compare {
		tt.out[c][prog] = got
	}
	switch {
	case err != nil:
		t.Errorf("%s under %s: %v", c, prog, err)
	case got != want:
		t.Errorf("%s under %s:\ngot:\n%s\nwant:\n%s", c, prog, got, want)
	}
	return ok
}

func (tt *toolTable) addCase(c string) {
	if _, ok := tt.pass[c]; !ok {
		tt.cases = append(tt.cases, c)
		tt.pass[c] = map[string]bool{}
		tt.out[c] = map[string]string{}
		tt.na[c] = map[string]string{}
	}
}

// notApplicable records that case c does not apply to prog.
func (tt *toolTable) notApplicable(c, prog, why string) {
	tt.addCase(c)
	tt.na[c][prog] = why
}

// checkRun records a case whose outcome is a tool run and its stdout.
func (tt *toolTable) checkRun(t *testing.T, c, prog string, r toolResult, want string) bool {
	t.Helper()
	var err error
	if r.err != nil {
		err = errors.New(r.String())
	}
	return tt.check(t, c, prog, r.stdout, want, err, true)
}

// idRE is a container or image ID as podman prints it.
var idRE = regexp.MustCompile(`^[0-9a-f]{64}\n$`)

// checkID records a case whose output is one ID.
func (tt *toolTable) checkID(t *testing.T, c, prog string, r toolResult) bool {
	t.Helper()
	err := runErr(r)
	if err == nil && !idRE.MatchString(r.stdout) {
		err = fmt.Errorf("%s: got %q, want an ID", r.cmd, r.stdout)
	}
	return tt.check(t, c, prog, "", "", err, true)
}

// checkFS records a case whose output starts with the fstype of the
// container's root (rootFSType): that line must be wantFS and is left out
// of the comparison between programs; the rest must be want.
func (tt *toolTable) checkFS(t *testing.T, c, prog string, r toolResult, wantFS, want string) bool {
	t.Helper()
	err := runErr(r)
	if fs := firstLine(r.stdout); err == nil && fs != wantFS {
		err = fmt.Errorf("%s: / is %q, want %q", r.cmd, strings.TrimSpace(fs), strings.TrimSpace(wantFS))
	}
	return tt.check(t, c, prog, afterFirstLine(r.stdout), want, err, true)
}

// report compares the outputs of the programs case by case and logs the
// table (docs/tools.md shows it).
func (tt *toolTable) report(tool string) {
	t := tt.t
	for _, c := range tt.cases {
		outs := tt.out[c]
		if len(outs)+len(tt.na[c]) != len(tt.progs) || len(tt.na[c]) > 0 {
			continue // a case not reached under some program; already an error
		}
		for _, p := range tt.progs[1:] {
			if outs[p] != outs[tt.progs[0]] {
				t.Errorf("%s: %s and %s differ:\n%s:\n%s\n%s:\n%s", c, tt.progs[0], p, tt.progs[0], outs[tt.progs[0]], p, outs[p])
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "| %s | %s |\n|---|%s\n", tool, strings.Join(tt.progs, " | "), strings.Repeat("---|", len(tt.progs)))
	for _, c := range tt.cases {
		fmt.Fprintf(&b, "| %s |", c)
		for _, p := range tt.progs {
			v, ran := tt.pass[c][p]
			switch why, na := tt.na[c][p]; {
			case na:
				fmt.Fprintf(&b, " n/a (%s) |", why)
			case !ran:
				b.WriteString(" not reached |")
			case v:
				b.WriteString(" pass |")
			default:
				b.WriteString(" FAIL |")
			}
		}
		b.WriteString("\n")
	}
	t.Logf("results:\n%s", b.String())
}

// sortedLines sorts the lines of s, for output whose order is not
// defined.
func sortedLines(s string) string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	sort.Strings(lines)
	return strings.Join(lines, "\n") + "\n"
}

// podmanRunSteps are the cases of one `podman run --rm`: reads, copy-up
// writes, deletes of lower files, mkdir, renames, hard links, chown.
func podmanRunSteps(busyboxMD5 string) []toolStep {
	return []toolStep{
		{"read", `cat /etc/base.txt; md5sum /bin/busybox | cut -d' ' -f1; ls /srv/dir`, "base\n" + busyboxMD5 + "\na\nb\n"},
		{"copy-up write", `echo appended >>/etc/base.txt; cat /etc/base.txt`, "base\nappended\n"},
		{"rm of a lower file", `rm /etc/group; ls /etc/group 2>&1; rm -r /srv/dir; ls /srv`,
			"ls: /etc/group: No such file or directory\nlinked\nowned\n"},
		{"mkdir", `mkdir -p /new/sub && echo n >/new/sub/f && cat /new/sub/f && stat -c '%F %a' /new/sub`, "n\ndirectory 755\n"},
		{"rename", `mv /etc/base.txt /etc/renamed.txt && mv /new/sub /new/moved && cat /etc/renamed.txt /new/moved/f; ls /etc/base.txt 2>&1; ls /new`,
			"base\nappended\nn\nls: /etc/base.txt: No such file or directory\nmoved\n"},
		{"hard link", `ln /srv/linked /srv/hl && echo more >>/srv/hl && cat /srv/linked && stat -c %h /srv/linked /srv/hl && [ "$(stat -c %i /srv/linked)" = "$(stat -c %i /srv/hl)" ] && echo same inode`,
			"linked\nmore\n2\n2\nsame inode\n"},
		{"device node made in the container", `mknod /tmp/null c 1 3 && echo x >/tmp/null`, "sh: can't create /tmp/null: Permission denied\n"},
		{"chown", `chown 65534:65534 /srv/owned && chmod 640 /srv/owned && stat -c '%u:%g %a %s' /srv/owned && cat /srv/owned && chown nobody /new/moved/f && stat -c %U /new/moved/f`,
			"65534:65534 640 6\nowned\nnobody\n"},
	}
}

// TestToolPodman runs podman with strata-fuse and with fuse-overlayfs as
// the overlay driver's mount program, each on a private root with an
// image imported from a busybox tarball: run --rm, create and start,
// exec, cp in and out, diff and commit; the committed image runs under
// both mount programs. Every case must give the expected output, and the
// same under both programs.
func TestToolPodman(t *testing.T) {
	needFUSE(t)
	needTool(t, "podman", "conmon", "runc")
	progs := mountPrograms(t)
	tarball, busyboxMD5 := busyboxTar(t)
	tt := newToolTable(t, progs)
	start := time.Now()
	for _, prog := range progs {
		t.Run(prog.name, func(t *testing.T) { podmanScenario(t, tt, prog, progs, tarball, busyboxMD5) })
	}
	tt.report("podman")
	t.Logf("podman under %d mount programs: %v", len(progs), time.Since(start).Round(time.Millisecond))
}

func podmanScenario(t *testing.T, tt *toolTable, prog mountProgram, progs []mountProgram, tarball, busyboxMD5 string) {
	e := newContainersEnv(t)
	pm := func(args ...string) toolResult { t.Helper(); return e.podman(prog.path, args...) }
	t.Cleanup(func() {
		for _, args := range [][]string{{"rm", "-a", "-f", "-t", "0"}, {"rmi", "-a", "-f"}} {
			if r := pm(args...); r.err != nil {
				t.Errorf("cleanup: %v", r)
			}
		}
	})
	const img, committed = "localhost/strata-test:base", "localhost/strata-test:committed"
	if r := pm("import", "-q", tarball, img); r.err != nil {
		t.Fatalf("import: %v", r)
	}
	wantFS := "fuse." + filepath.Base(prog.path) + "\n"

	steps := podmanRunSteps(busyboxMD5)
	r := pm("run", "--rm", "--network", "none", img, "sh", "-c", rootFSType+"; "+stepScript(steps))
	got := splitSteps(r.stdout)
	err := runErr(r)
	tt.check(t, "run: served by the mount program", prog.name, got[""], wantFS, err, false)
	for _, s := range steps {
		tt.check(t, "run --rm: "+s.name, prog.name, got[s.name], s.want, err, true)
	}

	// create + start: the container runs on, for exec and cp.
	r = pm("create", "--name", "work", "--network", "none", img, "sh", "-c", "echo started >/started; rm /etc/group; mkdir /made; exec sleep 600")
	tt.checkID(t, "create", prog.name, r)
	r = pm("start", "work")
	tt.checkRun(t, "start", prog.name, r, "work\n")
	if r.err != nil {
		return
	}
	r = pm("exec", "work", "sh", "-c", "until [ -e /started ]; do sleep 0.05; done; "+rootFSType+"; cat /started; [ -d /made ] && echo made; echo exec >/exec.txt; cat /exec.txt /etc/base.txt")
	tt.checkFS(t, "exec", prog.name, r, wantFS, "started\nmade\nexec\nbase\n")

	host := t.TempDir()
	if err := os.WriteFile(filepath.Join(host, "in.txt"), []byte("copied in\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = pm("cp", filepath.Join(host, "in.txt"), "work:/etc/in.txt")
	if r.err == nil {
		r = pm("exec", "work", "cat", "/etc/in.txt")
	}
	tt.checkRun(t, "cp into a container", prog.name, r, "copied in\n")
	r = pm("cp", "work:/exec.txt", filepath.Join(host, "out.txt"))
	out, rerr := os.ReadFile(filepath.Join(host, "out.txt"))
	if r.err != nil {
		rerr = errors.New(r.String())
	}
	tt.check(t, "cp out of a container", prog.name, string(out), "exec\n", rerr, true)

	r = pm("diff", "work")
	r.stdout = sortedLines(r.stdout)
	tt.checkRun(t, "diff", prog.name, r, "A /etc/in.txt\nA /exec.txt\nA /made\nA /started\nC /etc\nD /etc/group\n")

	r = pm("commit", "-q", "work", committed)
	tt.checkID(t, "commit", prog.name, r)
	if r := pm("rm", "-f", "-t", "0", "work"); r.err != nil {
		t.Errorf("rm: %v", r)
	}
	for _, q := range progs {
		r := e.podman(q.path, "run", "--rm", "--network", "none", committed, "sh", "-c",
			rootFSType+"; cat /started /exec.txt /etc/in.txt; [ -e /etc/group ] || echo group deleted; [ -d /made ] && echo made")
		want := "fuse." + filepath.Base(q.path) + "\nstarted\nexec\ncopied in\ngroup deleted\nmade\n"
		tt.checkRun(t, "committed image runs under "+q.name, prog.name, r, want)
	}
}

// TestToolBuildah runs buildah with strata-fuse and with fuse-overlayfs
// as the mount program: from, run, copy, commit (and run of the committed
// image), and bud of a Dockerfile with RUN and COPY steps. buildah runs
// containers with its default OCI isolation (runc).
func TestToolBuildah(t *testing.T) {
	needFUSE(t)
	needTool(t, "buildah", "podman", "runc")
	progs := mountPrograms(t)
	tarball, _ := busyboxTar(t)
	tt := newToolTable(t, progs)
	start := time.Now()
	for _, prog := range progs {
		t.Run(prog.name, func(t *testing.T) { buildahScenario(t, tt, prog, tarball) })
	}
	tt.report("buildah")
	t.Logf("buildah under %d mount programs: %v", len(progs), time.Since(start).Round(time.Millisecond))
}

func buildahScenario(t *testing.T, tt *toolTable, prog mountProgram, tarball string) {
	e := newContainersEnv(t)
	bh := func(args ...string) toolResult { t.Helper(); return e.buildah(prog.path, args...) }
	t.Cleanup(func() {
		for _, args := range [][]string{{"rm", "--all"}, {"rmi", "--all", "--force"}} {
			if r := bh(args...); r.err != nil {
				t.Errorf("cleanup: %v", r)
			}
		}
	})
	const img = "localhost/strata-test:base"
	// buildah has no import of a root filesystem tarball; podman's goes to
	// the same private storage.
	if r := e.podman(prog.path, "import", "-q", tarball, img); r.err != nil {
		t.Fatalf("podman import: %v", r)
	}
	wantFS := "fuse." + filepath.Base(prog.path) + "\n"

	r := bh("from", "--pull-never", img)
	ctr := strings.TrimSpace(r.stdout)
	tt.checkRun(t, "from", prog.name, r, "strata-test-working-container\n")
	if r.err != nil {
		return
	}
	r = bh("run", "--network", "none", ctr, "--", "sh", "-c", rootFSType+"; cat /etc/base.txt; echo run >/run.txt; rm /etc/group; mkdir /made; mv /srv/dir /srv/moved; ls /srv/moved")
	tt.checkFS(t, "run", prog.name, r, wantFS, "base\na\nb\n")

	host := t.TempDir()
	writeTree(t, host, map[string]string{"copied.txt": "copied\n", "ctx/f.txt": "from the context\n", "ctx/Dockerfile": `FROM localhost/strata-test:base
RUN echo step1 >/s1 && rm /etc/group && echo more >>/etc/base.txt
COPY f.txt /etc/f.txt
RUN cat /etc/f.txt /s1 >/s2 && mkdir /dir && mv /s1 /dir/s1 && ln /srv/linked /srv/hl
`})
	r = bh("copy", ctr, filepath.Join(host, "copied.txt"), "/etc/copied.txt")
	if r.err == nil {
		r = bh("run", "--network", "none", ctr, "--", "cat", "/etc/copied.txt")
	}
	tt.checkRun(t, "copy", prog.name, r, "copied\n")

	r = bh("commit", "-q", ctr, "localhost/strata-test:committed")
	if r.err == nil {
		r = bh("from", "--pull-never", "--name", "verify-commit", "localhost/strata-test:committed")
	}
	if r.err == nil {
		r = bh("run", "--network", "none", "verify-commit", "--", "sh", "-c", "cat /run.txt /etc/copied.txt; [ -e /etc/group ] || echo group deleted; ls /srv")
	}
	tt.checkRun(t, "commit, and run of the image", prog.name, r, "run\ncopied\ngroup deleted\nlinked\nmoved\nowned\n")

	r = bh("bud", "--network", "none", "-q", "-t", "localhost/strata-test:bud", filepath.Join(host, "ctx"))
	if r.err == nil {
		r = bh("from", "--pull-never", "--name", "verify-bud", "localhost/strata-test:bud")
	}
	if r.err == nil {
		r = bh("run", "--network", "none", "verify-bud", "--", "sh", "-c", "cat /s2 /dir/s1 /etc/base.txt; [ -e /etc/group ] || echo group deleted; cat /srv/hl")
	}
	tt.checkRun(t, "bud (RUN, COPY), and run of the image", prog.name, r, "from the context\nstep1\nstep1\nbase\nmore\ngroup deleted\nlinked\n")
}

func runErr(r toolResult) error {
	if r.err != nil {
		return errors.New(r.String())
	}
	return nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line + "\n"
}

func afterFirstLine(s string) string {
	_, rest, _ := strings.Cut(s, "\n")
	return rest
}

// rootfsMount is a root filesystem for runc and ctr on the busybox image,
// served by one of the mount programs, and how to list its changes.
type rootfsMount struct {
	mnt     string
	changes func() string // in `strata diff`'s form
}

// rootfsMounts serve the busybox image as a writable root filesystem:
// by `strata mount` of a container on the imported image (strata-fuse's
// engine, the way strata serves containers), and by fuse-overlayfs on a
// directory holding the same files.
func rootfsMounts(t *testing.T) []struct {
	name  string
	mount func(t *testing.T) rootfsMount
} {
	fo := needTool(t, "fuse-overlayfs")[0]
	return []struct {
		name  string
		mount func(t *testing.T) rootfsMount
	}{
		{"strata mount", func(t *testing.T) rootfsMount {
			s := newCLIStore(t)
			tarball, _ := busyboxTar(t)
			s.must("import", tarball, "strata-test:base")
			name := s.mustLine("create", "--name", "box", "strata-test:base")
			dir := filepath.Join(tempBase(t), "rootfs")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			mnt, _ := s.mount(name, dir)
			return rootfsMount{mnt, func() string { return s.must("diff", name) }}
		}},
		{"fuse-overlayfs", func(t *testing.T) rootfsMount {
			l := newLayout(t, 1)
			busyboxRootfs(t, l.lowers[0])
			t.Cleanup(func() { unmountT(t, l.mnt) })
			if out, err := exec.Command(fo, "-o", l.opts(), l.mnt).CombinedOutput(); err != nil {
				t.Fatalf("fuse-overlayfs: %v\n%s", err, out)
			}
			return rootfsMount{l.mnt, func() string { return upperChanges(t, l.upper, l.lowers[0]) }}
		}},
	}
}

// upperChanges lists the entries of an upper layer as `strata diff` does:
// D for a whiteout, C for a directory the lower has too, A for the rest.
func upperChanges(t testing.TB, upper, lower string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(upper, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == upper {
			return err
		}
		rel := "/" + strings.TrimPrefix(p, upper+"/")
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		_, lerr := os.Lstat(filepath.Join(lower, rel))
		switch {
		case st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0:
			b.WriteString("D " + rel + "\n")
		case d.IsDir() && lerr == nil:
			b.WriteString("C " + rel + "\n")
		default:
			b.WriteString("A " + rel + "\n")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", upper, err)
	}
	return b.String()
}

// rootfsScript reads a base file, writes one, deletes one and names the
// filesystem of /: the changes must show afterwards.
const rootfsScript = rootFSType + "; cat /etc/base.txt; echo written >/etc/new.txt; rm /etc/group; cat /etc/new.txt"

// rootfsWant is rootfsScript's output after the fstype line, and the
// changes it leaves.
const rootfsWant, rootfsWantChanges = "base\nwritten\n", "C /etc\nD /etc/group\nA /etc/new.txt\n"

// rootfsFSType is the fstype each rootfsMounts entry shows.
var rootfsFSType = map[string]string{"strata mount": "fuse.strata", "fuse-overlayfs": "fuse.fuse-overlayfs"}

// TestToolRunc runs runc on a root filesystem served by `strata mount`
// and by fuse-overlayfs, with a config from `runc spec`, and checks the
// output and the changes left in the upper layer.
func TestToolRunc(t *testing.T) {
	needFUSE(t)
	needTool(t, "runc")
	tt := newToolTable(t, nil)
	for _, m := range rootfsMounts(t) {
		tt.progs = append(tt.progs, m.name)
		t.Run(m.name, func(t *testing.T) {
			rfs := m.mount(t)
			bundle := tempBase(t)
			state := filepath.Join(bundle, "state")
			if r := runToolEnv(t, nil, "runc", "spec", "--rootless=false", "--bundle", bundle); r.err != nil {
				t.Fatalf("%v", r)
			}
			cfgPath := filepath.Join(bundle, "config.json")
			b, err := os.ReadFile(cfgPath)
			if err != nil {
				t.Fatal(err)
			}
			var spec map[string]any
			if err := json.Unmarshal(b, &spec); err != nil {
				t.Fatalf("runc spec: %v", err)
			}
			spec["root"] = map[string]any{"path": rfs.mnt, "readonly": false}
			proc := spec["process"].(map[string]any)
			proc["terminal"] = false
			proc["args"] = []string{"/bin/sh", "-c", rootfsScript}
			// A network namespace of its own (runc spec has one; make
			// sure): nothing of the host's network.
			linux := spec["linux"].(map[string]any)
			nss, _ := linux["namespaces"].([]any)
			hasNet := false
			for _, ns := range nss {
				hasNet = hasNet || ns.(map[string]any)["type"] == "network"
			}
			if !hasNet {
				linux["namespaces"] = append(nss, map[string]any{"type": "network"})
			}
			if b, err = json.Marshal(spec); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if r := runToolEnv(t, nil, "runc", "--root", state, "delete", "--force", "strata-test"); r.err != nil && !strings.Contains(r.stderr, "does not exist") {
					t.Errorf("cleanup: %v", r)
				}
			})
			r := runToolEnv(t, nil, "runc", "--root", state, "run", "--bundle", bundle, "strata-test")
			tt.checkFS(t, "run", m.name, r, rootfsFSType[m.name]+"\n", rootfsWant)
			tt.check(t, "changes after the run", m.name, rfs.changes(), rootfsWantChanges, nil, true)
		})
	}
	tt.report("runc")
}

// TestToolCtr starts a private containerd and runs `ctr run --rootfs` on
// a root filesystem served by `strata mount` and by fuse-overlayfs, then
// checks the output and the changes left in the upper layer.
func TestToolCtr(t *testing.T) {
	needFUSE(t)
	paths := needTool(t, "containerd", "ctr", "runc")
	mounts := rootfsMounts(t)
	base := tempBase(t)
	sock := filepath.Join(base, "containerd.sock")
	// Only what ctr run --rootfs needs: no CRI, no snapshotters that need
	// other filesystems, nothing listening but the socket.
	writeTree(t, base, map[string]string{"config.toml": fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = %q

[ttrpc]
  address = %q
`, filepath.Join(base, "root"), filepath.Join(base, "state"), sock, sock+".ttrpc")})
	logf, err := os.Create(filepath.Join(base, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(paths[0], "--config", filepath.Join(base, "config.toml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		// Stop it by its PID: SIGTERM, then SIGKILL if it lingers.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("containerd (pid %d) still running 10s after SIGTERM; killing it", cmd.Process.Pid)
			_ = cmd.Process.Kill()
			<-done
		}
		reapChildren(t, "containerd-shim", 10*time.Second)
		for _, mp := range mountsUnder(base) {
			_ = unix.Unmount(mp, unix.MNT_DETACH)
		}
	})
	ctr := func(args ...string) toolResult {
		t.Helper()
		return runToolEnv(t, nil, paths[1], append([]string{"--address", sock}, args...)...)
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		if r := ctr("version"); r.err == nil {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("containerd did not answer on its socket in 20s; log:\n%s", log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	tt := newToolTable(t, nil)
	for i, m := range mounts {
		tt.progs = append(tt.progs, m.name)
		t.Run(m.name, func(t *testing.T) {
			rfs := m.mount(t)
			// The shim containerd starts for the container is orphaned:
			// it becomes this process's child and is reaped when
			// containerd has stopped, not left a zombie.
			cliSubreaper(t)
			// ctr gives a container without an image no PATH: name
			// programs in full.
			r := ctr("run", "--rm", "--rootfs", rfs.mnt, "strata-test-"+strconv.Itoa(i), "/bin/sh", "-c", rootfsScript)
			if !tt.checkFS(t, "run --rootfs", m.name, r, rootfsFSType[m.name]+"\n", rootfsWant) {
				log, _ := os.ReadFile(logf.Name())
				t.Logf("containerd log:\n%s", log)
			}
			tt.check(t, "changes after the run", m.name, rfs.changes(), rootfsWantChanges, nil, true)
		})
	}
	tt.report("ctr")
}

// dynamicProgram copies a dynamically linked host program (ls) and the
// libraries ldd names for it into root, at their host paths, the program
// as usr/bin/dyn. It returns the program's path inside root.
func dynamicProgram(t testing.TB, root string) string {
	t.Helper()
	needTool(t, "ldd")
	prog, err := exec.LookPath("ls")
	if err != nil {
		t.Fatal(err)
	}
	if isStatic(prog) {
		t.Fatalf("%s is statically linked; the test needs a dynamically linked program", prog)
	}
	out, err := exec.Command("ldd", prog).Output()
	if err != nil {
		t.Fatalf("ldd %s: %v", prog, err)
	}
	files := map[string]string{"/usr/bin/dyn": prog}
	for _, f := range strings.Fields(string(out)) {
		if strings.HasPrefix(f, "/") {
			files[f] = f
		}
	}
	if len(files) < 3 {
		t.Fatalf("ldd %s names too few libraries (want the loader and libc):\n%s", prog, out)
	}
	for dst, src := range files {
		b, err := os.ReadFile(src) // follows the libraries' symlinks
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(dst)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, dst), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return "/usr/bin/dyn"
}

// execCase is one way of running a program from the mount.
type execCase struct {
	name string
	argv func(mnt string) []string
	want string
}

// execCases run a static binary (by its path in the mount, and chrooted),
// a #! script and a dynamically linked program whose loader and libraries
// come from the mount too. dir is the directory in the mount that holds
// them.
func execCases(dir string) []execCase {
	return []execCase{
		{"static binary", func(mnt string) []string { return []string{filepath.Join(mnt, dir, "busybox"), "echo", "static"} }, "static\n"},
		{"static binary, chrooted", func(mnt string) []string { return []string{"chroot", mnt, dir + "/busybox", "echo", "chrooted"} }, "chrooted\n"},
		{"#! script", func(mnt string) []string { return []string{"chroot", mnt, dir + "/script.sh", "arg"} }, "script ran arg\n"},
		{"dynamically linked", func(mnt string) []string { return []string{"chroot", mnt, dir + "/dyn", "-d", "/etc"} }, "/etc\n"},
	}
}

// execFiles puts the programs of execCases in dir below root: busybox,
// a script run by /bin/sh, and a copy of the dynamic program dyn.
func execFiles(t testing.TB, root, dir, busybox, dyn string) {
	t.Helper()
	for name, src := range map[string]string{"busybox": busybox, "dyn": dyn} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, dir, name), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, dir, "script.sh"), []byte("#!/bin/sh\necho script ran \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestToolExec execs programs from a mount of strata-fuse and of
// fuse-overlayfs: a static binary, a #! script and a dynamically linked
// program (its loader and libraries in the lower layer), each from the
// lower layer, from the upper layer, after a copy-up and after being
// written through the mount; on a writable mount, under -o
// passthrough=all (strata-fuse's) and on a read-only mount (no upper
// layer).
func TestToolExec(t *testing.T) {
	needFUSE(t)
	needTool(t, "chroot")
	busybox := staticBusybox(t)
	progs := mountPrograms(t)
	modes := []struct {
		name      string
		writable  bool
		strataOpt bool // an option only strata-fuse has
		opts      func(l *layout) string
	}{
		{"writable", true, false, func(l *layout) string { return l.opts() }},
		{"passthrough=all", true, true, func(l *layout) string { return l.opts("passthrough=all") }},
		{"read-only", false, false, func(l *layout) string { return l.roOpts() }},
	}
	tt := newToolTable(t, progs)
	for _, prog := range progs {
		for _, m := range modes {
			if m.strataOpt && prog.path != strataFuse {
				for _, src := range []string{"from the lower layer", "from the upper layer", "after a copy-up", "written through the mount"} {
					tt.notApplicable(m.name+": "+src, prog.name, "a strata-fuse option")
				}
				continue
			}
			t.Run(prog.name+"/"+m.name, func(t *testing.T) {
				l := newLayout(t, 1)
				lower := l.lowers[0]
				busyboxRootfs(t, lower)
				dyn := filepath.Join(lower, dynamicProgram(t, lower))
				execFiles(t, lower, "/lower", busybox, dyn)
				execFiles(t, lower, "/copyup", busybox, dyn)
				if m.writable {
					execFiles(t, l.upper, "/upper", busybox, dyn)
				}
				t.Cleanup(func() { unmountT(t, l.mnt) })
				if out, err := exec.Command(prog.path, "-o", m.opts(l), l.mnt).CombinedOutput(); err != nil {
					t.Fatalf("%s: %v\n%s", prog.name, err, out)
				}
				run := func(t *testing.T, source, dir string, setupErr error) {
					var errs []string
					if setupErr != nil {
						errs = append(errs, setupErr.Error())
					}
					for _, c := range execCases(dir) {
						if setupErr != nil {
							break
						}
						argv := c.argv(l.mnt)
						out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
						if err != nil || string(out) != c.want {
							errs = append(errs, fmt.Sprintf("%s (%s): got %q, %v; want %q", c.name, strings.Join(argv, " "), out, err, c.want))
						}
					}
					var err error
					if len(errs) > 0 {
						err = errors.New(strings.Join(errs, "\n"))
					}
					tt.check(t, m.name+": "+source, prog.name, "", "", err, true)
				}
				run(t, "from the lower layer", "/lower", nil)
				if !m.writable {
					if err := os.WriteFile(filepath.Join(l.mnt, "lower/new"), nil, 0o755); !errors.Is(err, unix.EROFS) {
						t.Errorf("create on the read-only mount: %v, want EROFS", err)
					}
					return
				}
				run(t, "from the upper layer", "/upper", nil)
				var err error
				now := time.Now()
				for _, f := range []string{"busybox", "script.sh", "dyn"} {
					if err == nil {
						err = os.Chtimes(filepath.Join(l.mnt, "copyup", f), now, now)
					}
					if _, serr := os.Stat(filepath.Join(l.upper, "copyup", f)); err == nil && serr != nil {
						err = fmt.Errorf("utimes of copyup/%s through the mount did not copy it up: %w", f, serr)
					}
				}
				run(t, "after a copy-up", "/copyup", err)
				execFiles(t, l.mnt, "/written", busybox, dyn)
				_, err = os.Stat(filepath.Join(l.upper, "written/dyn"))
				run(t, "written through the mount", "/written", err)
			})
		}
	}
	tt.report("exec from the mount")
}

// TestToolNodev checks that strata-fuse, like fuse-overlayfs, mounts
// nodev unless given -o dev: containers-storage drops a "nodev" of its
// mountopt from what it passes to a mount program, so the mount program
// must block device nodes that a container makes in its root filesystem
// by itself.
func TestToolNodev(t *testing.T) {
	needFUSE(t)
	for _, prog := range mountPrograms(t) {
		for _, tc := range []struct {
			extra   []string
			wantDev bool
		}{{nil, false}, {[]string{"dev"}, true}, {[]string{"dev", "nodev"}, false}, {[]string{"nodev", "dev"}, true}} {
			// A comma in the test's name would end up in its temp dirs
			// and so in the options.
			t.Run(prog.name+"/"+strings.Join(append([]string{"o"}, tc.extra...), "+"), func(t *testing.T) {
				l := newLayout(t, 1)
				t.Cleanup(func() { unmountT(t, l.mnt) })
				if out, err := exec.Command(prog.path, "-o", l.opts(tc.extra...), l.mnt).CombinedOutput(); err != nil {
					t.Fatalf("%s: %v\n%s", prog.name, err, out)
				}
				e, ok := mountEntry(l.mnt)
				if !ok {
					t.Fatalf("%s exited 0 but %s is not mounted", prog.name, l.mnt)
				}
				if got := !hasOpt(e.mountOpts, "nodev"); got != tc.wantDev {
					t.Errorf("mount options %v: devices allowed %v, want %v", e.mountOpts, got, tc.wantDev)
				}
				null := filepath.Join(l.mnt, "null")
				if err := unix.Mknod(null, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
					t.Fatalf("mknod through the mount: %v", err)
				}
				err := os.WriteFile(null, []byte("x"), 0)
				if tc.wantDev && err != nil {
					t.Errorf("write to a null device node in the mount: %v, want success", err)
				}
				if !tc.wantDev && !errors.Is(err, unix.EACCES) {
					t.Errorf("write to a null device node in a nodev mount: %v, want EACCES", err)
				}
			})
		}
	}
}

// reapChildren waits up to d for this process's children whose command
// name starts with comm to exit, and reaps them; one still running then is
// killed by its PID (a child cannot be reused before it is reaped).
func reapChildren(t testing.TB, comm string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for _, pid := range childPIDs() {
		name, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm"))
		if err != nil || !strings.HasPrefix(string(name), comm) {
			continue
		}
		for {
			var ws unix.WaitStatus
			if got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); got == pid || err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s (pid %d) still running %v after containerd stopped; killing it", strings.TrimSpace(string(name)), pid, d)
				_ = unix.Kill(pid, unix.SIGKILL)
				_, _ = unix.Wait4(pid, nil, 0, nil)
				break
			}
			time.Sleep(pollInterval)
		}
	}
}

// TestToolExecUnlinked runs a program that removes its own binary, or has
// it replaced by a rename (as a package upgrade does), and then executes
// itself again through /proc/PID/exe, which the kernel opens by the
// inode: from the lower layer (whited out) and from the upper one
// (unlinked), under strata-fuse and fuse-overlayfs.
func TestToolExecUnlinked(t *testing.T) {
	needFUSE(t)
	busybox := staticBusybox(t)
	progs := mountPrograms(t)
	tt := newToolTable(t, progs)
	for _, prog := range progs {
		for _, tc := range []struct {
			name    string
			inUpper bool
			remove  string // shell command; $B is the program's path in the mount
		}{
			{"lower binary removed", false, `rm "$B"`},
			{"lower binary replaced by rename", false, `echo new >"$B.new" && mv "$B.new" "$B"`},
			{"upper binary removed", true, `rm "$B"`},
			{"upper binary replaced by rename", true, `echo new >"$B.new" && mv "$B.new" "$B"`},
		} {
			t.Run(prog.name+"/"+tc.name, func(t *testing.T) {
				l := newLayout(t, 1)
				dir := l.lowers[0]
				if tc.inUpper {
					dir = l.upper
				}
				execFiles(t, dir, "/bin", busybox, busybox)
				t.Cleanup(func() { unmountT(t, l.mnt) })
				if out, err := exec.Command(prog.path, "-o", l.opts(), l.mnt).CombinedOutput(); err != nil {
					t.Fatalf("%s: %v\n%s", prog.name, err, out)
				}
				b := filepath.Join(l.mnt, "bin/busybox")
				cmd := exec.Command(b, "-c", tc.remove+` && exec -a echo /proc/$$/exe re-executed`)
				cmd.Args[0] = "sh" // busybox runs the applet argv[0] names
				cmd.Env = append(os.Environ(), "B="+b)
				out, err := cmd.CombinedOutput()
				if err != nil {
					err = fmt.Errorf("%w: %s", err, out)
				}
				tt.check(t, "exec of /proc/PID/exe, "+tc.name, prog.name, string(out), "re-executed\n", err, true)
			})
		}
	}
	tt.report("exec of a removed binary")
}
