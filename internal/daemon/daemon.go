// Package daemon starts a program's own background daemon: Go cannot
// fork, so the program re-executes itself in a new session with a pipe
// on which the daemon reports whether it came up. The parent returns
// only once it has.
package daemon

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
)

// readyOK is what a daemon writes when it is up; anything else is its
// error message.
const readyOK = "ok"

// Start re-executes this program with args, and env added to its
// environment, as a daemon in its own session, with stdin, stdout and
// stderr on /dev/null, and waits until it calls Ready. envName names the
// variable that tells the child it is the daemon (see Child). It returns
// the daemon's pid, or the error the daemon reported.
func Start(envName string, args, env []string) (int, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	self, err := os.Executable()
	if err != nil {
		w.Close()
		return 0, err
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		w.Close()
		return 0, err
	}
	defer devnull.Close()
	cmd := exec.Command(self, args...)
	cmd.Env = append(append(os.Environ(), env...), envName+"=3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, devnull, devnull
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return 0, fmt.Errorf("start daemon: %w", err)
	}
	msg, err := io.ReadAll(r)
	if err == nil && string(msg) == readyOK {
		pid := cmd.Process.Pid
		return pid, cmd.Process.Release()
	}
	// The daemon failed or died before it was up: reap it.
	_ = cmd.Wait()
	if len(msg) == 0 {
		return 0, errors.New("daemon exited before it was up")
	}
	return 0, errors.New(string(msg))
}

// Child reports whether this process is a daemon started by Start with
// envName, and if so returns the function that reports it up (nil) or
// failed (an error). The variable is removed from the environment.
func Child(envName string) (ready func(error), ok bool) {
	fdStr := os.Getenv(envName)
	if fdStr == "" {
		return nil, false
	}
	os.Unsetenv(envName)
	fd, err := strconv.Atoi(fdStr)
	if err != nil {
		return func(error) {}, true
	}
	pipe := os.NewFile(uintptr(fd), "ready")
	return func(err error) {
		if err != nil {
			fmt.Fprint(pipe, err.Error())
		} else {
			fmt.Fprint(pipe, readyOK)
		}
		pipe.Close()
	}, true
}
