package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/snapshot"
	"github.com/strata-fs/strata/snapshot/layer"
)

var layerCmd = &command{
	name:    "layer",
	args:    "apply [--parent LAYER] FILE|- | export LAYER FILE|-",
	summary: "Apply an OCI layer tarball as a committed layer, or export a layer as one",
	changes: true,
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		parent := fs.String("parent", "", "apply: the `LAYER` to apply on (default: none, a base layer)")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) == 0 {
				return usagef("say apply or export")
			}
			switch args[0] {
			case "apply":
				if len(args) != 2 {
					return usagef("layer apply takes one FILE (or - for stdin)")
				}
				return layerApply(ctx, e, *parent, args[1])
			case "export":
				if len(args) != 3 {
					return usagef("layer export takes a LAYER and a FILE (or - for stdout)")
				}
				return layerExport(ctx, e, args[1], args[2])
			}
			return usagef("unknown layer command %q: say apply or export", args[0])
		}
	},
}

func layerApply(ctx context.Context, e *env, parentRef, file string) error {
	parent := ""
	if parentRef != "" {
		info, err := e.store.Resolve(ctx, parentRef)
		if err != nil {
			return fmt.Errorf("--parent: %w", notFoundHint(err))
		}
		if info.Kind != snapshot.KindCommitted {
			return fmt.Errorf("--parent %q is a %s, not a committed layer", parentRef, info.Kind)
		}
		parent = info.Name
	}
	opts := snapshot.ApplyOptions{Warn: func(msg string) { fmt.Fprintf(e.stderr, "strata layer apply: warning: %s\n", msg) }}
	var r io.Reader = os.Stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
		// A file can be read twice: its diff ID first, so a layer
		// already stored is not unpacked again.
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			id, _, err := layer.DiffID(f)
			if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return err
			}
			opts.DiffID = id
			e.log.Printf("%s: diff ID %s", file, id)
		}
	}
	info, err := e.store.Apply(ctx, r, parent, opts)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, info.Name)
	return nil
}

func layerExport(ctx context.Context, e *env, ref, file string) error {
	info, err := e.store.Resolve(ctx, ref)
	if err != nil {
		return notFoundHint(err)
	}
	if file == "-" {
		if isTerminal(os.Stdout) {
			return errors.New("refusing to write a layer to a terminal: redirect stdout or name a FILE")
		}
		_, err := e.store.ExportLayer(ctx, info.Name, e.stdout)
		return err
	}
	// Written beside FILE and renamed: no half-written FILE on error.
	tmp, err := os.CreateTemp(filepath.Dir(file), ".strata-export-*")
	if err != nil {
		return err
	}
	_, err = e.store.ExportLayer(ctx, info.Name, tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), file)
	}
	if err != nil {
		return errors.Join(err, os.Remove(tmp.Name()))
	}
	return nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
