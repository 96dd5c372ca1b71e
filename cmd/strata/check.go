package main

import (
	"context"
	"fmt"

	"github.com/spf13/pflag"
)

var checkCmd = &command{
	name:    "check",
	args:    "[--repair]",
	summary: "Check the store for what interrupted commands left, and repair it",
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		repair := fs.Bool("repair", false, "remove leftovers of interrupted commands and records of dead mount daemons")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) > 0 {
				return usagef("check takes no arguments")
			}
			run := e.store.Check
			if *repair {
				run = e.store.Cleanup
			}
			rep, err := run(ctx)
			for _, p := range rep.Problems {
				if rep.Repaired {
					fmt.Fprintf(e.stdout, "repaired: %s\n", p)
				} else {
					fmt.Fprintf(e.stdout, "found: %s\n", p)
				}
			}
			for _, p := range rep.Unrepairable {
				fmt.Fprintf(e.stdout, "damaged: %s\n", p)
			}
			if err != nil {
				return err
			}
			if len(rep.Unrepairable) > 0 {
				return fmt.Errorf("%d snapshots are damaged beyond repair", len(rep.Unrepairable))
			}
			if len(rep.Problems) == 0 {
				fmt.Fprintln(e.stdout, "the store is consistent")
			} else if !rep.Repaired {
				return fmt.Errorf("%d problems found: run 'strata check --repair'", len(rep.Problems))
			}
			return nil
		}
	},
}
