package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/pflag"

	"github.com/strata-fs/strata/image"
	"github.com/strata-fs/strata/image/reference"
)

var historyCmd = &command{
	name:    "history",
	args:    "[--no-trunc] [-H=false] [-q] [--format FORMAT] IMAGE",
	summary: "Show the history of an image: how each layer was made",
	flags:   historyFlags,
}

// historyRow is one entry of an image's history, newest first, as
// --format json prints it.
type historyRow struct {
	ID         string // the stored image that ends at this entry, or "<missing>"
	Created    *time.Time
	CreatedBy  string
	Size       int64
	Comment    string
	EmptyLayer bool `json:",omitempty"`
}

// historyView is a history entry as --format templates see it: docker's
// fields.
type historyView struct {
	ID           string `header:"IMAGE"`
	CreatedSince string `header:"CREATED"`
	CreatedAt    string
	CreatedBy    string `header:"CREATED BY"`
	Size         string
	Comment      string
}

func historyFlags(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
	noTrunc := fs.Bool("no-trunc", false, "do not truncate output")
	human := fs.BoolP("human", "H", true, "print sizes and dates in human-readable form")
	quiet := fs.BoolP("quiet", "q", false, "print image IDs only")
	format := fs.String("format", "table", "print with a Go template, `FORMAT`: 'table {{.ID}}\\t{{.CreatedBy}}', '{{json .}}', or json for a JSON array (fields: "+strings.Join(viewFields(historyView{}), ", ")+")")
	return func(ctx context.Context, e *env, args []string) error {
		if len(args) != 1 {
			return usagef("name one image")
		}
		f, err := parseFormat(*format, historyView{})
		if err != nil {
			return err
		}
		im, err := e.images.Get(ctx, args[0])
		if err != nil {
			return err
		}
		all, err := e.images.List(ctx)
		if err != nil {
			return err
		}
		sizes := map[string]int64{}
		ls, err := e.store.List(ctx)
		if err != nil {
			return err
		}
		for _, l := range ls {
			sizes[l.Name] = l.Usage.Size
		}
		chain := im.ChainIDs()
		// Walk the history oldest first to pair entries with layers.
		rows := []historyRow{}
		li := 0
		for hi, h := range im.Config.History {
			var size int64
			if !h.EmptyLayer && li < len(chain) {
				size = sizes[chain[li].String()]
				li++
			}
			id := "<missing>"
			if other := imageAt(all, im, hi, li); other != "" {
				id = other.String()
			}
			rows = append(rows, historyRow{id, h.Created, h.CreatedBy, size, h.Comment, h.EmptyLayer})
		}
		slices.Reverse(rows)
		now := time.Now()
		views := make([]historyView, 0, len(rows))
		for _, r := range rows {
			v := historyView{ID: r.ID, CreatedSince: "N/A", CreatedBy: strings.Join(strings.Fields(r.CreatedBy), " "), Size: fmt.Sprint(r.Size), Comment: r.Comment}
			if r.ID != "<missing>" {
				v.ID = imageID(r.ID, *noTrunc)
			}
			if r.Created != nil {
				v.CreatedAt = r.Created.Format(time.RFC3339)
				v.CreatedSince = v.CreatedAt
				if *human {
					v.CreatedSince = humanAge(*r.Created, now)
				}
			}
			if !*noTrunc {
				v.CreatedBy = ellipsis(v.CreatedBy, 45)
			}
			if *human {
				v.Size = humanSize(r.Size)
			}
			views = append(views, v)
		}
		if *quiet {
			for _, v := range views {
				fmt.Fprintln(e.stdout, v.ID)
			}
			return nil
		}
		return writeRows(e.stdout, f, views, rows, func() error {
			t := newTable(e.stdout, "IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT")
			for _, v := range views {
				t.row(v.ID, v.CreatedSince, v.CreatedBy, v.Size, v.Comment)
			}
			return t.flush()
		})
	}
}

// imageAt returns the ID of the stored image whose history is im's up to
// entry hi and whose layers are im's first nl, as docker shows the local
// parent images in history; "" if none.
func imageAt(all []image.Image, im image.Image, hi, nl int) digest.Digest {
	for _, o := range all {
		if len(o.Config.History) != hi+1 || len(o.Config.RootFS.DiffIDs) != nl {
			continue
		}
		same := true
		for i := range o.Config.RootFS.DiffIDs {
			same = same && o.Config.RootFS.DiffIDs[i] == im.Config.RootFS.DiffIDs[i]
		}
		for i := range o.Config.History {
			same = same && o.Config.History[i].CreatedBy == im.Config.History[i].CreatedBy
		}
		if same {
			return o.ID
		}
	}
	return ""
}

// ellipsis truncates s to n characters, ending in "…", as docker does.
func ellipsis(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// familiarRef prints a full reference as docker does ("busybox:latest").
func familiarRef(s string) string {
	r, err := reference.Parse(s)
	if err != nil {
		return s
	}
	return r.Familiar()
}
