package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/pflag"

	"github.com/strata-fs/strata/image"
	"github.com/strata-fs/strata/image/reference"
)

var historyCmd = &command{
	name:    "history",
	args:    "[--no-trunc] [-H=false] [-q] IMAGE",
	summary: "Show the history of an image: how each layer was made",
	flags:   historyFlags,
}

func historyFlags(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
	noTrunc := fs.Bool("no-trunc", false, "do not truncate output")
	human := fs.BoolP("human", "H", true, "print sizes and dates in human-readable form")
	quiet := fs.BoolP("quiet", "q", false, "print image IDs only")
	return func(ctx context.Context, e *env, args []string) error {
		if len(args) != 1 {
			return usagef("name one image")
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
		type row struct {
			id, created, by, size, comment string
		}
		var rows []row
		li := 0
		now := time.Now()
		for hi, h := range im.Config.History {
			var size int64
			if !h.EmptyLayer && li < len(chain) {
				size = sizes[chain[li].String()]
				li++
			}
			id := "<missing>"
			if other := imageAt(all, im, hi, li); other != "" {
				id = imageID(other.String(), *noTrunc)
			}
			created := "N/A"
			if h.Created != nil {
				if *human {
					created = humanAge(*h.Created, now)
				} else {
					created = h.Created.Format(time.RFC3339)
				}
			}
			by := strings.Join(strings.Fields(h.CreatedBy), " ")
			if !*noTrunc {
				by = ellipsis(by, 45)
			}
			sz := fmt.Sprint(size)
			if *human {
				sz = humanSize(size)
			}
			rows = append(rows, row{id, created, by, sz, h.Comment})
		}
		if *quiet {
			for i := len(rows) - 1; i >= 0; i-- {
				fmt.Fprintln(e.stdout, rows[i].id)
			}
			return nil
		}
		t := newTable(e.stdout, "IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT")
		for i := len(rows) - 1; i >= 0; i-- {
			r := rows[i]
			t.row(r.id, r.created, r.by, r.size, r.comment)
		}
		return t.flush()
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
