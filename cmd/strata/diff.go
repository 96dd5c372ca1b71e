package main

import (
	"context"
	"fmt"

	"github.com/spf13/pflag"

	"github.com/strata-fs/strata/snapshot"
	"github.com/strata-fs/strata/snapshot/layer"
)

var diffCmd = &command{
	name:    "diff",
	args:    "NAME",
	summary: "List the changes of a stack against its layers: A added, C changed, D deleted",
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) != 1 {
				return usagef("name one stack")
			}
			info, err := e.store.Resolve(ctx, args[0])
			if err != nil {
				return notFoundHint(err)
			}
			m, err := e.store.Mounts(ctx, info.Name)
			if err != nil {
				return err
			}
			upper, lowers := m.Upper, m.Lowers
			if info.Kind == snapshot.KindCommitted {
				// A layer's changes are its own directory over its parents.
				upper, lowers = m.Lowers[0], m.Lowers[1:]
			} else if upper == "" {
				return fmt.Errorf("%q is a read-only view: it has no changes", args[0])
			}
			changes, err := layer.Changes(upper, lowers)
			if err != nil {
				return err
			}
			for _, c := range changes {
				fmt.Fprintf(e.stdout, "%c %s\n", c.Kind, c.Path)
			}
			return nil
		}
	},
}
