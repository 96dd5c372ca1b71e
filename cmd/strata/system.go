package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/strata-fs/strata/container"
	"github.com/strata-fs/strata/image/reference"
)

var systemDfCmd = &command{
	name:    "system df",
	args:    "[-v]",
	summary: "Show the disk space images and containers use",
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		verbose := fs.BoolP("verbose", "v", false, "show space usage per image and container")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) > 0 {
				return usagef("system df takes no arguments")
			}
			du, err := e.images.DiskUsage(ctx)
			if err != nil {
				return err
			}
			if !*verbose {
				activeImages := 0
				for _, u := range du.Images {
					if u.Containers > 0 {
						activeImages++
					}
				}
				var csize, creclaim int64
				active := 0
				for _, c := range du.Containers {
					csize += c.Size
					if c.Daemon != nil {
						active++
					} else {
						creclaim += c.Size
					}
				}
				t := newTable(e.stdout, "TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE")
				t.row("Images", fmt.Sprint(len(du.Images)), fmt.Sprint(activeImages), humanSize(du.LayersSize), reclaimable(du.ReclaimableImages, du.LayersSize))
				t.row("Containers", fmt.Sprint(len(du.Containers)), fmt.Sprint(active), humanSize(csize), reclaimable(creclaim, csize))
				t.row("Local Volumes", "0", "0", "0B", "0B")
				t.row("Build Cache", "0", "0", "0B", "0B")
				return t.flush()
			}
			now := time.Now()
			fmt.Fprintf(e.stdout, "Images space usage:\n\n")
			t := newTable(e.stdout, "REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED SIZE", "UNIQUE SIZE", "CONTAINERS")
			for _, u := range du.Images {
				names := u.RepoTags
				if len(names) == 0 {
					names = []string{""}
				}
				for _, n := range names {
					repo, tag := "<none>", "<none>"
					if r, err := reference.Parse(n); n != "" && err == nil {
						repo, tag = r.FamiliarName(), r.Tag
					}
					t.row(repo, tag, imageID(u.ID.String(), false), createdAgo(u.Created(), now), humanSize(u.Size), humanSize(u.SharedSize), humanSize(u.UniqueSize), fmt.Sprint(u.Containers))
				}
			}
			if err := t.flush(); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "\nContainers space usage:\n\n")
			t = newTable(e.stdout, "NAME", "IMAGE", "SIZE", "CREATED", "MOUNTED")
			for _, c := range du.Containers {
				mounted := "-"
				if c.Daemon != nil {
					mounted = c.Daemon.Dir
				}
				t.row(c.Name, familiarRef(c.ImageRef), humanSize(c.Size), humanAge(c.Created, now), mounted)
			}
			if err := t.flush(); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "\nLocal Volumes space usage:\n\nVOLUME NAME   LINKS     SIZE\n\nBuild cache usage: 0B\n")
			return nil
		}
	},
}

// reclaimable prints "12.3MB (70%)" as docker does.
func reclaimable(n, of int64) string {
	pct := 0
	if of > 0 {
		pct = int(n * 100 / of)
	}
	return fmt.Sprintf("%s (%d%%)", humanSize(n), pct)
}

var psCmd = &command{
	name:    "ps",
	args:    "[-q] [--format table|json]",
	summary: "List containers (stacks created from images): name, image, created, status, ports, size, where mounted",
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		quiet := fs.BoolP("quiet", "q", false, "print names only")
		format := fs.String("format", "table", "output `FORMAT`: table or json")
		fs.BoolP("all", "a", false, "accepted for docker's sake: ps lists every container, running or not")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) > 0 {
				return usagef("ps takes no arguments")
			}
			if err := oneOf("format", *format, "table", "json"); err != nil {
				return err
			}
			cs, err := e.images.Containers(ctx)
			if err != nil {
				return err
			}
			type psRow struct {
				Name, Image, ImageID string
				Created              time.Time
				Size                 int64
				MountedAt            string `json:",omitempty"`
				MountDead            bool   `json:",omitempty"` // its daemon died: see mountedCol
				// Status is docker's: Created, Up 3 minutes, Exited (0) 2
				// minutes ago; State the container's recorded life, as
				// observed now.
				Status string
				State  container.State
				Ports  []string `json:",omitempty"`
			}
			now := time.Now()
			var rows []psRow
			for _, c := range cs {
				r := psRow{Name: c.Name, Image: familiarRef(c.ImageRef), ImageID: c.Image.String(), Created: c.Created, Size: -1}
				// A damaged container (its directory gone) is listed all the same.
				if u, err := e.store.Usage(ctx, c.Name); err == nil {
					r.Size = u.Size
				}
				if c.Daemon != nil {
					r.MountedAt = c.Daemon.Dir
				} else if c.DeadMount != nil {
					r.MountedAt, r.MountDead = c.DeadMount.Dir, true
				}
				st, err := container.DecodeState(c.Labels)
				if err != nil {
					return fmt.Errorf("%s: %w", c.Name, err)
				}
				r.State = st.Observe(container.ProcessAlive)
				r.Status = containerStatus(r.State, now)
				if cfg, err := container.DecodeConfig(c.Labels); err == nil {
					for _, p := range cfg.Ports {
						r.Ports = append(r.Ports, p.String())
					}
				}
				rows = append(rows, r)
			}
			switch {
			case *quiet:
				for _, r := range rows {
					fmt.Fprintln(e.stdout, r.Name)
				}
				return nil
			case *format == "json":
				return writeJSON(e.stdout, rows)
			}
			t := newTable(e.stdout, "NAME", "IMAGE", "CREATED", "STATUS", "PORTS", "SIZE", "MOUNTED")
			for _, r := range rows {
				size := "?"
				if r.Size >= 0 {
					size = humanSize(r.Size)
				}
				ports := "-"
				if len(r.Ports) > 0 {
					ports = strings.Join(r.Ports, ", ")
				}
				t.row(r.Name, r.Image, humanAge(r.Created, now), r.Status, ports, size, mountedCol(r.MountedAt, r.MountDead))
			}
			return t.flush()
		}
	},
}

// containerStatus is the STATUS column of docker ps.
func containerStatus(st container.State, now time.Time) string {
	switch st.Status {
	case container.Running:
		return "Up " + strings.TrimSuffix(humanAge(st.StartedAt, now), " ago")
	case container.Exited:
		code := fmt.Sprint(st.ExitCode)
		if st.ExitUnknown {
			code = "unknown"
		}
		if st.FinishedAt.IsZero() {
			return "Exited (" + code + ")"
		}
		return fmt.Sprintf("Exited (%s) %s", code, humanAge(st.FinishedAt, now))
	}
	return "Created"
}
