package main

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"

	"github.com/strata-fs/strata/container"
)

var logsCmd = &command{
	name:    "logs",
	args:    "[-f] NAME",
	summary: "Print what a detached container wrote to stdout and stderr",
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		follow := fs.BoolP("follow", "f", false, "keep printing until the container stops")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) != 1 {
				return usagef("name one container")
			}
			rec, err := loadContainer(ctx, e, args[0])
			if err != nil {
				return err
			}
			f, err := os.Open(filepath.Join(bundleDir(e, rec.info.Name), logFileName))
			if errors.Is(err, os.ErrNotExist) {
				return nil // never run detached: nothing was logged
			}
			if err != nil {
				return err
			}
			defer f.Close()
			for {
				if _, err := io.Copy(e.stdout, f); err != nil {
					return err
				}
				if !*follow {
					return nil
				}
				rec, err := loadContainer(ctx, e, rec.info.Name)
				if err != nil {
					return err
				}
				if rec.state.Observe(container.ProcessAlive).Status != container.Running {
					_, err := io.Copy(e.stdout, f) // what came before the end
					return err
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(100 * time.Millisecond):
				}
			}
		}
	},
}
