package main

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/pflag"

	"github.com/strata-fs/strata/container"
	"github.com/strata-fs/strata/image"
	"github.com/strata-fs/strata/image/reference"
)

var systemDfCmd = &command{
	name:    "system df",
	args:    "[-v [--no-trunc]] [--format FORMAT]",
	summary: "Show the disk space images and containers use",
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		verbose := fs.BoolP("verbose", "v", false, "show space usage per image and container")
		noTrunc := fs.Bool("no-trunc", false, "with -v, print full image IDs")
		format := fs.String("format", "table", "print with a Go template, `FORMAT`: 'table {{.Type}}\\t{{.Size}}', '{{json .}}', or json for a JSON array (fields: "+strings.Join(viewFields(dfView{}), ", ")+")")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) > 0 {
				return usagef("system df takes no arguments")
			}
			f, err := parseFormat(*format, dfView{})
			if err != nil {
				return err
			}
			if *verbose && fs.Changed("format") {
				return usagef("--format goes with the summary, not with -v")
			}
			du, err := e.images.DiskUsage(ctx)
			if err != nil {
				return err
			}
			if !*verbose {
				cached, err := e.images.BuildCacheImages(ctx)
				if err != nil {
					return err
				}
				return diskSummary(e, f, du, cached)
			}
			return diskVerbose(e, du, *noTrunc)
		}
	},
}

// dfRow is one line of `system df`: what --format json prints. Volumes
// strata does not have, so there is no row for them.
type dfRow struct {
	Type               string
	TotalCount, Active int
	Size, Reclaimable  int64
}

// dfView is a dfRow as --format templates see it: docker's fields.
type dfView struct {
	Type        string
	TotalCount  string `header:"TOTAL"`
	Active      string
	Size        string
	Reclaimable string
}

func diskSummary(e *env, f outputFormat, du image.DiskUsage, cached map[digest.Digest]int) error {
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
	// The build cache: its records, and the unique size of the
	// intermediate images only it holds, which builder prune frees.
	records, cacheSize := 0, int64(0)
	for _, n := range cached {
		records += n
	}
	for _, u := range du.Images {
		if cached[u.ID] > 0 && len(u.RepoTags) == 0 && u.Containers == 0 {
			cacheSize += u.UniqueSize
		}
	}
	rows := []dfRow{
		{Type: "Images", TotalCount: len(du.Images), Active: activeImages, Size: du.LayersSize, Reclaimable: du.ReclaimableImages},
		{Type: "Containers", TotalCount: len(du.Containers), Active: active, Size: csize, Reclaimable: creclaim},
		{Type: "Build Cache", TotalCount: records, Active: 0, Size: cacheSize, Reclaimable: cacheSize},
	}
	views := make([]dfView, 0, len(rows))
	for _, r := range rows {
		views = append(views, dfView{r.Type, fmt.Sprint(r.TotalCount), fmt.Sprint(r.Active), humanSize(r.Size), reclaimable(r.Reclaimable, r.Size)})
	}
	return writeRows(e.stdout, f, views, rows, func() error {
		t := newTable(e.stdout, "TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE")
		for _, v := range views {
			t.row(v.Type, v.TotalCount, v.Active, v.Size, v.Reclaimable)
		}
		return t.flush()
	})
}

func diskVerbose(e *env, du image.DiskUsage, noTrunc bool) error {
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
			t.row(repo, tag, imageID(u.ID.String(), noTrunc), createdAgo(u.Created(), now), humanSize(u.Size), humanSize(u.SharedSize), humanSize(u.UniqueSize), fmt.Sprint(u.Containers))
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
	return t.flush()
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
	args:    "[-a] [-q] [--no-trunc] [--filter KEY=VALUE]... [--format FORMAT]",
	summary: "List containers (stacks created from images): name, image, created, status, ports, size, where mounted",
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		all := fs.BoolP("all", "a", false, "list every container; without it, only those running or mounted")
		quiet := fs.BoolP("quiet", "q", false, "print names only")
		noTrunc := fs.Bool("no-trunc", false, "print IDs and commands in full")
		filter := fs.StringArrayP("filter", "f", nil, "list only the containers that match `KEY=VALUE`: status=created|running|exited, name=REGEXP, id=PREFIX, ancestor=IMAGE, label=KEY[=VALUE] (a status filter lists stopped ones too)")
		format := fs.String("format", "table", "print with a Go template, `FORMAT`: 'table {{.Names}}\\t{{.Status}}', '{{json .}}', or json for a JSON array (fields: "+strings.Join(viewFields(psView{}), ", ")+")")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) > 0 {
				return usagef("ps takes no arguments")
			}
			f, err := parseFormat(*format, psView{})
			if err != nil {
				return err
			}
			flt, err := parseFilters(*filter, "status", "name", "id", "ancestor", "label")
			if err != nil {
				return err
			}
			rows, err := psRows(ctx, e)
			if err != nil {
				return err
			}
			if rows, err = filterContainers(ctx, e, rows, flt, *all); err != nil {
				return err
			}
			if *quiet {
				for _, r := range rows {
					fmt.Fprintln(e.stdout, r.Name)
				}
				return nil
			}
			now := time.Now()
			views := make([]psView, 0, len(rows))
			for _, r := range rows {
				views = append(views, r.view(now, *noTrunc))
			}
			return writeRows(e.stdout, f, views, rows, func() error {
				t := newTable(e.stdout, "NAME", "IMAGE", "CREATED", "STATUS", "PORTS", "SIZE", "MOUNTED")
				for _, r := range rows {
					v := r.view(now, *noTrunc)
					ports := v.Ports
					if ports == "" {
						ports = "-"
					}
					t.row(r.Name, r.Image, v.RunningFor, r.Status, ports, v.Size, mountedCol(r.MountedAt, r.MountDead))
				}
				return t.flush()
			})
		}
	},
}

// psRow is one container as `ps --format json` prints it.
type psRow struct {
	Name, Image, ImageID string
	ID                   string `json:",omitempty"` // the container's, 64 hex digits
	Command              []string
	Created              time.Time
	Size                 int64
	MountedAt            string `json:",omitempty"`
	MountDead            bool   `json:",omitempty"` // its daemon died: see mountedCol
	// Status is docker's: Created, Up 3 minutes, Exited (0) 2
	// minutes ago; State the container's recorded life, as
	// observed now.
	Status  string
	State   container.State
	Ports   []string `json:",omitempty"`
	Volumes []string `json:",omitempty"` // HOST:CTR[:ro]
	Network string   `json:",omitempty"`
	// labels are its image's, which docker's containers inherit.
	labels map[string]string
}

// psView is a container as --format templates see it: docker's fields,
// and strata's Mounted.
type psView struct {
	ID         string `header:"CONTAINER ID"`
	Image      string
	Command    string
	CreatedAt  string
	RunningFor string `header:"CREATED"`
	Ports      string
	State      string
	Status     string
	Size       string
	Names      string
	Mounts     string
	Networks   string
	Mounted    string
}

func (r psRow) view(now time.Time, noTrunc bool) psView {
	v := psView{
		ID: r.ID, Image: r.Image, Command: strings.Join(r.Command, " "),
		CreatedAt: createdAt(r.Created), RunningFor: humanAge(r.Created, now),
		Ports: strings.Join(r.Ports, ", "), State: string(r.State.Status), Status: r.Status,
		Size: "?", Names: r.Name, Networks: r.Network, Mounted: orDash(r.MountedAt),
	}
	if !noTrunc {
		v.ID = shortID(v.ID, false)
		if len(v.ID) > 12 {
			v.ID = v.ID[:12]
		}
		v.Command = ellipsis(v.Command, 20)
	}
	v.Command = strconv.Quote(v.Command)
	if r.Size >= 0 {
		v.Size = humanSize(r.Size)
	}
	var mounts []string
	for _, vol := range r.Volumes {
		host, _, _ := strings.Cut(vol, ":")
		mounts = append(mounts, host)
	}
	v.Mounts = strings.Join(mounts, ",")
	return v
}

// psRows lists every container.
func psRows(ctx context.Context, e *env) ([]psRow, error) {
	cs, err := e.images.Containers(ctx)
	if err != nil {
		return nil, err
	}
	images := map[digest.Digest]map[string]string{}
	if all, err := e.images.List(ctx); err == nil {
		for _, im := range all {
			images[im.ID] = im.Config.Config.Labels
		}
	}
	now := time.Now()
	rows := []psRow{}
	for _, c := range cs {
		r := psRow{Name: c.Name, Image: familiarRef(c.ImageRef), ImageID: c.Image.String(), Created: c.Created, Size: -1, labels: images[c.Image]}
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
			return nil, fmt.Errorf("%s: %w", c.Name, err)
		}
		r.State = st.Observe(container.ProcessAlive)
		r.Status = containerStatus(r.State, now)
		if cfg, err := container.DecodeConfig(c.Labels); err == nil {
			r.ID, r.Command, r.Network = cfg.ID, cfg.Args(), cfg.Network
			for _, p := range cfg.Ports {
				r.Ports = append(r.Ports, p.String())
			}
			for _, v := range cfg.Volumes {
				s := v.Source + ":" + v.Destination
				if v.ReadOnly {
					s += ":ro"
				}
				r.Volumes = append(r.Volumes, s)
			}
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// containerStatuses are the values of ps's status filter.
var containerStatuses = []string{string(container.Created), string(container.Running), string(container.Exited)}

// filterContainers keeps the rows that pass the filters; without all
// and a status filter, only the containers running or mounted: docker
// lists the running ones, and a mounted container is in use too.
func filterContainers(ctx context.Context, e *env, rows []psRow, flt filters, all bool) ([]psRow, error) {
	for _, v := range flt["status"] {
		if err := oneOf("filter status", v, containerStatuses...); err != nil {
			return nil, err
		}
	}
	var names []*regexp.Regexp
	for _, v := range flt["name"] {
		re, err := regexp.Compile(v)
		if err != nil {
			return nil, usagef("--filter name=%s: %v", v, err)
		}
		names = append(names, re)
	}
	ancestors := map[string]bool{}
	for _, v := range flt["ancestor"] {
		im, err := e.images.Get(ctx, v)
		if err != nil {
			return nil, fmt.Errorf("--filter ancestor=%s: %w (see 'strata images')", v, err)
		}
		ancestors[im.ID.String()] = true
	}
	_, byStatus := flt["status"]
	out := []psRow{}
	for _, r := range rows {
		ok := (all || byStatus || r.State.Status == container.Running || r.MountedAt != "") &&
			flt.match("status", func(s string) bool { return string(r.State.Status) == s }) &&
			flt.match("id", func(p string) bool { return r.ID != "" && strings.HasPrefix(r.ID, p) }) &&
			flt.match("ancestor", func(string) bool { return ancestors[r.ImageID] }) &&
			flt.match("label", func(l string) bool { return matchLabel(r.labels, l) })
		if _, set := flt["name"]; set {
			match := false
			for _, re := range names {
				match = match || re.MatchString(r.Name)
			}
			ok = ok && match
		}
		if ok {
			out = append(out, r)
		}
	}
	return out, nil
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
