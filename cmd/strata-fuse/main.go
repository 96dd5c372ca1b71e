// Command strata-fuse mounts a union of layers with strata's FUSE
// filesystem. Its command line is fuse-overlayfs's, so it can serve as
// the mount_program of containers-storage and as a fuse3 mount helper:
//
//	strata-fuse [-f] [-d] -o lowerdir=L1:L2,upperdir=U,workdir=W MOUNTPOINT
//	strata-fuse SOURCE MOUNTPOINT -o OPTIONS
package main

import (
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/cow"
	"github.com/strata-fs/strata/fs"
	"github.com/strata-fs/strata/internal/daemon"
	"github.com/strata-fs/strata/internal/version"
)

// daemonEnv carries, to the re-executed background daemon, the number of
// the pipe on which it reports whether the mount went live.
const daemonEnv = "_STRATA_FUSE_READY_FD"

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func usage(w io.Writer) {
	fmt.Fprint(w, `Usage: strata-fuse [-f] [-d] -o lowerdir=L1:L2:...[,upperdir=U,workdir=W][,OPTIONS] MOUNTPOINT
       strata-fuse SOURCE MOUNTPOINT -o OPTIONS

Mounts a union of directories as kernel overlayfs would: lowerdir lists the
read-only layers, top first; upperdir receives changes, workdir (on the same
filesystem) holds copy-ups in progress. Without upperdir the mount is
read-only. Unmount with 'umount MOUNTPOINT'.

Options (-o, comma separated): lowerdir=, upperdir=, workdir=, ro, rw,
allow_other, default_permissions, fsname=NAME, volatile, fsync=0|1,
timeout=SECONDS, noxattrs=0|1, passthrough=upper|all, dev (device nodes
open; without it the mount is nodev, as fuse-overlayfs's is), and the
generic mount options (nosuid, noexec, noatime, ...), and
redirect_dir=on|follow|off|nofollow and metacopy=on|off, with the kernel's
meanings.

By default (redirect_dir=on, metacopy=on) a directory of a lower layer can
be renamed (the upper records a redirect to it) and a change of a lower
file's attributes copies up its metadata only; both are recorded in the
kernel's format, and both are followed when found in a lower layer, which
trusts the lower layers to point only at each other: give
redirect_dir=nofollow,metacopy=off for layers you do not trust (layers
that strata applies from image tars never carry these marks).

passthrough=all serves lower files by FUSE passthrough as well: faster
reads, but a file open read-only from a lower layer keeps its old content
after another open copies it up (kernel overlayfs's follows the copy).

Flags:
  -o, --options OPTIONS   mount options, comma separated (may be repeated)
  -f, --foreground        stay in the foreground
  -d, --debug             log FUSE requests to stderr (implies -f)
      --cpuprofile FILE   write a CPU profile of the daemon to FILE
  -h, --help              show this help
  -V, --version           print the version
`)
}

func run(args []string, stderr io.Writer) int {
	flags := pflag.NewFlagSet("strata-fuse", pflag.ContinueOnError)
	flags.SetOutput(io.Discard)
	var (
		optArgs    = flags.StringArrayP("options", "o", nil, "mount options, comma separated")
		foreground = flags.BoolP("foreground", "f", false, "stay in the foreground")
		debug      = flags.BoolP("debug", "d", false, "log FUSE requests to stderr (implies -f)")
		help       = flags.BoolP("help", "h", false, "show this help")
		showVer    = flags.BoolP("version", "V", false, "print the version")
		cpuProfile = flags.String("cpuprofile", "", "write a CPU profile of the daemon to `FILE` (for profiling)")
	)
	if err := flags.Parse(args); err != nil {
		fmt.Fprintf(stderr, "strata-fuse: %v (see 'strata-fuse --help')\n", err)
		return 2
	}
	if *help {
		usage(os.Stdout)
		return 0
	}
	if *showVer {
		fmt.Println("strata-fuse version", version.String())
		return 0
	}
	pos := flags.Args()
	var mountpoint string
	switch len(pos) {
	case 1:
		mountpoint = pos[0]
	case 2: // mount helper form: SOURCE MOUNTPOINT
		mountpoint = pos[1]
	default:
		fmt.Fprintln(stderr, "strata-fuse: expected a MOUNTPOINT argument (see 'strata-fuse --help')")
		return 2
	}
	o, warnings, err := parseOptions(*optArgs)
	for _, w := range warnings {
		fmt.Fprintf(stderr, "strata-fuse: warning: %s\n", w)
	}
	if err != nil {
		fmt.Fprintf(stderr, "strata-fuse: %v\n", err)
		return 2
	}
	if len(pos) == 2 && o.fsName == "" {
		o.fsName = pos[0]
	}
	o.debug = o.debug || *debug
	if err := fs.CheckMountpoint(mountpoint); err != nil {
		fmt.Fprintf(stderr, "strata-fuse: %v\n", err)
		return 1
	}
	if ready, ok := daemon.Child(daemonEnv); ok {
		return serveDaemon(mountpoint, o, ready)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "strata-fuse: %v\n", err)
			return 1
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "strata-fuse: %v\n", err)
			return 1
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	if *foreground || o.debug {
		return serveForeground(mountpoint, o, stderr)
	}
	return startDaemon(stderr)
}

// mountAndServe opens the stack and mounts it, reporting readiness with
// ready (nil on success) before serving until unmounted or signalled.
func mountAndServe(mountpoint string, o options, logger *log.Logger, ready func(error)) int {
	// Listen before mounting: a signal that arrives as soon as the mount
	// shows must still unmount it.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	stack, err := cow.New(o.stack)
	if err != nil {
		ready(err)
		return 1
	}
	defer stack.Close()
	srv, err := fs.Mount(mountpoint, stack, fs.MountOptions{
		FsName:           o.fsName,
		Name:             "strata-fuse",
		AllowOther:       o.allowOther,
		ReadOnly:         o.readOnly,
		Debug:            o.debug,
		Timeout:          o.timeout,
		DisableXattrs:    o.noXattrs,
		Flags:            o.flags,
		LowerPassthrough: o.lowerPass,
		Logger:           logger,
	})
	if err != nil {
		ready(fmt.Errorf("mount %s: %w", mountpoint, err))
		return 1
	}
	go func() {
		sig := <-sigs
		logger.Printf("%v: unmounting %s", sig, mountpoint)
		if err := srv.Unmount(); err != nil {
			// Busy: detach, so the daemon can still end cleanly.
			if err := unix.Unmount(mountpoint, unix.MNT_DETACH); err != nil {
				logger.Printf("unmount %s: %v", mountpoint, err)
			}
		}
	}()
	ready(nil)
	srv.Wait()
	return 0
}

func serveForeground(mountpoint string, o options, stderr io.Writer) int {
	logger := log.New(stderr, "strata-fuse: ", 0)
	return mountAndServe(mountpoint, o, logger, func(err error) {
		if err != nil {
			fmt.Fprintf(stderr, "strata-fuse: %v\n", err)
		}
	})
}

// startDaemon re-executes this program in the background and waits until
// it reports the mount live or failed.
func startDaemon(stderr io.Writer) int {
	if _, err := daemon.Start(daemonEnv, os.Args[1:], nil); err != nil {
		fmt.Fprintf(stderr, "strata-fuse: %v\n", err)
		return 1
	}
	return 0
}

func serveDaemon(mountpoint string, o options, ready func(error)) int {
	logger := log.New(io.Discard, "", 0)
	if sl, err := newSyslogWriter(); err == nil {
		logger = log.New(sl, "strata-fuse: ", 0)
	}
	return mountAndServe(mountpoint, o, logger, ready)
}
