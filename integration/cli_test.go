package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Black-box tests of the strata command: a user's way from a layer
// tarball to a stack, its changes and the layer committed from them; the
// errors on that way; and every command's help. The helpers here (a store
// per test, running strata, tracking the mount daemons it starts, layer
// tarballs built in Go, trees hashed through a mount) serve crash_test.go
// too.

var cliUpdate = flag.Bool("update", false, "rewrite the golden files under testdata/ with the output got")

const (
	// cliTimeout bounds one run of strata.
	cliTimeout = time.Minute
	// daemonExitTimeout bounds how long a mount daemon may take to exit
	// once unmounted or killed.
	daemonExitTimeout = 10 * time.Second
)

var (
	chainIDRE   = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	commitOutRE = regexp.MustCompile(`^layer:   (sha256:[0-9a-f]{64})\ndiff ID: (sha256:[0-9a-f]{64})\ndigest:  (sha256:[0-9a-f]{64}) \((application/vnd\.oci\.image\.layer\.v1\.tar(?:\+gzip|\+zstd)?), ([0-9.]+[kMGTP]?B)\)\n$`)
)

// cliResult is the outcome of one run of strata.
type cliResult struct {
	args   []string
	code   int // exit status; -1 when killed or timed out
	stdout string
	stderr string
	err    error // set when strata could not run, or timed out
}

func (r cliResult) String() string {
	s := fmt.Sprintf("strata %s: exit %d", strings.Join(r.args, " "), r.code)
	if r.err != nil {
		s += fmt.Sprintf(" (%v)", r.err)
	}
	return s + "\nstdout:\n" + r.stdout + "stderr:\n" + r.stderr
}

// cliOpts are the less common ways to run strata.
type cliOpts struct {
	env   []string  // added to the environment
	stdin io.Reader // nil: /dev/null
}

// cliEnv is this process's environment without what changes strata's
// behaviour, plus extra.
func cliEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "STRATA_ROOT=") || strings.HasPrefix(kv, "SOURCE_DATE_EPOCH=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// cliCommand returns an unstarted strata with args whose output goes to
// new files in dir ("": the default temporary directory), not pipes: a
// daemon it starts could keep a pipe open.
func cliCommand(dir string, o cliOpts, args ...string) (cmd *exec.Cmd, stdout, stderr *os.File, err error) {
	if stdout, err = os.CreateTemp(dir, "stdout-"); err != nil {
		return nil, nil, nil, err
	}
	if stderr, err = os.CreateTemp(dir, "stderr-"); err != nil {
		stdout.Close()
		return nil, nil, nil, err
	}
	cmd = exec.Command(strataBin, args...)
	cmd.Env = cliEnv(o.env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = o.stdin, stdout, stderr
	return cmd, stdout, stderr, nil
}

// cliRun runs strata to completion, killing it (by PID: it is this
// process's child) if it takes over cliTimeout.
func cliRun(t testing.TB, o cliOpts, args ...string) cliResult {
	t.Helper()
	res := cliResult{args: args, code: -1}
	cmd, stdout, stderr, err := cliCommand("", o, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(stdout.Name())
	defer os.Remove(stderr.Name())
	defer stdout.Close()
	defer stderr.Close()
	if err := cmd.Start(); err != nil {
		res.err = err
		return res
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		res.code = cmd.ProcessState.ExitCode()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			res.err = err
		}
	case <-time.After(cliTimeout):
		_ = cmd.Process.Kill()
		<-done
		res.err = fmt.Errorf("did not exit within %v", cliTimeout)
	}
	b, _ := os.ReadFile(stdout.Name())
	res.stdout = string(b)
	b, _ = os.ReadFile(stderr.Name())
	res.stderr = string(b)
	return res
}

// cliStore is a strata store of one test, under its temp dir, and the
// mount daemons started on it, which t.Cleanup unmounts and waits for.
type cliStore struct {
	t    testing.TB
	root string

	mu      sync.Mutex
	daemons []*daemonWatch
}

// newCLIStore makes an empty store root and makes this process the
// child subreaper for the test (see cliSubreaper).
func newCLIStore(t testing.TB) *cliStore {
	t.Helper()
	needFUSE(t)
	s := &cliStore{t: t, root: filepath.Join(tempBase(t), "root")}
	cliSubreaper(t)
	t.Cleanup(s.cleanup)
	return s
}

// args puts --root after the command name.
func (s *cliStore) args(args []string) []string {
	if len(args) == 0 {
		return args
	}
	return append([]string{args[0], "--root", s.root}, args[1:]...)
}

// run runs `strata ARGS` on the store.
func (s *cliStore) run(args ...string) cliResult {
	s.t.Helper()
	return s.runWith(cliOpts{}, args...)
}

func (s *cliStore) runWith(o cliOpts, args ...string) cliResult {
	s.t.Helper()
	return cliRun(s.t, o, s.args(args)...)
}

// must runs `strata ARGS`, which must succeed, and returns its stdout.
func (s *cliStore) must(args ...string) string {
	s.t.Helper()
	return s.mustWith(cliOpts{}, args...)
}

func (s *cliStore) mustWith(o cliOpts, args ...string) string {
	s.t.Helper()
	r := s.runWith(o, args...)
	if r.code != 0 || r.err != nil {
		s.t.Fatalf("%v", r)
	}
	return r.stdout
}

// mustLine runs `strata ARGS` and returns its one line of output.
func (s *cliStore) mustLine(args ...string) string {
	s.t.Helper()
	out := s.must(args...)
	if strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "\n") {
		s.t.Fatalf("strata %s: got output %q, want one line", strings.Join(args, " "), out)
	}
	return strings.TrimSuffix(out, "\n")
}

// cliListing is a row of `strata ls --format json`, and the part of
// `strata inspect` that is the same.
type cliListing struct {
	Name       string
	Kind       string
	Parent     string
	ID         string
	Created    time.Time
	Size       int64
	SharedSize int64
	MountedAt  string
	DaemonPid  int
}

// cliInspect is an element of `strata inspect`.
type cliInspect struct {
	cliListing
	ChainID string
	Layer   *struct {
		MediaType        string
		Digest           string
		Size             int64
		DiffID           string
		UncompressedSize int64
	}
	Mount *struct {
		Lowers []string
		Upper  string
		Work   string
	}
}

// list returns `strata ls --format json`.
func (s *cliStore) list() []cliListing {
	s.t.Helper()
	out := s.must("ls", "--format", "json")
	var ls []cliListing
	if err := json.Unmarshal([]byte(out), &ls); err != nil {
		s.t.Fatalf("strata ls --format json: %v; output:\n%s", err, out)
	}
	return ls
}

// inspect returns `strata inspect NAME...`.
func (s *cliStore) inspect(names ...string) []cliInspect {
	s.t.Helper()
	out := s.must(append([]string{"inspect"}, names...)...)
	var in []cliInspect
	if err := json.Unmarshal([]byte(out), &in); err != nil {
		s.t.Fatalf("strata inspect: %v; output:\n%s", err, out)
	}
	if len(in) != len(names) {
		s.t.Fatalf("strata inspect %s: got %d elements, want %d; output:\n%s", strings.Join(names, " "), len(in), len(names), out)
	}
	return in
}

// mount runs `strata mount NAME [DIR]` and starts watching the daemon it
// started; it returns the mountpoint printed.
func (s *cliStore) mount(name string, dir ...string) (string, *daemonWatch) {
	s.t.Helper()
	mnt := s.mustLine(append([]string{"mount", name}, dir...)...)
	in := s.inspect(name)[0]
	if in.DaemonPid <= 0 || in.MountedAt != mnt {
		s.t.Fatalf("strata inspect %s after mount: DaemonPid %d, MountedAt %q; want a pid and %q", name, in.DaemonPid, in.MountedAt, mnt)
	}
	w := watchDaemon(in.DaemonPid, name, mnt)
	s.mu.Lock()
	s.daemons = append(s.daemons, w)
	s.mu.Unlock()
	return mnt, w
}

// unmount runs `strata unmount NAME` and checks that the daemon w is gone
// and so is the mount.
func (s *cliStore) unmount(name string, w *daemonWatch) {
	s.t.Helper()
	s.must("unmount", name)
	if !w.wait(daemonExitTimeout) {
		s.t.Fatalf("strata unmount %s returned, but its daemon (pid %d) still runs after %v", name, w.pid, daemonExitTimeout)
	}
	if _, ok := mountEntry(w.dir); ok {
		s.t.Fatalf("strata unmount %s returned, but %s is still mounted", name, w.dir)
	}
}

// cleanup unmounts what the test left mounted, waits for the daemons,
// and detaches any mount left under the root (those of killed daemons).
func (s *cliStore) cleanup() {
	t := s.t
	s.mu.Lock()
	daemons := s.daemons
	s.mu.Unlock()
	for _, w := range daemons {
		if w.exited() {
			continue
		}
		if r := cliRun(t, cliOpts{}, s.args([]string{"unmount", "--lazy", w.name})...); r.code != 0 {
			if err := unix.Unmount(w.dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
				t.Errorf("cleanup: unmount %s: %v (strata unmount: %v)", w.dir, err, r)
			}
		}
		if !w.wait(daemonExitTimeout) {
			t.Errorf("cleanup: daemon of %s (pid %d) still runs %v after its unmount; killing it", w.name, w.pid, daemonExitTimeout)
			w.kill()
			w.wait(daemonExitTimeout)
		}
	}
	for _, mp := range mountsUnder(s.root) {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			t.Errorf("cleanup: unmount %s: %v", mp, err)
		}
	}
	for _, w := range daemons {
		w.stopWatching()
	}
}

// mountsUnder lists the mountpoints in /proc/self/mountinfo at or below
// dir.
func mountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Strings(out)
	return out
}

// cliSubreaper makes this process the child subreaper until the test
// ends: a mount daemon, orphaned when `strata mount` exits, becomes this
// process's child. So the test reaps it at once (not whenever init gets to
// it, which strata, polling for its exit, would wait on), and its PID
// cannot be reused before the test has reaped it, which makes killing it
// by PID safe.
func cliSubreaper(t testing.TB) {
	t.Helper()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("PR_SET_CHILD_SUBREAPER: %v", err)
	}
	t.Cleanup(func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
}

// daemonWatch follows one mount daemon: it reaps it as soon as it exits.
type daemonWatch struct {
	pid  int
	name string // the stack it serves
	dir  string // its mountpoint

	done   chan struct{} // closed once the daemon is gone (and reaped)
	stop   chan struct{}
	once   sync.Once
	status string // how it ended; set before done is closed
}

func watchDaemon(pid int, name, dir string) *daemonWatch {
	w := &daemonWatch{pid: pid, name: name, dir: dir, done: make(chan struct{}), stop: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			var ws unix.WaitStatus
			got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
			switch {
			case got == pid:
				w.status = waitStatusString(ws)
				return
			case errors.Is(err, unix.ECHILD) && pidGone(pid):
				// Not this process's child (the subreaper was not
				// set when it was orphaned): someone else reaps it.
				w.status = "exited (reaped by another process)"
				return
			}
			select {
			case <-w.stop:
				w.status = "no longer watched"
				return
			case <-time.After(pollInterval):
			}
		}
	}()
	return w
}

func waitStatusString(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + unix.SignalName(ws.Signal())
	}
	return "exit " + strconv.Itoa(ws.ExitStatus())
}

// pidGone reports whether pid has exited (a zombie counts as exited).
func pidGone(pid int) bool {
	if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
		return true
	}
	st, _, err := procStat(pid)
	return err != nil || st == 'Z' || st == 'X'
}

func (w *daemonWatch) exited() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// wait waits up to d for the daemon to exit and reports whether it did.
func (w *daemonWatch) wait(d time.Duration) bool {
	select {
	case <-w.done:
		return true
	case <-time.After(d):
		return false
	}
}

// kill sends SIGKILL to the daemon, by PID, unless it has been reaped
// (then the PID may be another process's).
func (w *daemonWatch) kill() {
	if !w.exited() {
		_ = unix.Kill(w.pid, unix.SIGKILL)
	}
}

func (w *daemonWatch) stopWatching() { w.once.Do(func() { close(w.stop) }) }

// cliFileMode is the mode of the files of cliLayer's layers; directories
// are 0755.
const cliFileMode = 0o644

// cliLayer encodes files (as writeTree takes them: a name ending in "/"
// is a directory, "->target" a symlink) as a layer tarball, gzipped if
// comp is "gzip", with parents before their entries. It returns the blob
// and its diff ID.
func cliLayer(t testing.TB, files map[string]string, comp string) ([]byte, string) {
	t.Helper()
	var blob bytes.Buffer
	var w io.Writer = &blob
	var zw *gzip.Writer
	if comp == "gzip" {
		zw = gzip.NewWriter(&blob)
		w = zw
	}
	diff := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(w, diff))
	mtime := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, name := range cliNames(files) {
		content := files[name]
		hdr := &tar.Header{Name: name, Mode: cliFileMode, ModTime: mtime, Format: tar.FormatPAX}
		switch {
		case strings.HasSuffix(name, "/"):
			hdr.Typeflag, hdr.Mode = tar.TypeDir, 0o755
		case strings.HasPrefix(content, "->"):
			hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, strings.TrimPrefix(content, "->"), 0o777
		default:
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(content))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := io.WriteString(tw, content); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return blob.Bytes(), "sha256:" + hex.EncodeToString(diff.Sum(nil))
}

// cliNames returns the names of files and their missing parent
// directories ("a/" for "a/b"), sorted, so parents come first.
func cliNames(files map[string]string) []string {
	set := map[string]bool{}
	for n := range files {
		set[n] = true
		for d := filepath.Dir(strings.TrimSuffix(n, "/")); d != "."; d = filepath.Dir(d) {
			set[d+"/"] = true
		}
	}
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// cliTreeOf describes files (see cliLayer) as cliTree describes a
// directory holding them.
func cliTreeOf(files map[string]string) map[string]string {
	tree := map[string]string{}
	for _, n := range cliNames(files) {
		c, ok := files[n]
		switch {
		case strings.HasSuffix(n, "/"):
			tree[strings.TrimSuffix(n, "/")] = "dir 0755"
		case ok && strings.HasPrefix(c, "->"):
			tree[n] = "symlink -> " + strings.TrimPrefix(c, "->")
		default:
			tree[n] = cliFileDesc(cliFileMode, []byte(c))
		}
	}
	return tree
}

func cliFileDesc(mode os.FileMode, content []byte) string {
	sum := sha256.Sum256(content)
	return fmt.Sprintf("file %04o %d %x", mode.Perm(), len(content), sum[:8])
}

// cliTree describes every entry below root, root itself left out: its
// type, permissions, and content hash or link target, by slash path.
// Times are left out: a commit need not keep them, and reading changes
// them.
func cliTree(t testing.TB, root string) map[string]string {
	t.Helper()
	tree, err := hashTree(root)
	if err != nil {
		t.Fatalf("hash %s: %v", root, err)
	}
	return tree
}

// fileSHA256 returns the size and SHA-256 of the file p's content.
func fileSHA256(p string) (int64, []byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, nil, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return n, h.Sum(nil), err
}

func hashTree(root string) (map[string]string, error) {
	tree := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case fi.IsDir():
			tree[rel] = fmt.Sprintf("dir %04o", fi.Mode().Perm())
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			tree[rel] = "symlink -> " + target
		case fi.Mode().IsRegular():
			n, sum, err := fileSHA256(p)
			if err != nil {
				return err
			}
			tree[rel] = fmt.Sprintf("file %04o %d %x", fi.Mode().Perm(), n, sum[:8])
		default:
			tree[rel] = fmt.Sprintf("other %v", fi.Mode())
		}
		return nil
	})
	return tree, err
}

// treeDiff describes how got differs from want, one line each, or ""
// when they are the same.
func treeDiff(want, got map[string]string) string {
	d := diffSnapshots(want, got)
	if len(d) == 0 {
		return ""
	}
	return strings.Join(d, "\n")
}

// cliTable splits a table as `strata ls` prints it into its header and
// rows of cells, cut at the columns where the header's words start.
func cliTable(t testing.TB, out string) ([]string, []map[string]string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	header := strings.Fields(lines[0])
	var starts []int
	for _, h := range header {
		i := strings.Index(lines[0], h)
		if len(starts) > 0 && i <= starts[len(starts)-1] {
			t.Fatalf("table header %q: columns out of order", lines[0])
		}
		starts = append(starts, i)
	}
	var rows []map[string]string
	for _, l := range lines[1:] {
		row := map[string]string{}
		for i, h := range header {
			end := len(l)
			if i+1 < len(starts) && starts[i+1] < end {
				end = starts[i+1]
			}
			if starts[i] < end {
				row[h] = strings.TrimSpace(l[starts[i]:end])
			}
		}
		rows = append(rows, row)
	}
	return header, rows
}

// blobDigest is the digest of b as strata prints digests.
func blobDigest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// cliBaseFiles is the base layer of the CLI tests.
var cliBaseFiles = map[string]string{
	"etc/":          "",
	"etc/hostname":  "base\n",
	"etc/passwd":    "root:x:0:0:root:/root:/bin/sh\n",
	"usr/bin/tool":  "#!/bin/sh\necho tool\n",
	"usr/bin/link":  "->tool",
	"del-me.txt":    "doomed\n",
	"var/empty/":    "",
	"var/lib/state": strings.Repeat("state ", 1000),
}

// writeFile writes content to path and fsyncs it.
func writeFile(path string, content []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, cliFileMode)
	if err != nil {
		return err
	}
	_, err = f.Write(content)
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

// TestCLIFlow follows a user: apply a layer tarball, create a stack on
// it, mount it, change it, list and diff the changes, commit them while
// mounted, create a stack on the new layer and find them there, export
// the layer, inspect, unmount, and remove what may be removed.
func TestCLIFlow(t *testing.T) {
	s := newCLIStore(t)
	blob, diffID := cliLayer(t, cliBaseFiles, "gzip")
	layerFile := filepath.Join(t.TempDir(), "base.tar.gz")
	if err := os.WriteFile(layerFile, blob, 0o644); err != nil {
		t.Fatal(err)
	}

	// apply, twice: one layer, named by its chain ID (a base layer's is
	// its diff ID).
	base := s.mustLine("layer", "apply", layerFile)
	if !chainIDRE.MatchString(base) {
		t.Fatalf("strata layer apply: got %q, want a chain ID sha256:<64 hex>", base)
	}
	if base != diffID {
		t.Errorf("strata layer apply: got chain ID %s, want the layer's diff ID %s", base, diffID)
	}
	if again := s.mustLine("layer", "apply", layerFile); again != base {
		t.Errorf("strata layer apply again: got %s, want %s", again, base)
	}
	short := strings.TrimPrefix(base, "sha256:")[:12]
	if got := s.must("ls", "-q"); got != short+"\n" {
		t.Errorf("strata ls -q after applying one layer twice: got %q, want %q", got, short+"\n")
	}
	if got := s.must("ls", "-q", "--no-trunc"); got != base+"\n" {
		t.Errorf("strata ls -q --no-trunc: got %q, want %q", got, base+"\n")
	}

	// create, by full name and by a 12-digit prefix.
	if got := s.mustLine("create", "--name", "web", base); got != "web" {
		t.Errorf("strata create --name web: got %q, want %q", got, "web")
	}
	if got := s.mustLine("create", "--name", "by-prefix", short); got != "by-prefix" {
		t.Errorf("strata create --name by-prefix %s: got %q", short, got)
	}
	if in := s.inspect("by-prefix")[0]; in.Parent != base || in.Kind != "active" {
		t.Errorf("stack created on prefix %s: got parent %q kind %q, want %q active", short, in.Parent, in.Kind, base)
	}
	s.must("rm", "by-prefix")
	random := s.mustLine("create", base)
	if !regexp.MustCompile(`^stack-[0-9a-f]{12}$`).MatchString(random) {
		t.Errorf("strata create without --name: got name %q, want stack-<12 hex>", random)
	}
	s.must("rm", random)

	// mount: the mountpoint printed is live, with the layer's files.
	mnt, web := s.mount("web")
	if !filepath.IsAbs(mnt) {
		t.Errorf("strata mount web: got %q, want an absolute path", mnt)
	}
	if e, ok := mountEntry(mnt); !ok || !strings.HasPrefix(e.fsType, "fuse") {
		t.Fatalf("strata mount web printed %s, which is not a FUSE mount (%+v, %v)", mnt, e, ok)
	}
	if d := treeDiff(cliTreeOf(cliBaseFiles), cliTree(t, mnt)); d != "" {
		t.Fatalf("tree of the mounted stack differs from the layer's:\n%s", d)
	}

	// Change a file, delete one, add a directory with a file.
	if err := writeFile(filepath.Join(mnt, "etc/hostname"), []byte("web\n")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(mnt, "del-me.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(mnt, "newdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := writeFile(filepath.Join(mnt, "newdir/f"), []byte("new\n")); err != nil {
		t.Fatal(err)
	}
	wantFiles := map[string]string{}
	for k, v := range cliBaseFiles {
		wantFiles[k] = v
	}
	wantFiles["etc/hostname"] = "web\n"
	delete(wantFiles, "del-me.txt")
	wantFiles["newdir/f"] = "new\n"
	wantTree := cliTreeOf(wantFiles)
	if d := treeDiff(wantTree, cliTree(t, mnt)); d != "" {
		t.Fatalf("tree of the changed stack:\n%s", d)
	}

	// diff, as docker diff prints it.
	wantDiff := "D /del-me.txt\nC /etc\nC /etc/hostname\nA /newdir\nA /newdir/f\n"
	if got := s.must("diff", "web"); got != wantDiff {
		t.Errorf("strata diff web: got\n%s\nwant\n%s", got, wantDiff)
	}

	// ls: a table with web mounted at mnt.
	header, rows := cliTable(t, s.must("ls"))
	if want := []string{"NAME", "KIND", "PARENT", "SIZE", "CREATED", "MOUNTED"}; strings.Join(header, " ") != strings.Join(want, " ") {
		t.Errorf("strata ls header: got %v, want %v", header, want)
	}
	wantRows := []map[string]string{
		{"NAME": "web", "KIND": "active", "PARENT": short, "MOUNTED": mnt},
		{"NAME": short, "KIND": "committed", "PARENT": "-", "MOUNTED": "-"},
	}
	if len(rows) != len(wantRows) {
		t.Fatalf("strata ls: got %d rows %v, want %d", len(rows), rows, len(wantRows))
	}
	for i, want := range wantRows {
		for col, v := range want {
			if rows[i][col] != v {
				t.Errorf("strata ls row %d column %s: got %q, want %q (row %v)", i, col, rows[i][col], v, rows[i])
			}
		}
		if rows[i]["SIZE"] == "" || rows[i]["CREATED"] == "" {
			t.Errorf("strata ls row %d: empty SIZE or CREATED: %v", i, rows[i])
		}
	}

	// ls --format json.
	ls := s.list()
	if len(ls) != 2 || ls[0].Name != "web" || ls[0].MountedAt != mnt || ls[0].DaemonPid != web.pid || ls[1].Name != base || ls[1].Kind != "committed" {
		t.Errorf("strata ls --format json: got %+v", ls)
	}

	// commit while mounted: layer, diff ID and digest.
	out := s.must("commit", "web")
	m := commitOutRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("strata commit web: got\n%s\nwant lines layer:, diff ID:, digest: (see commitOutRE)", out)
	}
	layer, layerDiffID, layerDigest, mediaType := m[1], m[2], m[3], m[4]
	if mediaType != "application/vnd.oci.image.layer.v1.tar+gzip" {
		t.Errorf("strata commit: media type %s, want gzip's by default", mediaType)
	}
	if got := s.mustLine("commit", "-q", "web"); got != layer {
		t.Errorf("strata commit -q web with nothing changed since: got %q, want the same layer %s", got, layer)
	}
	if d := treeDiff(wantTree, cliTree(t, mnt)); d != "" {
		t.Errorf("commit changed the mounted stack:\n%s", d)
	}

	// A stack on the committed layer has the changes.
	s.mustLine("create", "--name", "web2", layer)
	dir2 := filepath.Join(tempBase(t), "web2")
	if err := os.Mkdir(dir2, 0o755); err != nil {
		t.Fatal(err)
	}
	if got, w := s.mount("web2", dir2); got != dir2 {
		t.Errorf("strata mount web2 %s: printed %q", dir2, got)
	} else {
		// unmount by mountpoint, and mount there again.
		s.must("unmount", dir2)
		if !w.wait(daemonExitTimeout) {
			t.Fatalf("strata unmount %s: its daemon (pid %d) still runs", dir2, w.pid)
		}
		if _, err := os.Stat(dir2); err != nil {
			t.Errorf("strata unmount removed %s, a mountpoint the user gave: %v", dir2, err)
		}
		s.mount("web2", dir2)
	}
	if d := treeDiff(wantTree, cliTree(t, dir2)); d != "" {
		t.Errorf("stack on the committed layer differs from the stack committed:\n%s", d)
	}
	if got := s.must("diff", "web2"); got != "" {
		t.Errorf("strata diff of a fresh stack: got %q, want nothing", got)
	}
	if got := s.must("diff", layer); got != wantDiff {
		t.Errorf("strata diff LAYER (its own changes): got\n%s\nwant\n%s", got, wantDiff)
	}

	// export: the bytes whose digest commit printed.
	exported := filepath.Join(t.TempDir(), "out.tar.gz")
	s.must("layer", "export", layer, exported)
	eb, err := os.ReadFile(exported)
	if err != nil {
		t.Fatal(err)
	}
	if got := blobDigest(eb); got != layerDigest {
		t.Errorf("sha256 of strata layer export: got %s, want the digest commit printed, %s", got, layerDigest)
	}

	// inspect.
	in := s.inspect("web", layer)
	if w := in[0]; w.Name != "web" || w.Kind != "active" || w.Parent != base || w.MountedAt != mnt || w.DaemonPid != web.pid ||
		w.Mount == nil || len(w.Mount.Lowers) != 1 || w.Mount.Upper == "" || w.Mount.Work == "" {
		t.Errorf("strata inspect web: got %+v (mount %+v)", w, w.Mount)
	}
	if l := in[1]; l.ChainID != layer || l.Parent != base || l.Kind != "committed" || l.Layer == nil ||
		l.Layer.Digest != layerDigest || l.Layer.DiffID != layerDiffID || l.Layer.Size != int64(len(eb)) ||
		l.Mount == nil || len(l.Mount.Lowers) != 2 || l.Mount.Upper != "" {
		t.Errorf("strata inspect %s: got %+v (layer %+v, mount %+v)", layer, l, l.Layer, l.Mount)
	}

	// unmount: the daemon exits, the mount and its default mountpoint go.
	s.unmount("web", web)
	if _, err := os.Stat(mnt); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("default mountpoint %s after unmount: got %v, want it removed", mnt, err)
	}
	if in := s.inspect("web")[0]; in.MountedAt != "" || in.DaemonPid != 0 {
		t.Errorf("strata inspect web after unmount: MountedAt %q DaemonPid %d, want neither", in.MountedAt, in.DaemonPid)
	}
	// The upper kept the changes: mount again.
	mnt, web = s.mount("web")
	if d := treeDiff(wantTree, cliTree(t, mnt)); d != "" {
		t.Errorf("stack remounted:\n%s", d)
	}
	s.unmount("web", web)

	// rm: a layer with children, a mounted stack without -f, fail.
	r := s.run("rm", base)
	if r.code != 1 || !strings.Contains(r.stderr, "children") || !strings.Contains(r.stderr, "strata ls") {
		t.Errorf("strata rm of a layer with children: want exit 1 naming its children and 'strata ls'; got %v", r)
	}
	if !strings.Contains(r.stderr, `"`+layer+`"`) && !strings.Contains(r.stderr, `"web"`) {
		t.Errorf("strata rm of a layer with children: the message names none of them (%s, web): %v", layer, r)
	}
	r = s.run("rm", "web2")
	if r.code != 1 || !strings.Contains(r.stderr, "mounted at "+dir2) || !strings.Contains(r.stderr, "-f") {
		t.Errorf("strata rm of a mounted stack: want exit 1 saying where it is mounted and -f; got %v", r)
	}
	s.must("rm", "-f", "web2")
	if _, ok := mountEntry(dir2); ok {
		t.Errorf("strata rm -f web2: %s still mounted", dir2)
	}
	s.must("rm", "web")
	s.must("rm", layer)
	s.must("rm", base)
	if got := s.must("ls", "-q"); got != "" {
		t.Errorf("strata ls -q after removing everything: got %q", got)
	}
	if got := s.must("check"); got != "the store is consistent\n" {
		t.Errorf("strata check: got %q", got)
	}
}

// TestCLICommitReproducible commits two stacks with the same changes,
// made at different times, on one parent: with SOURCE_DATE_EPOCH the
// layers are the same bytes, whether committed mounted or not; without
// it they differ (the times do), which shows the variable is what makes
// them equal.
func TestCLICommitReproducible(t *testing.T) {
	s := newCLIStore(t)
	blob, _ := cliLayer(t, cliBaseFiles, "gzip")
	file := filepath.Join(t.TempDir(), "base.tar.gz")
	if err := os.WriteFile(file, blob, 0o644); err != nil {
		t.Fatal(err)
	}
	base := s.mustLine("layer", "apply", file)
	change := func(mnt string) {
		t.Helper()
		if err := writeFile(filepath.Join(mnt, "etc/hostname"), []byte("same\n")); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(mnt, "etc/passwd")); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(mnt, "opt/app"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := writeFile(filepath.Join(mnt, "opt/app/data"), bytes.Repeat([]byte("data"), 4096)); err != nil {
			t.Fatal(err)
		}
	}
	var stacks []string
	for i, stack := range []string{"first", "second"} {
		s.mustLine("create", "--name", stack, base)
		mnt, w := s.mount(stack)
		change(mnt)
		if i == 1 {
			s.unmount(stack, w) // the second is committed unmounted
		}
		stacks = append(stacks, stack)
		time.Sleep(20 * time.Millisecond) // the second's times differ
	}
	commit := func(env []string, stack string) (layer, digest string) {
		t.Helper()
		out := s.mustWith(cliOpts{env: env}, "commit", stack)
		m := commitOutRE.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("strata commit %s: got %q", stack, out)
		}
		return m[1], m[3]
	}
	epoch := []string{"SOURCE_DATE_EPOCH=0"}
	l1, d1 := commit(epoch, stacks[0])
	l2, d2 := commit(epoch, stacks[1])
	if d1 != d2 || l1 != l2 {
		t.Errorf("SOURCE_DATE_EPOCH=0: commits of the same changes differ: layer %s digest %s, and layer %s digest %s", l1, d1, l2, d2)
	}
	_, n1 := commit(nil, stacks[0])
	_, n2 := commit(nil, stacks[1])
	if n1 == n2 {
		t.Errorf("without SOURCE_DATE_EPOCH, commits of changes made at different times have the same digest %s: is the test meaningful?", n1)
	}
}

// TestCLIErrors runs commands that must fail, and checks the exit status
// (2 for a usage error, 1 otherwise), that the message names the problem,
// and that the store did not change.
func TestCLIErrors(t *testing.T) {
	s := newCLIStore(t)
	dir := t.TempDir()
	files := map[string]string{}
	for k, v := range cliBaseFiles {
		files[k] = v
	}
	big := make([]byte, 256<<10)
	for i := range big {
		big[i] = byte(i * 7 % 251)
	}
	files["big"] = string(big)
	blob, _ := cliLayer(t, files, "gzip")
	paths := map[string]string{
		"$LAYERFILE": filepath.Join(dir, "layer.tar.gz"),
		"$GARBAGE":   filepath.Join(dir, "garbage.tar.gz"),
		"$TRUNCATED": filepath.Join(dir, "truncated.tar.gz"),
		"$OUT":       filepath.Join(dir, "out.tar.gz"),
	}
	garbage := bytes.Repeat([]byte("this is no tar archive\n"), 200)
	for name, b := range map[string][]byte{"$LAYERFILE": blob, "$GARBAGE": garbage, "$TRUNCATED": blob[:len(blob)/2]} {
		if err := os.WriteFile(paths[name], b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Another layer, applied on the first, truncated: read from stdin it
	// is extracted as it streams, so the failure comes mid-extraction.
	top, _ := cliLayer(t, map[string]string{"top/big": string(big), "top/small": "x"}, "gzip")
	layer := s.mustLine("layer", "apply", paths["$LAYERFILE"])
	paths["$LAYER"] = layer
	s.mustLine("create", "--name", "web", layer)

	cases := []struct {
		name     string
		args     []string
		env      []string
		stdin    []byte
		code     int
		contains []string // in stderr
	}{
		{"unknown command", []string{"frobnicate"}, nil, nil, 2, []string{`unknown command "frobnicate"`, "strata --help"}},
		{"bad flag", []string{"ls", "--bogus"}, nil, nil, 2, []string{"unknown flag: --bogus", "strata ls --help"}},
		{"bad format", []string{"ls", "--format", "yaml"}, nil, nil, 2, []string{`--format "yaml"`, "table, json"}},
		{"extra argument", []string{"check", "now"}, nil, nil, 2, []string{"no arguments", "usage: strata check"}},
		{"create on a missing parent", []string{"create", "--name", "x", "nosuch"}, nil, nil, 1, []string{`"nosuch"`, "strata ls"}},
		{"create on a missing prefix", []string{"create", "--name", "x", "0123456789ab"}, nil, nil, 1, []string{`"0123456789ab"`, "strata ls"}},
		{"create with a bad name", []string{"create", "--name", "no/slash", "$LAYER"}, nil, nil, 2, []string{`invalid name "no/slash"`}},
		{"create an existing name", []string{"create", "--name", "web", "$LAYER"}, nil, nil, 1, []string{`"web" already exists`}},
		{"create on a stack", []string{"create", "--name", "x", "web"}, nil, nil, 1, []string{"not a committed layer", "strata commit web"}},
		{"mount a missing stack", []string{"mount", "nosuch"}, nil, nil, 1, []string{`"nosuch"`, "strata ls"}},
		{"mount a layer", []string{"mount", "$LAYER"}, nil, nil, 1, []string{"committed layer", "strata create"}},
		{"unmount what is not mounted", []string{"unmount", "web"}, nil, nil, 1, []string{`"web" is not mounted`}},
		{"apply garbage", []string{"layer", "apply", "$GARBAGE"}, nil, nil, 1, []string{"$GARBAGE", "tar"}},
		{"apply a truncated gzip", []string{"layer", "apply", "$TRUNCATED"}, nil, nil, 1, []string{"$TRUNCATED", "truncated"}},
		{"apply a truncated gzip from stdin", []string{"layer", "apply", "--parent", "$LAYER", "-"}, nil, top[:len(top)*2/3], 1, []string{"unexpected EOF"}},
		{"apply garbage from stdin", []string{"layer", "apply", "-"}, nil, garbage, 1, []string{"tar"}},
		{"apply a missing file", []string{"layer", "apply", "/nonexistent/layer.tar"}, nil, nil, 1, []string{"/nonexistent/layer.tar", "no such file"}},
		{"apply on a missing parent", []string{"layer", "apply", "--parent", "nosuch", "$LAYERFILE"}, nil, nil, 1, []string{`"nosuch"`, "strata ls"}},
		{"layer without a subcommand", []string{"layer"}, nil, nil, 2, []string{"apply or export"}},
		{"layer export without a file", []string{"layer", "export", "$LAYER"}, nil, nil, 2, []string{"usage: strata layer"}},
		{"export a stack", []string{"layer", "export", "web", "$OUT"}, nil, nil, 1, []string{"not a committed layer"}},
		{"bogus compression", []string{"commit", "--compression", "bogus", "web"}, nil, nil, 2, []string{`--compression "bogus"`, "gzip, zstd or none"}},
		{"commit a layer", []string{"commit", "$LAYER"}, nil, nil, 1, []string{"not a stack"}},
		{"commit a missing stack", []string{"commit", "nosuch"}, nil, nil, 1, []string{`"nosuch"`, "strata ls"}},
		{"bad SOURCE_DATE_EPOCH", []string{"commit", "web"}, []string{"SOURCE_DATE_EPOCH=yesterday"}, nil, 1, []string{"SOURCE_DATE_EPOCH"}},
		{"diff a missing stack", []string{"diff", "nosuch"}, nil, nil, 1, []string{"strata ls"}},
		{"inspect a missing stack", []string{"inspect", "nosuch"}, nil, nil, 1, []string{"strata ls"}},
		{"rm a missing stack", []string{"rm", "nosuch"}, nil, nil, 1, []string{"strata ls"}},
		{"rm nothing", []string{"rm"}, nil, nil, 2, []string{"usage: strata rm"}},
	}
	before := s.must("ls", "-q", "--no-trunc")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := make([]string, len(tc.args))
			for i, a := range tc.args {
				if p, ok := paths[a]; ok {
					a = p
				}
				args[i] = a
			}
			o := cliOpts{env: tc.env}
			if tc.stdin != nil {
				o.stdin = bytes.NewReader(tc.stdin)
			}
			r := cliRun(t, o, s.args(args)...)
			if r.err != nil || r.code != tc.code {
				t.Errorf("got exit %d, want %d: %v", r.code, tc.code, r)
			}
			for _, c := range tc.contains {
				if p, ok := paths[c]; ok {
					c = p
				}
				if !strings.Contains(r.stderr, c) {
					t.Errorf("stderr does not mention %q: %v", c, r)
				}
			}
			if !strings.HasPrefix(r.stderr, "strata") {
				t.Errorf("stderr does not start with the program's name: %q", r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout: got %q, want nothing", r.stdout)
			}
			if got := cliRun(t, cliOpts{}, s.args([]string{"ls", "-q", "--no-trunc"})...); got.stdout != before {
				t.Errorf("strata ls -q changed: got\n%s\nwant\n%s", got.stdout, before)
			}
			if got := cliRun(t, cliOpts{}, s.args([]string{"check"})...); got.code != 0 || got.stdout != "the store is consistent\n" {
				t.Errorf("strata check after the failure: %v", got)
			}
		})
	}
	if _, err := os.Stat(paths["$OUT"]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed export left %s: %v", paths["$OUT"], err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 3 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("failed commands left files beside their output: %v", names)
	}
}

// cliCommands are strata's subcommands, the hidden serve included.
var cliCommands = []string{"check", "commit", "create", "diff", "inspect", "layer", "ls", "mount", "rm", "serve", "unmount"}

// TestCLIHelp checks that every way of asking for help exits 0 and
// prints the usage, against golden files (go test -run TestCLIHelp
// -update rewrites them).
func TestCLIHelp(t *testing.T) {
	type helpCase struct {
		name   string
		args   []string
		golden string // testdata/help/<golden>.golden
	}
	cases := []helpCase{
		{"no arguments", nil, "strata"},
		{"--help", []string{"--help"}, "strata"},
		{"-h", []string{"-h"}, "strata"},
		{"help", []string{"help"}, "strata"},
	}
	for _, c := range cliCommands {
		cases = append(cases,
			helpCase{c + " --help", []string{c, "--help"}, c},
			helpCase{c + " -h", []string{c, "-h"}, c},
			helpCase{"help " + c, []string{"help", c}, c})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// No store: help must not need one. A bogus root shows it.
			r := cliRun(t, cliOpts{env: []string{"STRATA_ROOT=/nonexistent/strata-root"}}, tc.args...)
			if r.err != nil || r.code != 0 {
				t.Fatalf("got %v, want exit 0", r)
			}
			if !strings.HasPrefix(r.stdout, "Usage: strata ") && !strings.Contains(r.stdout, "\nUsage: strata ") {
				t.Errorf("stdout has no Usage line:\n%s", r.stdout)
			}
			if r.stderr != "" {
				t.Errorf("stderr: got %q, want nothing", r.stderr)
			}
			golden := filepath.Join("testdata", "help", tc.golden+".golden")
			got := strings.ReplaceAll(r.stdout, "/nonexistent/strata-root", "$STRATA_ROOT")
			if *cliUpdate {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestCLIHelp -update to write it)", err)
			}
			if got != string(want) {
				t.Errorf("output differs from %s (go test -run TestCLIHelp -update rewrites it):\ngot:\n%s\nwant:\n%s", golden, got, want)
			}
		})
	}
	if _, err := os.Stat("/nonexistent/strata-root"); err == nil {
		t.Errorf("asking for help created the store root")
	}
	r := cliRun(t, cliOpts{}, "--version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "strata version ") {
		t.Errorf("strata --version: %v", r)
	}
}

// TestCLIRemoveLayerFreesBlob checks that removing a layer removes the
// blob the store kept of it (blobs/sha256/<hex>, see snapshot.go), once
// no other layer uses it; a store that keeps every blob ever applied or
// committed grows without bound.
func TestCLIRemoveLayerFreesBlob(t *testing.T) {
	s := newCLIStore(t)
	blob, _ := cliLayer(t, cliBaseFiles, "gzip")
	file := filepath.Join(t.TempDir(), "l.tar.gz")
	if err := os.WriteFile(file, blob, 0o644); err != nil {
		t.Fatal(err)
	}
	layer := s.mustLine("layer", "apply", file)
	kept := filepath.Join(s.root, "blobs", "sha256", strings.TrimPrefix(blobDigest(blob), "sha256:"))
	if _, err := os.Stat(kept); err != nil {
		t.Fatalf("the applied layer's blob: %v", err)
	}
	s.must("rm", layer)
	if _, err := os.Stat(kept); !errors.Is(err, os.ErrNotExist) {
		ents, _ := os.ReadDir(filepath.Dir(kept))
		t.Errorf("strata rm %s left its blob %s (stat: %v); blobs/sha256 holds %d blobs and no layer", layer, kept, err, len(ents))
	}
	if got := s.must("check"); got != "the store is consistent\n" {
		t.Errorf("strata check: %q", got)
	}
}

// TestCLIDamagedSnapshot removes a stack's and a layer's directories
// behind strata's back (a disk lost them), and follows what strata check
// then says to do: the store must still list, and strata rm must remove
// the damaged snapshots.
func TestCLIDamagedSnapshot(t *testing.T) {
	s := newCLIStore(t)
	blob, _ := cliLayer(t, cliBaseFiles, "gzip")
	file := filepath.Join(t.TempDir(), "l.tar.gz")
	if err := os.WriteFile(file, blob, 0o644); err != nil {
		t.Fatal(err)
	}
	base := s.mustLine("layer", "apply", file)
	blob2, _ := cliLayer(t, map[string]string{"top": "top\n"}, "gzip")
	if err := os.WriteFile(file, blob2, 0o644); err != nil {
		t.Fatal(err)
	}
	top := s.mustLine("layer", "apply", "--parent", base, file)
	s.mustLine("create", "--name", "web", base)
	for _, dir := range []string{s.inspect("web")[0].Mount.Upper, s.inspect(top)[0].Mount.Lowers[0]} {
		if err := os.RemoveAll(filepath.Dir(dir)); err != nil {
			t.Fatal(err)
		}
	}
	r := s.run("check")
	if r.code != 1 || strings.Count(r.stdout, "damaged: ") != 2 || !strings.Contains(r.stdout, "strata rm") {
		t.Errorf("strata check with two snapshots' directories gone: want exit 1, two damaged lines saying to strata rm; got %v", r)
	}
	if r := s.run("ls"); r.code != 0 || !strings.Contains(r.stdout, "web") {
		t.Errorf("strata ls with a damaged stack: want it listed; got %v", r)
	}
	if r := s.run("ls", "--format", "json"); r.code != 0 {
		t.Errorf("strata ls --format json with a damaged stack: %v", r)
	}
	for _, name := range []string{"web", top} {
		if r := s.run("rm", name); r.code != 0 {
			t.Errorf("strata rm of the damaged %s, as strata check says: %v", name, r)
		}
	}
	if r := s.run("check"); r.code != 0 || r.stdout != "the store is consistent\n" {
		t.Errorf("strata check after removing the damaged snapshots: %v", r)
	}
	if got := s.must("ls", "-q", "--no-trunc"); got != base+"\n" {
		t.Errorf("strata ls -q: got %q, want just %s", got, base)
	}
}
