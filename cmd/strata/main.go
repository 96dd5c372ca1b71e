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
		pullCmd, pushCmd, loginCmd, logoutCmd, completionCmd, manCmd,
		buildCmd, builderPruneCmd,
	}
}

// env is what every command gets.
type env struct {
	root  string
	debug bool
	// runtime is --runtime: the OCI runtime of containers that did not
	// record one; runtimeSet tells it was given, so that a new
	// container records it.
	runtime    string
	runtimeSet bool
	stdout     io.Writer
	stderr     io.Writer
	log        *log.Logger // --debug messages; discarded otherwise
	store      *snapshot.Store
	images     *image.Store
}

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	g, rest, err := parseGlobals(args)
	if err != nil {
		fmt.Fprintf(stderr, "strata: %v (see 'strata --help')\n", err)
		return 2
	}
	if g.version {
		rest = []string{"version"}
	}
	if g.help {
		rest = append([]string{"help"}, rest...) // `strata --help images` is `strata images --help`
	}
	return runCommand(g, rest, stdout, stderr)
}

// globals are the options of every command, given before the command
// (`strata --root DIR images`, as podman and docker take them) or after
// it (`strata images --root DIR`).
type globals struct {
	root, logLevel, runtime string
	debug, help, version    bool
	runtimeSet              bool // --runtime was given
}

// Log levels of --log-level, as podman's.
var logLevels = []string{"debug", "info", "warn", "error"}

// parseGlobals parses the global options before the command name and
// returns them with the command line that follows.
func parseGlobals(args []string) (globals, []string, error) {
	g := globals{root: snapshot.DefaultRoot}
	if r := os.Getenv("STRATA_ROOT"); r != "" {
		g.root = r
	}
	fs := pflag.NewFlagSet("strata", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SetInterspersed(false) // the command's own flags are its own
	addGlobalFlags(fs, &g, true)
	fs.BoolVarP(&g.help, "help", "h", false, "")
	fs.BoolVar(&g.version, "version", false, "")
	if err := fs.Parse(args); err != nil {
		return g, nil, err
	}
	if err := checkGlobals(fs, &g, true); err != nil {
		return g, nil, err
	}
	return g, fs.Args(), nil
}

// addGlobalFlags defines the global options in fs, with g's values as
// defaults. A command that has a flag of the same name (run's
// --runtime) keeps its own.
func addGlobalFlags(fs *pflag.FlagSet, g *globals, runtime bool) {
	fs.StringVar(&g.root, "root", g.root, "the store's `DIR` (or $STRATA_ROOT)")
	fs.BoolVar(&g.debug, "debug", g.debug, "log what strata does to stderr (--log-level=debug)")
	fs.StringVar(&g.logLevel, "log-level", g.logLevel, "`LEVEL` of the messages logged to stderr: "+strings.Join(logLevels, ", ")+" (default warn)")
	if runtime {
		fs.StringVar(&g.runtime, "runtime", g.runtime, "the OCI runtime `NAME` on $PATH, or PATH, for run, start and exec (default runc)")
	}
}

// checkGlobals validates the global options fs parsed into g;
// globalRuntime tells that fs's --runtime is the global one.
func checkGlobals(fs *pflag.FlagSet, g *globals, globalRuntime bool) error {
	if g.logLevel != "" {
		if err := oneOf("log-level", g.logLevel, logLevels...); err != nil {
			return err
		}
	}
	if globalRuntime && fs.Changed("runtime") {
		if g.runtime == "" {
			return usagef("--runtime: name the OCI runtime (a program on $PATH, or a path)")
		}
		g.runtimeSet = true
	}
	return nil
}

// runCommand runs the command line args (the command name first) with
// the global options g given before it.
func runCommand(g globals, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		if len(args) > 1 {
			return runCommand(g, []string{args[1], "--help"}, stdout, stderr)
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
		return runCommand(g, rewritten, stdout, stderr)
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
	globalRuntime := fs.Lookup("runtime") == nil
	addGlobalFlags(fs, &g, globalRuntime)
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
	if err := checkGlobals(fs, &g, globalRuntime); err != nil {
		fmt.Fprintf(stderr, "strata %s: %v (see 'strata %s --help')\n", cmd.name, err, cmd.name)
		return misused
	}
	e.root, e.runtime, e.runtimeSet = g.root, g.runtime, g.runtimeSet
	e.debug = g.debug || g.logLevel == "debug"
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
		"import": "import", "export": "export", "build": "build",
		"pull": "pull", "push": "push",
	},
	"builder": {"prune": "builder prune", "build": "build"},
	"system":  {"prune": "system prune", "df": "system df"},
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
Global options, before or after the command:
  --root DIR          the store (default /var/lib/strata, or $STRATA_ROOT)
  --log-level LEVEL   debug, info, warn or error (default warn)
  --debug             the same as --log-level=debug
  --runtime RUNTIME   the OCI runtime for run, start and exec: a program on
                      $PATH or a path (default runc)
  -h, --help          show this help; 'strata COMMAND --help' shows a
                      command's options
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
