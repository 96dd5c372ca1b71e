package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/spf13/pflag"

	"github.com/strata-fs/strata/image"
	"github.com/strata-fs/strata/image/reference"
	"github.com/strata-fs/strata/snapshot"
)

var createCmd = &command{
	name:    "create",
	args:    runUsageCreateFlags + " [IMAGE [CMD [ARG...]]|LAYER]",
	summary: "Create a writable stack (a container) on an image or a committed layer, or on nothing; print its name",
	changes: true,
	flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
		f := addRunFlags(fs)
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) >= 1 {
				// An image: a container, with its run config.
				name, err := createFromImage(ctx, e, f, args[0], args[1:])
				if err == nil {
					fmt.Fprintln(e.stdout, name)
					return nil
				} else if !errors.Is(err, image.ErrNotFound) && !isRefSyntaxError(err) {
					return err
				}
			}
			if changed := configChanged(fs); len(changed) > 0 {
				return usagef("%s: only a container on an image runs", strings.Join(changed, ", "))
			}
			if len(args) > 1 {
				return usagef("too many arguments: a command runs in a container on an image, and there is no image %q", image.DisplayRef(args[0]))
			}
			name := *f.name
			if name == "" {
				name = randomStackName()
			} else if err := checkStackName(name); err != nil {
				return err
			}
			parent := ""
			if len(args) == 1 {
				info, err := e.store.Resolve(ctx, args[0])
				if err != nil {
					if errors.Is(err, snapshot.ErrNotFound) {
						if d := image.DisplayRef(args[0]); d != args[0] {
							return fmt.Errorf("no image %q nor layer %q (see 'strata images' and 'strata ls')", d, args[0])
						}
						return fmt.Errorf("no image or layer %q (see 'strata images' and 'strata ls')", args[0])
					}
					return fmt.Errorf("parent: %w", err)
				}
				if info.Kind != snapshot.KindCommitted {
					return fmt.Errorf("parent %q is a %s stack, not a committed layer: commit it first ('strata commit %s') and create on the layer it prints", args[0], info.Kind, args[0])
				}
				parent = info.Name
			}
			if _, err := e.store.Prepare(ctx, name, parent, nil); err != nil {
				if errors.Is(err, snapshot.ErrExists) {
					return nameInUse(name)
				}
				return notFoundHint(err)
			}
			fmt.Fprintln(e.stdout, name)
			return nil
		}
	},
}

// nameInUse is the error of a create or run --name that is taken.
func nameInUse(name string) error {
	return fmt.Errorf("a container named %q already exists: remove it ('strata rm %s') or choose another --name", name, name)
}

// Stack names are docker's container names.
var stackNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

func checkStackName(n string) error {
	if !stackNameRE.MatchString(n) || len(n) > 128 {
		return usagef("invalid name %q: use letters, digits, '_', '.' and '-', starting with a letter or digit", n)
	}
	return nil
}

func randomStackName() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "stack-" + hex.EncodeToString(b[:])
}

// isRefSyntaxError reports an error of reference parsing: the argument
// may still name a layer.
func isRefSyntaxError(err error) bool {
	return errors.Is(err, reference.ErrInvalid)
}
