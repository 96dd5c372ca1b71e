package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/pflag"

	"github.com/strata-fs/strata/internal/version"
)

// manCmd is made in init: it lists commands(), which lists it.
var manCmd *command

func init() { manCmd = newManCmd() }

func newManCmd() *command {
	return &command{
		name:    "man",
		args:    "DIR",
		summary: "Write the manual pages, strata.1 and strata-COMMAND.1, into DIR",
		hidden:  true,
		noStore: true,
		flags: func(fs *pflag.FlagSet) func(context.Context, *env, []string) error {
			return func(ctx context.Context, e *env, args []string) error {
				if len(args) != 1 {
					return usagef("name the directory to write the pages into")
				}
				return writeManPages(args[0])
			}
		},
	}
}

// manName is the page of a command: "image prune" is strata-image-prune.
func manName(c *command) string {
	return "strata-" + strings.ReplaceAll(c.name, " ", "-")
}

// writeManPages writes strata.1 and a page for every command that is
// not hidden into dir, from the same text as --help.
func writeManPages(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var cmds []*command
	for _, c := range commands() {
		if !c.hidden {
			cmds = append(cmds, c)
		}
	}
	sort.Slice(cmds, func(i, j int) bool { return cmds[i].name < cmds[j].name })
	write := func(name string, page func(io.Writer)) error {
		f, err := os.Create(filepath.Join(dir, name+".1"))
		if err != nil {
			return err
		}
		page(f)
		return f.Close()
	}
	if err := write("strata", func(w io.Writer) { mainManPage(w, cmds) }); err != nil {
		return err
	}
	for _, c := range cmds {
		if err := write(manName(c), func(w io.Writer) { commandManPage(w, c) }); err != nil {
			return err
		}
	}
	return nil
}

// roff escapes text for a line of roff: backslashes, hyphens (as
// minus signs: they are options and names that are copied), and a
// leading dot or quote, which would make a request.
func roff(s string) string {
	s = strings.NewReplacer(`\`, `\e`, "-", `\-`).Replace(s)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

func manHeader(w io.Writer, title string) {
	fmt.Fprintf(w, ".TH %s 1 \"\" \"strata %s\" \"User Commands\"\n", roff(strings.ToUpper(title)), roff(version.String()))
	fmt.Fprint(w, ".nh\n") // no hyphenation: names and options are copied
}

func mainManPage(w io.Writer, cmds []*command) {
	manHeader(w, "strata")
	fmt.Fprint(w, `.SH NAME
strata \- images, layers and writable stacks on a union filesystem
.SH SYNOPSIS
.B strata
.I COMMAND
[\fIOPTIONS\fR] [\fIARGS\fR]
.br
.B strata
.I GROUP COMMAND
[\fIOPTIONS\fR] [\fIARGS\fR]
.SH DESCRIPTION
.B strata
keeps a store of layers and writable stacks on them: it imports and
exports OCI and docker images, creates stacks (containers) on them,
mounts them through a FUSE union filesystem, shows and commits their
changes as OCI layers, and runs containers with an OCI runtime.
Its commands are docker's.
.SH COMMANDS
`)
	for _, c := range cmds {
		if strings.Contains(c.name, " ") {
			continue // listed with its group
		}
		fmt.Fprintf(w, ".TP\n.BR %s (1)\n%s\n", roff(manName(c)), roff(c.summary))
	}
	fmt.Fprint(w, ".SH GROUP COMMANDS\nAs in docker, commands also go by two words:\n")
	for _, g := range sortedGroups() {
		for _, s := range sortedSubs(g) {
			target := groups[g][s]
			fmt.Fprintf(w, ".TP\n.B strata %s %s\n", roff(g), roff(s))
			if c := commandByName(target); c != nil {
				fmt.Fprintf(w, "%s; see\n.BR %s (1).\n", roff(c.summary), roff(manName(c)))
			}
		}
	}
	fmt.Fprint(w, `.SH OPTIONS
Every command takes:
`)
	manOptions(w, commandFlags(&command{flags: func(*pflag.FlagSet) func(context.Context, *env, []string) error { return nil }}))
	fmt.Fprint(w, `.TP
.B \-\-version
print the version (as
.BR "strata version" )
.SH ENVIRONMENT
.TP
.B STRATA_ROOT
the store's directory, when \fB\-\-root\fR is not given.
.SH EXIT STATUS
.TP
.B 0
success
.TP
.B 1
a failure at run time
.TP
.B 2
a mistake in the command line (usage)
.PP
.B strata run
exits as
.B docker run
does: 125 when strata itself fails (its usage errors included), 126
when the command cannot be invoked, 127 when the command is not found,
and otherwise with the status of the container's command.
.SH SEE ALSO
`)
	var refs []string
	for _, c := range cmds {
		refs = append(refs, ".BR "+roff(manName(c))+" (1)")
	}
	fmt.Fprintln(w, strings.Join(refs, " ,\n"))
}

func commandManPage(w io.Writer, c *command) {
	name := manName(c)
	manHeader(w, name)
	fmt.Fprintf(w, ".SH NAME\n%s \\- %s\n", roff(name), roff(c.summary))
	fmt.Fprintf(w, ".SH SYNOPSIS\n.B strata %s\n%s\n", roff(c.name), roff(c.args))
	var aliases []string
	for _, g := range sortedGroups() {
		for _, s := range sortedSubs(g) {
			if groups[g][s] == c.name && g+" "+s != c.name {
				aliases = append(aliases, "strata "+g+" "+s)
			}
		}
	}
	fmt.Fprintf(w, ".SH DESCRIPTION\n%s.\n", roff(c.summary))
	if len(aliases) > 0 {
		fmt.Fprintf(w, ".PP\nAlso run as %s.\n", roff(strings.Join(aliases, ", ")))
	}
	fmt.Fprint(w, ".SH OPTIONS\n")
	manOptions(w, commandFlags(c))
	fmt.Fprint(w, ".SH SEE ALSO\n.BR strata (1)\n")
}

// manOptions lists the flags of fs as --help does.
func manOptions(w io.Writer, fs *pflag.FlagSet) {
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		varname, usage := pflag.UnquoteUsage(f)
		fmt.Fprint(w, ".TP\n")
		if f.Shorthand != "" {
			fmt.Fprintf(w, `\fB\-%s\fR, `, roff(f.Shorthand))
		}
		fmt.Fprintf(w, `\fB\-\-%s\fR`, roff(f.Name))
		if varname != "" {
			fmt.Fprintf(w, ` \fI%s\fR`, roff(varname))
		}
		fmt.Fprintln(w)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "[]" && f.DefValue != "0" {
			usage += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintln(w, roff(usage))
	})
}
