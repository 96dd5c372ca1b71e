package main

import (
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strings"
	"text/tabwriter"
	"text/template"
	"time"
	"unicode"
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

// writeJSON prints v indented; a nil slice is an empty list, "[]".
func writeJSON(w io.Writer, v any) error {
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Slice && rv.IsNil() {
		v = []any{}
	}
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

// outputFormat is a parsed --format, docker's way: "" or "table" is the
// command's own table; "table TEMPLATE" a table of the template's
// columns under a header row; "json" (podman's shorthand) every row as
// one JSON array; anything else a Go template printed once per row.
// Templates see a command's view (imageView, psView...): docker's field
// names, with values as docker prints them.
type outputFormat struct {
	json  bool
	table bool
	tmpl  *template.Template // nil: the command's own table
	// headers are the column names of the view's fields.
	headers map[string]string
}

// templateFuncs are the functions docker's templates have.
var templateFuncs = template.FuncMap{
	"json": func(v any) (string, error) {
		var b strings.Builder
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			return "", err
		}
		return strings.TrimSuffix(b.String(), "\n"), nil
	},
	"join":  strings.Join,
	"split": strings.Split,
	"lower": strings.ToLower,
	"upper": strings.ToUpper,
	"title": func(s string) string {
		if s == "" {
			return s
		}
		return strings.ToUpper(s[:1]) + s[1:]
	},
	"truncate": func(s string, n int) string {
		if r := []rune(s); len(r) > n {
			return string(r[:n])
		}
		return s
	},
	"pad": func(s string, before, after int) string {
		return strings.Repeat(" ", before) + s + strings.Repeat(" ", after)
	},
}

// parseFormat parses --format for rows shown as view, a zero value of
// the view struct; a template that does not parse, or uses a field the
// view lacks, is a usage error.
func parseFormat(s string, view any) (outputFormat, error) {
	f := outputFormat{headers: viewHeaders(view)}
	switch strings.TrimSpace(s) {
	case "", "table":
		return f, nil
	case "json":
		f.json = true
		return f, nil
	}
	text := s
	if rest, ok := strings.CutPrefix(s, "table"); ok && (rest == "" || rest[0] == ' ' || rest[0] == '\t') {
		f.table, text = true, strings.TrimLeft(rest, " \t")
	}
	if !strings.Contains(text, "{{") {
		return f, usagef("--format %q: want table, json, or a Go template such as '{{.%s}}'", s, viewFields(view)[0])
	}
	t, err := parseTemplate(s, text)
	if err != nil {
		return f, err
	}
	if err := t.Execute(io.Discard, view); err != nil {
		return f, usagef("--format %q: %v (the fields are %s)", s, templateErr(err), strings.Join(viewFields(view), ", "))
	}
	f.tmpl = t
	return f, nil
}

// parseTemplate parses a template as docker does, with \t and \n
// written as such on the command line.
func parseTemplate(format, text string) (*template.Template, error) {
	text = strings.NewReplacer(`\t`, "\t", `\n`, "\n").Replace(text)
	t, err := template.New("").Funcs(templateFuncs).Parse(text)
	if err != nil {
		return nil, usagef("--format %q: %v (see 'https://pkg.go.dev/text/template')", format, templateErr(err))
	}
	return t, nil
}

// templateErr drops the "template: :1:2: " noise of a template error but
// keeps where it is.
func templateErr(err error) string {
	msg := strings.TrimPrefix(err.Error(), "template: ")
	return goTypeRE.ReplaceAllString(msg, "")
}

// goTypeRE is the Go type a template error names ("in type
// main.imageView"), which is no help to the user.
var goTypeRE = regexp.MustCompile(` in type [\w.*\[\]]+`)

// writeRows prints rows by the format f: views to the template, raw as
// JSON, or the command's own table with def.
func writeRows[T any](w io.Writer, f outputFormat, views []T, raw any, def func() error) error {
	switch {
	case f.json:
		return writeJSON(w, raw)
	case f.tmpl == nil:
		return def()
	}
	out := w
	var tw *tabwriter.Writer
	if f.table {
		tw = tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
		out = tw
		// docker executes the template on the header names for its
		// header row.
		h := template.Must(f.tmpl.Clone()).Option("missingkey=zero")
		if err := h.Execute(out, f.headers); err != nil {
			return err
		}
		fmt.Fprintln(out)
	}
	for _, v := range views {
		if err := f.tmpl.Execute(out, v); err != nil {
			return err
		}
		fmt.Fprintln(out)
	}
	if tw != nil {
		return tw.Flush()
	}
	return nil
}

// viewFields are the names of a view struct's fields.
func viewFields(view any) []string {
	t := reflect.TypeOf(view)
	var names []string
	for i := 0; i < t.NumField(); i++ {
		if t.Field(i).IsExported() {
			names = append(names, t.Field(i).Name)
		}
	}
	return names
}

// viewHeaders are the column headers of a view's fields: the field's
// `header` tag, or its name in capitals, words apart ("CreatedAt" is
// "CREATED AT").
func viewHeaders(view any) map[string]string {
	t := reflect.TypeOf(view)
	h := map[string]string{}
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		if tag := sf.Tag.Get("header"); tag != "" {
			h[sf.Name] = tag
			continue
		}
		var words []string
		start := 0
		for j := 1; j < len(sf.Name); j++ {
			if unicode.IsUpper(rune(sf.Name[j])) && unicode.IsLower(rune(sf.Name[j-1])) {
				words = append(words, sf.Name[start:j])
				start = j
			}
		}
		h[sf.Name] = strings.ToUpper(strings.Join(append(words, sf.Name[start:]), " "))
	}
	return h
}

// createdAt prints a time as docker's CreatedAt fields do.
func createdAt(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Format("2006-01-02 15:04:05 -0700 MST")
}

// filters are the --filter KEY=VALUE options, docker's way: values of
// one key match any of them, and every key must match.
type filters map[string][]string

// parseFilters parses --filter options, each KEY=VALUE with KEY one of
// valid (a key alone, for label=KEY).
func parseFilters(args []string, valid ...string) (filters, error) {
	f := filters{}
	for _, a := range args {
		k, v, _ := strings.Cut(a, "=")
		k = strings.ToLower(strings.TrimSpace(k))
		ok := false
		for _, name := range valid {
			ok = ok || k == name
		}
		if !ok {
			return nil, usagef("--filter %q: no filter %q; the filters are %s (as --filter KEY=VALUE)", a, k, strings.Join(valid, ", "))
		}
		if v == "" && k != "label" {
			return nil, usagef("--filter %q: give a value, as --filter %s=VALUE", a, k)
		}
		f[k] = append(f[k], v)
	}
	return f, nil
}

// match tells whether some value of key passes ok; true when key is
// not filtered.
func (f filters) match(key string, ok func(v string) bool) bool {
	vs, set := f[key]
	if !set {
		return true
	}
	for _, v := range vs {
		if ok(v) {
			return true
		}
	}
	return false
}

// matchLabel tells whether labels has a label filter's KEY, or KEY=VALUE.
func matchLabel(labels map[string]string, filter string) bool {
	k, v, hasValue := strings.Cut(filter, "=")
	got, ok := labels[k]
	return ok && (!hasValue || got == v)
}

// boolFilter parses the value of a true|false filter.
func boolFilter(key, v string) (bool, error) {
	switch strings.ToLower(v) {
	case "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return false, usagef("--filter %s=%s: want %s=true or %s=false", key, v, key, key)
}
