package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/pflag"

	"github.com/strata-fs/strata/container"
	"github.com/strata-fs/strata/image"
	"github.com/strata-fs/strata/snapshot"
)

// Exit statuses of run and exec, as docker's.
const (
	statusFailed       = 125 // strata itself failed
	statusCannotInvoke = 126 // the command is not executable
	statusNotFound     = 127 // the command does not exist
	statusSignalBase   = 128 // + the signal that ended the process
)

const (
	defaultStopTimeout  = 10 // seconds stop waits before SIGKILL
	runUsageCreateFlags = "[--name N] [--rm] [-e K=V] [--env-file F] [-w DIR] [-u USER[:GROUP]] [--entrypoint E] [-v HOST:CTR[:ro]] [-p [IP:]HOST:CTR[/udp]] [--network host|none|private] [--hostname H] [--read-only] [-i] [-t] [--runtime PATH]"
)

var runCmd = &command{
	name:       "run",
	args:       "[-d] " + runUsageCreateFlags + " IMAGE|CONTAINER [CMD [ARG...]]",
	summary:    "Run a command in a new container (or a stopped one), with runc",
	changes:    true,
	failStatus: statusFailed,
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		f := addRunFlags(fs)
		detach := fs.BoolP("detach", "d", false, "run in the background and print the container's name; see 'strata logs'")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) == 0 {
				return usagef("name an image (or a container) to run")
			}
			name, err := createOrReuse(ctx, e, fs, f, args)
			if err != nil {
				return err
			}
			if *detach {
				if err := startDetached(ctx, e, name); err != nil {
					return err
				}
				fmt.Fprintln(e.stdout, name)
				return nil
			}
			return runAttached(ctx, e, name)
		}
	},
}

// runFlags are the flags run and create share: the container's config.
type runFlags struct {
	// globalRuntime is the global --runtime, resolved, which a new
	// container records unless run's own --runtime is given.
	globalRuntime string
	name          *string
	env           *[]string
	envFiles      *[]string
	workdir       *string
	user          *string
	entrypoint    *string
	volumes       *[]string
	ports         *[]string
	network       *string
	hostname      *string
	readOnly      *bool
	stdin         *bool
	tty           *bool
	runtime       *string
	autoRemove    *bool
	fs            *pflag.FlagSet
	// labels are more labels of the container (strata build's).
	labels map[string]string
}

func addRunFlags(fs *pflag.FlagSet) *runFlags {
	fs.SetInterspersed(false) // flags after the image belong to the command
	return &runFlags{
		fs:         fs,
		name:       fs.String("name", "", "the container's `NAME` (default: a random one)"),
		env:        fs.StringArrayP("env", "e", nil, "set `K=V` in the environment (K alone: take its value from strata's environment)"),
		envFiles:   fs.StringArray("env-file", nil, "read K=V lines from `FILE`"),
		workdir:    fs.StringP("workdir", "w", "", "the process's working `DIR` in the container"),
		user:       fs.StringP("user", "u", "", "run as `USER[:GROUP]` (names from the container's /etc/passwd and /etc/group, or numbers)"),
		entrypoint: fs.String("entrypoint", "", "override the image's `ENTRYPOINT` (and drop its CMD)"),
		volumes:    fs.StringArrayP("volume", "v", nil, "bind-mount `HOST:CTR[:ro]`"),
		ports:      fs.StringArrayP("publish", "p", nil, "publish a port, `[IP:]HOST:CTR[/udp]` (IP default 0.0.0.0)"),
		network:    fs.String("network", container.NetworkPrivate, "`MODE`: private (own namespace, loopback only), none (the same), or host"),
		hostname:   fs.String("hostname", "", "the container's `HOSTNAME` (default: its short ID)"),
		readOnly:   fs.Bool("read-only", false, "mount the root filesystem read-only"),
		stdin:      fs.BoolP("interactive", "i", false, "keep stdin open to the process"),
		tty:        fs.BoolP("tty", "t", false, "give the process a terminal"),
		runtime:    fs.String("runtime", "", "the OCI runtime's `PATH` (default: runc on $PATH)"),
		autoRemove: fs.Bool("rm", false, "remove the container, its changes and its mount when it exits"),
	}
}

// configChanged returns the flags given that shape a new container's
// config.
func configChanged(fs *pflag.FlagSet) []string {
	var names []string
	for _, n := range []string{"env", "env-file", "workdir", "user", "entrypoint", "volume", "publish", "network", "hostname", "read-only", "interactive", "tty", "runtime", "rm"} {
		if fs.Changed(n) {
			names = append(names, "--"+n)
		}
	}
	return names
}

// createOrReuse returns the container run names: a new one on the image
// args[0] with the command args[1:], or the existing container args[0].
func createOrReuse(ctx context.Context, e *env, fs *pflag.FlagSet, f *runFlags, args []string) (string, error) {
	if info, err := e.store.Resolve(ctx, args[0]); err == nil && info.Kind == snapshot.KindActive && info.Labels[image.LabelImage] != "" && !fs.Changed("name") {
		if len(args) > 1 || len(configChanged(fs)) > 0 {
			return "", usagef("%q is a container: its command and options were fixed when it was created; run it without them, or run its image", args[0])
		}
		return info.Name, nil
	}
	return createFromImage(ctx, e, f, args[0], args[1:])
}

// createFromImage creates a container on the image ref with its config
// recorded in the same transaction.
func createFromImage(ctx context.Context, e *env, f *runFlags, ref string, cmdArgs []string) (string, error) {
	name := *f.name
	if name == "" {
		name = randomStackName()
	} else if err := checkStackName(name); err != nil {
		return "", err
	}
	if err := oneOf("network", *f.network, container.NetworkPrivate, container.NetworkNone, container.NetworkHost); err != nil {
		return "", err
	}
	if e.runtimeSet && *f.runtime == "" {
		rt, err := lookRuntime(e.runtime)
		if err != nil {
			return "", err
		}
		f.globalRuntime = rt
	}
	_, err := e.images.CreateContainer(ctx, name, ref, func(im image.Image) (map[string]string, error) {
		c, err := f.config(im, cmdArgs)
		if err != nil {
			return nil, err
		}
		v, err := container.Encode(c)
		if err != nil {
			return nil, err
		}
		labels := map[string]string{container.LabelConfig: v}
		for k, l := range f.labels {
			labels[k] = l
		}
		return labels, nil
	})
	if errors.Is(err, snapshot.ErrExists) {
		return "", nameInUse(name)
	}
	return name, err
}

// config is the container config of the flags on the image im.
func (f *runFlags) config(im image.Image, cmdArgs []string) (container.Config, error) {
	ic := im.Config.Config
	var id [32]byte
	if _, err := rand.Read(id[:]); err != nil {
		return container.Config{}, err
	}
	c := container.Config{
		ID:         hex.EncodeToString(id[:]),
		Image:      im.ID.String(),
		Entrypoint: ic.Entrypoint,
		Cmd:        ic.Cmd,
		WorkingDir: ic.WorkingDir,
		User:       ic.User,
		Hostname:   *f.hostname,
		Network:    *f.network,
		ReadOnly:   *f.readOnly,
		Tty:        *f.tty,
		OpenStdin:  *f.stdin,
		AutoRemove: *f.autoRemove,
		StopSignal: ic.StopSignal,
	}
	if *f.runtime != "" {
		abs, err := filepath.Abs(*f.runtime)
		if err != nil {
			return c, err
		}
		c.Runtime = abs
	} else if f.globalRuntime != "" {
		c.Runtime = f.globalRuntime
	}
	if f.fs.Changed("entrypoint") {
		// As docker: a new entrypoint drops the image's CMD.
		c.Entrypoint, c.Cmd = nil, nil
		if *f.entrypoint != "" {
			c.Entrypoint = []string{*f.entrypoint}
		}
	}
	if len(cmdArgs) > 0 {
		c.Cmd = cmdArgs
	}
	if *f.workdir != "" {
		c.WorkingDir = *f.workdir
	}
	if *f.user != "" {
		c.User = *f.user
	}
	var flagEnv []string
	for _, p := range *f.envFiles {
		kvs, err := readEnvFile(p)
		if err != nil {
			return c, err
		}
		flagEnv = append(flagEnv, kvs...)
	}
	flagEnv = append(flagEnv, expandEnv(*f.env)...)
	c.Env = container.MergeEnv(ic.Env, flagEnv)
	for _, v := range *f.volumes {
		vol, err := parseVolume(v)
		if err != nil {
			return c, err
		}
		c.Volumes = append(c.Volumes, vol)
	}
	for _, p := range *f.ports {
		port, err := container.ParsePort(p)
		if err != nil {
			return c, usagef("-p %s", err)
		}
		c.Ports = append(c.Ports, port)
	}
	if len(c.Ports) > 0 && c.Network == container.NetworkHost {
		return c, usagef("-p with --network host: the container's ports are the host's already")
	}
	for p := range ic.ExposedPorts {
		c.ExposedPorts = append(c.ExposedPorts, p)
	}
	sort.Strings(c.ExposedPorts)
	return c, nil
}

// expandEnv resolves -e K (no "=") from strata's environment, as docker
// does; a K not set there is dropped.
func expandEnv(kvs []string) []string {
	var out []string
	for _, kv := range kvs {
		if strings.Contains(kv, "=") {
			out = append(out, kv)
		} else if v, ok := os.LookupEnv(kv); ok {
			out = append(out, kv+"="+v)
		}
	}
	return out
}

// readEnvFile reads docker's env file format: K=V lines, K alone taken
// from the environment, # comments and blank lines skipped.
func readEnvFile(p string) ([]string, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("--env-file: %w", err)
	}
	defer f.Close()
	var kvs []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimLeft(sc.Text(), " \t")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		kvs = append(kvs, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("--env-file %s: %w", p, err)
	}
	return expandEnv(kvs), nil
}

// parseVolume parses -v HOST:CTR[:ro|rw]. Named volumes are not
// offered: HOST must be an existing path.
func parseVolume(v string) (container.Volume, error) {
	parts := strings.Split(v, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return container.Volume{}, usagef("-v %q: want HOST:CTR[:ro]", v)
	}
	vol := container.Volume{Source: parts[0], Destination: parts[1]}
	if len(parts) == 3 {
		switch parts[2] {
		case "ro":
			vol.ReadOnly = true
		case "rw":
		default:
			return vol, usagef("-v %q: option %q: want ro or rw", v, parts[2])
		}
	}
	if !filepath.IsAbs(vol.Source) && !strings.HasPrefix(vol.Source, ".") {
		return vol, usagef("-v %q: %q is not a path: named volumes are not offered, bind-mount a host directory", v, vol.Source)
	}
	abs, err := filepath.Abs(vol.Source)
	if err != nil {
		return vol, err
	}
	if _, err := os.Stat(abs); err != nil {
		return vol, fmt.Errorf("-v %s: %w", v, err)
	}
	vol.Source = abs
	if !filepath.IsAbs(vol.Destination) {
		return vol, usagef("-v %q: the container path %q is not absolute", v, vol.Destination)
	}
	return vol, nil
}
