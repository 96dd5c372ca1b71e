package main

import (
	"context"
	"errors"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// forwardedSignals are passed on to the container's process, as docker
// run's --sig-proxy does.
var forwardedSignals = []os.Signal{
	syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT,
	syscall.SIGUSR1, syscall.SIGUSR2,
}

// runAttached runs the container name in the foreground with strata's
// standard I/O and returns its process's exit status.
func runAttached(ctx context.Context, e *env, name string) error {
	// A signal is for the container; the store's work after it ends
	// must still be done.
	ctx = context.WithoutCancel(ctx)
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwardedSignals...)
	defer signal.Stop(sigs)
	rec, err := loadContainer(ctx, e, name)
	if err != nil {
		return err
	}
	stdin := os.Stdin
	if !rec.cfg.OpenStdin {
		if stdin, err = os.Open(os.DevNull); err != nil {
			return err
		}
		defer stdin.Close()
	}
	s, err := startContainer(ctx, e, name, procIO{stdin, os.Stdout, os.Stderr}, e.log)
	if err != nil {
		return err
	}
	var term *terminal
	if s.console != nil {
		term = attachTerminal(s.console, os.Stdin, os.Stdout, rec.cfg.OpenStdin)
	}
	code := s.wait(sigs)
	if term != nil {
		term.finish()
	}
	if err := s.finish(ctx, code); err != nil {
		return exitStatus{statusFailed, err}
	}
	if code < 0 {
		return exitStatus{statusFailed, errors.New("the container's process ended, but not as this process's child: its exit status is unknown")}
	}
	return exitStatus{code: code}
}

// terminal connects strata's terminal to a container's: raw mode on
// ours, input and output copied, window size followed.
type terminal struct {
	restore func()
	output  chan struct{} // closed when the container's output ends
	winch   chan os.Signal
}

// terminalDrain bounds how long the output of a container that has
// ended is still copied (a process it left behind may keep its terminal
// open).
const terminalDrain = 2 * time.Second

func attachTerminal(master, in, out *os.File, stdin bool) *terminal {
	t := &terminal{restore: func() {}, output: make(chan struct{}), winch: make(chan os.Signal, 1)}
	if stdin {
		if old, err := unix.IoctlGetTermios(int(in.Fd()), unix.TCGETS); err == nil {
			raw := *old
			raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
			raw.Oflag &^= unix.OPOST
			raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
			raw.Cflag &^= unix.CSIZE | unix.PARENB
			raw.Cflag |= unix.CS8
			raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
			if unix.IoctlSetTermios(int(in.Fd()), unix.TCSETS, &raw) == nil {
				t.restore = func() { _ = unix.IoctlSetTermios(int(in.Fd()), unix.TCSETS, old) }
			}
		}
	}
	resize := func() {
		for _, f := range []*os.File{in, out} {
			if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil {
				_ = unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, ws)
				return
			}
		}
	}
	resize()
	signal.Notify(t.winch, syscall.SIGWINCH)
	go func() {
		for range t.winch {
			resize()
		}
	}()
	if stdin {
		go func() { _, _ = io.Copy(master, in) }()
	}
	go func() {
		_, _ = io.Copy(out, master) // until EIO: every end of the terminal is closed
		close(t.output)
	}()
	return t
}

// finish waits for the output to end, then puts strata's terminal back.
func (t *terminal) finish() {
	select {
	case <-t.output:
	case <-time.After(terminalDrain):
	}
	signal.Stop(t.winch)
	close(t.winch)
	t.restore()
}
