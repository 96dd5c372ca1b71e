package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/strata-fs/strata/container"
	"github.com/strata-fs/strata/image"
)

var imagePruneCmd = &command{
	name:    "image prune",
	args:    "[-a] [-f]",
	summary: "Remove dangling images (-a: every image no container uses) and the layers no one needs",
	changes: true,
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		all := fs.BoolP("all", "a", false, "remove every image no container uses, not only dangling ones")
		force := fs.BoolP("force", "f", false, "do not ask for confirmation")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) > 0 {
				return usagef("image prune takes no arguments")
			}
			warning := "This will remove all dangling images."
			if *all {
				warning = "This will remove all images without at least one container associated to them."
			}
			if !*force {
				if ok, err := confirm(e, "image prune", warning); !ok {
					return err
				}
			}
			rep, err := e.images.Prune(ctx, *all)
			printPrune(e, rep)
			return err
		}
	},
}

var systemPruneCmd = &command{
	name:    "system prune",
	args:    "[-a] [-f]",
	summary: "Remove unmounted containers, dangling images (-a: unused ones) and unneeded layers",
	changes: true,
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		all := fs.BoolP("all", "a", false, "remove every unused image, not only dangling ones")
		force := fs.BoolP("force", "f", false, "do not ask for confirmation")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) > 0 {
				return usagef("system prune takes no arguments")
			}
			what := "dangling images"
			if *all {
				what = "all images without at least one container associated to them"
			}
			warning := "This will remove:\n  - all stopped (unmounted) containers\n  - " + what + "\n  - all layers no image, container or layer needs"
			if !*force {
				if ok, err := confirm(e, "system prune", warning); !ok {
					return err
				}
			}
			cs, err := e.images.Containers(ctx)
			if err != nil {
				return err
			}
			var removed []string
			for _, c := range cs {
				if c.Labels[container.LabelConfig] != "" {
					// What a killed run left mounted goes first; a running
					// container stays.
					rec, err := settle(ctx, e, c.Name)
					if err != nil {
						return err
					}
					if rec.state.Status == container.Running {
						continue
					}
					if _, ok, err := e.store.Mounted(ctx, c.Name); err != nil {
						return err
					} else if !ok {
						c.Daemon = nil
					}
				}
				if c.Daemon != nil {
					continue
				}
				if err := removeContainer(ctx, e, c.Name); err != nil {
					return err
				}
				removed = append(removed, c.Name)
			}
			if err := removeStale(ctx, e); err != nil {
				return err
			}
			if len(removed) > 0 {
				fmt.Fprintln(e.stdout, "Deleted Containers:")
				for _, n := range removed {
					fmt.Fprintln(e.stdout, n)
				}
				fmt.Fprintln(e.stdout)
			}
			rep, err := e.images.Prune(ctx, *all)
			printPrune(e, rep)
			return err
		}
	},
}

func printPrune(e *env, rep image.PruneReport) {
	if len(rep.Untagged)+len(rep.Deleted)+len(rep.Layers) > 0 {
		fmt.Fprintln(e.stdout, "Deleted Images:")
		for _, t := range rep.Untagged {
			fmt.Fprintln(e.stdout, "untagged:", t)
		}
		for _, d := range rep.Deleted {
			fmt.Fprintln(e.stdout, "deleted:", d)
		}
		for _, l := range rep.Layers {
			fmt.Fprintln(e.stdout, "deleted:", l)
		}
		fmt.Fprintln(e.stdout)
	}
	fmt.Fprintf(e.stdout, "Total reclaimed space: %s\n", humanSize(rep.Reclaimed))
}

// confirm asks as docker does, on a terminal; anything but y or yes is
// no. Without a terminal on stdin it asks nothing and fails: a script
// must say -f.
func confirm(e *env, cmd, warning string) (bool, error) {
	if !stdinIsTerminal() {
		return false, fmt.Errorf("standard input is not a terminal to ask for confirmation on: run 'strata %s -f' to remove without asking", cmd)
	}
	fmt.Fprintf(e.stdout, "WARNING! %s\nAre you sure you want to continue? [y/N] ", warning)
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && err != io.EOF {
		return false, err
	}
	a := strings.ToLower(strings.TrimSpace(line))
	return a == "y" || a == "yes", nil
}

// stdin is where confirm reads answers.
var stdin io.Reader = os.Stdin

// stdinIsTerminal reports whether stdin is a terminal to ask on.
var stdinIsTerminal = func() bool {
	f, ok := stdin.(*os.File)
	return ok && isTerminal(f)
}
