package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/cow"
	"github.com/strata-fs/strata/fs"
	"github.com/strata-fs/strata/internal/daemon"
	"github.com/strata-fs/strata/snapshot"
)

// serveEnv tells the re-executed daemon where its ready pipe is.
const serveEnv = "_STRATA_SERVE_READY_FD"

// serveCmd is the mount daemon that `strata mount` starts: hidden, since
// a user runs mount.
var serveCmd = &command{
	name:    "serve",
	args:    "NAME DIR",
	summary: "Serve a stack at DIR in the foreground (what 'strata mount' runs in the background)",
	hidden:  true,
	flags: func(pfs *pflag.FlagSet) func(context.Context, *env, []string) error {
		nosuid := pfs.Bool("nosuid", false, "mount nosuid")
		nodev := pfs.Bool("nodev", false, "mount nodev")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) != 2 {
				return usagef("name a stack and a directory")
			}
			var flags []string
			if *nosuid {
				flags = append(flags, "nosuid")
			}
			if *nodev {
				flags = append(flags, "nodev")
			}
			ready, child := daemon.Child(serveEnv)
			logger := log.New(e.stderr, "strata serve: ", 0)
			if !child {
				ready = func(err error) {}
			} else if !e.debug {
				logger = log.New(io.Discard, "", 0)
			}
			err := serve(e, args[0], args[1], flags, logger, ready)
			if err != nil {
				ready(err)
			}
			return err
		}
	},
}

func serve(e *env, name, dir string, flags []string, logger *log.Logger, ready func(error)) error {
	// Listen before mounting: a signal that arrives as soon as the mount
	// shows must still unmount it.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	ctx := context.Background()
	st, err := snapshot.Open(e.root, snapshot.Options{})
	if err != nil {
		return err
	}
	m, err := st.Mounts(ctx, name)
	if err != nil {
		return notFoundHint(err)
	}
	stack, err := cow.New(cow.Options{Lower: m.Lowers, Upper: m.Upper, Work: m.Work})
	if err != nil {
		return err
	}
	defer stack.Close()
	ln, err := net.Listen("unix", "@strata-control-"+randomStackName())
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	defer ln.Close()
	if err := fs.CheckMountpoint(dir); err != nil {
		return err
	}
	root := &fs.Root{Stack: stack}
	srv, err := fs.Serve(dir, root, fs.MountOptions{
		FsName:   "strata:" + name,
		Name:     "strata",
		ReadOnly: m.ReadOnly(),
		Flags:    flags,
		Debug:    e.debug && logger.Writer() != io.Discard,
		Logger:   logger,
	})
	if err != nil {
		return fmt.Errorf("mount %s: %w", dir, err)
	}
	d := snapshot.Daemon{Dir: dir, Pid: os.Getpid(), Socket: ln.Addr().String()}
	if err := st.SetMounted(ctx, name, d); err != nil {
		return errors.Join(err, srv.Unmount())
	}
	go serveControl(ln, root, logger)
	go func() {
		sig := <-sigs
		logger.Printf("%v: unmounting %s", sig, dir)
		if err := srv.Unmount(); err != nil {
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				logger.Printf("unmount %s: %v", dir, err)
			}
		}
	}()
	ready(nil)
	srv.Wait()
	// Forget the mount only if it is still ours.
	if cur, ok, err := st.Mounted(ctx, name); err == nil && (!ok || cur.Pid == d.Pid) {
		if err := st.SetUnmounted(ctx, name); err != nil {
			logger.Printf("forget mount: %v", err)
		}
	}
	return nil
}

// The control protocol, on an abstract unix socket recorded in the
// store: the client sends "freeze\n"; the daemon holds every change to
// the stack, waits up to freezeWait for files open for writing to be
// closed, and answers "frozen N\n", N the files still open for writing;
// the changes are released when the client closes the connection, or
// dies.
const (
	ctlFreeze  = "freeze"
	ctlFrozen  = "frozen"
	freezeWait = 5 * time.Second
)

func serveControl(ln net.Listener, root *fs.Root, logger *log.Logger) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			if !peerAllowed(c) {
				logger.Printf("control: refused a client of another user")
				return
			}
			r := bufio.NewReader(c)
			line, err := r.ReadString('\n')
			if err != nil || line != ctlFreeze+"\n" {
				return
			}
			thaw, open := root.Freeze(freezeWait)
			defer thaw()
			if _, err := fmt.Fprintf(c, "%s %d\n", ctlFrozen, open); err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, r) // until the client closes
		}()
	}
}

// peerAllowed admits root and the daemon's own user.
func peerAllowed(c net.Conn) bool {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return false
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	_ = raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	return err == nil && cred != nil && (cred.Uid == 0 || int(cred.Uid) == os.Geteuid())
}

// freezeDaemon asks the daemon d to hold changes; the returned function
// releases them. warn is told if files stayed open for writing.
func freezeDaemon(d snapshot.Daemon, warn func(string)) (func() error, error) {
	c, err := net.DialTimeout("unix", d.Socket, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("reach the mount daemon (pid %d): %w", d.Pid, err)
	}
	if _, err := io.WriteString(c, ctlFreeze+"\n"); err != nil {
		return nil, errors.Join(err, c.Close())
	}
	// Changes in flight finish first; a minute is generous.
	_ = c.SetReadDeadline(time.Now().Add(time.Minute + freezeWait))
	line, err := bufio.NewReader(c).ReadString('\n')
	var open int64
	if err == nil {
		_, err = fmt.Sscanf(line, ctlFrozen+" %d\n", &open)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("the mount daemon did not freeze: %v", err), c.Close())
	}
	if open > 0 {
		warn(fmt.Sprintf("%d files stayed open for writing in the stack for %v: what is written to them meanwhile may be partly in the layer", open, freezeWait))
	}
	return c.Close, nil
}
