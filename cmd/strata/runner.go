package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/container"
	"github.com/strata-fs/strata/internal/daemon"
	"github.com/strata-fs/strata/snapshot"
)

// The container lifecycle. A container's record (config and state) is
// two labels of its snapshot; what runc needs is under the store:
//
//	containers/<name>/          the bundle: config.json, hosts, hostname,
//	                            resolv.conf, log (stdout and stderr of a
//	                            detached container), rootfs/ (where the
//	                            mount daemon serves the stack while it runs),
//	                            lock (see lockContainer)
//	runc/                       runc --root: runc's own state
//
// The runner is the process that starts the container and waits for it:
// `strata run` itself, or the shim that `run -d` and `start` leave in
// the background. It is the child subreaper, so the container's first
// process becomes its child once `runc create` exits, and it records the
// exit status. If it is killed, settle finds out later and cleans up.
const (
	containersDir = "containers"
	runcRootDir   = "runc"
	logFileName   = "log"
	lockFileName  = "lock"
	// runnerWait bounds how long settle waits for a live runner to
	// record the end of its container.
	runnerWait = 5 * time.Second
)

// exitStatus is an error that sets strata's exit status; err (nil for
// a process's own status) is printed.
type exitStatus struct {
	code int
	err  error
}

func (s exitStatus) Error() string {
	if s.err == nil {
		return fmt.Sprintf("exit status %d", s.code)
	}
	return s.err.Error()
}

func (s exitStatus) Unwrap() error { return s.err }

func bundleDir(e *env, name string) string {
	return filepath.Join(e.store.Root(), containersDir, name)
}

// containerRecord is a container's snapshot with its config and state.
type containerRecord struct {
	info  snapshot.Info
	cfg   container.Config
	state container.State
}

func loadContainer(ctx context.Context, e *env, ref string) (containerRecord, error) {
	info, err := e.store.Resolve(ctx, ref)
	if err != nil {
		return containerRecord{}, notFoundHint(err)
	}
	if info.Kind != snapshot.KindActive {
		return containerRecord{}, fmt.Errorf("%q is a %s, not a container", ref, info.Kind)
	}
	r := containerRecord{info: info}
	if r.cfg, err = container.DecodeConfig(info.Labels); err != nil {
		return r, err
	}
	if r.state, err = container.DecodeState(info.Labels); err != nil {
		return r, err
	}
	return r, nil
}

func saveState(ctx context.Context, e *env, name string, st container.State) error {
	v, err := container.Encode(st)
	if err != nil {
		return err
	}
	_, err = e.store.Update(ctx, snapshot.Info{Name: name, Labels: map[string]string{container.LabelState: v}}, "labels."+container.LabelState)
	return err
}

// runtimePath is the OCI runtime the container runs with: the one it
// recorded when it was created, else the global --runtime, else runc.
func runtimePath(e *env, c container.Config) (string, error) {
	if c.Runtime != "" {
		return c.Runtime, nil
	}
	if e.runtime != "" {
		return lookRuntime(e.runtime)
	}
	p, err := exec.LookPath("runc")
	if err != nil {
		return "", errors.New("runc is not on $PATH: install it (apt-get install runc) or name a runtime with --runtime PATH")
	}
	return p, nil
}

// lookRuntime finds the runtime --runtime names: a program on $PATH, or
// a path, made absolute so that a container records where it is.
func lookRuntime(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("--runtime %q: %w: give a program on $PATH (runc, crun) or the runtime's path", name, errors.Unwrap(err))
	}
	return filepath.Abs(p)
}

func runcCommand(e *env, rt string, args ...string) *exec.Cmd {
	return exec.Command(rt, append([]string{"--root", filepath.Join(e.store.Root(), runcRootDir)}, args...)...)
}

// runcDelete removes runc's state of the container id, killing what is
// left of it; a container runc does not know is no error.
func runcDelete(e *env, rt, id string) error {
	// runc keeps a container's state in --root/ID: without it there is
	// nothing to delete, and no need for the runtime to be there.
	if _, err := os.Lstat(filepath.Join(e.store.Root(), runcRootDir, id)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	out, err := runcCommand(e, rt, "delete", "--force", id).CombinedOutput()
	if err != nil && !bytes.Contains(out, []byte("does not exist")) {
		return fmt.Errorf("runc delete %s: %v: %s", id, err, bytes.TrimSpace(out))
	}
	return nil
}

// procIO is the standard I/O of a container without a terminal.
type procIO struct{ stdin, stdout, stderr *os.File }

// started is a container that runs, seen from its runner.
type started struct {
	e      *env
	name   string
	cfg    container.Config
	state  container.State
	rt     string
	own    bool // the runner mounted the rootfs and unmounts it
	rootfs string
	// mountpoints are what runc creates in the root filesystem for the
	// spec's mounts; they go when the container ends (see cleanup).
	mountpoints []string
	pub         *container.Publisher
	console     *os.File // the terminal's master end, with -t
	finished    bool
}

// startContainer starts the container name as runc create and start,
// with stdio (unused with a terminal). The caller waits for it.
func startContainer(ctx context.Context, e *env, name string, stdio procIO, logger *log.Logger) (_ *started, err error) {
	if _, err := waitRunner(ctx, e, name); err != nil {
		return nil, err
	}
	unlock, err := lockContainer(e, name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	rec, err := settleLocked(ctx, e, name)
	if err != nil {
		return nil, err
	}
	if rec.state.Status == container.Running {
		return nil, fmt.Errorf("container %q is already running", name)
	}
	if container.ProcessAlive(rec.state.Runner, rec.state.RunnerStart) {
		return nil, fmt.Errorf("container %q is still being cleaned up after its last run (by pid %d): try again", name, rec.state.Runner)
	}
	c := rec.cfg
	if c.ID == "" {
		return nil, fmt.Errorf("%q has no container config (it was created on a layer, or by an older strata): create a container from an image", name)
	}
	rt, err := runtimePath(e, c)
	if err != nil {
		return nil, err
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("become child subreaper: %w", err)
	}
	b := bundleDir(e, name)
	if err := os.MkdirAll(b, 0o700); err != nil {
		return nil, err
	}
	s := &started{e: e, name: name, cfg: c, rt: rt}
	rootfs, own, err := mountRootfs(ctx, e, name, filepath.Join(b, "rootfs"))
	if err != nil {
		return nil, err
	}
	s.own, s.rootfs = own, rootfs
	defer func() {
		if err == nil {
			return
		}
		err = errors.Join(err, s.cleanup(ctx))
	}()
	spec, err := makeSpec(c, rootfs, b)
	if err != nil {
		return nil, err
	}
	if _, err := container.LookPath(rootfs, spec.Process.Cwd, spec.Process.Env, spec.Process.Args[0]); err != nil {
		return nil, commandStatus(err)
	}
	var dests []string
	for _, m := range spec.Mounts {
		dests = append(dests, m.Destination)
	}
	if s.mountpoints, err = container.MissingPaths(rootfs, dests); err != nil {
		return nil, err
	}
	sj, err := json.MarshalIndent(spec, "", "\t")
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(filepath.Join(b, "config.json"), sj); err != nil {
		return nil, err
	}
	pidFile := filepath.Join(b, "init.pid")
	_ = os.Remove(pidFile)
	args := []string{"create", "--bundle", b, "--pid-file", pidFile}
	var cs *container.ConsoleSocket
	if c.Tty {
		if cs, err = container.NewConsoleSocket(); err != nil {
			return nil, err
		}
		defer cs.Close()
		args = append(args, "--console-socket", cs.Path)
	}
	// runc's errors go to a log of their own, for strata to tell what
	// failed: its stderr is the container's.
	runcLog := filepath.Join(b, "runc.log")
	_ = os.Remove(runcLog)
	create := runcCommand(e, rt, append(append([]string{"--log", runcLog, "--log-format", "json"}, args...), c.ID)...)
	if !c.Tty {
		// The container's first process keeps these: runc passes its own.
		create.Stdin, create.Stdout, create.Stderr = stdio.stdin, stdio.stdout, stdio.stderr
	}
	logger.Printf("%s", strings.Join(create.Args, " "))
	if err := create.Run(); err != nil {
		return nil, runcFailed("create", err, runcLog)
	}
	if c.Tty {
		if s.console, err = cs.Receive(10 * time.Second); err != nil {
			return nil, err
		}
	}
	pb, err := os.ReadFile(pidFile)
	if err != nil {
		return nil, fmt.Errorf("runc create left no pid: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(pb)))
	if err != nil {
		return nil, fmt.Errorf("runc's pid file: %w", err)
	}
	pstart, err := container.ProcessStart(pid)
	if err != nil {
		return nil, fmt.Errorf("the container's process: %w", err)
	}
	self, err := container.ProcessStart(os.Getpid())
	if err != nil {
		return nil, err
	}
	s.state = container.State{
		Status: container.Running, Pid: pid, PidStart: pstart,
		Runner: os.Getpid(), RunnerStart: self, StartedAt: time.Now().UTC(), Rootfs: rootfs,
	}
	if c.Network != container.NetworkHost {
		if err := container.LoopbackUp(pid); err != nil {
			return nil, err
		}
	}
	if len(c.Ports) > 0 {
		if s.pub, err = container.Publish(pid, c.Ports, logger); err != nil {
			return nil, err
		}
	}
	_ = os.Remove(runcLog)
	if err := runcCommand(e, rt, "--log", runcLog, "--log-format", "json", "start", c.ID).Run(); err != nil {
		return nil, runcFailed("start", err, runcLog)
	}
	// Recorded once it runs: until then a kill -9 of this process leaves
	// a record that is not Running, whose runc state settle deletes.
	if err := saveState(ctx, e, name, s.state); err != nil {
		return nil, err
	}
	return s, nil
}

// runcFailed is the error of a failed runc command, with docker's exit
// status: 127 or 126 when runc's own lookup or exec of the program, done
// as the container's user, failed (`exec: "NAME": executable file not
// found in $PATH`, `exec /NAME: permission denied`), else 125. Only
// runc's log is read, so that a "permission denied" of something else (a
// volume, the runtime itself) is not taken for the program's.
func runcFailed(cmd string, err error, logPath string) error {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return exitStatus{statusFailed, fmt.Errorf("runc %s: %w", cmd, err)}
	}
	msg := runcErrors(logPath)
	err = fmt.Errorf("runc %s: %v: %s", cmd, err, msg)
	i := strings.Index(msg, "exec")
	if i < 0 {
		return exitStatus{statusFailed, err}
	}
	execMsg := msg[i:]
	switch {
	case strings.Contains(execMsg, "executable file not found"), strings.Contains(execMsg, "no such file or directory"):
		return exitStatus{statusNotFound, err}
	case strings.Contains(execMsg, "permission denied"):
		return exitStatus{statusCannotInvoke, err}
	}
	return exitStatus{statusFailed, err}
}

// runcErrors returns the error messages of runc's JSON log, or what the
// log holds when it has none.
func runcErrors(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	if msgs := runcErrorMessages(b); len(msgs) > 0 {
		return strings.Join(msgs, "; ")
	}
	return string(bytes.TrimSpace(b))
}

// runcErrorMessages returns the messages of level error or fatal of a
// runc JSON log.
func runcErrorMessages(log []byte) []string {
	var msgs []string
	for _, line := range bytes.Split(log, []byte("\n")) {
		var entry struct{ Level, Msg string }
		if json.Unmarshal(line, &entry) == nil && (entry.Level == "error" || entry.Level == "fatal") {
			msgs = append(msgs, entry.Msg)
		}
	}
	return msgs
}

// commandStatus gives an error of LookPath docker's exit status: 127
// for a command not found, 126 for one that cannot be run.
func commandStatus(err error) error {
	switch {
	case errors.Is(err, container.ErrCommandNotFound):
		return exitStatus{statusNotFound, err}
	case errors.Is(err, container.ErrCommandNotExecutable):
		return exitStatus{statusCannotInvoke, err}
	}
	return exitStatus{statusFailed, err}
}

// mountRootfs serves the container's stack at dir with the mount daemon,
// unless it is mounted already (by an earlier run whose runner died, or
// by `strata mount`); own tells whether the mount is the runner's to
// unmount.
func mountRootfs(ctx context.Context, e *env, name, dir string) (rootfs string, own bool, err error) {
	if d, ok, err := e.store.Mounted(ctx, name); err != nil {
		return "", false, err
	} else if ok {
		return d.Dir, d.Dir == dir, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", false, err
	}
	dargs := []string{serveCmd.name, "--root", e.store.Root(), name, dir}
	if e.debug {
		dargs = append(dargs, "--debug")
	}
	if _, err := daemon.Start(serveEnv, dargs, nil); err != nil {
		return "", false, fmt.Errorf("mount the container's root filesystem: %w", err)
	}
	return dir, true, nil
}

// wait waits for the container's first process to end, forwarding the
// signals of sigs to it meanwhile, and returns its exit status (128+N
// for signal N), or -1 when it was not this process's child to wait for.
func (s *started) wait(sigs <-chan os.Signal) int {
	done := make(chan int, 1)
	go func() {
		var ws unix.WaitStatus
		for {
			_, err := unix.Wait4(s.state.Pid, &ws, 0, nil)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				for container.ProcessAlive(s.state.Pid, s.state.PidStart) {
					time.Sleep(50 * time.Millisecond)
				}
				done <- -1
				return
			}
			break
		}
		switch {
		case ws.Exited():
			done <- ws.ExitStatus()
		case ws.Signaled():
			done <- statusSignalBase + int(ws.Signal())
		default:
			done <- -1
		}
	}()
	for {
		select {
		case code := <-done:
			return code
		case sig := <-sigs:
			if ss, ok := sig.(unix.Signal); ok && container.ProcessAlive(s.state.Pid, s.state.PidStart) {
				_ = unix.Kill(s.state.Pid, ss)
			}
		}
	}
}

// finish records the end of the container with code (-1: unknown) and
// cleans up after it: runc's state, the ports, the mount, and with --rm
// the container.
func (s *started) finish(ctx context.Context, code int) error {
	unlock, err := lockContainer(s.e, s.name)
	if err != nil {
		return err
	}
	defer unlock()
	s.state.Status = container.Exited
	s.state.FinishedAt = time.Now().UTC()
	s.state.ExitCode, s.state.ExitUnknown = code, code < 0
	// A settle that found this runner dead (its pid reused) may have
	// recorded the end already; a later run's record is not this one's.
	rec, err := loadContainer(ctx, s.e, s.name)
	if err == nil && rec.state.Pid == s.state.Pid && rec.state.PidStart == s.state.PidStart {
		err = saveState(ctx, s.e, s.name, s.state)
	}
	return errors.Join(err, s.cleanup(ctx))
}

// cleanup undoes what startContainer did, once.
func (s *started) cleanup(ctx context.Context) error {
	if s.finished {
		return nil
	}
	s.finished = true
	var errs []error
	if s.pub != nil {
		errs = append(errs, s.pub.Close())
	}
	if s.console != nil {
		errs = append(errs, s.console.Close())
	}
	errs = append(errs, runcDelete(s.e, s.rt, s.cfg.ID))
	if s.rootfs != "" {
		// As docker's init layer keeps them out of the container's: the
		// mountpoints are not changes of the process.
		errs = append(errs, container.RemoveEmpty(s.rootfs, s.mountpoints))
	}
	if s.own {
		errs = append(errs, unmountRootfs(ctx, s.e, s.name))
	}
	if s.cfg.AutoRemove {
		errs = append(errs, removeContainer(ctx, s.e, s.name))
	}
	return errors.Join(errs...)
}

// unmountRootfs unmounts the container's root filesystem if it is
// mounted where the runner mounts it.
func unmountRootfs(ctx context.Context, e *env, name string) error {
	d, ok, err := e.store.Mounted(ctx, name)
	if err != nil || !ok || d.Dir != filepath.Join(bundleDir(e, name), "rootfs") {
		return err
	}
	if err := unmountDaemon(ctx, e, name, d, false /* lazy */); err != nil {
		e.log.Printf("unmount %s: %v; detaching it", d.Dir, err)
		return unmountDaemon(ctx, e, name, d, true /* lazy */)
	}
	return nil
}

// removeContainer removes the container's stack and its bundle.
func removeContainer(ctx context.Context, e *env, name string) error {
	if err := e.store.Remove(ctx, name); err != nil && !errors.Is(err, snapshot.ErrNotFound) {
		return err
	}
	return os.RemoveAll(bundleDir(e, name))
}

// settle makes the record of container name true after its runner died:
// a container recorded as running whose process is gone has exited with
// an unknown status, and its runc state and mount are cleaned up. A live
// runner is given runnerWait to record the end itself.
func settle(ctx context.Context, e *env, name string) (containerRecord, error) {
	rec, err := waitRunner(ctx, e, name)
	if err != nil || rec.cfg.ID == "" {
		return rec, err
	}
	unlock, err := lockContainer(e, rec.info.Name)
	if err != nil {
		return rec, err
	}
	defer unlock()
	return settleLocked(ctx, e, rec.info.Name)
}

// waitRunner loads the container's record, waiting up to runnerWait
// for a live runner whose container has ended to record the end.
func waitRunner(ctx context.Context, e *env, name string) (containerRecord, error) {
	rec, err := loadContainer(ctx, e, name)
	deadline := time.Now().Add(runnerWait)
	for err == nil && rec.state.Status == container.Running &&
		!container.ProcessAlive(rec.state.Pid, rec.state.PidStart) &&
		container.ProcessAlive(rec.state.Runner, rec.state.RunnerStart) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		rec, err = loadContainer(ctx, e, name)
	}
	return rec, err
}

// settleLocked is settle's work once the caller holds the container's
// lock (lockContainer).
func settleLocked(ctx context.Context, e *env, name string) (containerRecord, error) {
	rec, err := loadContainer(ctx, e, name)
	if err != nil || rec.cfg.ID == "" {
		return rec, err
	}
	now := rec.state.Observe(container.ProcessAlive)
	if now.Status == container.Running {
		return rec, nil
	}
	if container.ProcessAlive(rec.state.Runner, rec.state.RunnerStart) {
		// It records the end and cleans up as soon as it has the lock.
		rec.state = now
		return rec, nil
	}
	if rec.state.Status == container.Running {
		e.log.Printf("container %s ended while nothing waited for it", name)
		now.FinishedAt = time.Now().UTC()
		if err := saveState(ctx, e, name, now); err != nil {
			return rec, err
		}
		rec.state = now
	}
	if _, err := os.Lstat(filepath.Join(e.store.Root(), runcRootDir, rec.cfg.ID)); err == nil {
		rt, err := runtimePath(e, rec.cfg)
		if err == nil {
			err = runcDelete(e, rt, rec.cfg.ID)
		}
		if err != nil {
			return rec, errors.Join(err, unmountRootfs(ctx, e, name))
		}
	}
	return rec, unmountRootfs(ctx, e, name)
}

// lockContainer takes the container's lock, an flock on a file of its
// bundle, which the kernel drops when the holder dies. Starting a
// container, recording its end with the cleanup after it, and settling
// it are done under it, so that none of them removes runc state or a
// mount that another has just made.
func lockContainer(e *env, name string) (unlock func(), err error) {
	b := bundleDir(e, name)
	if err := os.MkdirAll(b, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(b, lockFileName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("lock container %s: %w", name, err), f.Close())
	}
	return func() { _ = f.Close() }, nil
}

// writeFileAtomic writes b to p through a temporary file and a rename.
func writeFileAtomic(p string, b []byte) error {
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// removeStale is the cleanup step for what a crash between removing a
// container from the database and removing its files leaves: bundles
// under containers/ of no container (unmounting a rootfs still mounted
// there) and runc state of no container's ID.
func removeStale(ctx context.Context, e *env) error {
	// Read the directories before the records: a bundle or runc state is
	// made after its container's record, so one seen here whose record is
	// missing below is stale, not new.
	bundles, err := os.ReadDir(filepath.Join(e.store.Root(), containersDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	states, err := os.ReadDir(filepath.Join(e.store.Root(), runcRootDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	ls, err := e.store.List(ctx)
	if err != nil {
		return err
	}
	names, ids := map[string]bool{}, map[string]bool{}
	for _, l := range ls {
		names[l.Name] = true
		if c, err := container.DecodeConfig(l.Labels); err == nil && c.ID != "" {
			ids[c.ID] = true
		}
	}
	var errs []error
	for _, ent := range bundles {
		if names[ent.Name()] {
			continue
		}
		b := filepath.Join(e.store.Root(), containersDir, ent.Name())
		if err := unix.Unmount(filepath.Join(b, "rootfs"), unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount stale %s: %w", b, err))
			continue
		}
		e.log.Printf("removing the bundle of a removed container: %s", b)
		errs = append(errs, os.RemoveAll(b))
	}
	var rt string
	for _, ent := range states {
		if ids[ent.Name()] {
			continue
		}
		if rt == "" {
			if rt, err = runtimePath(e, container.Config{}); err != nil {
				return errors.Join(append(errs, err)...)
			}
		}
		e.log.Printf("removing runc's state of a removed container: %s", ent.Name())
		errs = append(errs, runcDelete(e, rt, ent.Name()))
	}
	return errors.Join(errs...)
}
