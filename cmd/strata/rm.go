package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/pflag"

	"github.com/strata-fs/strata/snapshot"
)

var rmCmd = &command{
	name:    "rm",
	args:    "[-f] NAME...",
	summary: "Remove stacks or layers (a layer only once no stack or layer is on it)",
	changes: true,
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		force := fs.BoolP("force", "f", false, "unmount a mounted stack first")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) == 0 {
				return usagef("name at least one stack or layer")
			}
			var errs []error
			for _, a := range args {
				if err := removeOne(ctx, e, a, *force); err != nil {
					errs = append(errs, err)
					continue
				}
				fmt.Fprintln(e.stdout, a)
			}
			return errors.Join(errs...)
		}
	},
}

func removeOne(ctx context.Context, e *env, ref string, force bool) error {
	info, err := e.store.Resolve(ctx, ref)
	if err != nil {
		return notFoundHint(err)
	}
	if d, ok, err := e.store.Mounted(ctx, info.Name); err != nil {
		return err
	} else if ok {
		if !force {
			return fmt.Errorf("%q is mounted at %s: unmount it first ('strata unmount %s') or use -f", ref, d.Dir, ref)
		}
		if err := unmountDaemon(ctx, e, info.Name, d, true /* lazy */); err != nil {
			return err
		}
	}
	err = e.store.Remove(ctx, info.Name)
	if errors.Is(err, snapshot.ErrPrecondition) && info.Kind == snapshot.KindCommitted {
		return fmt.Errorf("%w; see 'strata ls' for what is on it", err)
	}
	return err
}
