package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/build/buildctx"
	"github.com/strata-fs/strata/build/dockerfile"
	"github.com/strata-fs/strata/container"
	"github.com/strata-fs/strata/image"
	"github.com/strata-fs/strata/image/reference"
	"github.com/strata-fs/strata/snapshot"
)

var buildCmd = &command{
	name:    "build",
	args:    "[-t REF]... [-f Dockerfile] [--build-arg K=V]... [--target STAGE] [--no-cache] [--pull] [--platform OS/ARCH] [-q] [--network private|none|host] [--label K=V]... [--iidfile F] [--rm=false] CONTEXT",
	summary: "Build an image from a Dockerfile, a layer a step, with a cache",
	changes: true,
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		tags := fs.StringArrayP("tag", "t", nil, "name the image `REF` (repeatable)")
		file := fs.StringP("file", "f", "", "the Dockerfile, `FILE` (default CONTEXT/Dockerfile; - for standard input)")
		buildArgs := fs.StringArray("build-arg", nil, "set the build argument `K=V` (K alone: from strata's environment)")
		target := fs.String("target", "", "build up to the stage `NAME`")
		noCache := fs.Bool("no-cache", false, "do not use the build cache")
		quiet := fs.BoolP("quiet", "q", false, "print only the image ID")
		network := fs.String("network", container.NetworkPrivate, "the network of RUN steps, `MODE`: private, none or host")
		labels := fs.StringArray("label", nil, "set the label `K=V` on the image")
		iidfile := fs.String("iidfile", "", "write the image ID to `FILE`")
		pullAlways := fs.Bool("pull", false, "pull every FROM image, even one the store has")
		platform := fs.String("platform", "", "the `OS/ARCH[/VARIANT]` of the FROM images (default: this machine's)")
		rf := addRegistryFlags(fs)
		rm := fs.Bool("rm", true, "remove the container of a failed step (--rm=false keeps it, to look into)")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) != 1 {
				return usagef("name the build context: a directory, or - for a tar on standard input")
			}
			if *network == "default" || *network == "bridge" {
				// docker's names of its default: strata's is private.
				*network = container.NetworkPrivate
			}
			if err := oneOf("network", *network, container.NetworkPrivate, container.NetworkNone, container.NetworkHost); err != nil {
				return err
			}
			var refs []reference.Reference
			for _, t := range *tags {
				r, err := reference.Parse(t)
				if err != nil {
					return usagef("-t %s: %v", t, err)
				}
				refs = append(refs, r)
			}
			b := &builder{e: e, noCache: *noCache, network: *network, quiet: *quiet, keep: !*rm, args: map[string]string{}, stages: map[string]image.Image{}, pull: *pullAlways, registry: rf}
			if *platform != "" {
				p, err := parsePlatform(*platform)
				if err != nil {
					return err
				}
				b.platform = &p
			}
			for _, kv := range *buildArgs {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					val, set := os.LookupEnv(k)
					if !set {
						continue
					}
					v = val
				}
				b.args[k] = v
			}
			if epoch, err := sourceDateEpoch(); err != nil {
				return err
			} else {
				b.epoch = epoch
			}
			im, err := b.run(ctx, args[0], *file, *target, *labels)
			if err != nil {
				return err
			}
			for _, r := range refs {
				if _, err := e.images.Tag(ctx, im.ID.String(), r.String()); err != nil {
					return err
				}
			}
			if *iidfile != "" {
				if err := os.WriteFile(*iidfile, []byte(im.ID.String()), 0o644); err != nil {
					return err
				}
			}
			if *quiet {
				fmt.Fprintln(e.stdout, im.ID)
				return nil
			}
			fmt.Fprintf(e.stdout, "writing image %s\n", im.ID)
			for _, r := range refs {
				fmt.Fprintf(e.stdout, "naming to %s\n", r)
			}
			return nil
		}
	},
}

// builder runs the steps of a Dockerfile, as docker build does, each in
// a container of its own committed as an intermediate image, and keeps
// each step's result in the build cache.
type builder struct {
	e        *env
	pull     bool           // --pull
	platform *v1.Platform   // --platform
	registry *registryFlags // for pulling FROM images
	noCache  bool
	network  string
	quiet    bool
	keep     bool // --rm=false: keep the container of a failed step
	epoch    *time.Time
	args     map[string]string // --build-arg
	used     map[string]bool   // build args some ARG consumed
	file     *dockerfile.File
	ctx      *buildctx.Context
	stages   map[string]image.Image // built stages, by name and by index
	step     int                    // steps printed so far
	total    int
}

func (b *builder) out() io.Writer {
	if b.quiet {
		return io.Discard
	}
	return b.e.stdout
}

func (b *builder) run(ctx context.Context, contextArg, fileArg, target string, labels []string) (image.Image, error) {
	if err := removeOrphanedSteps(ctx, b.e); err != nil {
		return image.Image{}, err
	}
	var err error
	if contextArg == "-" {
		if b.ctx, err = buildctx.FromTar(os.Stdin, filepath.Join(b.e.store.Root(), "tmp")); err != nil {
			return image.Image{}, err
		}
	} else if b.ctx, err = buildctx.FromDir(contextArg); err != nil {
		return image.Image{}, err
	}
	defer b.ctx.Close()
	df, err := b.readDockerfile(contextArg, fileArg)
	if err != nil {
		return image.Image{}, err
	}
	if err := b.loadIgnore(fileArg); err != nil {
		return image.Image{}, err
	}
	if b.file, err = dockerfile.Parse(strings.NewReader(df), b.args); err != nil {
		return image.Image{}, err
	}
	for _, w := range b.file.Warnings {
		fmt.Fprintf(b.e.stderr, "strata build: warning: %s\n", w)
	}
	stages, err := b.file.Needed(target)
	if err != nil {
		return image.Image{}, err
	}
	for _, st := range stages {
		b.total += 1 + len(st.Commands)
	}
	var im image.Image
	for _, st := range stages {
		if im, err = b.buildStage(ctx, st); err != nil {
			return image.Image{}, err
		}
		b.stages[fmt.Sprint(st.Index)] = im
		if st.Name != "" {
			b.stages[st.Name] = im
		}
	}
	if len(labels) > 0 {
		var kvs [][2]string
		for _, l := range labels {
			k, v, _ := strings.Cut(l, "=")
			kvs = append(kvs, [2]string{k, v})
		}
		im, err = b.configStep(ctx, im, "LABEL "+strings.Join(labels, " "), func(c *v1.Image, ex *image.DockerExtras) error {
			if c.Config.Labels == nil {
				c.Config.Labels = map[string]string{}
			}
			for _, kv := range kvs {
				c.Config.Labels[kv[0]] = kv[1]
			}
			return nil
		})
	}
	return im, err
}

// loadIgnore applies the ignore file: as buildkit, -f FILE's own
// FILE.dockerignore beside it (wherever it is) if there is one, else the
// context's Dockerfile.dockerignore or .dockerignore.
func (b *builder) loadIgnore(fileArg string) error {
	if fileArg == "" || fileArg == "-" {
		return b.ctx.LoadIgnore("Dockerfile")
	}
	data, err := os.ReadFile(fileArg + buildctx.IgnoreFile)
	if errors.Is(err, os.ErrNotExist) {
		return b.ctx.LoadIgnore("")
	}
	if err != nil {
		return err
	}
	patterns, err := buildctx.ReadIgnore(strings.NewReader(string(data)))
	if err != nil {
		return fmt.Errorf("%s%s: %w", fileArg, buildctx.IgnoreFile, err)
	}
	return b.ctx.SetIgnore(patterns)
}

// readDockerfile returns the Dockerfile's text: -f FILE, -f - (stdin),
// or CONTEXT/Dockerfile.
func (b *builder) readDockerfile(contextArg, fileArg string) (string, error) {
	var (
		data []byte
		err  error
	)
	switch {
	case fileArg == "-":
		if contextArg == "-" {
			return "", usagef("the context and the Dockerfile cannot both come from standard input")
		}
		data, err = io.ReadAll(io.LimitReader(os.Stdin, 4<<20))
	case fileArg != "":
		data, err = os.ReadFile(fileArg)
	default:
		data, err = b.ctx.ReadFile("Dockerfile")
	}
	if err != nil {
		return "", fmt.Errorf("read the Dockerfile: %w", err)
	}
	return string(data), nil
}

// state is a stage being built: its image and what its steps see.
type state struct {
	im     image.Image
	argEnv []string // the ARGs in scope, K=V
	shell  []string
	cmdSet bool // a CMD of this stage ran: ENTRYPOINT keeps it
}

func (s *state) env() []string {
	return append(append([]string{}, s.argEnv...), s.im.Config.Config.Env...)
}

func (b *builder) buildStage(ctx context.Context, st *dockerfile.Stage) (image.Image, error) {
	b.step++
	n := b.step
	fmt.Fprintf(b.out(), "#%d [%s] FROM %s\n", n, b.stageLabel(st), st.BaseName)
	s := &state{shell: []string{"/bin/sh", "-c"}}
	for _, a := range b.file.MetaArgs {
		if a.Value != nil {
			s.argEnv = append(s.argEnv, a.Name+"="+*a.Value)
		}
	}
	switch base := st.BaseName; {
	case base == "scratch":
	default:
		if im, ok := b.stages[strings.ToLower(base)]; ok {
			s.im = im
			break
		}
		im, err := b.fromImage(ctx, base, st.Platform)
		if err != nil {
			return image.Image{}, fmt.Errorf("Dockerfile:%d: FROM %s: %w", st.Line, base, err)
		}
		s.im = im
	}
	s.argEnv = nil // ARGs before FROM are in scope only where declared again
	// ONBUILD triggers of the base run first, as docker runs them.
	ex, err := b.e.images.Extras(s.im)
	if err != nil {
		return image.Image{}, err
	}
	if len(ex.Shell) > 0 {
		s.shell = ex.Shell
	}
	if tr := ex.OnBuild; len(tr) > 0 {
		cmds, err := dockerfile.ParseTriggers(tr)
		if err != nil {
			return image.Image{}, fmt.Errorf("FROM %s: its ONBUILD triggers: %w", st.BaseName, err)
		}
		for _, c := range cmds {
			if err := b.do(ctx, st, s, c, true); err != nil {
				return image.Image{}, err
			}
		}
		// Triggers do not pass on to images built on this one.
		var err2 error
		s.im, err2 = b.configStep(ctx, s.im, "ONBUILD (cleared)", func(c *v1.Image, ex *image.DockerExtras) error { ex.OnBuild = nil; return nil })
		if err2 != nil {
			return image.Image{}, err2
		}
	}
	fmt.Fprintf(b.out(), "#%d DONE\n", n)
	for _, c := range st.Commands {
		if err := b.do(ctx, st, s, c, false); err != nil {
			return image.Image{}, err
		}
	}
	if s.im.ID == "" {
		// FROM scratch and nothing else: an empty image.
		im, err := b.configStep(ctx, s.im, "FROM scratch", func(*v1.Image, *image.DockerExtras) error { return nil })
		if err != nil {
			return image.Image{}, err
		}
		s.im = im
	}
	return s.im, nil
}

func (b *builder) stageLabel(st *dockerfile.Stage) string {
	if st.Name != "" {
		return fmt.Sprintf("%s %d/%d", st.Name, b.step, b.total)
	}
	return fmt.Sprintf("%d/%d", b.step, b.total)
}

// do runs one instruction.
func (b *builder) do(ctx context.Context, st *dockerfile.Stage, s *state, c dockerfile.Command, trigger bool) error {
	if !trigger {
		b.step++
	}
	n := b.step
	start := time.Now()
	fmt.Fprintf(b.out(), "#%d [%s] %s\n", n, b.stageLabel(st), c.Original)
	fail := func(err error) error {
		return fmt.Errorf("Dockerfile:%d: %s: %w", c.Line, firstWord(c.Original), err)
	}
	expand := func(w string) (string, error) { return dockerfile.Expand(w, s.env(), b.file.Escape) }
	if err := checkFlags(c); err != nil {
		return fail(err)
	}
	var (
		im     image.Image
		cached bool
		err    error
	)
	switch c.Name {
	case "arg":
		for i, kv := range c.KeyValues {
			name := kv[0]
			v, given := b.args[name]
			switch {
			case given:
				b.markUsed(name)
			case i < len(c.KeyValueSet) && c.KeyValueSet[i]:
				if v, err = expand(kv[1]); err != nil {
					return fail(err)
				}
			default:
				// No default, not given: the value of the ARG of that name
				// before FROM, or of a platform ARG, as docker gives them;
				// else in scope, but unset.
				found := false
				for _, a := range b.file.MetaArgs {
					if a.Name == name && a.Value != nil {
						v, found = *a.Value, true
					}
				}
				for _, kv := range dockerfile.PlatformArgs(b.args) {
					if k, val, _ := strings.Cut(kv, "="); k == name && !found {
						v, found = val, true
					}
				}
				if !found {
					continue
				}
			}
			s.argEnv = setKV(s.argEnv, name, v)
		}
		fmt.Fprintf(b.out(), "#%d DONE %.1fs\n", n, time.Since(start).Seconds())
		return nil
	case "run":
		im, cached, err = b.runStep(ctx, s, c)
	case "copy", "add":
		im, cached, err = b.copyStep(ctx, s, c)
	case "workdir":
		im, cached, err = b.workdirStep(ctx, s, c)
	default:
		im, cached, err = b.metaStep(ctx, s, c)
	}
	if err != nil {
		return fail(err)
	}
	s.im = im
	if cached {
		fmt.Fprintf(b.out(), "#%d CACHED\n", n)
	} else {
		fmt.Fprintf(b.out(), "#%d DONE %.1fs\n", n, time.Since(start).Seconds())
	}
	return nil
}

func (b *builder) markUsed(name string) {
	if b.used == nil {
		b.used = map[string]bool{}
	}
	b.used[name] = true
}

func firstWord(s string) string {
	w, _, _ := strings.Cut(strings.TrimSpace(s), " ")
	return strings.ToUpper(w)
}

func setKV(env []string, k, v string) []string {
	for i, e := range env {
		if strings.HasPrefix(e, k+"=") {
			env[i] = k + "=" + v
			return env
		}
	}
	return append(env, k+"="+v)
}

// cacheKey is what a step's result depends on.
func cacheKey(parent digest.Digest, instr string, args []string, content string) string {
	h := sha256.New()
	sort.Strings(args)
	json.NewEncoder(h).Encode(struct {
		Parent  digest.Digest
		Instr   string
		Args    []string
		Content string
	}{parent, instr, args, content})
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// cached looks a step up, unless --no-cache.
func (b *builder) cached(ctx context.Context, key string) (image.Image, bool, error) {
	if b.noCache {
		return image.Image{}, false, nil
	}
	return b.e.images.CachedStep(ctx, key)
}

func (b *builder) history(createdBy string) v1.History {
	h := v1.History{CreatedBy: createdBy, Comment: "strata build"}
	if b.epoch != nil {
		h.Created = b.epoch
	}
	return h
}

// configStep stores the image im with its config changed by edit.
func (b *builder) configStep(ctx context.Context, im image.Image, instr string, edit func(*v1.Image, *image.DockerExtras) error) (image.Image, error) {
	// Cached like any step, so that what follows it is too.
	key := cacheKey(im.ID, "#(nop) "+instr, nil, "")
	if c, ok, err := b.cached(ctx, key); err != nil || ok {
		return c, err
	}
	out, err := b.e.images.Derive(ctx, im, edit, b.history("/bin/sh -c #(nop) "+instr), nil)
	if err != nil {
		return image.Image{}, err
	}
	return out, b.e.images.RecordStep(ctx, key, out.ID)
}

// supportedFlags are the flags of each instruction strata build
// implements; the parser accepts more of buildkit's, which are refused
// rather than ignored.
var supportedFlags = map[string][]string{
	"copy": {"from", "chown", "chmod"},
	"add":  {"chown", "chmod"},
	"run":  {"network"},
	"from": {"platform"},
}

// checkFlags refuses a flag of c that the executor does not implement.
func checkFlags(c dockerfile.Command) error {
	for _, f := range c.AllFlags {
		if !slices.Contains(supportedFlags[c.Name], f[0]) && c.Name != "healthcheck" {
			return fmt.Errorf("%s --%s is not supported by strata build: remove it, or do without (it would otherwise be ignored)", strings.ToUpper(c.Name), f[0])
		}
	}
	return nil
}

// metaStep runs an instruction that changes only the config.
func (b *builder) metaStep(ctx context.Context, s *state, c dockerfile.Command) (image.Image, bool, error) {
	expand := func(w string) (string, error) { return dockerfile.Expand(w, s.env(), b.file.Escape) }
	text := strings.TrimSpace(strings.TrimPrefix(c.Original, strings.Fields(c.Original)[0]))
	// As docker: ENTRYPOINT clears the CMD of the base image, not one
	// the stage set before it.
	resetCmd := c.Name == "entrypoint" && !s.cmdSet
	if c.Name == "cmd" {
		s.cmdSet = true
	}
	instr := c.Original
	if resetCmd {
		instr += " (CMD reset)"
	}
	key := cacheKey(s.im.ID, instr, nil, strings.Join(s.env(), "\n"))
	if c.Name == "shell" {
		// The build state changes whether or not the step is cached.
		s.shell = append([]string{}, c.Args...)
	}
	if im, ok, err := b.cached(ctx, key); err != nil || ok {
		return im, ok, err
	}
	var edit func(*v1.Image, *image.DockerExtras) error
	cmdForm := func() []string {
		if c.JSON {
			return c.Args
		}
		return append(append([]string{}, s.shell...), strings.Join(c.Args, " "))
	}
	switch c.Name {
	case "env":
		var kvs [][2]string
		for _, kv := range c.KeyValues {
			v, err := expand(kv[1])
			if err != nil {
				return image.Image{}, false, err
			}
			kvs = append(kvs, [2]string{kv[0], v})
		}
		edit = func(i *v1.Image, ex *image.DockerExtras) error {
			for _, kv := range kvs {
				i.Config.Env = setKV(i.Config.Env, kv[0], kv[1])
			}
			return nil
		}
		var parts []string
		for _, kv := range kvs {
			parts = append(parts, kv[0]+"="+kv[1])
		}
		text = strings.Join(parts, " ")
	case "maintainer":
		// As docker: MAINTAINER sets the image's author.
		who, err := expand(strings.Join(c.Args, " "))
		if err != nil {
			return image.Image{}, false, err
		}
		edit = func(i *v1.Image, ex *image.DockerExtras) error { i.Author = who; return nil }
	case "label":
		kvs := c.KeyValues
		var out [][2]string
		for _, kv := range kvs {
			k, err := expand(kv[0])
			if err != nil {
				return image.Image{}, false, err
			}
			v, err := expand(kv[1])
			if err != nil {
				return image.Image{}, false, err
			}
			out = append(out, [2]string{k, v})
		}
		edit = func(i *v1.Image, ex *image.DockerExtras) error {
			if i.Config.Labels == nil {
				i.Config.Labels = map[string]string{}
			}
			for _, kv := range out {
				i.Config.Labels[kv[0]] = kv[1]
			}
			return nil
		}
	case "expose":
		var ports []string
		for _, a := range c.Args {
			p, err := expand(a)
			if err != nil {
				return image.Image{}, false, err
			}
			if !strings.Contains(p, "/") {
				p += "/tcp"
			}
			ports = append(ports, p)
		}
		edit = func(i *v1.Image, ex *image.DockerExtras) error {
			if i.Config.ExposedPorts == nil {
				i.Config.ExposedPorts = map[string]struct{}{}
			}
			for _, p := range ports {
				i.Config.ExposedPorts[p] = struct{}{}
			}
			return nil
		}
	case "user":
		u, err := expand(strings.Join(c.Args, " "))
		if err != nil {
			return image.Image{}, false, err
		}
		edit = func(i *v1.Image, ex *image.DockerExtras) error { i.Config.User = u; return nil }
	case "cmd":
		cmd := cmdForm()
		edit = func(i *v1.Image, ex *image.DockerExtras) error { i.Config.Cmd = cmd; return nil }
	case "entrypoint":
		ep := cmdForm()
		edit = func(i *v1.Image, ex *image.DockerExtras) error {
			i.Config.Entrypoint = ep
			if resetCmd {
				i.Config.Cmd = nil
			}
			return nil
		}
	case "volume":
		var vols []string
		for _, a := range c.Args {
			v, err := expand(a)
			if err != nil {
				return image.Image{}, false, err
			}
			vols = append(vols, v)
		}
		edit = func(i *v1.Image, ex *image.DockerExtras) error {
			if i.Config.Volumes == nil {
				i.Config.Volumes = map[string]struct{}{}
			}
			for _, v := range vols {
				i.Config.Volumes[v] = struct{}{}
			}
			return nil
		}
	case "stopsignal":
		sig, err := expand(strings.Join(c.Args, " "))
		if err != nil {
			return image.Image{}, false, err
		}
		if _, err := parseSignal(sig); err != nil {
			return image.Image{}, false, err
		}
		edit = func(i *v1.Image, ex *image.DockerExtras) error { i.Config.StopSignal = sig; return nil }
	case "shell":
		sh := s.shell
		edit = func(i *v1.Image, ex *image.DockerExtras) error { ex.Shell = sh; return nil }
	case "healthcheck":
		h := c.Health
		edit = func(i *v1.Image, ex *image.DockerExtras) error {
			if h == nil {
				return nil
			}
			ex.Healthcheck = &image.Healthcheck{Test: h.Test, Interval: h.Interval, Timeout: h.Timeout, StartPeriod: h.StartPeriod, StartInterval: h.StartInterval, Retries: h.Retries}
			return nil
		}
	case "onbuild":
		trigger := c.Trigger
		edit = func(i *v1.Image, ex *image.DockerExtras) error { ex.OnBuild = append(ex.OnBuild, trigger); return nil }
	default:
		return image.Image{}, false, fmt.Errorf("unsupported instruction %s", strings.ToUpper(c.Name))
	}
	im, err := b.e.images.Derive(ctx, s.im, edit, b.history("/bin/sh -c #(nop) "+strings.ToUpper(c.Name)+" "+text), nil)
	if err != nil {
		return image.Image{}, false, err
	}
	return im, false, b.e.images.RecordStep(ctx, key, im.ID)
}

// usedArgs are the ARGs in scope as K=V, for the cache key and the
// environment of RUN.
func (s *state) usedArgs() []string { return append([]string{}, s.argEnv...) }

// runStep runs a RUN instruction in a container on the stage's image
// and commits what it changed.
func (b *builder) runStep(ctx context.Context, s *state, c dockerfile.Command) (image.Image, bool, error) {
	if s.im.ID == "" {
		return image.Image{}, false, errors.New("RUN needs a base image: FROM scratch has no shell")
	}
	var cmd []string
	if c.JSON {
		cmd = c.Args
	} else {
		cmd = append(append([]string{}, s.shell...), runScript(c))
	}
	createdBy := "RUN " + strings.Join(cmd, " ")
	key := cacheKey(s.im.ID, createdBy, s.usedArgs(), "")
	if im, ok, err := b.cached(ctx, key); err != nil || ok {
		return im, ok, err
	}
	name := "build-" + randomStackName()[len("stack-"):]
	fs := pflag.NewFlagSet("build", pflag.ContinueOnError)
	f := addRunFlags(fs)
	network := b.network
	if n := c.Flags["network"]; n != "" {
		switch n {
		case "default":
		case container.NetworkNone, container.NetworkHost:
			network = n
		default:
			return image.Image{}, false, fmt.Errorf("RUN --network=%s: want default, none or host", n)
		}
	}
	flags := []string{"--name", name, "--network", network, "--entrypoint", ""}
	if h, ok := shebangHeredoc(c); ok {
		// As buildkit: a lone heredoc starting with #! is a program,
		// mounted read-only at /dev/pipes/NAME and run by the shell, so
		// its own interpreter runs it.
		dir, err := os.MkdirTemp(filepath.Join(b.e.store.Root(), "tmp"), "build-run-heredoc-")
		if err != nil {
			return image.Image{}, false, err
		}
		defer os.RemoveAll(dir)
		if h.Name != filepath.Base(h.Name) || h.Name == "." || h.Name == ".." {
			return image.Image{}, false, fmt.Errorf("heredoc <<%s: its name must be a plain file name", h.Name)
		}
		p := filepath.Join(dir, h.Name)
		if err := os.WriteFile(p, []byte(h.Content), 0o755); err != nil {
			return image.Image{}, false, err
		}
		if err := os.Chmod(p, 0o755); err != nil {
			return image.Image{}, false, err
		}
		flags = append(flags, "-v", dir+":/dev/pipes:ro")
		cmd = append(append([]string{}, s.shell...), "/dev/pipes/"+h.Name)
	}
	for _, kv := range s.usedArgs() {
		// An ENV of the same name wins, as in docker.
		k, _, _ := strings.Cut(kv, "=")
		if hasEnv(s.im.Config.Config.Env, k) {
			continue
		}
		flags = append(flags, "-e", kv)
	}
	if err := fs.Parse(flags); err != nil {
		return image.Image{}, false, err
	}
	f.labels = b.ownerLabels()
	if _, err := createFromImage(ctx, b.e, f, s.im.ID.String(), cmd); err != nil {
		return image.Image{}, false, err
	}
	keep := false
	defer func() {
		if !keep {
			removeContainer(context.WithoutCancel(ctx), b.e, name)
		}
	}()
	if err := b.runContainer(ctx, name); err != nil {
		return image.Image{}, false, b.kept(ctx, &keep, name, err)
	}
	im, err := b.e.images.Commit(ctx, name, image.CommitOptions{CreatedBy: createdBy, Message: "strata build", SourceDateEpoch: b.epoch})
	if err != nil {
		return image.Image{}, false, err
	}
	return im, false, b.e.images.RecordStep(ctx, key, im.ID)
}

// kept is err of a failed step run in container name; with --rm=false
// the container is kept, and the error says so.
func (b *builder) kept(ctx context.Context, keep *bool, name string, err error) error {
	if !b.keep || ctx.Err() != nil {
		return err
	}
	*keep = true
	// Kept for the user: not an orphan for the next build to remove.
	if _, err := b.e.store.Update(context.WithoutCancel(ctx), snapshot.Info{Name: name, Labels: map[string]string{}}, "labels."+labelBuilder); err != nil {
		b.e.log.Printf("unmark %s: %v", name, err)
	}
	return fmt.Errorf("%w (its container %s is kept: 'strata mount %s' to look into it, 'strata rm %s' to remove it)", err, name, name, name)
}

// runScript is the shell script of a shell-form RUN, its heredocs
// handled as buildkit does: `RUN <<EOF` alone runs the body as the
// script; a heredoc within a command line is put back after it, each
// body followed by its terminator, for the shell to read.
func runScript(c dockerfile.Command) string {
	script := strings.Join(c.Args, " ")
	if len(c.Heredocs) == 0 {
		return script
	}
	if len(c.Heredocs) == 1 && parser.MustParseHeredoc(strings.TrimSpace(script)) != nil {
		return c.Heredocs[0].Content
	}
	var b strings.Builder
	b.WriteString(script)
	for _, h := range c.Heredocs {
		b.WriteByte('\n')
		b.WriteString(h.Content)
		b.WriteString(h.Name)
	}
	return b.String()
}

// shebangHeredoc is the heredoc of a shell-form `RUN <<EOF` alone whose
// body starts with #!.
func shebangHeredoc(c dockerfile.Command) (dockerfile.Heredoc, bool) {
	if c.JSON || len(c.Heredocs) != 1 || parser.MustParseHeredoc(strings.TrimSpace(strings.Join(c.Args, " "))) == nil {
		return dockerfile.Heredoc{}, false
	}
	h := c.Heredocs[0]
	return h, strings.HasPrefix(h.Content, "#!")
}

// stopGrace is how long an interrupted step's process has to end
// before SIGKILL.
const stopGrace = 2 * time.Second

// runContainer runs the created container name to its end, its output
// prefixed with the step's number; a non-zero exit is an error.
func (b *builder) runContainer(ctx context.Context, name string) error {
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer devnull.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			fmt.Fprintf(b.out(), "#%d %s\n", b.step, sc.Text())
		}
		io.Copy(io.Discard, pr)
	}()
	st, err := startContainer(context.WithoutCancel(ctx), b.e, name, procIO{devnull, pw, pw}, b.e.log)
	if err != nil {
		pw.Close()
		<-done
		pr.Close()
		return err
	}
	// Ctrl-C stops the step's process, as docker build cancels a step:
	// the signal goes to it, and SIGKILL after stopGrace (a shell as a
	// namespace's first process ignores SIGINT). The build then fails at
	// this step.
	caught := make(chan os.Signal, 4)
	signal.Notify(caught, os.Interrupt, syscall.SIGTERM)
	fwd := make(chan os.Signal, 4)
	stopFwd := make(chan struct{})
	go func() {
		var kill <-chan time.Time
		for {
			select {
			case sig := <-caught:
				fwd <- sig
				if kill == nil {
					kill = time.After(stopGrace)
				}
			case <-kill:
				fwd <- syscall.SIGKILL
				kill = nil
			case <-stopFwd:
				return
			}
		}
	}()
	code := st.wait(fwd)
	signal.Stop(caught)
	close(stopFwd)
	ferr := st.finish(context.WithoutCancel(ctx), code)
	pw.Close()
	<-done
	pr.Close()
	if ferr != nil {
		return ferr
	}
	if code != 0 {
		return fmt.Errorf("the command exited with status %d", code)
	}
	return nil
}

// copyStep runs COPY or ADD: the sources from the context (or --from a
// stage or an image) written into a container on the stage's image,
// then committed.
func (b *builder) copyStep(ctx context.Context, s *state, c dockerfile.Command) (image.Image, bool, error) {
	expand := func(w string) (string, error) { return dockerfile.Expand(w, s.env(), b.file.Escape) }
	var words []string
	for _, a := range c.Args {
		w, err := expand(a)
		if err != nil {
			return image.Image{}, false, err
		}
		words = append(words, w)
	}
	if len(words) < 2 && len(c.Heredocs) == 0 {
		return image.Image{}, false, fmt.Errorf("%s needs a source and a destination", strings.ToUpper(c.Name))
	}
	dest := words[len(words)-1]
	srcs := words[:len(words)-1]
	if c.Name == "add" {
		for _, src := range srcs {
			if strings.Contains(src, "://") || strings.HasPrefix(src, "git@") {
				return image.Image{}, false, fmt.Errorf("ADD of a URL needs the network, which strata build does not use: download %s into the context and COPY it", src)
			}
		}
	}
	wd := s.im.Config.Config.WorkingDir
	if wd == "" {
		wd = "/"
	}
	destAbs := dest
	if !path.IsAbs(destAbs) {
		destAbs = path.Join(wd, dest)
		if strings.HasSuffix(dest, "/") || dest == "." {
			destAbs += "/"
		}
	}
	// The sources: the context, or the root filesystem of a stage or an
	// image (mounted for the step).
	from := b.ctx
	var fromID digest.Digest
	if ref := c.Flags["from"]; ref != "" {
		ref, err := expand(ref)
		if err != nil {
			return image.Image{}, false, err
		}
		im, ok := b.stages[strings.ToLower(ref)]
		if !ok {
			if im, err = b.e.images.Get(ctx, ref); err != nil {
				return image.Image{}, false, fmt.Errorf("--from=%s: no such stage or image: %w", ref, err)
			}
		}
		fromID = im.ID
		mnt, cleanup, err := b.mountImage(ctx, im)
		if err != nil {
			return image.Image{}, false, err
		}
		defer cleanup()
		if from, err = buildctx.FromDir(mnt); err != nil {
			return image.Image{}, false, err
		}
		defer from.Close()
	}
	// Heredoc sources (COPY <<EOF /file) are written to files of their
	// own, in a private directory, and copied from there: the digest of
	// the sources, the cache key, covers their content.
	var ctxSrcs []string
	var docs []dockerfile.Heredoc
	for _, src := range srcs {
		if h := heredocNamed(c.Heredocs, src); h != nil {
			docs = append(docs, *h)
		} else {
			ctxSrcs = append(ctxSrcs, src)
		}
	}
	var resolved []buildctx.Source
	if len(ctxSrcs) > 0 {
		r, err := from.ResolveFor(strings.ToUpper(c.Name), ctxSrcs)
		if err != nil {
			return image.Image{}, false, err
		}
		resolved = r
	}
	if len(docs) > 0 {
		r, cleanup, err := b.heredocSources(s, strings.ToUpper(c.Name), docs)
		if err != nil {
			return image.Image{}, false, err
		}
		defer cleanup()
		resolved = append(resolved, r...)
	}
	content, err := buildctx.Digest(resolved)
	if err != nil {
		return image.Image{}, false, err
	}
	var opts buildctx.CopyOptions
	owner := c.Flags["chown"]
	if owner != "" {
		if owner, err = expand(owner); err != nil {
			return image.Image{}, false, err
		}
		opts.Chown = true
	}
	if cm := c.Flags["chmod"]; cm != "" {
		var m uint32
		if _, err := fmt.Sscanf(cm, "%o", &m); err != nil || m > 0o7777 {
			return image.Image{}, false, fmt.Errorf("--chmod=%s: want an octal mode", cm)
		}
		mode := os.FileMode(m)
		opts.Mode = &mode
	}
	opts.Extract = c.Name == "add"
	createdBy := fmt.Sprintf("/bin/sh -c #(nop) %s %s in %s", strings.ToUpper(c.Name), content, destAbs)
	// The key has the instruction as expanded: the sources, the
	// destination and --chown may come from ARGs, which the parent
	// image does not hold; an ARG the step does not use changes nothing.
	expanded := fmt.Sprintf("%s --chown=%s --chmod=%s --from=%s %q -> %s", strings.ToUpper(c.Name), owner, c.Flags["chmod"], fromID, srcs, destAbs)
	key := cacheKey(s.im.ID, expanded, nil, content.String())
	if im, ok, err := b.cached(ctx, key); err != nil || ok {
		return im, ok, err
	}
	im, err := b.inContainer(ctx, s.im, createdBy, func(root string) error {
		if opts.Chown {
			uid, gid, err := buildctx.LookupOwner(root, owner)
			if err != nil {
				return err
			}
			opts.UID, opts.GID = uid, gid
		}
		return buildctx.Copy(root, destAbs, resolved, opts)
	})
	if err != nil {
		return image.Image{}, false, err
	}
	return im, false, b.e.images.RecordStep(ctx, key, im.ID)
}

// heredocNamed is the heredoc the source word src (<<EOF, <<-EOF,
// <<"EOF") stands for, or nil.
func heredocNamed(docs []dockerfile.Heredoc, src string) *dockerfile.Heredoc {
	h := parser.MustParseHeredoc(src)
	if h == nil {
		return nil
	}
	for i := range docs {
		if docs[i].Name == h.Name {
			return &docs[i]
		}
	}
	return nil
}

// heredocSources writes each heredoc to a file of its name (mode 0644,
// as buildkit's) in a private directory of the store's tmp, variables
// expanded in it unless its name was quoted, and resolves them as
// sources. cleanup removes the directory.
func (b *builder) heredocSources(s *state, instr string, docs []dockerfile.Heredoc) ([]buildctx.Source, func(), error) {
	dir, err := os.MkdirTemp(filepath.Join(b.e.store.Root(), "tmp"), "build-heredoc-")
	if err != nil {
		return nil, nil, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	fail := func(err error) ([]buildctx.Source, func(), error) { cleanup(); return nil, nil, err }
	mtime := time.Now()
	if b.epoch != nil {
		mtime = *b.epoch
	}
	var names []string
	for _, h := range docs {
		if h.Name == "" || h.Name != filepath.Base(h.Name) || h.Name == "." || h.Name == ".." {
			return fail(fmt.Errorf("heredoc <<%s: its name must be a plain file name", h.Name))
		}
		content := h.Content
		if h.Expand {
			// As buildkit: variables expanded, quotes kept.
			lex := shell.NewLex(b.file.Escape)
			lex.SkipProcessQuotes = true
			if content, _, err = lex.ProcessWord(content, shell.EnvsFromSlice(s.env())); err != nil {
				return fail(fmt.Errorf("heredoc <<%s: %w", h.Name, err))
			}
		}
		p := filepath.Join(dir, h.Name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return fail(err)
		}
		if err := os.Chmod(p, 0o644); err != nil { // whatever the umask
			return fail(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			return fail(err)
		}
		names = append(names, h.Name)
	}
	hctx, err := buildctx.FromDir(dir)
	if err != nil {
		return fail(err)
	}
	defer hctx.Close()
	srcs, err := hctx.ResolveFor(instr, names)
	if err != nil {
		return fail(err)
	}
	return srcs, cleanup, nil
}

// workdirStep sets the working directory and makes it, as docker does.
func (b *builder) workdirStep(ctx context.Context, s *state, c dockerfile.Command) (image.Image, bool, error) {
	w, err := dockerfile.Expand(strings.Join(c.Args, " "), s.env(), b.file.Escape)
	if err != nil {
		return image.Image{}, false, err
	}
	if !path.IsAbs(w) {
		base := s.im.Config.Config.WorkingDir
		if base == "" {
			base = "/"
		}
		w = path.Join(base, w)
	}
	key := cacheKey(s.im.ID, "WORKDIR "+w, nil, "")
	if im, ok, err := b.cached(ctx, key); err != nil || ok {
		return im, ok, err
	}
	var im image.Image
	if s.im.ID == "" {
		im, err = b.e.images.Derive(ctx, s.im, func(i *v1.Image, ex *image.DockerExtras) error { i.Config.WorkingDir = w; return nil }, b.history("/bin/sh -c #(nop) WORKDIR "+w), nil)
	} else {
		// One step: the directory made and the config changed.
		im, err = b.inContainer(ctx, s.im, "/bin/sh -c #(nop) WORKDIR "+w, func(root string) error { return mkdirInRoot(root, w) }, "WORKDIR "+strings.NewReplacer(`\`, `\\`, "$", `\$`).Replace(w))
	}
	if err != nil {
		return image.Image{}, false, err
	}
	return im, false, b.e.images.RecordStep(ctx, key, im.ID)
}

// mkdirInRoot makes the directory p (absolute in root) and its parents,
// resolving every element within root.
func mkdirInRoot(root, p string) error {
	rootFD, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(rootFD)
	cur := ""
	for _, el := range strings.Split(strings.Trim(p, "/"), "/") {
		if el == "" {
			continue
		}
		cur = path.Join(cur, el)
		fd, err := unix.Openat2(rootFD, cur, &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT})
		if err == nil {
			unix.Close(fd)
			continue
		}
		if err != unix.ENOENT {
			return fmt.Errorf("WORKDIR %s: %s: %w", p, cur, err)
		}
		parent, err := unix.Openat2(rootFD, path.Dir(cur), &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT})
		if err != nil {
			return fmt.Errorf("WORKDIR %s: %w", p, err)
		}
		err = unix.Mkdirat(parent, path.Base(cur), 0o755)
		unix.Close(parent)
		if err != nil && err != unix.EEXIST {
			return fmt.Errorf("WORKDIR %s: %w", p, err)
		}
	}
	return nil
}

// inContainer makes a container on im, mounts it, calls fn with its
// root, and commits the changes as a new image.
func (b *builder) inContainer(ctx context.Context, im image.Image, createdBy string, fn func(root string) error, changes ...string) (image.Image, error) {
	name := "build-" + randomStackName()[len("stack-"):]
	if _, err := b.e.images.CreateContainer(ctx, name, im.ID.String(), b.ownerExtra); err != nil {
		return image.Image{}, err
	}
	keep := false
	defer func() {
		if !keep {
			removeContainer(context.WithoutCancel(ctx), b.e, name)
		}
	}()
	root, own, err := mountRootfs(ctx, b.e, name, filepath.Join(bundleDir(b.e, name), "rootfs"))
	if err != nil {
		return image.Image{}, err
	}
	ferr := fn(root)
	if own {
		if err := unmountRootfs(context.WithoutCancel(ctx), b.e, name); err != nil && ferr == nil {
			ferr = err
		}
	}
	if ferr != nil {
		return image.Image{}, b.kept(ctx, &keep, name, ferr)
	}
	return b.e.images.Commit(ctx, name, image.CommitOptions{CreatedBy: createdBy, Message: "strata build", SourceDateEpoch: b.epoch, Changes: changes})
}

// mountImage mounts a container on im read-write (it is removed after)
// and returns its root.
func (b *builder) mountImage(ctx context.Context, im image.Image) (string, func(), error) {
	name := "build-from-" + randomStackName()[len("stack-"):]
	if _, err := b.e.images.CreateContainer(ctx, name, im.ID.String(), b.ownerExtra); err != nil {
		return "", nil, err
	}
	root, own, err := mountRootfs(ctx, b.e, name, filepath.Join(bundleDir(b.e, name), "rootfs"))
	cleanup := func() {
		c := context.WithoutCancel(ctx)
		if own {
			unmountRootfs(c, b.e, name)
		}
		removeContainer(c, b.e, name)
	}
	if err != nil {
		cleanup()
		return "", nil, err
	}
	return root, cleanup, nil
}

var builderPruneCmd = &command{
	name:    "builder prune",
	args:    "[-f]",
	summary: "Remove the build cache: its records and the intermediate images nothing else holds",
	changes: true,
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		force := fs.BoolP("force", "f", false, "do not ask for confirmation")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) > 0 {
				return usagef("builder prune takes no arguments")
			}
			if !*force {
				ok, err := confirm(e, "builder prune", "This will remove all build cache.")
				if err != nil || !ok {
					return err
				}
			}
			n, rep, err := e.images.PruneBuildCache(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Deleted build cache records: %d\n", n)
			for _, id := range rep.Deleted {
				fmt.Fprintf(e.stdout, "deleted: %s\n", id)
			}
			fmt.Fprintf(e.stdout, "\nTotal reclaimed space: %s\n", humanSize(rep.Reclaimed))
			return nil
		}
	},
}

// fromImage finds a FROM image in the store, pulling it when the store
// lacks it, or always with --pull, as docker build does; it must be of
// the platform asked for (FROM --platform, else --platform).
func (b *builder) fromImage(ctx context.Context, ref, stagePlatform string) (image.Image, error) {
	want := b.platform
	if stagePlatform != "" {
		p, err := parsePlatform(stagePlatform)
		if err != nil {
			return image.Image{}, err
		}
		want = &p
	}
	im, err := b.e.images.Get(ctx, ref)
	if err == nil && !b.pull {
		return im, checkPlatform(im, want)
	}
	if err != nil && !errors.Is(err, image.ErrNotFound) {
		return image.Image{}, err
	}
	r, perr := reference.Parse(ref)
	if perr != nil {
		return image.Image{}, perr
	}
	c, cerr := b.registry.client(b.e, false)
	if cerr != nil {
		return image.Image{}, cerr
	}
	repo, rerr := c.Repository(ctx, r)
	if rerr == nil {
		fmt.Fprintf(b.out(), "#%d pulling %s\n", b.step, r)
		_, rerr = b.e.images.Pull(ctx, repo, r, image.PullOptions{Platform: want})
	}
	if rerr != nil {
		if err == nil {
			return image.Image{}, fmt.Errorf("--pull: %w", rerr)
		}
		return image.Image{}, fmt.Errorf("not in the store, and the pull failed: %w (pull or import it first)", rerr)
	}
	if im, err = b.e.images.Get(ctx, r.String()); err != nil {
		return image.Image{}, err
	}
	return im, checkPlatform(im, want)
}

// checkPlatform refuses an image of another platform than want.
func checkPlatform(im image.Image, want *v1.Platform) error {
	if want == nil {
		return nil
	}
	got := im.Config.Platform
	if got.OS != want.OS || got.Architecture != want.Architecture || want.Variant != "" && got.Variant != want.Variant {
		return fmt.Errorf("the image is %s/%s, not %s/%s: pull it with --platform %s/%s", got.OS, got.Architecture, want.OS, want.Architecture, want.OS, want.Architecture)
	}
	return nil
}

// labelBuilder marks the containers of a build's steps with the build's
// process, "PID START", so that a later build removes those of a build
// that was killed.
const labelBuilder = "strata.build.owner"

func (b *builder) ownerLabels() map[string]string {
	start, _ := container.ProcessStart(os.Getpid())
	return map[string]string{labelBuilder: fmt.Sprintf("%d %d", os.Getpid(), start)}
}

func (b *builder) ownerExtra(image.Image) (map[string]string, error) { return b.ownerLabels(), nil }

// removeOrphanedSteps stops and removes the step containers of builds
// whose process is gone (killed): what they ran is killed by its
// recorded pid, as stop does, then the container goes.
func removeOrphanedSteps(ctx context.Context, e *env) error {
	cs, err := e.images.Containers(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range cs {
		owner := c.Labels[labelBuilder]
		if owner == "" {
			continue
		}
		var pid int
		var start uint64
		if _, err := fmt.Sscanf(owner, "%d %d", &pid, &start); err == nil && container.ProcessAlive(pid, start) {
			continue // a build that still runs
		}
		e.log.Printf("removing %s, a step of a build that was killed", c.Name)
		if err := stopContainer(ctx, e, c.Name, "KILL", time.Second); err != nil && !errors.Is(err, snapshot.ErrNotFound) {
			errs = append(errs, fmt.Errorf("a step container of a killed build, %s: %w", c.Name, err))
			continue
		}
		if d, ok, _ := e.store.Mounted(ctx, c.Name); ok {
			_ = unmountDaemon(ctx, e, c.Name, d, true)
		}
		if err := removeContainer(ctx, e, c.Name); err != nil {
			errs = append(errs, fmt.Errorf("a step container of a killed build, %s: %w", c.Name, err))
		}
	}
	return errors.Join(errs...)
}

// hasEnv reports whether env (K=V entries) sets k.
func hasEnv(env []string, k string) bool {
	for _, e := range env {
		if strings.HasPrefix(e, k+"=") {
			return true
		}
	}
	return false
}
