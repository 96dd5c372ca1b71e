package integration

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Shared helpers for the black-box mount tests: layer layouts, running the
// mount program in its background and foreground forms, reading
// /proc/self/mountinfo, and unmounting whatever a test mounted.

const (
	// mountTimeout bounds how long a mount program may take to mount, and
	// how long a foreground daemon may take to exit after an unmount or a
	// signal.
	mountTimeout = 10 * time.Second
	// pollInterval is the sleep between two checks of a condition.
	pollInterval = 5 * time.Millisecond
)

// wantFSType is the fstype the mount shows in /proc/self/mountinfo.
func wantFSType() string { return "fuse." + filepath.Base(strataFuse) }

// layout is a set of layer directories and a mountpoint below one base
// directory: base/lower0 (top) ... base/lowerN-1, base/upper, base/work,
// base/mnt and base/outside, a sentinel directory no daemon may touch.
type layout struct {
	base    string
	lowers  []string
	upper   string
	work    string
	mnt     string
	outside string
}

// tempBase returns a fresh directory, with symlinks resolved, that every
// user can traverse (tests run commands as an unprivileged user through
// the mount).
func tempBase(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	return real
}

// newLayout creates the directories of a layout with n lower layers.
func newLayout(t testing.TB, n int) *layout {
	t.Helper()
	base := tempBase(t)
	l := &layout{
		base:    base,
		upper:   filepath.Join(base, "upper"),
		work:    filepath.Join(base, "work"),
		mnt:     filepath.Join(base, "mnt"),
		outside: filepath.Join(base, "outside"),
	}
	for i := 0; i < n; i++ {
		l.lowers = append(l.lowers, filepath.Join(base, "lower"+strconv.Itoa(i)))
	}
	for _, d := range append([]string{l.upper, l.work, l.mnt, l.outside}, l.lowers...) {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// lowerdir is the lowerdir option value, top layer first.
func (l *layout) lowerdir() string { return strings.Join(l.lowers, ":") }

// opts is the -o value for a writable mount plus any extra options.
func (l *layout) opts(extra ...string) string {
	o := []string{"lowerdir=" + l.lowerdir(), "upperdir=" + l.upper, "workdir=" + l.work}
	return strings.Join(append(o, extra...), ",")
}

// roOpts is the -o value for a mount without an upper layer.
func (l *layout) roOpts(extra ...string) string {
	return strings.Join(append([]string{"lowerdir=" + l.lowerdir()}, extra...), ",")
}

// writeTree creates files below root: a name ending in "/" is a
// directory, "->target" content makes a symlink, anything else a regular
// file with that content. Parents are created as needed.
func writeTree(t testing.TB, root string, files map[string]string) {
	t.Helper()
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		content := files[n]
		p := filepath.Join(root, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case strings.HasSuffix(n, "/"):
			err = os.MkdirAll(p, 0o755)
		case strings.HasPrefix(content, "->"):
			err = os.Symlink(strings.TrimPrefix(content, "->"), p)
		default:
			err = os.WriteFile(p, []byte(content), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// runResult is the outcome of one run of the mount program.
type runResult struct {
	code   int // exit status; -1 when killed by a signal or timed out
	stderr string
	err    error // set when the program could not run or timed out
}

// runFUSE runs the mount program to completion with a timeout and returns
// its exit status and stderr. Output goes to files, not pipes, so a
// daemon that inherits them cannot keep Wait from returning.
func runFUSE(t testing.TB, args ...string) runResult {
	t.Helper()
	out, err := os.CreateTemp(t.TempDir(), "out-")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(strataFuse, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return runResult{code: -1, err: err}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var res runResult
	select {
	case err := <-done:
		res.code = cmd.ProcessState.ExitCode()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			res.err = err
		}
	case <-time.After(mountTimeout):
		_ = cmd.Process.Kill() // our own child, by PID
		<-done
		res.code, res.err = -1, fmt.Errorf("%s did not exit within %v", filepath.Base(strataFuse), mountTimeout)
	}
	b, _ := os.ReadFile(out.Name())
	res.stderr = string(b)
	return res
}

// mountFUSE mounts in the background form (no -f): the program must exit 0
// with the mount live. The mount is undone in t.Cleanup. It returns the
// program's stderr.
func mountFUSE(t testing.TB, mnt string, args ...string) string {
	t.Helper()
	t.Cleanup(func() { unmountT(t, mnt) })
	res := runFUSE(t, args...)
	if res.err != nil || res.code != 0 {
		t.Fatalf("%s %s: exit %d, err %v; stderr:\n%s", filepath.Base(strataFuse), strings.Join(args, " "), res.code, res.err, res.stderr)
	}
	if _, ok := mountEntry(mnt); !ok {
		t.Fatalf("%s exited 0 but %s is not in /proc/self/mountinfo; stderr:\n%s", filepath.Base(strataFuse), mnt, res.stderr)
	}
	return res.stderr
}

// unmountT unmounts everything mounted on mnt: a plain unmount first,
// retried briefly while busy, then a lazy (MNT_DETACH) one.
func unmountT(t testing.TB, mnt string) {
	t.Helper()
	for i := 0; i < 8; i++ {
		if _, ok := mountEntry(mnt); !ok {
			return
		}
		err := unix.Unmount(mnt, 0)
		if err != nil && (errors.Is(err, unix.EBUSY) && i < 4) {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if err != nil && !errors.Is(err, unix.EINVAL) {
			if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
				t.Errorf("unmount %s: %v", mnt, err)
				return
			}
		}
	}
	if _, ok := mountEntry(mnt); ok {
		t.Errorf("%s is still mounted after repeated unmounts", mnt)
	}
}

// fuseProc is a foreground (-f) mount program run as the test's child.
type fuseProc struct {
	cmd    *exec.Cmd
	mnt    string
	errf   string        // file collecting stdout and stderr
	done   chan struct{} // closed once the process has been waited for
	waitEr error
}

// startFUSE starts the mount program in the foreground form (args should
// contain -f) and waits until mnt shows in /proc/self/mountinfo. On
// cleanup it unmounts, waits for the process, and kills it (by PID) only
// if it is still running after that.
func startFUSE(t testing.TB, mnt string, args ...string) *fuseProc {
	t.Helper()
	p := startFUSENoWait(t, mnt, args...)
	deadline := time.Now().Add(mountTimeout)
	for {
		if _, ok := mountEntry(mnt); ok {
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited (%v) before %s was mounted; stderr:\n%s", filepath.Base(strataFuse), p.waitEr, mnt, p.stderr())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not mounted within %v; stderr:\n%s", mnt, mountTimeout, p.stderr())
		}
		time.Sleep(pollInterval)
	}
}

// startFUSENoWait starts the mount program as a child without waiting for
// the mount; cleanup as for startFUSE.
func startFUSENoWait(t testing.TB, mnt string, args ...string) *fuseProc {
	t.Helper()
	out, err := os.CreateTemp(t.TempDir(), "fg-")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	p := &fuseProc{cmd: exec.Command(strataFuse, args...), mnt: mnt, errf: out.Name(), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = out, out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.waitEr = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			unmountT(t, mnt)
		}
		if !p.wait(mountTimeout) {
			t.Errorf("%s (pid %d) still running after unmount; killing it", filepath.Base(strataFuse), p.cmd.Process.Pid)
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		unmountT(t, mnt)
	})
	return p
}

// exited reports whether the process has ended.
func (p *fuseProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits up to d for the process to end and reports whether it did.
func (p *fuseProc) wait(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// status describes how the ended process finished, e.g. "exit 0".
func (p *fuseProc) status() string {
	ps := p.cmd.ProcessState
	if ps == nil {
		return "still running"
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "killed by " + ws.Signal().String()
	}
	return "exit " + strconv.Itoa(ps.ExitCode())
}

// stderr returns what the process wrote so far.
func (p *fuseProc) stderr() string {
	b, _ := os.ReadFile(p.errf)
	return string(b)
}

// mountInfo is one line of /proc/self/mountinfo.
type mountInfo struct {
	dev        uint64 // from the major:minor field
	mountPoint string
	mountOpts  []string // per-mount options (ro/rw, nodev, ...)
	fsType     string
	source     string
	superOpts  []string
}

// mountEntries returns the entries mounted on mnt, bottom first.
func mountEntries(mnt string) []mountInfo {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []mountInfo
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		sep := -1
		for i, s := range f {
			if s == "-" && i >= 6 {
				sep = i
				break
			}
		}
		if sep < 0 || len(f) < sep+4 {
			continue
		}
		if unescapeMountinfo(f[4]) != mnt {
			continue
		}
		var maj, min uint32
		if _, err := fmt.Sscanf(f[2], "%d:%d", &maj, &min); err != nil {
			continue
		}
		out = append(out, mountInfo{
			dev:        unix.Mkdev(maj, min),
			mountPoint: mnt,
			mountOpts:  strings.Split(f[5], ","),
			fsType:     f[sep+1],
			source:     unescapeMountinfo(f[sep+2]),
			superOpts:  strings.Split(f[sep+3], ","),
		})
	}
	return out
}

// mountEntry returns the topmost entry mounted on mnt.
func mountEntry(mnt string) (mountInfo, bool) {
	e := mountEntries(mnt)
	if len(e) == 0 {
		return mountInfo{}, false
	}
	return e[len(e)-1], true
}

// unescapeMountinfo undoes the octal escapes (\040 ...) of mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// hasOpt reports whether opts contains o.
func hasOpt(opts []string, o string) bool {
	for _, x := range opts {
		if x == o {
			return true
		}
	}
	return false
}

// waitUnmounted waits up to d for mnt to leave mountinfo.
func waitUnmounted(mnt string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if _, ok := mountEntry(mnt); !ok {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pollInterval)
	}
}

// procsMentioning returns the PIDs of live (non-zombie) processes, other
// than this one, whose command line contains s. It reads /proc directly.
func procsMentioning(s string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmdline, []byte(s)) {
			continue
		}
		if st, _, err := procStat(pid); err != nil || st == 'Z' || st == 'X' {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// procStat returns the state letter and parent PID of pid from
// /proc/PID/stat.
func procStat(pid int) (state byte, ppid int, err error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, 0, err
	}
	// The command name is in parentheses and may contain spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("bad stat for pid %d", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 || len(f[0]) == 0 {
		return 0, 0, fmt.Errorf("bad stat for pid %d", pid)
	}
	ppid, err = strconv.Atoi(f[1])
	return f[0][0], ppid, err
}

// childPIDs returns the PIDs whose parent is this process.
func childPIDs() []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, ppid, err := procStat(pid); err == nil && ppid == os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids
}

// treeSnapshot describes every entry below root (root itself as "."):
// type, permissions, owner, size, mtime, and content or link target. Paths
// whose first element is in skip are left out. Access times are not
// recorded: reading a layer legitimately changes them.
func treeSnapshot(t testing.TB, root string, skip ...string) map[string]string {
	t.Helper()
	snap := map[string]string{}
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		first := strings.SplitN(rel, string(filepath.Separator), 2)[0]
		for _, s := range skip {
			if first == s {
				if fi.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		st := fi.Sys().(*syscall.Stat_t)
		d := fmt.Sprintf("%v uid=%d gid=%d size=%d mtime=%d.%09d", fi.Mode(), st.Uid, st.Gid, st.Size, st.Mtim.Sec, st.Mtim.Nsec)
		d += xattrString(p)
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			d += " -> " + target
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			d += fmt.Sprintf(" %q", b)
		}
		snap[rel] = d
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", root, err)
	}
	return snap
}

// xattrString describes the extended attributes of p (not following a
// final symlink), or "" when it has none.
func xattrString(p string) string {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil || n == 0 {
		return ""
	}
	names := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
	sort.Strings(names)
	var b strings.Builder
	for _, name := range names {
		v := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			fmt.Fprintf(&b, " xattr %s: %v", name, err)
			continue
		}
		fmt.Fprintf(&b, " xattr %s=%q", name, v[:m])
	}
	return b.String()
}

// diffSnapshots lists the differences between two snapshots, one a line.
func diffSnapshots(before, after map[string]string) []string {
	var diffs []string
	for p, b := range before {
		a, ok := after[p]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("removed %s (was %s)", p, b))
		case a != b:
			diffs = append(diffs, fmt.Sprintf("changed %s: %s -> %s", p, b, a))
		}
	}
	for p, a := range after {
		if _, ok := before[p]; !ok {
			diffs = append(diffs, fmt.Sprintf("added %s (%s)", p, a))
		}
	}
	sort.Strings(diffs)
	return diffs
}

// toolDebs names the Debian package that installs each tool.
var toolDebs = map[string]string{
	"podman": "podman", "buildah": "buildah", "conmon": "conmon", "runc": "runc",
	"containerd": "containerd", "ctr": "containerd", "fuse-overlayfs": "fuse-overlayfs",
	"ldd": "libc-bin", "chroot": "coreutils", "tar": "tar",
	"debootstrap": "debootstrap", "apt-get": "apt",
	"rsync": "rsync", "find": "findutils", "du": "coreutils",
}

// needTool returns the paths of tools. A missing one skips the test,
// except with CI=true, where every tool is installed and a missing one is
// a failure.
func needTool(t testing.TB, tools ...string) []string {
	t.Helper()
	var paths []string
	for _, tool := range tools {
		p, err := exec.LookPath(tool)
		if err != nil {
			missingTool(t, fmt.Sprintf("needs %s (apt-get install %s)", tool, toolDebs[tool]))
		}
		paths = append(paths, p)
	}
	return paths
}

// staticBusybox returns a statically linked busybox: a container image
// needs nothing else.
func staticBusybox(t testing.TB) string {
	t.Helper()
	var cands []string
	if p, err := exec.LookPath("busybox"); err == nil {
		cands = append(cands, p)
	}
	for _, p := range append(cands, "/bin/busybox", "/usr/bin/busybox") {
		if isStatic(p) {
			return p
		}
	}
	missingTool(t, "needs a static busybox (apt-get install busybox-static)")
	return ""
}

// isStatic reports whether p is an ELF executable without a program
// interpreter.
func isStatic(p string) bool {
	f, err := elf.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, ph := range f.Progs {
		if ph.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// missingTool skips a test whose tool is missing, except with CI=true,
// where every tool is installed and a missing one is a failure.
func missingTool(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}
