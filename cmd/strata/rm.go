package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"github.com/strata-fs/strata/container"
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
			return errors.Join(append(errs, removeStale(ctx, e))...)
		}
	},
}

func removeOne(ctx context.Context, e *env, ref string, force bool) error {
	info, err := e.store.Resolve(ctx, ref)
	if err != nil {
		return notFoundHint(err)
	}
	if info.Kind == snapshot.KindActive && info.Labels[container.LabelConfig] != "" {
		if err := retireContainer(ctx, e, ref, info.Name, force); err != nil {
			return err
		}
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
	if err == nil && info.Kind == snapshot.KindActive {
		// A container's bundle goes with it; a stack has none.
		err = os.RemoveAll(bundleDir(e, info.Name))
	}
	return err
}

// retireContainer readies a container for removal: a running one is
// refused, or with force killed; what its runs left (runc's state, the
// mount of its root filesystem) is cleaned up.
func retireContainer(ctx context.Context, e *env, ref, name string, force bool) error {
	rec, err := settle(ctx, e, name)
	if err != nil {
		return err
	}
	if rec.state.Status == container.Running {
		if !force {
			return fmt.Errorf("container %q is running: stop it first ('strata stop %s') or use -f", ref, ref)
		}
		if err := stopContainer(ctx, e, name, "SIGKILL", 0); err != nil {
			return err
		}
	}
	return unmountRootfs(ctx, e, name)
}
