package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

const ratioNote = "ratios compare with kernel overlayfs: 1.00 = kernel speed, higher is better " +
	"(rates: impl/kernel throughput; times: kernel_time/impl_time)"

type report struct {
	Format          int            `json:"format"`
	Date            string         `json:"date"`
	Mode            string         `json:"mode"`
	Runs            int            `json:"runs"`
	Statistic       string         `json:"statistic"`
	Host            hostJSON       `json:"host"`
	Params          map[string]any `json:"params"`
	RatioNote       string         `json:"ratio_note"`
	Implementations []implJSON     `json:"implementations"`
	Results         []resultJSON   `json:"results"`
	Notes           []string       `json:"notes,omitempty"`
}

type hostJSON struct {
	Kernel string `json:"kernel"`
	CPUs   int    `json:"cpus"`
	Arch   string `json:"arch"`
	Go     string `json:"go"`
}

type implJSON struct {
	Name      string `json:"name"`
	Available bool   `json:"available"`
	Version   string `json:"version,omitempty"`
	Skip      string `json:"skip_reason,omitempty"`
}

type resultJSON struct {
	Key            string                `json:"key"`
	Workload       string                `json:"workload"`
	Title          string                `json:"title"`
	Unit           string                `json:"unit"`
	HigherIsBetter bool                  `json:"higher_is_better"`
	Values         map[string]*valueJSON `json:"values"`
	Ratios         map[string]float64    `json:"ratio_vs_kernel,omitempty"`
}

type valueJSON struct {
	Median  *float64  `json:"median,omitempty"`
	Samples []float64 `json:"samples,omitempty"`
	Error   string    `json:"error,omitempty"`
}

func median(xs []float64) (float64, bool) {
	if len(xs) == 0 {
		return 0, false
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2], true
	}
	return (s[n/2-1] + s[n/2]) / 2, true
}

func (b *bench) report(res []*result) *report {
	c := b.cfg
	r := &report{
		Format:    1,
		Date:      time.Now().UTC().Format(time.RFC3339),
		Mode:      map[bool]string{true: "quick", false: "full"}[c.quick],
		Runs:      c.runs,
		Statistic: "median",
		Host:      hostJSON{Kernel: b.impls[0].version, CPUs: runtime.NumCPU(), Arch: runtime.GOARCH, Go: runtime.Version()},
		Params: map[string]any{
			"big_file_bytes":  c.bigSize,
			"random_reads":    c.randOps,
			"walk_files":      c.walkFiles,
			"walk_layers":     walkLayers,
			"lstat_files":     c.lstatFiles,
			"lstat_layers":    lstatDepths,
			"readdir_entries": c.readdirEntries,
			"create_files":    c.createFiles,
			"go_src_subtree":  c.srcSub,
			"kernel_options":  kernelOptions,
		},
		RatioNote: ratioNote,
		Notes:     b.notes,
	}
	for _, im := range b.impls {
		r.Implementations = append(r.Implementations, implJSON{Name: im.name, Available: im.skip == "", Version: im.version, Skip: im.skip})
	}
	for _, x := range res {
		rj := resultJSON{Key: x.key, Workload: x.workload, Title: x.title, Unit: x.unit, HigherIsBetter: x.higher, Values: map[string]*valueJSON{}}
		for _, im := range b.impls {
			v := &valueJSON{Samples: x.samples[im.name], Error: x.errs[im.name]}
			if m, ok := median(x.samples[im.name]); ok {
				v.Median = &m
			}
			if im.skip == "" && (v.Median != nil || v.Error != "") {
				rj.Values[im.name] = v
			}
		}
		if k := rj.Values["kernel"]; k != nil && k.Median != nil && *k.Median > 0 && !x.noKernel {
			for _, im := range b.impls[1:] {
				if v := rj.Values[im.name]; v != nil && v.Median != nil && *v.Median > 0 {
					if rj.Ratios == nil {
						rj.Ratios = map[string]float64{}
					}
					if x.higher {
						rj.Ratios[im.name] = *v.Median / *k.Median
					} else {
						rj.Ratios[im.name] = *k.Median / *v.Median
					}
				}
			}
		}
		r.Results = append(r.Results, rj)
	}
	return r
}

func formatValue(v float64) string {
	switch a := max(v, -v); {
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

func (r *report) printTable(w io.Writer) {
	fmt.Fprintf(w, "\nstrata benchmark, %s mode: median of %d runs, %s, %d CPUs\n", r.Mode, r.Runs, r.Host.Kernel, r.Host.CPUs)
	for _, im := range r.Implementations[1:] {
		if im.Available {
			fmt.Fprintf(w, "  %s: %s\n", im.Name, im.Version)
		}
	}
	fmt.Fprintf(w, "  kernel overlayfs options: %s\n", kernelOptions)
	fmt.Fprintf(w, "%s\n\n", ratioNote)

	avail := map[string]bool{}
	for _, im := range r.Implementations {
		avail[im.Name] = im.Available
	}
	header := []string{"workload", "unit", "kernel", "fuse-overlayfs", "strata", "strata/kernel", "fuse-overlayfs/kernel"}
	rows := [][]string{header}
	var errs []string
	for _, x := range r.Results {
		row := []string{x.Title, x.Unit}
		for _, name := range []string{"kernel", "fuse-overlayfs", "strata"} {
			v := x.Values[name]
			switch {
			case !avail[name]:
				row = append(row, "n/a")
			case v == nil:
				row = append(row, "-")
			case v.Median != nil:
				cell := formatValue(*v.Median)
				if v.Error != "" {
					cell += "*"
					errs = append(errs, fmt.Sprintf("%s, %s (some runs): %s", name, x.Key, v.Error))
				}
				row = append(row, cell)
			default:
				row = append(row, "err")
				errs = append(errs, fmt.Sprintf("%s, %s: %s", name, x.Key, v.Error))
			}
		}
		for _, name := range []string{"strata", "fuse-overlayfs"} {
			if q, ok := x.Ratios[name]; ok {
				row = append(row, fmt.Sprintf("%.2f", q))
			} else {
				row = append(row, "-")
			}
		}
		rows = append(rows, row)
	}
	widths := make([]int, len(header))
	for _, row := range rows {
		for i, cell := range row {
			widths[i] = max(widths[i], len([]rune(cell)))
		}
	}
	for ri, row := range rows {
		var sb strings.Builder
		for i, cell := range row {
			pad := strings.Repeat(" ", widths[i]-len([]rune(cell)))
			if i > 0 {
				sb.WriteString(" | ")
			}
			if i < 2 {
				sb.WriteString(cell + pad)
			} else {
				sb.WriteString(pad + cell)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(sb.String(), " "))
		if ri == 0 {
			var sep []string
			for _, n := range widths {
				sep = append(sep, strings.Repeat("-", n))
			}
			fmt.Fprintln(w, strings.Join(sep, "-|-"))
		}
	}
	var tail []string
	for _, im := range r.Implementations {
		if !im.Available {
			tail = append(tail, fmt.Sprintf("%s: n/a: %s", im.Name, im.Skip))
		}
	}
	tail = append(tail, errs...)
	tail = append(tail, r.Notes...)
	if len(tail) > 0 {
		fmt.Fprintln(w)
		for _, s := range tail {
			fmt.Fprintln(w, "* "+s)
		}
	}
}

func (r *report) writeJSON(path string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}
