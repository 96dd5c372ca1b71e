package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/strata-fs/strata/snapshot"
)

var lsCmd = &command{
	name:    "ls",
	args:    "[-q] [--no-trunc] [--format FORMAT]",
	summary: "List stacks and layers: name, kind, parent, size, where mounted",
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		quiet := fs.BoolP("quiet", "q", false, "print names only")
		format := fs.String("format", "table", "print with a Go template, `FORMAT`: 'table {{.Name}}\\t{{.Kind}}', '{{json .}}', or json for a JSON array (fields: "+strings.Join(viewFields(lsView{}), ", ")+")")
		noTrunc := fs.Bool("no-trunc", false, "print layer IDs in full")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) > 0 {
				return usagef("ls takes no arguments")
			}
			f, err := parseFormat(*format, lsView{})
			if err != nil {
				return err
			}
			rows, err := listSnapshots(ctx, e.store)
			if err != nil {
				return err
			}
			if *quiet {
				for _, r := range rows {
					fmt.Fprintln(e.stdout, shortID(r.Name, *noTrunc))
				}
				return nil
			}
			now := time.Now()
			views := make([]lsView, 0, len(rows))
			for _, r := range rows {
				views = append(views, r.view(now, *noTrunc))
			}
			return writeRows(e.stdout, f, views, rows, func() error {
				t := newTable(e.stdout, "NAME", "KIND", "PARENT", "SIZE", "CREATED", "MOUNTED")
				for _, v := range views {
					t.row(v.Name, v.Kind, v.Parent, v.Size, v.CreatedSince, v.Mounted)
				}
				return t.flush()
			})
		}
	},
}

// lsView is a stack or layer as --format templates see it.
type lsView struct {
	Name         string
	Kind         string
	Parent       string
	ID           string
	Size         string
	CreatedSince string `header:"CREATED"`
	CreatedAt    string
	Mounted      string
}

func (r lsRow) view(now time.Time, noTrunc bool) lsView {
	size := humanSize(r.Size)
	switch {
	case r.Size < 0:
		size = "? (damaged: see 'strata check')"
	case r.Kind != snapshot.KindCommitted.String() || r.Parent != "":
		size = fmt.Sprintf("%s (virtual %s)", size, humanSize(r.Size+r.SharedSize))
	}
	return lsView{
		Name: shortID(r.Name, noTrunc), Kind: r.Kind, Parent: orDash(shortID(r.Parent, noTrunc)),
		ID: r.ID, Size: size, CreatedSince: humanAge(r.Created, now), CreatedAt: createdAt(r.Created),
		Mounted: mountedCol(r.MountedAt, r.MountDead),
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// lsRow is one snapshot as ls and inspect show it. Size is the space of
// its own directory, unique to it; SharedSize that of the layers under
// it, which every other stack on them shares.
type lsRow struct {
	Name       string
	Kind       string
	Parent     string `json:",omitempty"`
	ID         string
	Created    time.Time
	Size       int64
	Inodes     int64
	SharedSize int64
	MountedAt  string            `json:",omitempty"`
	Damaged    string            `json:",omitempty"`
	DaemonPid  int               `json:",omitempty"`
	MountDead  bool              `json:",omitempty"` // its daemon died: see mountedCol
	Labels     map[string]string `json:",omitempty"`
}

// listSnapshots lists the store, stacks first then layers, each by
// creation time, newest first, as docker lists.
func listSnapshots(ctx context.Context, st *snapshot.Store) ([]lsRow, error) {
	ls, err := st.List(ctx)
	if err != nil {
		return nil, err
	}
	byName := map[string]snapshot.Listing{}
	for _, l := range ls {
		byName[l.Name] = l
	}
	rows := make([]lsRow, 0, len(ls))
	for _, l := range ls {
		r := lsRow{
			Name: l.Name, Kind: l.Kind.String(), Parent: l.Parent, ID: l.ID,
			Created: l.Created, Size: l.Usage.Size, Inodes: l.Usage.Inodes, Labels: l.Labels,
		}
		if l.Kind != snapshot.KindCommitted {
			// A damaged stack (its directory gone) is still listed, so
			// that it can be found and removed.
			if u, err := st.Usage(ctx, l.Name); err == nil {
				r.Size, r.Inodes = u.Size, u.Inodes
			} else {
				r.Size, r.Damaged = -1, err.Error()
			}
		}
		for p := l.Parent; p != ""; p = byName[p].Parent {
			r.SharedSize += byName[p].Usage.Size
		}
		if l.Daemon != nil {
			r.MountedAt, r.DaemonPid = l.Daemon.Dir, l.Daemon.Pid
		} else if l.DeadMount != nil {
			r.MountedAt, r.MountDead = l.DeadMount.Dir, true
		}
		rows = append(rows, r)
	}
	sort.SliceStable(rows, func(i, j int) bool {
		ci, cj := rows[i].Kind == "committed", rows[j].Kind == "committed"
		if ci != cj {
			return cj
		}
		return rows[i].Created.After(rows[j].Created)
	})
	return rows, nil
}

// mountedCol is the MOUNTED column: where, and whether the mount's daemon
// died, leaving a mount that answers ENOTCONN.
func mountedCol(dir string, dead bool) string {
	if dead {
		return dir + " (daemon dead: 'strata unmount' removes it)"
	}
	return orDash(dir)
}
