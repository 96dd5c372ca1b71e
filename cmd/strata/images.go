package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/strata-fs/strata/image/reference"
)

var imagesCmd = &command{
	name:    "images",
	args:    "[-q] [--no-trunc] [--format table|json]",
	summary: "List images: repository, tag, ID, created, size",
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		quiet := fs.BoolP("quiet", "q", false, "print image IDs only")
		noTrunc := fs.Bool("no-trunc", false, "print full image IDs")
		format := fs.String("format", "table", "output `FORMAT`: table or json")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) > 0 {
				return usagef("images takes no arguments")
			}
			if err := oneOf("format", *format, "table", "json"); err != nil {
				return err
			}
			return listImages(ctx, e, *quiet, *noTrunc, *format)
		}
	},
}

// imageRow is one line of `strata images`: an image once per tag, or
// once untagged ("<none>").
type imageRow struct {
	Repository string
	Tag        string
	ID         string
	Created    time.Time
	Size       int64
}

func imageRows(ctx context.Context, e *env) ([]imageRow, error) {
	du, err := e.images.DiskUsage(ctx)
	if err != nil {
		return nil, err
	}
	var rows []imageRow
	for _, u := range du.Images {
		if len(u.RepoTags) == 0 {
			rows = append(rows, imageRow{"<none>", "<none>", u.ID.String(), u.Created(), u.Size})
			continue
		}
		for _, t := range u.RepoTags {
			r, err := reference.Parse(t)
			if err != nil {
				continue
			}
			rows = append(rows, imageRow{r.FamiliarName(), r.Tag, u.ID.String(), u.Created(), u.Size})
		}
	}
	return rows, nil
}

func listImages(ctx context.Context, e *env, quiet, noTrunc bool, format string) error {
	rows, err := imageRows(ctx, e)
	if err != nil {
		return err
	}
	switch {
	case quiet:
		seen := map[string]bool{}
		for _, r := range rows {
			if !seen[r.ID] {
				seen[r.ID] = true
				fmt.Fprintln(e.stdout, imageID(r.ID, noTrunc))
			}
		}
		return nil
	case format == "json":
		return writeJSON(e.stdout, rows)
	}
	t := newTable(e.stdout, "REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")
	now := time.Now()
	for _, r := range rows {
		t.row(r.Repository, r.Tag, imageID(r.ID, noTrunc), createdAgo(r.Created, now), humanSize(r.Size))
	}
	return t.flush()
}

// imageID prints an image ID as docker does: 12 hex digits, or the full
// "sha256:..." with --no-trunc.
func imageID(id string, noTrunc bool) string {
	if noTrunc {
		return id
	}
	return shortID(id, false)
}

func createdAgo(t, now time.Time) string {
	if t.IsZero() {
		return "N/A"
	}
	return humanAge(t, now)
}

var tagCmd = &command{
	name:    "tag",
	args:    "SOURCE TARGET",
	summary: "Give an image another name (REPO[:TAG])",
	changes: true,
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) != 2 {
				return usagef("name the image and the new tag")
			}
			_, err := e.images.Tag(ctx, args[0], args[1])
			return err
		}
	},
}

var rmiCmd = &command{
	name:    "rmi",
	args:    "[-f] IMAGE...",
	summary: "Remove images (untag when other tags remain); their layers go at prune",
	changes: true,
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		force := fs.BoolP("force", "f", false, "remove an image even if a container uses it")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) == 0 {
				return usagef("name at least one image")
			}
			var errs []error
			for _, a := range args {
				out, err := e.images.Remove(ctx, a, *force)
				for _, l := range out {
					fmt.Fprintln(e.stdout, l)
				}
				if err != nil {
					errs = append(errs, err)
				}
			}
			return joinErrs(errs)
		}
	},
}
