package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	unionfs "github.com/strata-fs/strata/fs"
	"github.com/strata-fs/strata/internal/daemon"
	"github.com/strata-fs/strata/snapshot"
)

// mountsDir holds default mountpoints under the store root.
const mountsDir = "mounts"

var mountCmd = &command{
	name:    "mount",
	args:    "NAME [DIR]",
	summary: "Serve a stack as a union filesystem in the background and print where",
	changes: true,
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		suid := fs.Bool("suid", false, "honour set-user-ID bits on a DIR of your own (not nosuid)")
		dev := fs.Bool("dev", false, "let device nodes work on a DIR of your own (not nodev)")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usagef("name one stack, and optionally the directory to mount it on")
			}
			info, err := e.store.Resolve(ctx, args[0])
			if err != nil {
				return notFoundHint(err)
			}
			if info.Kind == snapshot.KindCommitted {
				return fmt.Errorf("%q is a committed layer: create a stack on it ('strata create %s') and mount that", args[0], args[0])
			}
			if d, ok, err := e.store.Mounted(ctx, info.Name); err != nil {
				return err
			} else if ok {
				return fmt.Errorf("%q is already mounted at %s", args[0], d.Dir)
			}
			dir := filepath.Join(e.store.Root(), mountsDir, info.Name)
			if len(args) == 2 {
				if dir, err = filepath.Abs(args[1]); err != nil {
					return err
				}
			} else if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			if err := unionfs.CheckMountpoint(dir); err != nil {
				return err
			}
			dargs := []string{serveCmd.name, "--root", e.store.Root(), info.Name, dir}
			if e.debug {
				dargs = append(dargs, "--debug")
			}
			// A directory of the user's may be reachable by every local
			// user, who must not run an image's set-user-ID binaries or
			// reach the host's devices through its device nodes. The
			// default mountpoint is inside the store, which only its
			// owner can enter (as runc's and podman's roots).
			if len(args) == 2 {
				if !*suid {
					dargs = append(dargs, "--nosuid")
				}
				if !*dev {
					dargs = append(dargs, "--nodev")
				}
			}
			if _, err := daemon.Start(serveEnv, dargs, nil); err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, dir)
			return nil
		}
	},
}

var unmountCmd = &command{
	name:    "unmount",
	args:    "NAME|DIR",
	summary: "Unmount a mounted stack; its daemon exits",
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		lazy := fs.BoolP("lazy", "l", false, "detach now even if busy (umount -l)")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) != 1 {
				return usagef("name one stack or mountpoint")
			}
			name, d, state, err := findMount(ctx, e, args[0])
			if err != nil {
				return err
			}
			if state == snapshot.MountDead {
				// Its daemon was killed: the mount only answers
				// ENOTCONN, and nothing is left to wait for.
				if err := unix.Unmount(d.Dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
					return fmt.Errorf("unmount dead mount %s: %w", d.Dir, err)
				}
				fmt.Fprintf(e.stderr, "strata: the mount daemon of %s (pid %d) had died; its dead mount at %s is removed\n", name, d.Pid, d.Dir)
				return forgetMount(ctx, e, name, d)
			}
			return unmountDaemon(ctx, e, name, d, *lazy)
		}
	},
}

// findMount finds the stack mounted as ref: a stack's name or a
// mountpoint. Its mount is live or dead (see snapshot.MountDead).
func findMount(ctx context.Context, e *env, ref string) (string, snapshot.Daemon, snapshot.MountState, error) {
	if info, err := e.store.Resolve(ctx, ref); err == nil {
		d, state, err := e.store.MountRecord(ctx, info.Name)
		if err != nil {
			return "", d, state, err
		}
		if state == snapshot.MountNone {
			return "", d, state, fmt.Errorf("%q is not mounted", ref)
		}
		return info.Name, d, state, nil
	}
	abs, err := filepath.Abs(ref)
	if err != nil {
		return "", snapshot.Daemon{}, snapshot.MountNone, err
	}
	ls, err := e.store.List(ctx)
	if err != nil {
		return "", snapshot.Daemon{}, snapshot.MountNone, err
	}
	for _, l := range ls {
		if l.Daemon != nil && l.Daemon.Dir == abs {
			return l.Name, *l.Daemon, snapshot.MountLive, nil
		}
		if l.DeadMount != nil && l.DeadMount.Dir == abs {
			return l.Name, *l.DeadMount, snapshot.MountDead, nil
		}
	}
	return "", snapshot.Daemon{}, snapshot.MountNone, fmt.Errorf("%q is neither a stack nor where one is mounted (see 'strata ls')", ref)
}

// unmountDaemon unmounts d's mountpoint and waits for the daemon to
// exit.
func unmountDaemon(ctx context.Context, e *env, name string, d snapshot.Daemon, lazy bool) error {
	flags := 0
	if lazy {
		flags = unix.MNT_DETACH
	}
	if err := unix.Unmount(d.Dir, flags); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("unmount %s: busy: close the files open under it, or use --lazy", d.Dir)
		}
		return fmt.Errorf("unmount %s: %w", d.Dir, err)
	}
	e.log.Printf("unmounted %s; waiting for daemon %d", d.Dir, d.Pid)
	deadline := time.Now().Add(10 * time.Second)
	for snapshot.ProcessAlive(d.Pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("unmounted %s, but its daemon (pid %d) has not exited after 10s", d.Dir, d.Pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return forgetMount(ctx, e, name, d)
}

// forgetMount removes the record of name's unmounted mount d, and d's
// directory if it is the default one.
func forgetMount(ctx context.Context, e *env, name string, d snapshot.Daemon) error {
	if err := e.store.SetUnmounted(ctx, name); err != nil {
		return err
	}
	// A default mountpoint goes with the mount.
	if filepath.Dir(d.Dir) == filepath.Join(e.store.Root(), mountsDir) && strings.HasSuffix(d.Dir, "/"+name) {
		_ = os.Remove(d.Dir)
	}
	return nil
}
