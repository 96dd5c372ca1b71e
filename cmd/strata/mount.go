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
			dargs := []string{serveCmd.name, "--root", e.store.Root(), info.Name, dir}
			if e.debug {
				dargs = append(dargs, "--debug")
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
			name, d, err := findMount(ctx, e, args[0])
			if err != nil {
				return err
			}
			return unmountDaemon(ctx, e, name, d, *lazy)
		}
	},
}

// findMount finds the stack mounted as ref: a stack's name or a
// mountpoint.
func findMount(ctx context.Context, e *env, ref string) (string, snapshot.Daemon, error) {
	if info, err := e.store.Resolve(ctx, ref); err == nil {
		d, ok, err := e.store.Mounted(ctx, info.Name)
		if err != nil {
			return "", d, err
		}
		if !ok {
			return "", d, fmt.Errorf("%q is not mounted", ref)
		}
		return info.Name, d, nil
	}
	abs, err := filepath.Abs(ref)
	if err != nil {
		return "", snapshot.Daemon{}, err
	}
	ls, err := e.store.List(ctx)
	if err != nil {
		return "", snapshot.Daemon{}, err
	}
	for _, l := range ls {
		if l.Daemon != nil && l.Daemon.Dir == abs {
			return l.Name, *l.Daemon, nil
		}
	}
	return "", snapshot.Daemon{}, fmt.Errorf("%q is neither a stack nor where one is mounted (see 'strata ls')", ref)
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
	if err := e.store.SetUnmounted(ctx, name); err != nil {
		return err
	}
	// A default mountpoint goes with the mount.
	if filepath.Dir(d.Dir) == filepath.Join(e.store.Root(), mountsDir) && strings.HasSuffix(d.Dir, "/"+name) {
		_ = os.Remove(d.Dir)
	}
	return nil
}
