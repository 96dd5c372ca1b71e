package integration

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Progress on a terminal: pull and push draw docker's board at once;
// import, export and commit draw the same board only for what takes
// longer than a second.

// ptyRun is one run of strata with its stderr on a pseudo-terminal.
type ptyRun struct {
	code    int
	tty     string // what appeared on the terminal, \r\n as \n
	elapsed time.Duration
}

// onPTY runs `strata ARGS` with env added, stdin from stdin (nil:
// /dev/null), stdout to stdout (nil: the terminal too) and stderr on a
// new pseudo-terminal of 40 rows and 120 columns.
func onPTY(t *testing.T, env []string, stdin io.Reader, stdout io.Writer, args ...string) ptyRun {
	t.Helper()
	master, slave, err := openPTY()
	if err != nil {
		t.Fatalf("no pseudo-terminal: %v", err)
	}
	defer master.Close()
	if err := unix.IoctlSetWinsize(int(slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: 120}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(strataBin, args...)
	cmd.Env = cliEnv(env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, slave, slave
	if stdout != nil {
		cmd.Stdout = stdout
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		slave.Close()
		t.Fatal(err)
	}
	slave.Close()
	read := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(master) // EIO once the last slave fd closes
		read <- string(b)
	}()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(cliTimeout):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("strata %s did not exit within %v", strings.Join(args, " "), cliTimeout)
	}
	r := ptyRun{code: cmd.ProcessState.ExitCode(), elapsed: time.Since(start)}
	t.Logf("strata %s: %v", strings.Join(args, " "), r.elapsed.Round(time.Millisecond))
	r.tty = strings.ReplaceAll(<-read, "\r\n", "\n")
	return r
}

var cursorUpRE = regexp.MustCompile(`\x1b\[(\d+)A`)

// lastFrame is the board's last drawing: the lines after the last
// cursor-up, without their erase-line escapes, up to the first line
// the board did not draw.
func lastFrame(tty string) []string {
	ms := cursorUpRE.FindAllStringSubmatchIndex(tty, -1)
	if len(ms) == 0 {
		return nil
	}
	var out []string
	for _, l := range strings.Split(tty[ms[len(ms)-1][1]:], "\n") {
		if !strings.HasPrefix(l, "\x1b[2K") {
			break
		}
		out = append(out, strings.TrimPrefix(l, "\x1b[2K"))
	}
	return out
}

// checkFrame checks that the board's last drawing has one line per
// digest, each in state want.
func checkFrame(t *testing.T, what, tty string, digests []string, want string) {
	t.Helper()
	frame := lastFrame(tty)
	if len(frame) != len(digests) {
		t.Errorf("%s: last drawing has %d lines, want %d (one per layer):\n%q", what, len(frame), len(digests), tty)
		return
	}
	for _, d := range digests {
		line := d[:12] + ": " + want
		found := false
		for _, l := range frame {
			found = found || l == line
		}
		if !found {
			t.Errorf("%s: last drawing has no line %q:\n%s", what, line, strings.Join(frame, "\n"))
		}
	}
}

func TestProgressPullPush(t *testing.T) {
	reg := startRegistry(t, registryPlain)
	img, layout := regImageLayout(t, 71)
	pushWithSkopeo(t, reg, layout, "progress/app:1")
	proxy := startFaultyProxy(t, reg, proxyFault{Kind: faultSlow, CutAfter: 4 << 10, Delay: 60 * time.Millisecond})
	c := newRegClient(t, proxy.Registry(t))
	var digests []string
	for _, l := range img.layers {
		digests = append(digests, l.desc.Digest.Encoded())
	}

	ref := c.reg.Ref("progress/app:1")
	r := onPTY(t, c.env(), nil, nil, c.args(append([]string{"pull"}, append(c.tlsFlags(), ref)...))...)
	if r.code != 0 {
		t.Fatalf("strata pull on a terminal: exit %d:\n%s", r.code, r.tty)
	}
	for _, re := range []string{`\x1b\[\d+A`, `\x1b\[2K`, `: Downloading +\[=+> *\] [0-9.]+ ?kB/[0-9.]+ ?kB`, `Status: Downloaded newer image for `} {
		if !regexp.MustCompile(re).MatchString(r.tty) {
			t.Errorf("strata pull on a terminal: nothing matches %q:\n%q", re, r.tty)
		}
	}
	checkFrame(t, "strata pull", r.tty, digests, "Pull complete")
	if got := c.inspectImage(ref).Id; got != img.id() {
		t.Errorf("pulled %s, want %s", got, img.id())
	}

	// Push: to another repository of the registry itself (not through
	// the proxy, so nothing is mounted from progress/app), an image
	// imported from a layout.
	p := newRegClient(t, reg)
	pimg, playout := regImageLayout(t, 72)
	p.imgMust("import", playout, "local:1")
	var pdigests []string
	for _, l := range pimg.layers {
		pdigests = append(pdigests, l.desc.Digest.Encoded())
	}
	r = onPTY(t, p.env(), nil, nil, p.args(append([]string{"push"}, append(p.tlsFlags(), "local:1", reg.Ref("progress/pushed:1"))...))...)
	if r.code != 0 {
		t.Fatalf("strata push on a terminal: exit %d:\n%s", r.code, r.tty)
	}
	for _, re := range []string{`\x1b\[\d+A`, `: Pushing`, `1: digest: sha256:[0-9a-f]{64} size: \d+`} {
		if !regexp.MustCompile(re).MatchString(r.tty) {
			t.Errorf("strata push on a terminal: nothing matches %q:\n%q", re, r.tty)
		}
	}
	checkFrame(t, "strata push", r.tty, pdigests, "Pushed")
}

// dripReader gives data n bytes at a time, every d.
type dripReader struct {
	data []byte
	n    int
	d    time.Duration
}

func (s *dripReader) Read(b []byte) (int, error) {
	if len(s.data) == 0 {
		return 0, io.EOF
	}
	time.Sleep(s.d)
	n := copy(b[:min(len(b), s.n)], s.data)
	s.data = s.data[n:]
	return n, nil
}

// dripWriter takes what is written, sleeping d per write.
type dripWriter struct {
	buf bytes.Buffer
	d   time.Duration
}

func (s *dripWriter) Write(b []byte) (int, error) {
	time.Sleep(s.d)
	return s.buf.Write(b)
}

func TestProgressImport(t *testing.T) {
	img, layout := regImageLayout(t, 73)
	src := newCLIStore(t)
	src.imgMust("import", layout, "app:1")
	archive := filepath.Join(t.TempDir(), "app.tar")
	src.imgMust("export", "app:1", archive)
	data, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}

	// Quick: nothing on the terminal but what import always prints.
	s := newCLIStore(t)
	r := onPTY(t, nil, nil, nil, s.args([]string{"import", archive, "quick:1"})...)
	want := "Loaded image: quick:1 (3 layers unpacked, 0 already stored)\n"
	if r.code != 0 || r.tty != want {
		t.Errorf("a quick import on a terminal (%v): exit %d, terminal %q; want 0 and only %q", r.elapsed, r.code, r.tty, want)
	}

	// Slow, fed through a pipe over about two seconds: after the first
	// second the board, one line per layer.
	s = newCLIStore(t)
	drip := &dripReader{data: data, n: len(data)/20 + 1, d: 100 * time.Millisecond}
	r = onPTY(t, nil, drip, nil, s.args([]string{"import", "-", "slow:1"})...)
	if r.code != 0 {
		t.Fatalf("a slow import: exit %d:\n%s", r.code, r.tty)
	}
	if r.elapsed < 1500*time.Millisecond {
		t.Fatalf("fixture: the slow import took %v, not over a second", r.elapsed)
	}
	var digests []string
	for _, l := range img.layers {
		digests = append(digests, l.desc.Digest.Encoded())
	}
	for _, re := range []string{`\x1b\[\d+A`, `: Loading layer +\[[= >]*\] [0-9.]+[kM]?B/[0-9.]+kB`, `Loaded image: slow:1 \(3 layers unpacked, 0 already stored\)\n$`} {
		if !regexp.MustCompile(re).MatchString(r.tty) {
			t.Errorf("a slow import on a terminal: nothing matches %q:\n%q", re, r.tty)
		}
	}
	checkFrame(t, "a slow import", r.tty, digests, "Loaded")

	// Again, into a store that has every layer: Already exists.
	drip = &dripReader{data: data, n: len(data)/15 + 1, d: 100 * time.Millisecond}
	r = onPTY(t, nil, drip, nil, s.args([]string{"import", "-", "again:1"})...)
	if r.code != 0 || !strings.Contains(r.tty, "Loaded image: again:1 (0 layers unpacked, 3 already stored)") {
		t.Fatalf("a slow import of stored layers: exit %d:\n%s", r.code, r.tty)
	}
	checkFrame(t, "a slow import of stored layers", r.tty, digests, "Already exists")

	// Without a terminal, a slow import prints what it always did.
	s = newCLIStore(t)
	drip = &dripReader{data: data, n: len(data)/15 + 1, d: 100 * time.Millisecond}
	res := s.imgRunWith(cliOpts{stdin: drip}, "import", "-", "slow:1")
	if res.code != 0 || res.stderr != "" || res.stdout != "Loaded image: slow:1 (3 layers unpacked, 0 already stored)\n" {
		t.Errorf("a slow import, no terminal: %v", res)
	}
}

func TestProgressExportStdout(t *testing.T) {
	// A layer of 8 MiB of random data, read from the pipe slowly enough
	// that the export takes over a second.
	img := buildImage(t, imgSpec{layers: []imgLayerSpec{
		{files: map[string]string{"big": imgData(74, 8<<20)}, comp: "gzip"},
		{files: map[string]string{"small": "x\n"}, comp: "gzip"},
	}})
	s := newCLIStore(t)
	s.imgMust("import", writeLayout(t, filepath.Join(t.TempDir(), "in"), img, "1"), "big:1")
	for _, dest := range []string{"-", "docker-archive:-"} {
		out := &dripWriter{d: 10 * time.Millisecond}
		r := onPTY(t, nil, nil, out, s.args([]string{"export", "big:1", dest})...)
		if r.code != 0 {
			t.Fatalf("strata export big:1 %s: exit %d:\n%s", dest, r.code, r.tty)
		}
		if r.elapsed < 1200*time.Millisecond {
			t.Fatalf("fixture: the export took %v, not over a second", r.elapsed)
		}
		for _, re := range []string{`\x1b\[\d+A`, `: Exporting +\[=*>? *\] [0-9.]+ ?[kM]?B/[0-9.]+ ?MB`} {
			if !regexp.MustCompile(re).MatchString(r.tty) {
				t.Errorf("strata export %s, stderr on a terminal: nothing matches %q:\n%q", dest, re, r.tty)
			}
		}
		var digests []string
		for _, l := range img.layers {
			d := l.desc.Digest.Encoded()
			if dest != "-" {
				d = l.diffID.Encoded() // a docker archive's layers are uncompressed
			}
			digests = append(digests, d)
		}
		checkFrame(t, "strata export "+dest, r.tty, digests, "Exported")
		if testing.Verbose() {
			t.Logf("strata export %s, terminal:\n%q", dest, r.tty)
		}
		if bytes.Contains(out.buf.Bytes(), []byte("Exporting")) {
			t.Errorf("strata export %s: progress in the archive", dest)
		}
		// The archive is whole: imported back, it is the same image.
		file := filepath.Join(t.TempDir(), "out.tar")
		if err := os.WriteFile(file, out.buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		back := newCLIStore(t)
		back.imgMust("import", file, "back:1")
		if got := back.inspectImage("back:1").Id; got != img.id() {
			t.Errorf("strata export %s, imported back: %s, want %s", dest, got, img.id())
		}
	}
}

// bigStack creates the stack name holding 256 MiB of data nothing
// compresses, from seed.
func bigStack(s *cliStore, name string, seed uint64) {
	t := s.t
	s.must("create", "--name", name)
	mnt, w := s.mount(name)
	f, err := os.Create(filepath.Join(mnt, "big"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := []byte(imgData(seed, 1<<20))
	for i := range 256 {
		chunk[0] = byte(i)
		if _, err := f.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	s.unmount(name, w)
}

func TestProgressCommit(t *testing.T) {
	s := newCLIStore(t)
	bigStack(s, "big", 75)
	bigStack(s, "big2", 76)

	r := onPTY(t, nil, nil, nil, s.args([]string{"commit", "big"})...)
	if r.code != 0 {
		t.Fatalf("strata commit on a terminal: exit %d:\n%s", r.code, r.tty)
	}
	if r.elapsed < 1200*time.Millisecond {
		t.Fatalf("fixture: the commit took %v, not over a second", r.elapsed)
	}
	m := regexp.MustCompile(`digest:  sha256:([0-9a-f]{64}) `).FindStringSubmatch(r.tty)
	if m == nil {
		t.Fatalf("strata commit printed no digest:\n%q", r.tty)
	}
	for _, re := range []string{`new layer: Committing +[0-9.]+ ?[kMG]?B`, fmt.Sprintf(`\x1b\[1A\x1b\[2K%s: Committed\n`, m[1][:12])} {
		if !regexp.MustCompile(re).MatchString(r.tty) {
			t.Errorf("strata commit on a terminal: nothing matches %q:\n%q", re, r.tty)
		}
	}
	// As an image (another stack: a layer stored already is not
	// extracted again, and the commit would be quicker): the same line,
	// then the image ID.
	r = onPTY(t, nil, nil, nil, s.args([]string{"commit", "big2", "big:1"})...)
	if r.code != 0 {
		t.Fatalf("strata commit big2 big:1 on a terminal: exit %d:\n%s", r.code, r.tty)
	}
	m = regexp.MustCompile(`\x1b\[2K([0-9a-f]{12}): Committed\n`).FindStringSubmatch(r.tty)
	if m == nil {
		t.Fatalf("strata commit big2 big:1: no Committed line:\n%q", r.tty)
	}
	if r.elapsed < 1200*time.Millisecond {
		t.Fatalf("fixture: the commit took %v, not over a second", r.elapsed)
	}
	id := s.inspectImage("big:1").Id
	for _, re := range []string{`new layer: Committing +[0-9.]+ ?[kMG]?B`, fmt.Sprintf(`\x1b\[1A\x1b\[2K%s: Committed\n(\x1b\[1A\x1b\[2K%[1]s: Committed\n)?%s\n$`, m[1], regexp.QuoteMeta(id))} {
		if !regexp.MustCompile(re).MatchString(r.tty) {
			t.Errorf("strata commit big2 big:1 on a terminal: nothing matches %q:\n%q", re, r.tty)
		}
	}
	// Without a terminal: what commit always printed.
	res := s.run("commit", "-q", "big")
	if res.code != 0 || res.stderr != "" || !regexp.MustCompile(`^sha256:[0-9a-f]{64}\n$`).MatchString(res.stdout) {
		t.Errorf("strata commit -q, no terminal: %v", res)
	}
}
