package main

import (
	"context"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

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
				fmt.Fprintf(e.stdout, "%c %s\n", c.Kind, escapePath(c.Path))
			}
			return nil
		}
	},
}

// escapePath makes a file name of a container safe to print one to a
// line: a backslash becomes \\, a control character a Go escape (\n,
// \t, \r, \xNN, or \uNNNN for the C1 controls) and a byte that is not
// UTF-8 \xNN. Everything else, spaces included, is printed as it is, so
// a name without those characters reads as itself and any name can be
// told back from its line.
func escapePath(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case unicode.IsControl(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}
