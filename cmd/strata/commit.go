package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spf13/pflag"

	"github.com/strata-fs/strata/image"
	"github.com/strata-fs/strata/snapshot"
	"github.com/strata-fs/strata/snapshot/layer"
)

var commitCmd = &command{
	name:    "commit",
	args:    "[--compression gzip|zstd|none] [-q] [-m MSG] [--author A] [-c INSTR]... NAME [REPO[:TAG]]",
	summary: "Write a stack's changes as a committed OCI layer; for a container (or with REPO), as a new image",
	changes: true,
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		compression := fs.String("compression", "gzip", "layer `COMPRESSION`: gzip, zstd or none")
		quiet := fs.BoolP("quiet", "q", false, "print the new layer's (or image's) ID only")
		message := fs.StringP("message", "m", "", "commit `MESSAGE` (the image history's comment)")
		author := fs.StringP("author", "a", "", "the image's `AUTHOR`")
		changes := fs.StringArrayP("change", "c", nil, "apply a Dockerfile `INSTRUCTION` to the image config (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR, STOPSIGNAL)")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usagef("name one stack, and optionally the new image's REPO[:TAG]")
			}
			c, err := parseCompression(*compression)
			if err != nil {
				return err
			}
			epoch, err := sourceDateEpoch()
			if err != nil {
				return err
			}
			info, err := e.store.Resolve(ctx, args[0])
			if err != nil {
				return notFoundHint(err)
			}
			if info.Kind != snapshot.KindActive {
				return fmt.Errorf("%q is a %s, not a stack: only stacks have changes to commit", args[0], info.Kind)
			}
			opts := snapshot.LayerOptions{Compression: c, SourceDateEpoch: epoch}
			if d, ok, err := e.store.Mounted(ctx, info.Name); err != nil {
				return err
			} else if ok {
				e.log.Printf("%s is mounted at %s: freezing its daemon (pid %d)", info.Name, d.Dir, d.Pid)
				opts.Freeze = func() (func() error, error) {
					return freezeDaemon(d, func(m string) { fmt.Fprintf(e.stderr, "strata commit: warning: %s\n", m) })
				}
			}
			b := progressBoard(e, *quiet)
			defer b.finish()
			if info.Labels[image.LabelImage] != "" || len(args) == 2 || *message != "" || *author != "" || len(*changes) > 0 {
				iopts := image.CommitOptions{
					Message: *message, Author: *author, Changes: *changes,
					Compression: c, SourceDateEpoch: epoch, Freeze: opts.Freeze,
					Progress: b.reporter(),
				}
				if len(args) == 2 {
					iopts.Tag = args[1]
				}
				im, err := e.images.Commit(ctx, info.Name, iopts)
				b.finish()
				if err != nil {
					return err
				}
				fmt.Fprintln(e.stdout, im.ID)
				return nil
			}
			start := time.Now()
			b.update(image.LayerProgress{Count: 1, State: image.Committing})
			if report := b.reporter(); report != nil {
				opts.Progress = func(n int64) { report(image.LayerProgress{Count: 1, State: image.Committing, Done: n}) }
			}
			l, err := e.store.CommitLayer(ctx, info.Name, opts)
			if err == nil {
				b.update(image.LayerProgress{Count: 1, Digest: l.Layer.Digest, State: image.Committed, Done: l.Layer.Size, Total: l.Layer.Size})
			}
			b.finish()
			if err != nil {
				return err
			}
			e.log.Printf("committed in %v", time.Since(start))
			if *quiet {
				fmt.Fprintln(e.stdout, l.Name)
				return nil
			}
			fmt.Fprintf(e.stdout, "layer:   %s\ndiff ID: %s\ndigest:  %s (%s, %s)\n",
				l.Name, l.Layer.DiffID, l.Layer.Digest, l.Layer.MediaType, humanSize(l.Layer.Size))
			return nil
		}
	},
}

func parseCompression(s string) (layer.Compression, error) {
	switch s {
	case "gzip":
		return layer.Gzip, nil
	case "zstd":
		return layer.Zstd, nil
	case "none":
		return layer.Uncompressed, nil
	}
	return 0, usagef("--compression %q: want gzip, zstd or none", s)
}

// sourceDateEpoch reads SOURCE_DATE_EPOCH (reproducible-builds.org).
func sourceDateEpoch() (*time.Time, error) {
	v := os.Getenv("SOURCE_DATE_EPOCH")
	if v == "" {
		return nil, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("SOURCE_DATE_EPOCH=%q: want a non-negative number of seconds since 1970", v)
	}
	t := time.Unix(n, 0).UTC()
	return &t, nil
}
