package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// table writes columns aligned as docker's tables are: three spaces
// between columns, headers in capitals.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, headers ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)}
	t.row(headers...)
	return t
}

func (t *table) row(cells ...string) { fmt.Fprintln(t.tw, strings.Join(cells, "\t")) }

func (t *table) flush() error { return t.tw.Flush() }

// humanSize prints bytes as docker does: decimal units, three
// significant digits ("1.23MB", "512B").
func humanSize(n int64) string {
	units := []string{"B", "kB", "MB", "GB", "TB", "PB"}
	f := float64(n)
	i := 0
	for f >= 1000 && i < len(units)-1 {
		f /= 1000
		i++
	}
	s := fmt.Sprintf("%.4g", f)
	if i == 0 {
		s = fmt.Sprintf("%d", n)
	} else if strings.Contains(s, ".") && len(s) > 4 {
		s = fmt.Sprintf("%.3g", f)
	}
	return s + units[i]
}

// humanAge prints how long ago t was, as docker's "CREATED" column.
func humanAge(t time.Time, now time.Time) string {
	d := now.Sub(t)
	switch {
	case d < time.Second:
		return "Less than a second ago"
	case d < time.Minute:
		return plural(int(d.Seconds()), "second") + " ago"
	case d < time.Hour:
		return plural(int(d.Minutes()), "minute") + " ago"
	case d < 48*time.Hour:
		return plural(int(d.Hours()), "hour") + " ago"
	case d < 14*24*time.Hour:
		return plural(int(d.Hours()/24), "day") + " ago"
	case d < 60*24*time.Hour:
		return plural(int(d.Hours()/24/7), "week") + " ago"
	case d < 2*365*24*time.Hour:
		return plural(int(d.Hours()/24/30), "month") + " ago"
	}
	return plural(int(d.Hours()/24/365), "year") + " ago"
}

func plural(n int, unit string) string {
	switch {
	case n == 1 && unit == "hour":
		return "About an hour"
	case n == 1:
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}

// shortID is the 12 hex digits docker shows of a digest, unless full.
func shortID(s string, full bool) string {
	if full {
		return s
	}
	hex := strings.TrimPrefix(s, "sha256:")
	if hex != s && len(hex) > 12 {
		return hex[:12]
	}
	return s
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "    ")
	return enc.Encode(v)
}

// joinErrs joins errors one per line, as docker prints several.
func joinErrs(errs []error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	msg := ""
	for i, err := range errs {
		if i > 0 {
			msg += "\n"
		}
		msg += err.Error()
	}
	return fmt.Errorf("%s", msg)
}

// count prints "1 layer", "2 layers".
func count(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}
