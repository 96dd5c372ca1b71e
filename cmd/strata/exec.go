package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/container"
)

var execCmd = &command{
	name:    "exec",
	args:    "[-i] [-t] [-e K=V] [-w DIR] [-u USER[:GROUP]] NAME CMD [ARG...]",
	summary: "Run a command in a running container",
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		fs.SetInterspersed(false)
		stdin := fs.BoolP("interactive", "i", false, "keep stdin open to the process")
		tty := fs.BoolP("tty", "t", false, "give the process a terminal")
		envs := fs.StringArrayP("env", "e", nil, "set `K=V` in the environment")
		workdir := fs.StringP("workdir", "w", "", "the working `DIR` (default: the container's)")
		user := fs.StringP("user", "u", "", "run as `USER[:GROUP]` (default: the container's user)")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) < 2 {
				return usagef("name a running container and a command")
			}
			ctx = context.WithoutCancel(ctx)
			rec, err := settle(ctx, e, args[0])
			if err != nil {
				return err
			}
			if rec.state.Status != container.Running {
				return fmt.Errorf("container %q is not running (see 'strata ps'; 'strata start %s')", args[0], args[0])
			}
			c := rec.cfg
			c.Entrypoint, c.Cmd, c.Tty = nil, args[1:], *tty
			c.Env = container.MergeEnv(c.Env, expandEnv(*envs))
			if *workdir != "" {
				c.WorkingDir = *workdir
			}
			if *user != "" {
				c.User = *user
			}
			rootfs := rec.state.Rootfs
			u, home, err := resolveUser(rootfs, c.User)
			if err != nil {
				return err
			}
			spec, err := container.Spec(c, container.SpecInput{Rootfs: rootfs, User: u, Home: home})
			if err != nil {
				return err
			}
			p := spec.Process
			if _, err := container.LookPath(rootfs, p.Cwd, p.Env, p.Args[0]); err != nil {
				return commandStatus(err)
			}
			return execProcess(e, rec, p, *stdin)
		}
	},
}

// execProcess runs p in the container with runc exec and returns its
// exit status.
func execProcess(e *env, rec containerRecord, p *specs.Process, stdin bool) error {
	rt, err := runtimePath(e, rec.cfg)
	if err != nil {
		return err
	}
	pj, err := json.Marshal(p)
	if err != nil {
		return err
	}
	pf, err := os.CreateTemp(bundleDir(e, rec.info.Name), "exec-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(pf.Name())
	if _, err := pf.Write(pj); err != nil {
		return errors.Join(err, pf.Close())
	}
	if err := pf.Close(); err != nil {
		return err
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwardedSignals...)
	defer signal.Stop(sigs)
	if p.Terminal {
		return execTerminal(e, rec, rt, pf.Name(), stdin, sigs)
	}
	logPath := pf.Name() + ".log"
	defer os.Remove(logPath)
	cmd := runcCommand(e, rt, "--log", logPath, "--log-format", "json", "exec", "--process", pf.Name(), rec.cfg.ID)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if stdin {
		cmd.Stdin = os.Stdin
	}
	if err := cmd.Start(); err != nil {
		return exitStatus{statusFailed, fmt.Errorf("runc exec: %w", err)}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case sig := <-sigs:
			_ = cmd.Process.Signal(sig) // runc exec passes it on
		case err := <-done:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				if b, _ := os.ReadFile(logPath); len(runcErrorMessages(b)) > 0 {
					// runc itself failed, not the process: as with run,
					// its lookup or exec as the user gives 127 or 126.
					return runcFailed("exec", err, logPath)
				}
				return exitStatus{code: ee.ExitCode()}
			}
			if err != nil {
				return exitStatus{statusFailed, fmt.Errorf("runc exec: %w", err)}
			}
			return nil
		}
	}
}

// execTerminal runs the process file pf with a terminal. runc handles a
// terminal in the foreground only for a caller that has a controlling
// terminal, so it runs the process detached, sends the terminal's
// master end here, and this process, as the child subreaper, waits for
// it as the runner of a container does.
func execTerminal(e *env, rec containerRecord, rt, pf string, stdin bool, sigs <-chan os.Signal) error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return exitStatus{statusFailed, fmt.Errorf("become child subreaper: %w", err)}
	}
	cs, err := container.NewConsoleSocket()
	if err != nil {
		return exitStatus{statusFailed, err}
	}
	defer cs.Close()
	pidFile := pf + ".pid"
	defer os.Remove(pidFile)
	logPath := pf + ".log"
	defer os.Remove(logPath)
	err = runcCommand(e, rt, "--log", logPath, "--log-format", "json",
		"exec", "--detach", "--tty", "--console-socket", cs.Path, "--pid-file", pidFile, "--process", pf, rec.cfg.ID).Run()
	if err != nil {
		return runcFailed("exec", err, logPath)
	}
	master, err := cs.Receive(10 * time.Second)
	if err != nil {
		return exitStatus{statusFailed, err}
	}
	defer master.Close()
	pb, err := os.ReadFile(pidFile)
	if err != nil {
		return exitStatus{statusFailed, fmt.Errorf("runc exec left no pid: %w", err)}
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(pb)))
	if err != nil {
		return exitStatus{statusFailed, fmt.Errorf("runc's pid file: %w", err)}
	}
	// The process may be gone already; then wait4 still reaps it.
	start, _ := container.ProcessStart(pid)
	term := attachTerminal(master, os.Stdin, os.Stdout, stdin)
	proc := &started{state: container.State{Pid: pid, PidStart: start}}
	code := proc.wait(sigs)
	term.finish()
	if code < 0 {
		return exitStatus{statusFailed, errors.New("the process ended, but not as this process's child: its exit status is unknown")}
	}
	return exitStatus{code: code}
}
