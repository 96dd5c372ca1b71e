package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/strata-fs/strata/snapshot"
	"github.com/strata-fs/strata/snapshot/layer"
)

var inspectCmd = &command{
	name:    "inspect",
	args:    "NAME...",
	summary: "Show containers, stacks, layers or images in detail, as JSON",
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) == 0 {
				return usagef("name at least one stack or layer")
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
					errs = append(errs, fmt.Errorf("no container, stack, layer or image %q (see 'strata ps', 'strata ls' and 'strata images')", a))
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
			if len(out) > 0 {
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
