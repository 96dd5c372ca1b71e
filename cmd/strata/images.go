package main

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/pflag"

	"github.com/strata-fs/strata/image/reference"
)

var imagesCmd = &command{
	name:    "images",
	args:    "[-a] [-q] [--digests] [--no-trunc] [--filter KEY=VALUE]... [--format FORMAT] [REPOSITORY[:TAG]]",
	summary: "List images: repository, tag, ID, created, size",
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		all := fs.BoolP("all", "a", false, "list intermediate images too: the untagged images of the build cache")
		quiet := fs.BoolP("quiet", "q", false, "print image IDs only")
		noTrunc := fs.Bool("no-trunc", false, "print full image IDs")
		digests := fs.Bool("digests", false, "add a DIGEST column: the manifest digest in the image's repository, as pulled or pushed")
		filter := fs.StringArrayP("filter", "f", nil, "list only the images that match `KEY=VALUE`: dangling=true|false, reference=PATTERN, before=IMAGE, since=IMAGE, label=KEY[=VALUE]")
		format := fs.String("format", "table", "print with a Go template, `FORMAT`: 'table {{.Repository}}\\t{{.Tag}}', '{{json .}}', or json for a JSON array (fields: "+strings.Join(viewFields(imageView{}), ", ")+")")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) > 1 {
				return usagef("images takes at most one REPOSITORY[:TAG]")
			}
			f, err := parseFormat(*format, imageView{})
			if err != nil {
				return err
			}
			flt, err := parseFilters(*filter, "dangling", "reference", "before", "since", "label")
			if err != nil {
				return err
			}
			if len(args) == 1 {
				if _, err := reference.Parse(args[0]); err != nil && !strings.ContainsAny(args[0], "*?[") {
					return usagef("%v: give REPOSITORY or REPOSITORY:TAG", err)
				}
				flt["reference"] = append(flt["reference"], args[0])
			}
			return listImages(ctx, e, *quiet, *noTrunc, *digests, *all, f, flt)
		}
	},
}

// imageRow is one line of `strata images`: an image once per tag, or
// once untagged ("<none>"). It is what --format json prints.
type imageRow struct {
	Repository string
	Tag        string
	ID         string
	Digest     string `json:",omitempty"`
	Created    time.Time
	Size       int64
	Labels     map[string]string `json:",omitempty"`

	ref *reference.Reference // nil when untagged
}

// imageView is a row as --format templates see it: docker's fields.
type imageView struct {
	Repository   string
	Tag          string
	ID           string `header:"IMAGE ID"`
	Digest       string
	CreatedSince string `header:"CREATED"`
	CreatedAt    string
	Size         string
}

func imageRows(ctx context.Context, e *env) ([]imageRow, error) {
	du, err := e.images.DiskUsage(ctx)
	if err != nil {
		return nil, err
	}
	rows := []imageRow{}
	for _, u := range du.Images {
		row := imageRow{
			Repository: "<none>", Tag: "<none>", ID: u.ID.String(),
			Created: u.Created(), Size: u.Size, Labels: u.Config.Config.Labels,
		}
		if len(u.RepoTags) == 0 {
			rows = append(rows, row)
			continue
		}
		for _, t := range u.RepoTags {
			r, err := reference.Parse(t)
			if err != nil {
				continue
			}
			row := row
			row.Repository, row.Tag, row.ref = r.FamiliarName(), r.Tag, &r
			row.Digest = repoDigest(u.RepoDigests, r)
			rows = append(rows, row)
		}
	}
	return rows, nil
}

// repoDigest is the manifest digest the image has in r's repository, as
// docker's DIGEST column: "" when it has none.
func repoDigest(digests []string, r reference.Reference) string {
	for _, d := range digests {
		if dr, err := reference.Parse(d); err == nil && dr.Name() == r.Name() {
			return dr.Digest.String()
		}
	}
	return ""
}

// filterImages keeps the rows that pass the filters.
func filterImages(ctx context.Context, e *env, rows []imageRow, flt filters) ([]imageRow, error) {
	var dangling *bool
	for _, v := range flt["dangling"] {
		b, err := boolFilter("dangling", v)
		if err != nil {
			return nil, err
		}
		dangling = &b
	}
	created := func(key string) ([]time.Time, error) {
		var ts []time.Time
		for _, v := range flt[key] {
			im, err := e.images.Get(ctx, v)
			if err != nil {
				return nil, fmt.Errorf("--filter %s=%s: %w (see 'strata images')", key, v, err)
			}
			ts = append(ts, im.Created())
		}
		return ts, nil
	}
	before, err := created("before")
	if err != nil {
		return nil, err
	}
	since, err := created("since")
	if err != nil {
		return nil, err
	}
	for _, p := range flt["reference"] {
		if _, err := path.Match(p, ""); err != nil {
			return nil, usagef("--filter reference=%s: bad pattern: %v", p, err)
		}
	}
	out := []imageRow{}
	for _, r := range rows {
		ok := (dangling == nil || *dangling == (r.ref == nil)) &&
			flt.match("reference", func(p string) bool { return matchReference(p, r.ref) }) &&
			flt.match("label", func(l string) bool { return matchLabel(r.Labels, l) })
		for _, t := range before {
			ok = ok && r.Created.Before(t)
		}
		for _, t := range since {
			ok = ok && r.Created.After(t)
		}
		if ok {
			out = append(out, r)
		}
	}
	return out, nil
}

// matchReference tells whether the tag r matches a reference filter or
// an images argument, as docker's: a pattern without a tag is matched
// against the familiar name ("busybox", "library/*" does not match
// "busybox"), one with a tag against "name:tag"; a plain name is also
// matched in full ("docker.io/library/busybox").
func matchReference(pattern string, r *reference.Reference) bool {
	if r == nil {
		return false
	}
	last := pattern[strings.LastIndex(pattern, "/")+1:]
	if strings.Contains(last, ":") {
		if ok, _ := path.Match(pattern, r.FamiliarName()+":"+r.Tag); ok {
			return true
		}
		p, err := reference.Parse(pattern)
		return err == nil && p.Name() == r.Name() && p.Tag == r.Tag
	}
	if ok, _ := path.Match(pattern, r.FamiliarName()); ok {
		return true
	}
	p, err := reference.Parse(pattern)
	return err == nil && p.Name() == r.Name()
}

func listImages(ctx context.Context, e *env, quiet, noTrunc, digests, all bool, f outputFormat, flt filters) error {
	rows, err := imageRows(ctx, e)
	if err != nil {
		return err
	}
	if !all {
		cached, err := e.images.BuildCacheImages(ctx)
		if err != nil {
			return err
		}
		rows = slices.DeleteFunc(rows, func(r imageRow) bool { return r.ref == nil && cached[digest.Digest(r.ID)] > 0 })
	}
	if rows, err = filterImages(ctx, e, rows, flt); err != nil {
		return err
	}
	if quiet {
		seen := map[string]bool{}
		for _, r := range rows {
			if !seen[r.ID] {
				seen[r.ID] = true
				fmt.Fprintln(e.stdout, imageID(r.ID, noTrunc))
			}
		}
		return nil
	}
	now := time.Now()
	views := make([]imageView, 0, len(rows))
	for _, r := range rows {
		views = append(views, imageView{
			Repository: r.Repository, Tag: r.Tag, ID: imageID(r.ID, noTrunc),
			Digest: orNone(r.Digest), CreatedSince: createdAgo(r.Created, now),
			CreatedAt: createdAt(r.Created), Size: humanSize(r.Size),
		})
	}
	return writeRows(e.stdout, f, views, rows, func() error {
		if digests {
			t := newTable(e.stdout, "REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "CREATED", "SIZE")
			for _, v := range views {
				t.row(v.Repository, v.Tag, v.Digest, v.ID, v.CreatedSince, v.Size)
			}
			return t.flush()
		}
		t := newTable(e.stdout, "REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE")
		for _, v := range views {
			t.row(v.Repository, v.Tag, v.ID, v.CreatedSince, v.Size)
		}
		return t.flush()
	})
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
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
