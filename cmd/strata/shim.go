package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/internal/daemon"
)

// shimEnv tells the re-executed shim where its ready pipe is.
const shimEnv = "_STRATA_SHIM_READY_FD"

// shimCmd is the runner of a detached container, which `run -d` and
// `start` leave in the background: it starts the container with its
// output going to the log, records its end, and cleans up.
var shimCmd = &command{
	name:    "shim",
	args:    "NAME",
	summary: "Run a container and wait for it (what 'strata run -d' and 'strata start' leave in the background)",
	hidden:  true,
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) != 1 {
				return usagef("name a container")
			}
			// The ready pipe must not reach runc or the container, which
			// would hold it open and keep the client waiting.
			if fd, err := strconv.Atoi(os.Getenv(shimEnv)); err == nil {
				unix.CloseOnExec(fd)
			}
			ready, child := daemon.Child(shimEnv)
			if !child {
				ready = func(error) {}
			}
			err := shim(context.WithoutCancel(ctx), e, args[0], ready)
			if err != nil {
				ready(err)
			}
			return err
		}
	},
}

func shim(ctx context.Context, e *env, name string, ready func(error)) error {
	// A signal to the shim is for the container, as with run.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwardedSignals...)
	logf, err := os.OpenFile(filepath.Join(bundleDir(e, name), logFileName), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer devnull.Close()
	logger := log.New(io.Discard, "", 0)
	if e.debug {
		logger = log.New(logf, "strata shim: ", log.Lmicroseconds)
	}
	s, err := startContainer(ctx, e, name, procIO{devnull, logf, logf}, logger)
	if err != nil {
		return shimError(err)
	}
	output := make(chan struct{})
	if s.console != nil {
		go func() {
			_, _ = io.Copy(logf, s.console)
			close(output)
		}()
	} else {
		close(output)
	}
	ready(nil)
	code := s.wait(sigs)
	select {
	case <-output:
	case <-time.After(terminalDrain):
	}
	return s.finish(ctx, code)
}

// The shim reports a failure to start with its exit status first:
// "126 exec: ...".
func shimError(err error) error {
	var st exitStatus
	if errors.As(err, &st) {
		return fmt.Errorf("%d %v", st.code, st.err)
	}
	return fmt.Errorf("%d %v", statusFailed, err)
}

func parseShimError(err error) error {
	code, msg, ok := strings.Cut(err.Error(), " ")
	if n, cerr := strconv.Atoi(code); ok && cerr == nil {
		return exitStatus{n, errors.New(msg)}
	}
	return err
}

// startDetached starts the container name under a shim and returns
// once it runs.
func startDetached(ctx context.Context, e *env, name string) error {
	if err := os.MkdirAll(bundleDir(e, name), 0o700); err != nil {
		return err
	}
	args := []string{shimCmd.name, "--root", e.store.Root(), name}
	if e.debug {
		args = append(args, "--debug")
	}
	if _, err := daemon.Start(shimEnv, args, nil); err != nil {
		return parseShimError(err)
	}
	return nil
}
