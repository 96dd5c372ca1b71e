package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/pflag"

	"github.com/strata-fs/strata/image"
	"github.com/strata-fs/strata/image/oci"
)

var importCmd = &command{
	name:    "import",
	args:    "[-q] [--platform OS/ARCH] SRC [NAME[:TAG]]",
	summary: "Import images: docker://REF (a pull), oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:REF], a path (- for stdin) or a root filesystem tarball",
	changes: true,
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		quiet := fs.BoolP("quiet", "q", false, "no progress, print image IDs only")
		platform := fs.String("platform", "", "pick `OS/ARCH[/VARIANT]` from a multi-platform image (default: this machine's)")
		rf := addRegistryFlags(fs)
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usagef("name a source, and optionally the image's NAME[:TAG]")
			}
			if isRegistryRef(args[0]) {
				return importRegistry(ctx, e, rf, args, *platform, *quiet)
			}
			loc, err := parseLocation(args[0])
			if err != nil {
				return err
			}
			opts := image.ImportOptions{
				Warn:      func(m string) { fmt.Fprintf(e.stderr, "strata import: warning: %s\n", m) },
				Transport: loc.Transport,
				Pick:      loc.Ref,
			}
			b := progressBoard(e, *quiet)
			defer b.finish()
			opts.Report = b.reporter()
			path := loc.Path
			if path == "-" {
				if isTerminal(os.Stdin) {
					return usagef("standard input is a terminal: pipe an archive in (strata import - < FILE), or name a file")
				}
				tmp, err := stdinToTemp(e)
				if err != nil {
					return err
				}
				defer os.Remove(tmp)
				path = tmp
			}
			if len(args) == 2 {
				opts.Tag = args[1]
			}
			if *platform != "" {
				p, err := parsePlatform(*platform)
				if err != nil {
					return err
				}
				opts.Platform = &p
			}
			res, err := e.images.Import(ctx, path, opts)
			b.finish()
			for _, r := range res {
				if *quiet {
					fmt.Fprintln(e.stdout, r.ID)
					continue
				}
				name := r.ID.String()
				if len(r.Tags) > 0 {
					name = familiarRef(r.Tags[0])
				}
				fmt.Fprintf(e.stdout, "Loaded image: %s (%s unpacked, %d already stored)\n", name, count(r.Applied, "layer"), r.Reused)
			}
			return err
		}
	},
}

func parsePlatform(s string) (v1.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return v1.Platform{}, usagef("--platform %q: want OS/ARCH or OS/ARCH/VARIANT, like linux/amd64", s)
	}
	p := v1.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// progressBoard is the board of an import, export or commit: on
// standard error, drawn only on a terminal and only for work that takes
// longer than a second.
func progressBoard(e *env, quiet bool) *board {
	return newBoard(e.stderr, isTerminal(os.Stderr), quiet).delayed(time.Second)
}

// stdinToTemp copies standard input to a file in the store's tmp
// directory: an archive is read in place.
func stdinToTemp(e *env) (string, error) {
	f, err := os.CreateTemp(filepath.Join(e.root, "tmp"), "import-stdin-*.tar")
	if err != nil {
		return "", err
	}
	_, err = io.Copy(f, stdin)
	if err := errors.Join(err, f.Close()); err != nil {
		return "", errors.Join(fmt.Errorf("read standard input: %w", err), os.Remove(f.Name()))
	}
	return f.Name(), nil
}

var exportCmd = &command{
	name:    "export",
	args:    "IMAGE DEST",
	summary: "Export an image: docker://REF (a push), oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:REF], a directory, FILE.tar, FILE.tar.gz or - for stdout",
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		rf := addRegistryFlags(fs)
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) != 2 {
				return usagef("name the image and the destination")
			}
			if isRegistryRef(args[1]) {
				dst, err := parseRemote(args[1])
				if err != nil {
					return usagef("%v", err)
				}
				c, err := rf.client(e, false)
				if err != nil {
					return err
				}
				return push(ctx, e, c, args[0], dst, false, 5)
			}
			loc, err := parseLocation(args[1])
			if err != nil {
				return err
			}
			opts := image.ExportOptions{Format: loc.Transport, Name: loc.Ref}
			switch {
			case loc.Transport == oci.TransportLayout:
			case loc.Transport == "" && loc.Path == "-":
				opts.Format = oci.TransportArchive
			case loc.Transport == "" && strings.HasSuffix(loc.Path, ".tar"):
				opts.Format = oci.TransportArchive
			case loc.Transport == "" && (strings.HasSuffix(loc.Path, ".tar.gz") || strings.HasSuffix(loc.Path, ".tgz")):
				opts.Format, opts.Gzip = oci.TransportArchive, true
			case loc.Transport == "":
				opts.Format = oci.TransportLayout
			default: // an archive transport
				opts.Gzip = strings.HasSuffix(loc.Path, ".gz") || strings.HasSuffix(loc.Path, ".tgz")
			}
			if loc.Path == "-" {
				if opts.Format == oci.TransportLayout {
					return usagef("an OCI layout is a directory: it cannot go to standard output (export to - for an OCI archive)")
				}
				if f, ok := e.stdout.(*os.File); ok && isTerminal(f) {
					return fmt.Errorf("refusing to write an archive to a terminal: redirect standard output (strata export %s - > FILE.tar) or name a file", args[0])
				}
			}
			// Progress goes to standard error, never into an archive
			// written to standard output.
			b := progressBoard(e, false)
			defer b.finish()
			opts.Progress = b.reporter()
			if loc.Path != "-" {
				return e.images.Export(ctx, args[0], loc.Path, opts)
			}
			return e.images.ExportArchive(ctx, args[0], e.stdout, opts)
		}
	},
}

// importRegistry is import of docker://REF: a pull, then the tag NAME
// if given.
func importRegistry(ctx context.Context, e *env, rf *registryFlags, args []string, platform string, quiet bool) error {
	ref, err := parseRemote(args[0])
	if err != nil {
		return usagef("%v", err)
	}
	opts := image.PullOptions{Warn: func(m string) { fmt.Fprintf(e.stderr, "strata import: warning: %s\n", m) }}
	if platform != "" {
		p, err := parsePlatform(platform)
		if err != nil {
			return err
		}
		opts.Platform = &p
	}
	c, err := rf.client(e, false)
	if err != nil {
		return err
	}
	if err := pull(ctx, e, c, args[0], ref, false, quiet, opts); err != nil {
		return err
	}
	if len(args) == 2 {
		from := ref.String()
		if ref.Digest != "" {
			from = ref.Name() + "@" + ref.Digest.String()
		}
		if _, err := e.images.Tag(ctx, from, args[1]); err != nil {
			return err
		}
	}
	return nil
}
