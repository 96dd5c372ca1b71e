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

	"github.com/strata-fs/strata/image"
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
	// noStore marks commands that do not open the store (completion, man).
	noStore bool
	// failStatus, when not 0, is the exit status of a failure of strata
	// itself, usage errors included (docker run's 125).
	failStatus int
}

// commands lists the subcommands; each lives in its own file.
func commands() []*command {
	return []*command{
		createCmd, mountCmd, unmountCmd, diffCmd, commitCmd, lsCmd, rmCmd,
		inspectCmd, layerCmd, checkCmd, serveCmd,
		importCmd, exportCmd, imagesCmd, historyCmd, tagCmd, rmiCmd,
		imagePruneCmd, systemPruneCmd, systemDfCmd, psCmd,
		runCmd, startCmd, stopCmd, execCmd, logsCmd, shimCmd,
		completionCmd, manCmd,
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
	images *image.Store
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
	if args[0] == "help-group" {
		return groupUsage(args[1:], stdout, stderr)
	}
	if args[0] == "--version" || args[0] == "version" {
		fmt.Fprintln(stdout, "strata version", version.String())
		return 0
	}
	if rewritten, ok := groupCommand(args); ok {
		return run(rewritten, stdout, stderr)
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
	failed, misused := 1, 2
	if cmd.failStatus != 0 {
		failed, misused = cmd.failStatus, cmd.failStatus
	}
	if err := fs.Parse(args[1:]); err != nil {
		fmt.Fprintf(stderr, "strata %s: %v (see 'strata %s --help')\n", cmd.name, err, cmd.name)
		return misused
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
		if cmd.name != serveCmd.name && !cmd.noStore {
			st, err := snapshot.Open(e.root, snapshot.Options{})
			if err != nil {
				return fmt.Errorf("%w (is --root right, and are you root?)", err)
			}
			e.store = st
			e.images = image.New(st)
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
	var st exitStatus
	if errors.As(err, &st) && st.err == nil {
		return st.code // the container's process's own status
	}
	fmt.Fprintf(stderr, "strata %s: %v\n", cmd.name, err)
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "usage: strata %s %s (see 'strata %s --help')\n", cmd.name, cmd.args, cmd.name)
		return misused
	}
	if errors.As(err, &st) {
		return st.code
	}
	return failed
}

// groups are docker's two-word commands: `strata image prune` runs the
// command "image prune", `strata image ls` the command "images".
var groups = map[string]map[string]string{
	"image": {
		"ls": "images", "list": "images", "rm": "rmi", "prune": "image prune",
		"tag": "tag", "history": "history", "inspect": "inspect",
		"import": "import", "export": "export",
	},
	"system": {"prune": "system prune", "df": "system df"},
	"container": {
		"run": "run", "create": "create", "start": "start", "stop": "stop",
		"rm": "rm", "ls": "ps", "list": "ps", "ps": "ps", "exec": "exec",
		"logs": "logs", "diff": "diff", "commit": "commit", "inspect": "inspect",
	},
}

// groupCommand rewrites `strata GROUP SUB ...` to the command it names.
func groupCommand(args []string) ([]string, bool) {
	subs, ok := groups[args[0]]
	if !ok {
		return nil, false
	}
	if len(args) < 2 || args[1] == "-h" || args[1] == "--help" {
		return []string{"help-group", args[0]}, true
	}
	name, ok := subs[args[1]]
	if !ok {
		return []string{"help-group", args[0], args[1]}, true
	}
	return append([]string{name}, args[2:]...), true
}

func mainUsage(w io.Writer) {
	fmt.Fprint(w, `strata: images, layers and writable stacks on a union filesystem

Usage: strata COMMAND [OPTIONS] [ARGS]

Commands:
`)
	cmds := commands()
	sort.Slice(cmds, func(i, j int) bool { return cmds[i].name < cmds[j].name })
	for _, c := range cmds {
		if !c.hidden {
			fmt.Fprintf(w, "  %-13s %s\n", c.name, c.summary)
		}
	}
	fmt.Fprint(w, `
Every command takes --root DIR (default /var/lib/strata, or $STRATA_ROOT),
--debug and --help. Run 'strata COMMAND --help' for a command's options.
`)
}

// groupUsage lists a group's subcommands; with an unknown one it fails.
func groupUsage(args []string, stdout, stderr io.Writer) int {
	var subs []string
	for s := range groups[args[0]] {
		subs = append(subs, s)
	}
	sort.Strings(subs)
	w, rc := stdout, 0
	if len(args) > 1 {
		fmt.Fprintf(stderr, "strata %s: unknown command %q\n", args[0], args[1])
		w, rc = stderr, 2
	}
	fmt.Fprintf(w, "Usage: strata %s COMMAND\n\nCommands: %s\n", args[0], strings.Join(subs, ", "))
	return rc
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
