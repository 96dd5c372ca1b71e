// Command strata manages a store of layers and writable stacks on them:
// create stacks on shared layers, mount them, see and commit their
// changes as OCI layers. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/strata-fs/strata/internal/version"
	"github.com/strata-fs/strata/snapshot"
)

// A command is one subcommand: `strata NAME ...`.
type command struct {
	name    string
	args    string // synopsis of the arguments
	summary string
	// flags adds the command's own flags; run runs it.
	flags func(fs *pflag.FlagSet) func(ctx context.Context, e *env, args []string) error
	// changes marks commands that change the store, before which the
	// store's repair step runs.
	changes bool
	hidden  bool
}

// commands lists the subcommands; each lives in its own file.
func commands() []*command {
	return []*command{
		createCmd, mountCmd, unmountCmd, diffCmd, commitCmd, lsCmd, rmCmd,
		inspectCmd, layerCmd, checkCmd, serveCmd,
	}
}

// env is what every command gets.
type env struct {
	root   string
	debug  bool
	stdout io.Writer
	stderr io.Writer
	log    *log.Logger // --debug messages; discarded otherwise
	store  *snapshot.Store
}

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		if len(args) > 1 {
			return run([]string{args[1], "--help"}, stdout, stderr)
		}
		mainUsage(stdout)
		return 0
	}
	if args[0] == "--version" || args[0] == "version" {
		fmt.Fprintln(stdout, "strata version", version.String())
		return 0
	}
	var cmd *command
	for _, c := range commands() {
		if c.name == args[0] {
			cmd = c
		}
	}
	if cmd == nil {
		fmt.Fprintf(stderr, "strata: unknown command %q (see 'strata --help')\n", args[0])
		return 2
	}
	fs := pflag.NewFlagSet("strata "+cmd.name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	e := &env{stdout: stdout, stderr: stderr}
	runCmd := cmd.flags(fs)
	defRoot := snapshot.DefaultRoot
	if r := os.Getenv("STRATA_ROOT"); r != "" {
		defRoot = r
	}
	fs.StringVar(&e.root, "root", defRoot, "the store's `DIR` (or $STRATA_ROOT)")
	fs.BoolVar(&e.debug, "debug", false, "log what strata does to stderr")
	help := fs.BoolP("help", "h", false, "show this help")
	if err := fs.Parse(args[1:]); err != nil {
		fmt.Fprintf(stderr, "strata %s: %v (see 'strata %s --help')\n", cmd.name, err, cmd.name)
		return 2
	}
	if *help {
		commandUsage(stdout, cmd, fs)
		return 0
	}
	e.log = log.New(io.Discard, "", 0)
	if e.debug {
		e.log = log.New(stderr, "strata: debug: ", log.Ltime|log.Lmicroseconds)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := func() error {
		if cmd.name != serveCmd.name {
			st, err := snapshot.Open(e.root, snapshot.Options{})
			if err != nil {
				return fmt.Errorf("%w (is --root right, and are you root?)", err)
			}
			e.store = st
			if cmd.changes {
				rep, err := st.Cleanup(ctx)
				for _, p := range rep.Problems {
					e.log.Printf("repaired: %s", p)
				}
				if err != nil {
					return err
				}
			}
		}
		return runCmd(ctx, e, fs.Args())
	}()
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "strata %s: %v\n", cmd.name, err)
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "usage: strata %s %s (see 'strata %s --help')\n", cmd.name, cmd.args, cmd.name)
		return 2
	}
	return 1
}

func mainUsage(w io.Writer) {
	fmt.Fprint(w, `strata: union-filesystem layers and writable stacks

Usage: strata COMMAND [OPTIONS] [ARGS]

Commands:
`)
	cmds := commands()
	sort.Slice(cmds, func(i, j int) bool { return cmds[i].name < cmds[j].name })
	for _, c := range cmds {
		if !c.hidden {
			fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
		}
	}
	fmt.Fprint(w, `
Every command takes --root DIR (default /var/lib/strata, or $STRATA_ROOT),
--debug and --help. Run 'strata COMMAND --help' for a command's options.
`)
}

func commandUsage(w io.Writer, c *command, fs *pflag.FlagSet) {
	fmt.Fprintf(w, "Usage: strata %s %s\n\n%s\n\nOptions:\n%s", c.name, c.args, c.summary, fs.FlagUsages())
}

// notFoundHint adds, to a missing snapshot error, where to look.
func notFoundHint(err error) error {
	if errors.Is(err, snapshot.ErrNotFound) {
		return fmt.Errorf("%w (see 'strata ls')", err)
	}
	return err
}

// oneOf returns a usage error unless v is one of choices.
func oneOf(flag, v string, choices ...string) error {
	for _, c := range choices {
		if v == c {
			return nil
		}
	}
	return usagef("--%s %q: want %s", flag, v, strings.Join(choices, ", "))
}
