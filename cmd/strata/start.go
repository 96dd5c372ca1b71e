package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/container"
	"github.com/strata-fs/strata/snapshot"
)

var startCmd = &command{
	name:    "start",
	args:    "NAME...",
	summary: "Start stopped containers in the background; see 'strata logs'",
	changes: true,
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) == 0 {
				return usagef("name at least one container")
			}
			var errs []error
			for _, name := range args {
				rec, err := settle(ctx, e, name)
				if err == nil && rec.state.Status != container.Running {
					err = startDetached(ctx, e, rec.info.Name)
					var st exitStatus
					if errors.As(err, &st) {
						err = st.err // start fails with 1, not run's statuses
					}
					if err != nil {
						// Another start may have won: then it runs, as asked.
						if now, lerr := loadContainer(ctx, e, name); lerr == nil && now.state.Observe(container.ProcessAlive).Status == container.Running {
							err = nil
						}
					}
				}
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", name, err))
					continue
				}
				fmt.Fprintln(e.stdout, name)
			}
			return errors.Join(errs...)
		}
	},
}

var stopCmd = &command{
	name:    "stop",
	args:    "[-t SECONDS] NAME...",
	summary: "Stop running containers: the stop signal (SIGTERM unless the image says), then SIGKILL after a grace period",
	changes: true,
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		timeout := fs.IntP("time", "t", defaultStopTimeout, "`SECONDS` to wait before SIGKILL")
		signal := fs.StringP("signal", "s", "", "the `SIGNAL` to send first (default: the image's STOPSIGNAL, or SIGTERM)")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) == 0 {
				return usagef("name at least one container")
			}
			var errs []error
			for _, name := range args {
				if err := stopContainer(ctx, e, name, *signal, time.Duration(*timeout)*time.Second); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", name, err))
					continue
				}
				fmt.Fprintln(e.stdout, name)
			}
			return errors.Join(errs...)
		}
	},
}

// stopContainer signals a running container's first process, kills it
// after grace, and waits until its end is recorded.
func stopContainer(ctx context.Context, e *env, name, sigName string, grace time.Duration) error {
	rec, err := settle(ctx, e, name)
	if err != nil || rec.state.Status != container.Running {
		return err
	}
	if sigName == "" {
		sigName = rec.cfg.StopSignal
	}
	sig, err := parseSignal(sigName)
	if err != nil {
		return err
	}
	st := rec.state
	alive := func() bool { return container.ProcessAlive(st.Pid, st.PidStart) }
	waitGone := func(d time.Duration) bool {
		deadline := time.Now().Add(d)
		for alive() {
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(20 * time.Millisecond)
		}
		return true
	}
	if alive() {
		e.log.Printf("sending %v to %d", sig, st.Pid)
		_ = unix.Kill(st.Pid, sig)
	}
	if !waitGone(grace) {
		e.log.Printf("still running after %v: SIGKILL", grace)
		_ = unix.Kill(st.Pid, unix.SIGKILL)
		if !waitGone(10 * time.Second) {
			return fmt.Errorf("the container's process (pid %d) survived SIGKILL for 10s", st.Pid)
		}
	}
	_, err = settle(ctx, e, name)
	if errors.Is(err, snapshot.ErrNotFound) && rec.cfg.AutoRemove {
		// Run with --rm: its runner removed it as it ended.
		return nil
	}
	return err
}

// parseSignal reads SIGTERM, TERM, term or 15; "" is SIGTERM.
func parseSignal(s string) (unix.Signal, error) {
	if s == "" {
		return unix.SIGTERM, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		if n > 0 && n < 65 {
			return unix.Signal(n), nil
		}
		return 0, usagef("signal %d: want 1 to 64", n)
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, usagef("unknown signal %q", s)
}
