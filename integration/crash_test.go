package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// The crash tests: kill -9 of `strata commit`, `strata layer apply`,
// `strata rm` or a mount daemon, at any moment, must leave a store that
// the next command opens without error; snapshots are complete or
// absent; what interrupted commands left is cleaned by the repair step
// (`strata check --repair`, also run before every command that changes
// the store); nothing committed is lost; and a stack's upper keeps every
// write that reached the disk.

var (
	crashIterations = flag.Int("crash.iterations", 40, "operations TestCrashLoop kills")
	crashSeed       = flag.Uint64("crash.seed", 0, "seed of TestCrashLoop (0: from the clock; printed on failure)")
	crashOps        = flag.String("crash.ops", "apply,commit,rm,kill-daemon", "the operations TestCrashLoop kills, comma-separated")
	crashBudget     = flag.Duration("crash.budget", 75*time.Second, "TestCrashLoop starts no iteration after this long (0: no limit), so a slow machine does fewer")
)

// Bounds of what TestCrashLoop keeps in its store, so an iteration's
// checks stay cheap.
const (
	crashMaxLayers = 6
	crashMaxStacks = 3
)

// crashLayer is a committed layer the test knows of.
type crashLayer struct {
	name   string // its chain ID
	parent string
	digest string // its blob's, as strata recorded it
	tree   map[string]string
}

// crashStack is a stack the test knows of.
type crashStack struct {
	name   string
	parent string
	tree   map[string]string // what a mount of it shows
	mnt    string            // its mountpoint while mounted
	daemon *daemonWatch      // while mounted
}

// crashRun is TestCrashLoop's state: the store, and what the test
// expects of it.
type crashRun struct {
	t       *testing.T
	s       *cliStore
	rng     *rand.Rand
	scratch string // tarballs and exports

	layers map[string]*crashLayer
	stacks map[string]*crashStack
	seq    int                      // for unique names
	est    map[string]time.Duration // how long each kind of operation took when not killed
	all    []*daemonWatch           // every daemon started
}

// crashOp is what one iteration did, for its checks.
type crashOp struct {
	kind     string // apply, commit, rm, kill-daemon
	finished bool   // the command ended before the kill

	// apply
	applied *crashLayer // what the layer is if it was stored
	// commit: a new layer is on the stack's parent, with the stack's tree
	stack *crashStack
	// rm
	target string
	// kill-daemon
	writer *crashWriter
	killed *daemonWatch
}

// TestCrashLoop kills strata at random moments in dozens of operations
// (-crash.iterations; -crash.seed repeats a run) and checks the store
// after each.
func TestCrashLoop(t *testing.T) {
	s := newCLIStore(t)
	seed := *crashSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("TestCrashLoop seed %d: repeat with go test -run TestCrashLoop -crash.seed=%d -crash.iterations=%d ./integration/", seed, seed, *crashIterations)
		}
	})
	c := &crashRun{
		t: t, s: s,
		rng:     rand.New(rand.NewPCG(seed, seed^0x5eed)),
		scratch: t.TempDir(),
		layers:  map[string]*crashLayer{},
		stacks:  map[string]*crashStack{},
		est:     map[string]time.Duration{},
	}
	t.Logf("seed %d", seed)
	start := time.Now()
	c.setup()
	done := 0
	for ; done < *crashIterations; done++ {
		if *crashBudget > 0 && time.Since(start) > *crashBudget {
			t.Logf("over the -crash.budget of %v: stopping after %d of %d iterations", *crashBudget, done, *crashIterations)
			break
		}
		op := c.iterate(done)
		c.verify(done, op)
	}
	c.finish()
	t.Logf("%d iterations in %v (seed %d)", done, time.Since(start).Round(time.Millisecond), seed)
}

// setup fills the store with two layers and a stack, run to completion;
// which also measures how long the operations take.
func (c *crashRun) setup() {
	c.t.Helper()
	base := c.applyDone(nil)
	c.applyDone(base)
	st := c.createStack()
	c.mount(st)
	c.change(st)
	c.unmount(st)
	begin := time.Now()
	layer := c.s.mustLine("commit", "-q", st.name)
	c.est["commit"] = time.Since(begin)
	c.adoptCommitted(layer, st)
	begin = time.Now()
	st2 := c.createStack()
	c.s.must("rm", st2.name)
	delete(c.stacks, st2.name)
	c.est["rm"] = time.Since(begin) / 2
	c.est["kill-daemon"] = 300 * time.Millisecond
}

// iterate runs one operation, killed at a random moment.
func (c *crashRun) iterate(i int) *crashOp {
	c.t.Helper()
	weights := map[string]int{"apply": 3, "commit": 3, "rm": 2, "kill-daemon": 2}
	if len(c.layers) >= crashMaxLayers {
		weights["apply"], weights["commit"], weights["rm"] = 0, 1, 5
	}
	if len(c.layers) == 0 {
		weights = map[string]int{"apply": 1}
	}
	kinds := []string{"apply", "commit", "rm", "kill-daemon"}
	enabled := map[string]bool{}
	for _, k := range strings.Split(*crashOps, ",") {
		enabled[strings.TrimSpace(k)] = true
	}
	for _, k := range kinds {
		if !enabled[k] && len(enabled) > 0 {
			weights[k] = 0
		}
	}
	if weights["apply"]+weights["commit"]+weights["rm"]+weights["kill-daemon"] == 0 {
		// Over the bounds with only operations that add: remove.
		weights["rm"] = 1
	}
	total := 0
	for _, k := range kinds {
		total += weights[k]
	}
	n := c.rng.IntN(total)
	kind := ""
	for _, k := range kinds {
		if n < weights[k] {
			kind = k
			break
		}
		n -= weights[k]
	}
	switch kind {
	case "apply":
		return c.opApply(i)
	case "commit":
		return c.opCommit(i)
	case "rm":
		return c.opRemove(i)
	}
	return c.opKillDaemon(i)
}

// delay picks when to kill an operation of kind: a quarter early (start
// up, the repair step, taking the op), half anywhere in 0-300 ms, a
// quarter near the end of its usual duration.
func (c *crashRun) delay(kind string) time.Duration {
	ms := func(a, b float64) time.Duration {
		return time.Duration((a + c.rng.Float64()*(b-a)) * float64(time.Millisecond))
	}
	switch c.rng.IntN(4) {
	case 0:
		return ms(0, 20)
	case 1, 2:
		return ms(0, 300)
	}
	est := float64(c.est[kind]) / float64(time.Millisecond)
	return ms(0.6*est, 1.1*est)
}

// killAfter runs strata ARGS and sends it SIGKILL (by PID: it is this
// process's unreaped child) after delay, unless it has finished by then.
// An operation that finished must have succeeded.
func (c *crashRun) killAfter(kind string, delay time.Duration, o cliOpts, args ...string) (bool, cliResult) {
	c.t.Helper()
	cmd, stdout, stderr, err := cliCommand(c.scratch, o, c.s.args(args)...)
	if err != nil {
		c.t.Fatal(err)
	}
	defer os.Remove(stdout.Name())
	defer os.Remove(stderr.Name())
	defer stdout.Close()
	defer stderr.Close()
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(delay):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		select {
		case <-done:
		case <-time.After(cliTimeout):
			c.t.Fatalf("strata %s (pid %d) did not die of SIGKILL", strings.Join(args, " "), cmd.Process.Pid)
		}
	}
	took := time.Since(begin)
	r := cliResult{args: args, code: -1}
	b, _ := os.ReadFile(stdout.Name())
	r.stdout = string(b)
	b, _ = os.ReadFile(stderr.Name())
	r.stderr = string(b)
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		c.t.Logf("  killed after %v (planned %v)", took.Round(time.Millisecond), delay.Round(time.Millisecond))
		return false, r
	}
	r.code = ws.ExitStatus()
	if r.code != 0 {
		c.t.Fatalf("%v", r)
	}
	c.est[kind] = took
	c.t.Logf("  finished in %v, before the kill planned at %v", took.Round(time.Millisecond), delay.Round(time.Millisecond))
	return true, r
}

// opApply applies a new layer of 4-20 MiB, on nothing or on a layer.
func (c *crashRun) opApply(i int) *crashOp {
	c.t.Helper()
	var parent *crashLayer
	if len(c.layers) > 0 && c.rng.IntN(2) == 0 {
		parent = c.pickLayer()
	}
	file, want := c.genLayer(parent)
	defer os.Remove(file)
	args := []string{"layer", "apply"}
	if parent != nil {
		args = append(args, "--parent", parent.name)
	}
	c.t.Logf("iteration %d: strata %s (%s)", i, strings.Join(append(args, filepath.Base(file)), " "), want.name)
	finished, r := c.killAfter("apply", c.delay("apply"), cliOpts{}, append(args, file)...)
	op := &crashOp{kind: "apply", finished: finished, applied: want}
	if finished {
		if got := strings.TrimSpace(r.stdout); got != want.name {
			c.t.Fatalf("strata layer apply: printed %q, want the chain ID %s", got, want.name)
		}
	}
	return op
}

// applyDone applies a new layer to completion and adds it to the model.
func (c *crashRun) applyDone(parent *crashLayer) *crashLayer {
	c.t.Helper()
	file, want := c.genLayer(parent)
	defer os.Remove(file)
	args := []string{"layer", "apply"}
	if parent != nil {
		args = append(args, "--parent", parent.name)
	}
	begin := time.Now()
	if got := c.s.mustLine(append(args, file)...); got != want.name {
		c.t.Fatalf("strata layer apply: printed %q, want the chain ID %s", got, want.name)
	}
	c.est["apply"] = time.Since(begin)
	c.layers[want.name] = want
	return want
}

// genLayer writes a layer tarball of 4-20 MiB (its own files, a symlink,
// shared/common overwritten, and on a parent a whiteout of one of its
// files) to a file, and returns the file and the layer it makes.
func (c *crashRun) genLayer(parent *crashLayer) (string, *crashLayer) {
	c.t.Helper()
	c.seq++
	id := c.seq
	comp := []string{"gzip", "zstd", "none"}[c.rng.IntN(3)]
	f, err := os.CreateTemp(c.scratch, fmt.Sprintf("layer%d-*.%s", id, comp))
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	blobHash := sha256.New()
	out := io.MultiWriter(f, blobHash)
	var zw io.WriteCloser
	switch comp {
	case "gzip":
		zw, _ = gzip.NewWriterLevel(out, gzip.BestSpeed)
	case "zstd":
		zw, err = zstd.NewWriter(out, zstd.WithEncoderLevel(zstd.SpeedFastest))
		if err != nil {
			c.t.Fatal(err)
		}
	}
	tarOut := out
	if zw != nil {
		tarOut = zw
	}
	diffHash := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(tarOut, diffHash))

	tree := map[string]string{}
	if parent != nil {
		for k, v := range parent.tree {
			tree[k] = v
		}
	}
	mtime := time.Unix(1_600_000_000+int64(id), 0)
	put := func(hdr *tar.Header, data []byte) {
		hdr.ModTime, hdr.Format = mtime, tar.FormatPAX
		if err := tw.WriteHeader(hdr); err != nil {
			c.t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			c.t.Fatal(err)
		}
	}
	if parent != nil {
		// A whiteout of one of the parent's files, in a directory the
		// layer does not otherwise name.
		if victim := c.pickFile(parent.tree, func(p string) bool { return !strings.HasPrefix(p, "shared/") }); victim != "" {
			put(&tar.Header{Name: filepath.Join(filepath.Dir(victim), ".wh."+filepath.Base(victim)), Typeflag: tar.TypeReg}, nil)
			delete(tree, victim)
		}
	}
	dir := fmt.Sprintf("l%d", id)
	put(&tar.Header{Name: dir + "/", Typeflag: tar.TypeDir, Mode: 0o755}, nil)
	tree[dir] = "dir 0755"
	total := int64(4<<20 + c.rng.IntN(16<<20))
	nfiles := 2 + c.rng.IntN(4)
	for k := 0; k < nfiles; k++ {
		size := total / int64(nfiles)
		data := c.content(size)
		name := fmt.Sprintf("%s/f%d.bin", dir, k)
		put(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: cliFileMode, Size: size}, data)
		tree[name] = cliFileDesc(cliFileMode, data)
	}
	put(&tar.Header{Name: dir + "/link", Typeflag: tar.TypeSymlink, Linkname: "f0.bin", Mode: 0o777}, nil)
	tree[dir+"/link"] = "symlink -> f0.bin"
	common := []byte(fmt.Sprintf("layer %d\n", id))
	put(&tar.Header{Name: "shared/", Typeflag: tar.TypeDir, Mode: 0o755}, nil)
	put(&tar.Header{Name: "shared/common", Typeflag: tar.TypeReg, Mode: cliFileMode, Size: int64(len(common))}, common)
	tree["shared"] = "dir 0755"
	tree["shared/common"] = cliFileDesc(cliFileMode, common)
	if err := tw.Close(); err != nil {
		c.t.Fatal(err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			c.t.Fatal(err)
		}
	}
	diffID := "sha256:" + hex.EncodeToString(diffHash.Sum(nil))
	l := &crashLayer{name: diffID, digest: "sha256:" + hex.EncodeToString(blobHash.Sum(nil)), tree: tree}
	if parent != nil {
		// image-spec identity: ChainID(L0|...|Ln) = sha256(ChainID(L0|...|Ln-1) + " " + DiffID(Ln)).
		sum := sha256.Sum256([]byte(parent.name + " " + diffID))
		l.name, l.parent = "sha256:"+hex.EncodeToString(sum[:]), parent.name
	}
	return f.Name(), l
}

// content returns size bytes, half of them (by 64 KiB blocks) random and
// half a repeated pattern, so that compressing is neither trivial nor
// slow.
func (c *crashRun) content(size int64) []byte {
	src := rand.NewChaCha8([32]byte{byte(c.seq), byte(c.seq >> 8), byte(c.rng.Uint32()), byte(c.rng.Uint32())})
	b := make([]byte, size)
	const block = 64 << 10
	for off := int64(0); off < size; off += block {
		end := min(off+block, size)
		if c.rng.IntN(2) == 0 {
			_, _ = src.Read(b[off:end])
			continue
		}
		var pat [61]byte
		_, _ = src.Read(pat[:])
		for j := off; j < end; j += int64(len(pat)) {
			copy(b[j:end], pat[:])
		}
	}
	return b
}

// pickLayer returns a random layer of the model.
func (c *crashRun) pickLayer() *crashLayer {
	names := sortedKeys(c.layers)
	return c.layers[names[c.rng.IntN(len(names))]]
}

// pickFile returns a random regular file of tree that ok accepts, or "".
func (c *crashRun) pickFile(tree map[string]string, ok func(string) bool) string {
	var files []string
	for _, p := range sortedKeys(tree) {
		if strings.HasPrefix(tree[p], "file ") && ok(p) {
			files = append(files, p)
		}
	}
	if len(files) == 0 {
		return ""
	}
	return files[c.rng.IntN(len(files))]
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// createStack creates a stack on a random layer.
func (c *crashRun) createStack() *crashStack {
	c.t.Helper()
	l := c.pickLayer()
	c.seq++
	st := &crashStack{name: fmt.Sprintf("stack%d", c.seq), parent: l.name, tree: copyTree(l.tree)}
	c.s.mustLine("create", "--name", st.name, l.name)
	c.stacks[st.name] = st
	return st
}

func copyTree(tree map[string]string) map[string]string {
	out := make(map[string]string, len(tree))
	for k, v := range tree {
		out[k] = v
	}
	return out
}

// pickStack returns a random stack, creating one when there is none;
// mounted prefers a mounted one, or mounts one.
func (c *crashRun) pickStack(mounted bool) *crashStack {
	c.t.Helper()
	var cands []*crashStack
	for _, name := range sortedKeys(c.stacks) {
		if st := c.stacks[name]; !mounted || st.mnt != "" {
			cands = append(cands, st)
		}
	}
	if len(cands) == 0 {
		if !mounted || len(c.stacks) == 0 {
			return c.createStack()
		}
		for _, name := range sortedKeys(c.stacks) {
			cands = append(cands, c.stacks[name])
		}
	}
	return cands[c.rng.IntN(len(cands))]
}

func (c *crashRun) mount(st *crashStack) {
	c.t.Helper()
	st.mnt, st.daemon = c.s.mount(st.name)
	c.all = append(c.all, st.daemon)
}

func (c *crashRun) unmount(st *crashStack) {
	c.t.Helper()
	c.s.unmount(st.name, st.daemon)
	st.mnt, st.daemon = "", nil
}

// change writes 1-4 MiB into the mounted stack st, overwrites
// shared/common (a copy-up) and deletes a file of its layers.
func (c *crashRun) change(st *crashStack) {
	c.t.Helper()
	dir := "s-" + st.name
	if _, ok := st.tree[dir]; !ok {
		if err := os.Mkdir(filepath.Join(st.mnt, dir), 0o755); err != nil {
			c.t.Fatal(err)
		}
		st.tree[dir] = "dir 0755"
	}
	c.seq++
	for k, n := 0, 1+c.rng.IntN(3); k < n; k++ {
		data := c.content(int64(1<<20 + c.rng.IntN(1<<20)))
		p := fmt.Sprintf("%s/c%d-%d.bin", dir, c.seq, k)
		if err := writeFile(filepath.Join(st.mnt, p), data); err != nil {
			c.t.Fatal(err)
		}
		st.tree[p] = cliFileDesc(cliFileMode, data)
	}
	common := []byte(fmt.Sprintf("stack %s change %d\n", st.name, c.seq))
	if err := writeFile(filepath.Join(st.mnt, "shared/common"), common); err != nil {
		c.t.Fatal(err)
	}
	st.tree["shared/common"] = cliFileDesc(cliFileMode, common)
	if victim := c.pickFile(st.tree, func(p string) bool { return strings.HasPrefix(p, "l") }); victim != "" {
		if err := os.Remove(filepath.Join(st.mnt, victim)); err != nil {
			c.t.Fatal(err)
		}
		delete(st.tree, victim)
	}
}

// opCommit commits a stack with a few MiB of changes, mounted or not.
func (c *crashRun) opCommit(i int) *crashOp {
	c.t.Helper()
	st := c.pickStack(false)
	if st.mnt == "" {
		c.mount(st)
	}
	c.change(st)
	if c.rng.IntN(2) == 0 {
		c.unmount(st)
	}
	args := []string{"commit", "-q", "--compression", []string{"gzip", "zstd", "none"}[c.rng.IntN(3)], st.name}
	var env []string
	if c.rng.IntN(3) == 0 {
		env = []string{"SOURCE_DATE_EPOCH=0"}
	}
	c.t.Logf("iteration %d: %s (mounted: %v)", i, strings.TrimSpace(strings.Join(env, " ")+" strata "+strings.Join(args, " ")), st.mnt != "")
	finished, r := c.killAfter("commit", c.delay("commit"), cliOpts{env: env}, args...)
	op := &crashOp{kind: "commit", finished: finished, stack: st}
	if finished {
		layer := strings.TrimSpace(r.stdout)
		if !chainIDRE.MatchString(layer) {
			c.t.Fatalf("strata commit -q: printed %q, want a chain ID", r.stdout)
		}
		if _, ok := c.layers[layer]; !ok {
			c.t.Logf("  committed %s", layer)
		}
	}
	return op
}

// adoptCommitted adds the layer committed from st to the model.
func (c *crashRun) adoptCommitted(name string, st *crashStack) *crashLayer {
	c.t.Helper()
	if l, ok := c.layers[name]; ok {
		if d := treeDiff(l.tree, st.tree); d != "" {
			c.t.Fatalf("commit of %s gave the existing layer %s, whose tree differs from the stack's:\n%s", st.name, name, d)
		}
		return l
	}
	in := c.s.inspect(name)[0]
	if in.Layer == nil {
		c.t.Fatalf("strata inspect %s: no Layer", name)
	}
	l := &crashLayer{name: name, parent: st.parent, digest: in.Layer.Digest, tree: copyTree(st.tree)}
	c.layers[name] = l
	return l
}

// opRemove removes a stack (-f when mounted) or a layer nothing is on.
func (c *crashRun) opRemove(i int) *crashOp {
	c.t.Helper()
	var cands []string
	cands = append(cands, sortedKeys(c.stacks)...)
	for _, name := range sortedKeys(c.layers) {
		if !c.hasChildren(name) {
			cands = append(cands, name)
		}
	}
	if len(cands) == 0 {
		return c.opApply(i)
	}
	target := cands[c.rng.IntN(len(cands))]
	args := []string{"rm", target}
	if st, ok := c.stacks[target]; ok && st.mnt != "" {
		args = []string{"rm", "-f", target}
	}
	c.t.Logf("iteration %d: strata %s", i, strings.Join(args, " "))
	finished, _ := c.killAfter("rm", c.delay("rm"), cliOpts{}, args...)
	return &crashOp{kind: "rm", finished: finished, target: target}
}

func (c *crashRun) hasChildren(layer string) bool {
	for _, l := range c.layers {
		if l.parent == layer {
			return true
		}
	}
	for _, st := range c.stacks {
		if st.parent == layer {
			return true
		}
	}
	return false
}

// opKillDaemon kills a mount daemon while a writer writes and fsyncs
// files through its mount.
func (c *crashRun) opKillDaemon(i int) *crashOp {
	c.t.Helper()
	st := c.pickStack(true)
	if st.mnt == "" {
		c.mount(st)
	}
	c.seq++
	dir := fmt.Sprintf("w%d", c.seq)
	if err := os.Mkdir(filepath.Join(st.mnt, dir), 0o755); err != nil {
		c.t.Fatal(err)
	}
	st.tree[dir] = "dir 0755"
	var targets []string
	for _, p := range sortedKeys(st.tree) {
		if size, ok := descSize(st.tree[p]); ok && size <= 1<<20 {
			targets = append(targets, p)
		}
	}
	w := startCrashWriter(st.mnt, dir, targets, c.rng.Uint64())
	delay := c.delay("kill-daemon")
	c.t.Logf("iteration %d: kill -9 the daemon of %s (pid %d) after %v of writes", i, st.name, st.daemon.pid, delay.Round(time.Millisecond))
	time.Sleep(delay)
	d := st.daemon
	d.kill()
	if !d.wait(daemonExitTimeout) {
		c.t.Fatalf("daemon pid %d did not die of SIGKILL", d.pid)
	}
	if !w.wait(daemonExitTimeout) {
		c.t.Fatalf("the writer through %s is still blocked %v after its daemon died", st.mnt, daemonExitTimeout)
	}
	reported, _, werr := w.result()
	c.t.Logf("  daemon %s; the writer had reported %d writes, then: %v", d.status, len(reported), werr)
	st.mnt, st.daemon = "", nil
	return &crashOp{kind: "kill-daemon", finished: false, stack: st, writer: w, killed: d}
}

// descSize returns the size in a file's description.
func descSize(desc string) (int64, bool) {
	f := strings.Fields(desc)
	if len(f) < 3 || f[0] != "file" {
		return 0, false
	}
	n, err := strconv.ParseInt(f[2], 10, 64)
	return n, err == nil
}

// crashWriter writes files through a mount: new ones, and appends to
// existing ones (copy-ups), each fsynced and closed before it is
// reported done.
type crashWriter struct {
	mu       sync.Mutex
	reported []crashWrite
	current  *crashWrite // begun, not reported
	err      error       // what stopped it
	done     chan struct{}
}

// crashWrite is one write: the file holds content once it is done.
type crashWrite struct {
	path    string // relative to the stack's root
	content []byte
	base    int  // bytes the file held before: content[:base]
	create  bool // else appended
}

func startCrashWriter(mnt, dir string, targets []string, seed uint64) *crashWriter {
	w := &crashWriter{done: make(chan struct{})}
	rng := rand.New(rand.NewPCG(seed, 1))
	go func() {
		defer close(w.done)
		for k := 0; ; k++ {
			var cw crashWrite
			if len(targets) > 0 && rng.IntN(4) == 0 {
				p := targets[rng.IntN(len(targets))]
				old, err := os.ReadFile(filepath.Join(mnt, p))
				if err != nil {
					w.stop(err)
					return
				}
				extra := make([]byte, 4<<10+rng.IntN(60<<10))
				fillRandom(rng, extra)
				cw = crashWrite{path: p, content: append(old, extra...), base: len(old)}
			} else {
				data := make([]byte, 16<<10+rng.IntN(240<<10))
				fillRandom(rng, data)
				cw = crashWrite{path: fmt.Sprintf("%s/f%03d", dir, k), content: data, create: true}
			}
			w.mu.Lock()
			w.current = &cw
			w.mu.Unlock()
			if err := cw.do(mnt); err != nil {
				w.stop(err)
				return
			}
			w.mu.Lock()
			w.reported = append(w.reported, cw)
			w.current = nil
			if cw.create {
				targets = append(targets, cw.path)
			}
			w.mu.Unlock()
		}
	}()
	return w
}

func fillRandom(rng *rand.Rand, b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
}

// do makes the write through mnt, in 16 KiB writes, then fsyncs.
func (cw crashWrite) do(mnt string) error {
	flags, data := os.O_WRONLY|os.O_CREATE|os.O_EXCL, cw.content
	if !cw.create {
		st, err := os.Stat(filepath.Join(mnt, cw.path))
		if err != nil {
			return err
		}
		flags, data = os.O_WRONLY|os.O_APPEND, cw.content[st.Size():]
	}
	f, err := os.OpenFile(filepath.Join(mnt, cw.path), flags, cliFileMode)
	if err != nil {
		return err
	}
	for len(data) > 0 {
		n := min(len(data), 16<<10)
		if _, err := f.Write(data[:n]); err != nil {
			return errors.Join(err, f.Close())
		}
		data = data[n:]
	}
	return errors.Join(f.Sync(), f.Close())
}

func (w *crashWriter) stop(err error) {
	w.mu.Lock()
	w.err = err
	w.mu.Unlock()
}

func (w *crashWriter) wait(d time.Duration) bool {
	select {
	case <-w.done:
		return true
	case <-time.After(d):
		return false
	}
}

func (w *crashWriter) result() ([]crashWrite, *crashWrite, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.reported, w.current, w.err
}

// verify checks the store after the operation op of iteration i, and
// brings the model up to date with what the operation did.
func (c *crashRun) verify(i int, op *crashOp) {
	c.t.Helper()
	t := c.t

	// check finds the leftovers, if any; nothing may be lost.
	r := c.s.run("check")
	switch {
	case r.code == 0 && r.stdout == "the store is consistent\n":
	case r.code == 1 && strings.Contains(r.stderr, "strata check --repair"):
		for _, l := range strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n") {
			if !strings.HasPrefix(l, "found: ") || strings.Contains(l, "missing") || strings.Contains(l, "lost") {
				t.Fatalf("iteration %d: strata check: %q: a leftover must be repairable and nothing lost; %v", i, l, r)
			}
		}
		t.Logf("  check: %s", strings.ReplaceAll(strings.TrimSpace(r.stdout), "\n", "; "))
	default:
		t.Fatalf("iteration %d: strata check: %v", i, r)
	}
	if op.killed != nil && !strings.Contains(r.stdout, fmt.Sprintf("mount daemon (pid %d) at %s is gone", op.killed.pid, op.killed.dir)) {
		t.Errorf("iteration %d: strata check did not find the killed daemon %d: %v", i, op.killed.pid, r)
	}
	r = c.s.run("check", "--repair")
	if r.code != 0 {
		t.Fatalf("iteration %d: strata check --repair: %v", i, r)
	}
	if got := c.s.must("check"); got != "the store is consistent\n" {
		t.Fatalf("iteration %d: strata check after check --repair: %q", i, got)
	}

	// What is listed: the model, give or take what op did.
	listed := map[string]cliListing{}
	for _, l := range c.s.list() {
		listed[l.Name] = l
	}
	var fresh []*crashLayer // layers op stored
	for name, l := range listed {
		if _, ok := c.layers[name]; ok {
			continue
		}
		if _, ok := c.stacks[name]; ok {
			continue
		}
		switch {
		case l.Kind == "committed" && op.kind == "apply" && name == op.applied.name:
			fresh = append(fresh, op.applied)
		case l.Kind == "committed" && op.kind == "commit" && l.Parent == op.stack.parent:
			fresh = append(fresh, &crashLayer{name: name, parent: l.Parent, tree: copyTree(op.stack.tree)})
		default:
			t.Fatalf("iteration %d: after %s, strata ls lists %s %s, which nothing made: %+v", i, op.kind, l.Kind, name, l)
		}
	}
	if op.kind == "apply" && op.finished && len(fresh) == 0 {
		if _, ok := c.layers[op.applied.name]; !ok {
			t.Fatalf("iteration %d: strata layer apply printed %s, which strata ls does not list", i, op.applied.name)
		}
	}
	if op.kind == "commit" && op.finished && len(fresh) == 0 {
		// Committed as a layer already stored: checked below.
		t.Logf("  the commit gave a layer already stored")
	}
	if op.kind == "rm" {
		_, present := listed[op.target]
		if op.finished && present {
			t.Fatalf("iteration %d: strata rm %s succeeded but strata ls still lists it", i, op.target)
		}
		if !present {
			if st, ok := c.stacks[op.target]; ok && st.daemon != nil && !st.daemon.wait(daemonExitTimeout) {
				t.Fatalf("iteration %d: stack %s removed, but its daemon (pid %d) still runs", i, op.target, st.daemon.pid)
			}
			delete(c.stacks, op.target)
			delete(c.layers, op.target)
		}
	}
	for name, st := range c.stacks {
		l, ok := listed[name]
		if !ok {
			t.Fatalf("iteration %d: stack %s is gone", i, name)
		}
		if l.Kind != "active" || l.Parent != st.parent {
			t.Fatalf("iteration %d: stack %s: got kind %s parent %s, want active on %s", i, name, l.Kind, l.Parent, st.parent)
		}
		if st.daemon != nil && st.daemon.exited() {
			// Only rm -f, killed after it unmounted, ends a daemon
			// the test did not.
			if !(op.kind == "rm" && op.target == name) {
				t.Fatalf("iteration %d: the daemon of %s (pid %d) ended (%s) though nothing unmounted it", i, name, st.daemon.pid, st.daemon.status)
			}
			st.mnt, st.daemon = "", nil
		}
		if st.daemon != nil && op.kind == "rm" && op.target == name && l.MountedAt == "" {
			// rm -f unmounted it and was killed before the daemon
			// went: it must go now.
			if !st.daemon.wait(daemonExitTimeout) {
				t.Fatalf("iteration %d: %s is not mounted, but its daemon (pid %d) still runs", i, name, st.daemon.pid)
			}
			st.mnt, st.daemon = "", nil
		}
		wantPid := 0
		if st.daemon != nil {
			wantPid = st.daemon.pid
		}
		if l.MountedAt != st.mnt || l.DaemonPid != wantPid {
			t.Fatalf("iteration %d: stack %s: strata ls says mounted at %q by pid %d; want %q by %d", i, name, l.MountedAt, l.DaemonPid, st.mnt, wantPid)
		}
	}
	for name := range c.layers {
		if _, ok := listed[name]; !ok {
			t.Fatalf("iteration %d: layer %s, committed before, is gone", i, name)
		}
	}

	// Every layer, old and new, is complete: the digest recorded is the
	// export's, and the old ones' did not change.
	names := sortedKeys(c.layers)
	for _, l := range fresh {
		names = append(names, l.name)
	}
	if len(names) > 0 {
		for k, in := range c.s.inspect(names...) {
			name := names[k]
			if in.Layer == nil || in.ChainID != name {
				t.Fatalf("iteration %d: strata inspect %s: ChainID %q, Layer %v", i, name, in.ChainID, in.Layer)
			}
			if l, ok := c.layers[name]; ok && l.digest != in.Layer.Digest {
				t.Fatalf("iteration %d: layer %s: digest changed from %s to %s", i, name, l.digest, in.Layer.Digest)
			}
			for _, f := range fresh {
				if f.name == name {
					if f.digest != "" && f.digest != in.Layer.Digest {
						t.Fatalf("iteration %d: applied layer %s: recorded digest %s, but the blob applied is %s", i, name, in.Layer.Digest, f.digest)
					}
					f.digest = in.Layer.Digest
				}
			}
			if got := c.exportDigest(name, false, ""); got != in.Layer.Digest {
				t.Fatalf("iteration %d: layer %s: strata layer export gives %s, strata inspect says %s", i, name, got, in.Layer.Digest)
			}
		}
	}
	// A new layer is also whole: applied again it is the same layer, and
	// its tree is what was applied or committed.
	for _, f := range fresh {
		c.exportDigest(f.name, true, f.parent)
		c.verifyLayerTree(i, f)
		c.layers[f.name] = f
		t.Logf("  layer %s is stored (%s)", f.name, map[bool]string{true: "finished", false: "killed after it was stored"}[op.finished])
	}
	if op.kind == "commit" && op.finished {
		// A commit that finished names the layer; it may be one
		// stored already.
		found := false
		for _, l := range c.layers {
			if l.parent == op.stack.parent && treeDiff(l.tree, op.stack.tree) == "" {
				found = true
			}
		}
		if !found {
			t.Fatalf("iteration %d: commit of %s finished, but no layer on %s has its tree", i, op.stack.name, op.stack.parent)
		}
	}

	// Stacks: the one op worked on keeps its tree, and its writes.
	if op.kind == "kill-daemon" {
		c.verifyWrites(i, op)
	}
	if op.stack != nil {
		if _, ok := c.stacks[op.stack.name]; ok {
			c.verifyStackTree(i, op.stack)
		}
	}
	if op.kind == "rm" {
		if l, ok := c.layers[op.target]; ok {
			c.verifyLayerTree(i, l)
		}
		if st, ok := c.stacks[op.target]; ok {
			c.verifyStackTree(i, st)
		}
	}
	if len(c.layers) > 0 && c.rng.IntN(3) == 0 {
		c.verifyLayerTree(i, c.pickLayer())
	}

	// Nothing mounted or running that the model does not account for.
	c.verifyMountsAndDaemons(i)

	// Keep the store small: unmount or mount a stack now and then.
	if len(c.stacks) > crashMaxStacks {
		for _, name := range sortedKeys(c.stacks) {
			if st := c.stacks[name]; st.mnt == "" {
				c.s.must("rm", name)
				delete(c.stacks, name)
				break
			}
		}
	}
}

// exportDigest exports layer and returns the sha256 of the bytes; with
// reapply set it also applies them again (on parent) and checks that
// this gives the same layer.
func (c *crashRun) exportDigest(layer string, reapply bool, parent string) string {
	c.t.Helper()
	file := filepath.Join(c.scratch, "export.tar")
	defer os.Remove(file)
	c.s.must("layer", "export", layer, file)
	b, err := os.ReadFile(file)
	if err != nil {
		c.t.Fatal(err)
	}
	if reapply {
		args := []string{"layer", "apply"}
		if parent != "" {
			args = append(args, "--parent", parent)
		}
		if got := c.s.mustLine(append(args, file)...); got != layer {
			c.t.Fatalf("strata layer apply of the export of %s: got %s, want the same layer", layer, got)
		}
	}
	return blobDigest(b)
}

// treeOfLayer mounts a new stack on layer, hashes its tree, unmounts
// it and removes it.
func (c *crashRun) treeOfLayer(layer string) map[string]string {
	c.t.Helper()
	c.seq++
	name := fmt.Sprintf("verify%d", c.seq)
	c.s.mustLine("create", "--name", name, layer)
	mnt, w := c.s.mount(name)
	c.all = append(c.all, w)
	tree := cliTree(c.t, mnt)
	c.s.unmount(name, w)
	c.s.must("rm", name)
	return tree
}

func (c *crashRun) verifyLayerTree(i int, l *crashLayer) {
	c.t.Helper()
	if d := treeDiff(l.tree, c.treeOfLayer(l.name)); d != "" {
		c.t.Fatalf("iteration %d: layer %s (on %q) differs from what was applied or committed:\n%s", i, l.name, l.parent, d)
	}
}

// verifyStackTree compares a stack's tree, through its mount (made for
// the check if need be), with the model's.
func (c *crashRun) verifyStackTree(i int, st *crashStack) {
	c.t.Helper()
	mounted := st.mnt != ""
	if !mounted {
		c.mount(st)
	}
	if d := treeDiff(st.tree, cliTree(c.t, st.mnt)); d != "" {
		c.t.Fatalf("iteration %d: stack %s differs from what was written into it:\n%s", i, st.name, d)
	}
	if mounted {
		// A killed commit must not leave the daemon frozen: a write
		// goes through.
		probe := filepath.Join(st.mnt, fmt.Sprintf("probe%d", i))
		done := make(chan error, 1)
		go func() { done <- errors.Join(writeFile(probe, []byte("probe")), os.Remove(probe)) }()
		select {
		case err := <-done:
			if err != nil {
				c.t.Fatalf("iteration %d: write through %s: %v", i, st.mnt, err)
			}
		case <-time.After(daemonExitTimeout):
			c.t.Fatalf("iteration %d: a write through %s still blocks after %v: is the daemon still frozen?", i, st.mnt, daemonExitTimeout)
		}
	} else if c.rng.IntN(2) == 0 {
		c.unmount(st)
	}
}

// verifyWrites remounts the stack whose daemon was killed and checks that
// every write the writer reported is there in full; the write in flight
// is set to its full content, so the model knows the tree.
func (c *crashRun) verifyWrites(i int, op *crashOp) {
	c.t.Helper()
	st := op.stack
	c.mount(st)
	reported, current, _ := op.writer.result()
	final := map[string][]byte{} // a later write to a path supersedes an earlier one
	for _, cw := range reported {
		final[cw.path] = cw.content
	}
	for _, p := range sortedKeys(final) {
		if current != nil && current.path == p {
			continue // appended to in flight: checked below
		}
		got, err := os.ReadFile(filepath.Join(st.mnt, p))
		if err != nil || !bytes.Equal(got, final[p]) {
			c.t.Fatalf("iteration %d: %s, written, fsynced and reported before the daemon was killed: got %d bytes (%v), want %d", i, p, len(got), err, len(final[p]))
		}
		st.tree[p] = cliFileDesc(cliFileMode, final[p])
	}
	if current != nil {
		// The write in flight may have reached the disk in part: the
		// file holds what it held before it began (which may be
		// nothing) and then some of its bytes, in order.
		p := filepath.Join(st.mnt, current.path)
		got, err := os.ReadFile(p)
		switch {
		case errors.Is(err, os.ErrNotExist) && current.create:
		case err != nil:
			c.t.Fatalf("iteration %d: read %s, in flight when the daemon was killed: %v", i, current.path, err)
		case len(got) < current.base || !bytes.Equal(got, current.content[:min(len(got), len(current.content))]) || len(got) > len(current.content):
			c.t.Fatalf("iteration %d: %s, in flight when the daemon was killed: got %d bytes, want the %d it held before and then a prefix of the %d written", i, current.path, len(got), current.base, len(current.content)-current.base)
		}
		// Settle it, so the model knows the tree.
		if current.create {
			if err = os.Remove(p); errors.Is(err, os.ErrNotExist) {
				err = nil
			}
		} else {
			err = writeFile(p, current.content)
			st.tree[current.path] = cliFileDesc(cliFileMode, current.content)
		}
		if err != nil {
			c.t.Fatalf("iteration %d: settle %s, in flight when the daemon was killed: %v", i, current.path, err)
		}
	}
	c.t.Logf("  remounted %s: the %d writes reported are there", st.name, len(reported))
}

// verifyMountsAndDaemons checks that the mounts under the root are the
// model's, and that the only daemons alive are theirs.
func (c *crashRun) verifyMountsAndDaemons(i int) {
	c.t.Helper()
	var want []string
	alive := map[*daemonWatch]bool{}
	for _, st := range c.stacks {
		if st.mnt != "" {
			want = append(want, st.mnt)
			alive[st.daemon] = true
		}
	}
	sort.Strings(want)
	if got := mountsUnder(c.s.root); strings.Join(got, " ") != strings.Join(want, " ") {
		c.t.Fatalf("iteration %d: mounts under the store: got %v, want %v", i, got, want)
	}
	for _, w := range c.all {
		if !alive[w] && !w.wait(daemonExitTimeout) {
			c.t.Fatalf("iteration %d: daemon pid %d (%s at %s) still runs, though no stack is mounted by it", i, w.pid, w.name, w.dir)
		}
		if alive[w] && w.exited() {
			c.t.Fatalf("iteration %d: daemon pid %d of mounted %s has exited (%s)", i, w.pid, w.name, w.status)
		}
	}
}

// finish checks every layer's tree, unmounts everything, and checks that
// the store is consistent and no daemon runs.
func (c *crashRun) finish() {
	c.t.Helper()
	for _, name := range sortedKeys(c.layers) {
		c.verifyLayerTree(-1, c.layers[name])
	}
	for _, name := range sortedKeys(c.stacks) {
		st := c.stacks[name]
		c.verifyStackTree(-1, st)
		if st.mnt != "" {
			c.unmount(st)
		}
	}
	if got := c.s.must("check"); got != "the store is consistent\n" {
		c.t.Errorf("strata check at the end: %q", got)
	}
	c.verifyMountsAndDaemons(-1)
	if live := liveDaemons(c.all); len(live) > 0 {
		c.t.Errorf("daemons still running at the end: %v", live)
	}
}

// liveDaemons describes those of ws still running.
func liveDaemons(ws []*daemonWatch) []string {
	var out []string
	for _, w := range ws {
		if !w.exited() {
			out = append(out, fmt.Sprintf("pid %d (%s at %s)", w.pid, w.name, w.dir))
		}
	}
	return out
}

// TestCrashRemoveMidTransaction kills `strata rm` at the moment the
// snapshot's directory leaves snapshots/ (the layout snapshot.go
// documents), which may be before the transaction that deletes its
// record has committed. The snapshot must then be whole (the transaction
// did not commit) or gone (it did): never a record whose data the repair
// step throws away.
func TestCrashRemoveMidTransaction(t *testing.T) {
	for _, kind := range []string{"layer", "stack"} {
		t.Run(kind, func(t *testing.T) {
			s := newCLIStore(t)
			kept := 0 // attempts that left the snapshot listed
			for a := 0; a < 10 && !t.Failed(); a++ {
				files := map[string]string{"d/": "", "d/f": strings.Repeat(fmt.Sprintf("attempt %d ", a), 1000), "d/l": "->f"}
				blob, _ := cliLayer(t, files, "gzip")
				file := filepath.Join(t.TempDir(), "l.tar.gz")
				if err := os.WriteFile(file, blob, 0o644); err != nil {
					t.Fatal(err)
				}
				layer := s.mustLine("layer", "apply", file)
				target, fsDir := layer, ""
				if kind == "stack" {
					target = fmt.Sprintf("stack%d", a)
					s.mustLine("create", "--name", target, layer)
					fsDir = s.inspect(target)[0].Mount.Upper
				} else {
					fsDir = s.inspect(layer)[0].Mount.Lowers[0]
				}
				snapDir := filepath.Dir(fsDir)
				killed := crashRemoveAt(t, s, target, snapDir)
				listed := false
				if r := s.run("ls", "-q", "--no-trunc"); r.code != 0 {
					// The one thing ls could fail on is target.
					t.Errorf("strata ls fails after strata rm %s was killed: %v", target, r)
					listed = true
				} else {
					listed = strings.Contains(r.stdout, target+"\n")
				}
				if listed {
					kept++
					// The transaction did not commit: the snapshot
					// must be whole.
					r := s.run("check")
					if strings.Contains(r.stdout, "damaged:") || strings.Contains(r.stdout, "missing") {
						t.Errorf("strata rm %s killed after it moved %s away, before its transaction committed: the record is left without its data, and the repair step deletes the data:\n%v", target, snapDir, r)
					}
				}
				if r := s.run("check", "--repair"); r.code != 0 {
					t.Errorf("strata check --repair: %v", r)
				}
				if r := s.run("check"); r.code != 0 || r.stdout != "the store is consistent\n" {
					t.Errorf("strata check after strata check --repair: %v", r)
				}
				if listed {
					if _, err := os.Stat(fsDir); err != nil {
						t.Errorf("after strata check --repair: %s, still listed, has no directory: %v", target, err)
					}
					if kind == "layer" {
						// Its blob too is whole: the export is the blob applied.
						out := filepath.Join(t.TempDir(), "out.tar.gz")
						if r := s.run("layer", "export", layer, out); r.code != 0 {
							t.Errorf("layer %s, still listed, cannot be exported: %v", layer, r)
						} else if b, err := os.ReadFile(out); err != nil || blobDigest(b) != blobDigest(blob) {
							t.Errorf("layer %s, still listed: its export is not the blob applied (%v)", layer, err)
						}
					}
					// However it ended, rm again removes it.
					if r := s.run("rm", target); r.code != 0 {
						t.Errorf("strata rm %s again: %v", target, r)
					}
				}
				if kind == "stack" {
					s.must("rm", layer)
				}
				if r := s.run("check"); r.code != 0 || r.stdout != "the store is consistent\n" {
					t.Errorf("strata check after removing %s: %v", target, r)
				}
				t.Logf("attempt %d: killed %v, still listed after: %v", a, killed, listed)
			}
			t.Logf("%d of the attempts left the snapshot listed", kept)
		})
	}
}

// crashRemoveAt runs `strata rm target` and sends it SIGKILL as soon as
// snapDir is gone; it reports whether the kill came before rm ended.
func crashRemoveAt(t *testing.T, s *cliStore, target, snapDir string) bool {
	t.Helper()
	cmd, stdout, stderr, err := cliCommand(t.TempDir(), cliOpts{}, s.args([]string{"rm", target})...)
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	defer stderr.Close()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	deadline := time.Now().Add(cliTimeout)
	for {
		if _, err := os.Lstat(snapDir); errors.Is(err, os.ErrNotExist) {
			_ = cmd.Process.Signal(syscall.SIGKILL) // our unreaped child
			break
		}
		select {
		case <-done:
			return false
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			<-done
			t.Fatalf("strata rm %s: not done in %v", target, cliTimeout)
		}
	}
	<-done
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ws.Signaled()
}

// TestCrashDaemonZombie asks strata about a mount daemon that has exited
// but that its parent has not reaped yet, as happens for a while on any
// system, and for good where PID 1 does not reap (a container without an
// init). A zombie serves nothing and will not exit again: strata must
// take it for gone.
func TestCrashDaemonZombie(t *testing.T) {
	// zombieDaemon mounts web and returns its mountpoint and daemon's
	// pid. This process is the daemon's subreaper (newCLIStore) and does
	// not reap it until the test ends: once it exits it stays a zombie.
	zombieDaemon := func(t *testing.T, s *cliStore) (string, int) {
		blob, _ := cliLayer(t, cliBaseFiles, "gzip")
		file := filepath.Join(t.TempDir(), "l.tar.gz")
		if err := os.WriteFile(file, blob, 0o644); err != nil {
			t.Fatal(err)
		}
		layer := s.mustLine("layer", "apply", file)
		s.mustLine("create", "--name", "web", layer)
		mnt := s.mustLine("mount", "web")
		pid := s.inspect("web")[0].DaemonPid
		t.Cleanup(func() {
			_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
			var ws syscall.WaitStatus
			_, _ = syscall.Wait4(pid, &ws, 0, nil)
		})
		if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err != nil || !bytes.Contains(cmdline, []byte("serve")) {
			t.Fatalf("pid %d is not the mount daemon: %q, %v", pid, cmdline, err)
		}
		return mnt, pid
	}
	waitZombie := func(t *testing.T, pid int) {
		for deadline := time.Now().Add(daemonExitTimeout); ; time.Sleep(pollInterval) {
			if st, _, err := procStat(pid); err == nil && st == 'Z' {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("daemon %d is not a zombie after %v", pid, daemonExitTimeout)
			}
		}
	}

	// kill -9 of the daemon: check finds it gone, the repair forgets
	// it, and the stack mounts again.
	t.Run("killed", func(t *testing.T) {
		s := newCLIStore(t)
		mnt, pid := zombieDaemon(t, s)
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil { // our unreaped child
			t.Fatal(err)
		}
		waitZombie(t, pid)
		want := fmt.Sprintf("mount daemon (pid %d) at %s is gone", pid, mnt)
		if r := s.run("check"); r.code != 1 || !strings.Contains(r.stdout, want) {
			t.Errorf("strata check with the daemon killed (a zombie, not yet reaped): want exit 1 and %q; got %v", want, r)
		}
		if r := s.run("check", "--repair"); r.code != 0 {
			t.Errorf("strata check --repair: %v", r)
		}
		if in := s.inspect("web")[0]; in.MountedAt != "" || in.DaemonPid != 0 {
			t.Errorf("strata inspect web after the repair: MountedAt %q DaemonPid %d; want it unmounted", in.MountedAt, in.DaemonPid)
		}
		r := s.run("mount", "web")
		if r.code != 0 {
			t.Fatalf("strata mount web after its daemon was killed and the store repaired: %v", r)
		}
		in := s.inspect("web")[0]
		w := watchDaemon(in.DaemonPid, "web", in.MountedAt)
		s.mu.Lock()
		s.daemons = append(s.daemons, w)
		s.mu.Unlock()
		if d := treeDiff(cliTreeOf(cliBaseFiles), cliTree(t, in.MountedAt)); d != "" {
			t.Errorf("remounted stack:\n%s", d)
		}
	})

	// strata unmount waits for the daemon to exit: an exit nobody has
	// reaped yet is an exit.
	t.Run("unmounted", func(t *testing.T) {
		s := newCLIStore(t)
		mnt, pid := zombieDaemon(t, s)
		begin := time.Now()
		r := s.run("unmount", "web")
		if r.code != 0 {
			t.Errorf("strata unmount web, its daemon exiting unreaped: %v", r)
		} else if took := time.Since(begin); took > 5*time.Second {
			t.Errorf("strata unmount web took %v: it waited for its exited daemon to be reaped", took)
		}
		if _, ok := mountEntry(mnt); ok {
			t.Errorf("%s still mounted after strata unmount", mnt)
		}
		waitZombie(t, pid)
	})
}
