package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Implementation kinds.
const (
	kindKernel = iota
	kindFUSE
)

// impl is one of the filesystems under comparison.
type impl struct {
	// opts are extra -o options for a FUSE program.
	opts    string
	name    string // column name: "kernel", "fuse-overlayfs", "strata"
	kind    int
	bin     string // FUSE program; empty for the kernel
	version string
	skip    string // why the implementation is not measured; empty if it is
}

// kernelOptions pins the kernel overlayfs features that would otherwise
// depend on the distribution's module defaults. Both FUSE programs copy up
// whole files and keep no index, so the kernel does the same here.
const kernelOptions = "index=off,metacopy=off"

// mount is one live union mount with a fresh upper and work directory.
type mount struct {
	b     *bench
	im    *impl
	root  string // per-mount scratch directory holding upper, work and mnt
	upper string
	work  string
	dir   string // mount point
	ctx   context.Context
	stop  context.CancelFunc

	cmd  *exec.Cmd     // FUSE daemon, a child of this process
	done chan struct{} // closed when the daemon has exited
	out  *tailBuffer   // the daemon's combined output

	closeOnce sync.Once
	closeErr  error
	aborted   bool
}

// tailBuffer keeps the last few KiB written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if n := len(t.buf); n > 8192 {
		t.buf = append([]byte(nil), t.buf[n-4096:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.TrimSpace(string(t.buf))
	if len(s) > 600 {
		s = "..." + s[len(s)-600:]
	}
	return s
}

// mount builds a fresh stack of lowers (topmost first) for im.
func (b *bench) mount(im *impl, lowers []string) (*mount, error) {
	if err := b.ctx.Err(); err != nil {
		return nil, err
	}
	b.seq++
	root := filepath.Join(b.runDir, fmt.Sprintf("m%05d", b.seq))
	m := &mount{
		b:     b,
		im:    im,
		root:  root,
		upper: filepath.Join(root, "upper"),
		work:  filepath.Join(root, "work"),
		dir:   filepath.Join(root, "mnt"),
	}
	m.ctx, m.stop = context.WithTimeout(b.ctx, b.cfg.timeout)
	for _, d := range []string{m.upper, m.work, m.dir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			m.stop()
			return nil, err
		}
	}
	b.register(m)
	var err error
	switch im.kind {
	case kindKernel:
		err = kernelMount(lowers, m.upper, m.work, m.dir)
	case kindFUSE:
		err = m.startFUSE(lowers)
	}
	if err != nil {
		m.close()
		return nil, err
	}
	return m, nil
}

// kernelMount mounts kernel overlayfs. mount(2) takes at most one page of
// options; longer stacks go through fsopen(2) with one "lowerdir+" per layer.
func kernelMount(lowers []string, upper, work, mnt string) error {
	data := "lowerdir=" + strings.Join(lowers, ":") + ",upperdir=" + upper + ",workdir=" + work + "," + kernelOptions
	if len(data) < 4000 {
		if err := unix.Mount("overlay", mnt, "overlay", 0, data); err != nil {
			return fmt.Errorf("mount overlay (%d layers): %w", len(lowers), err)
		}
		return nil
	}
	fd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen overlay: %w", err)
	}
	defer unix.Close(fd)
	fail := func(what string, err error) error {
		return fmt.Errorf("overlay %s (%d layers): %w%s", what, len(lowers), err, fsLog(fd))
	}
	set := func(k, v string) error {
		if err := unix.FsconfigSetString(fd, k, v); err != nil {
			return fail(k, err)
		}
		return nil
	}
	if err := set("source", "overlay"); err != nil {
		return err
	}
	for _, l := range lowers {
		if err := set("lowerdir+", l); err != nil {
			return err
		}
	}
	for _, kv := range [][2]string{{"upperdir", upper}, {"workdir", work}} {
		if err := set(kv[0], kv[1]); err != nil {
			return err
		}
	}
	for _, opt := range strings.Split(kernelOptions, ",") {
		k, v, _ := strings.Cut(opt, "=")
		if err := set(k, v); err != nil {
			return err
		}
	}
	if err := unix.FsconfigCreate(fd); err != nil {
		return fail("create", err)
	}
	mfd, err := unix.Fsmount(fd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return fail("fsmount", err)
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, mnt, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount overlay: %w", err)
	}
	return nil
}

// fsLog returns the kernel's messages queued on an fsopen context.
func fsLog(fd int) string {
	var msgs []string
	buf := make([]byte, 1024)
	for range 8 {
		n, err := unix.Read(fd, buf)
		if err != nil || n <= 0 {
			break
		}
		msgs = append(msgs, strings.TrimSpace(string(buf[:n])))
	}
	if len(msgs) == 0 {
		return ""
	}
	return " (" + strings.Join(msgs, "; ") + ")"
}

// startFUSE runs the FUSE program in the foreground as a child and waits
// until its mount shows up in the mount table.
func (m *mount) startFUSE(lowers []string) error {
	opts := "lowerdir=" + strings.Join(lowers, ":") + ",upperdir=" + m.upper + ",workdir=" + m.work
	if m.im.opts != "" {
		opts += "," + m.im.opts
	}
	cmd := exec.Command(m.im.bin, "-f", "-o", opts, m.dir)
	m.out = &tailBuffer{}
	cmd.Stdout, cmd.Stderr = m.out, m.out
	// Own process group: a ctrl-C at the terminal reaches only the harness,
	// which then unmounts in order instead of racing the daemons.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		return err
	}
	m.cmd = cmd
	m.done = make(chan struct{})
	go func() {
		cmd.Wait()
		close(m.done)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if fstype, ok := mountedFS(m.dir); ok && strings.HasPrefix(fstype, "fuse") {
			return nil
		}
		select {
		case <-m.done:
			return fmt.Errorf("%s exited before the mount appeared (%v)%s", filepath.Base(m.im.bin), cmd.ProcessState, m.outputNote())
		case <-m.b.ctx.Done():
			return m.b.ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mount did not appear within 30s%s", m.outputNote())
		}
	}
}

// outputNote formats the daemon's recent output for an error message.
func (m *mount) outputNote() string {
	if m.out == nil {
		return ""
	}
	if s := m.out.String(); s != "" {
		return ": " + strings.ReplaceAll(s, "\n", " | ")
	}
	return ""
}

// pid returns the daemon's process id, or 0 if there is none (kernel) or
// it already exited.
func (m *mount) pid() int {
	if m.cmd == nil || m.daemonExited() {
		return 0
	}
	return m.cmd.Process.Pid
}

func (m *mount) daemonExited() bool {
	if m.done == nil {
		return false
	}
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

// abort is the watchdog: it cancels child commands and kills a FUSE
// daemon, which fails every pending request on its mount.
func (m *mount) abort() {
	m.aborted = true
	m.stop()
	if m.cmd != nil && !m.daemonExited() {
		m.cmd.Process.Signal(syscall.SIGKILL)
	}
}

// close unmounts, stops the daemon and removes the per-mount scratch data.
func (m *mount) close() error {
	m.closeOnce.Do(func() {
		m.closeErr = m.doClose()
	})
	return m.closeErr
}

func (m *mount) doClose() error {
	defer m.stop()
	defer m.b.unregister(m)
	var errs []error
	if _, ok := mountedFS(m.dir); ok {
		if err := unmount(m.dir); err != nil {
			errs = append(errs, err)
		}
	}
	if m.cmd != nil {
		if err := m.stopDaemon(10 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if _, ok := mountedFS(m.dir); ok {
		// Never remove files below a live mount point.
		errs = append(errs, fmt.Errorf("%s is still mounted; left in place", m.dir))
		return errors.Join(errs...)
	}
	if err := os.RemoveAll(m.root); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// stopDaemon waits for the daemon to exit after its unmount, escalating to
// SIGTERM and SIGKILL of its own PID.
func (m *mount) stopDaemon(grace time.Duration) error {
	select {
	case <-m.done:
		return nil
	case <-time.After(grace):
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
		return fmt.Errorf("%s did not exit after unmount; sent SIGTERM", m.im.name)
	case <-time.After(3 * time.Second):
	}
	m.cmd.Process.Signal(syscall.SIGKILL)
	<-m.done
	return fmt.Errorf("%s did not exit after unmount; killed", m.im.name)
}

// unmount detaches a mount, retrying while it is busy and falling back to
// a lazy unmount.
func unmount(dir string) error {
	var err error
	for i := range 50 {
		err = unix.Unmount(dir, 0)
		if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(time.Duration(i+1) * 4 * time.Millisecond)
	}
	if lerr := unix.Unmount(dir, unix.MNT_DETACH); lerr != nil {
		return fmt.Errorf("unmount %s: %v; lazy unmount: %w", dir, err, lerr)
	}
	return fmt.Errorf("unmount %s: %v; detached lazily", dir, err)
}

// mountedFS reports whether dir is a mount point in this process's mount
// namespace, and its filesystem type.
func mountedFS(dir string) (string, bool) {
	for _, e := range readMountinfo() {
		if e.dir == dir {
			return e.fstype, true
		}
	}
	return "", false
}

type mountEntry struct{ dir, fstype string }

func readMountinfo() []mountEntry {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []mountEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint opts [optional...] - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		f := strings.Fields(pre)
		if !ok || len(f) < 5 {
			continue
		}
		fstype, _, _ := strings.Cut(post, " ")
		out = append(out, mountEntry{dir: unescapeOctal(f[4]), fstype: fstype})
	}
	return out
}

// unescapeOctal undoes the \ooo escaping of mountinfo fields.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// vmHWM reads a process's peak resident set size in bytes.
func vmHWM(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v)
			if len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

func (b *bench) register(m *mount) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.active[m] = struct{}{}
}

func (b *bench) unregister(m *mount) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.active, m)
}

// emergencyCleanup runs on a signal: it detaches every mount this process
// made and stops the daemons it started, without waiting on their users.
func (b *bench) emergencyCleanup() {
	b.mu.Lock()
	ms := make([]*mount, 0, len(b.active))
	for m := range b.active {
		ms = append(ms, m)
	}
	b.mu.Unlock()
	for _, m := range ms {
		m.stop()
		if _, ok := mountedFS(m.dir); ok {
			if err := unix.Unmount(m.dir, unix.MNT_DETACH); err != nil {
				fmt.Fprintf(os.Stderr, "bench: unmount %s: %v\n", m.dir, err)
			}
		}
		if m.cmd != nil && !m.daemonExited() {
			select {
			case <-m.done:
			case <-time.After(3 * time.Second):
				m.cmd.Process.Signal(syscall.SIGKILL)
				<-m.done
			}
		}
	}
}

// cleanupStale unmounts leftovers below the run directory from an earlier
// harness run that was killed before it could clean up.
func (b *bench) cleanupStale() {
	prefix := b.runDir + string(filepath.Separator)
	ents := readMountinfo()
	for i := len(ents) - 1; i >= 0; i-- {
		if strings.HasPrefix(ents[i].dir, prefix) {
			b.logf("unmounting stale %s mount left by an earlier run", ents[i].fstype)
			if err := unix.Unmount(ents[i].dir, unix.MNT_DETACH); err != nil {
				b.logf("  %v", err)
			}
		}
	}
}
