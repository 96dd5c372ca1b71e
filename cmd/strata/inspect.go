package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/template"
	"time"

	"github.com/spf13/pflag"

	"github.com/strata-fs/strata/image"
	"github.com/strata-fs/strata/snapshot"
	"github.com/strata-fs/strata/snapshot/layer"
)

var inspectCmd = &command{
	name:    "inspect",
	args:    "[--format FORMAT] NAME...",
	summary: "Show containers, stacks, layers or images in detail, as JSON",
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		format := fs.StringP("format", "f", "", "print each with a Go template, `FORMAT`, on its JSON fields: '{{.Id}}', '{{json .Config}}' (default: all of them as a JSON array, as json does)")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) == 0 {
				return usagef("name at least one stack or layer")
			}
			var tmpl *template.Template
			if *format != "json" && *format != "" {
				if strings.HasPrefix(*format, "table") {
					return usagef("--format %q: inspect prints no table: give a template, as '{{.Id}}', or json", *format)
				}
				if !strings.Contains(*format, "{{") {
					return usagef("--format %q: want json, or a Go template such as '{{.Id}}'", *format)
				}
				t, err := parseTemplate(*format, *format)
				if err != nil {
					return err
				}
				tmpl = t
			}
			rows, err := listSnapshots(ctx, e.store)
			if err != nil {
				return err
			}
			var out []any
			var errs []error
			for _, a := range args {
				info, err := e.store.Resolve(ctx, a)
				if err != nil {
					im, ierr := e.images.Get(ctx, a)
					if ierr == nil {
						o, err := inspectImage(ctx, e, im)
						if err != nil {
							errs = append(errs, err)
						} else {
							out = append(out, o)
						}
						continue
					}
					errs = append(errs, fmt.Errorf("no container, stack, layer %q nor image %q (see 'strata ps', 'strata ls' and 'strata images')", a, image.DisplayRef(a)))
					continue
				}
				o := inspectOut{Layer: info.Layer, Updated: info.Updated}
				for _, r := range rows {
					if r.Name == info.Name {
						o.lsRow = r
					}
				}
				if m, err := e.store.Mounts(ctx, info.Name); err == nil {
					o.Mount = &m
				}
				if info.Kind == snapshot.KindCommitted {
					if id, err := e.store.ChainID(ctx, info.Name); err == nil {
						o.ChainID = id.String()
					}
				}
				out = append(out, o)
			}
			if tmpl != nil {
				if err := inspectTemplate(e.stdout, tmpl, *format, out); err != nil {
					return err
				}
			} else if len(out) > 0 {
				if err := writeJSON(e.stdout, out); err != nil {
					return err
				}
			}
			return errors.Join(errs...)
		}
	},
}

type inspectOut struct {
	lsRow
	Updated time.Time
	ChainID string            `json:",omitempty"`
	Layer   *layer.Descriptor `json:",omitempty"`
	Mount   *snapshot.Mount   `json:",omitempty"`
}

// inspectTemplate prints each object with the template, as docker
// inspect does: on the object's JSON, so that the fields are the JSON's
// names and values ({{.Created}} is a timestamp, {{.Config.Env}} a list).
func inspectTemplate(w io.Writer, t *template.Template, format string, objs []any) error {
	for _, o := range objs {
		b, err := json.Marshal(o)
		if err != nil {
			return err
		}
		var m any
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber() // sizes print as numbers, not 1.2e+06
		if err := dec.Decode(&m); err != nil {
			return err
		}
		var out bytes.Buffer
		if err := t.Execute(&out, m); err != nil {
			return usagef("--format %q: %v", format, templateErr(err))
		}
		out.WriteByte('\n')
		if _, err := w.Write(out.Bytes()); err != nil {
			return err
		}
	}
	return nil
}
