// Package dockerfile is the front end of `strata build`: it reads a
// Dockerfile into stages of commands, as docker does, and leaves running
// them to the executor.
//
// The grammar is docker's own: lines, continuations, comments, the
// `# escape=` and `# syntax=` directives, heredocs and JSON versus shell
// form come from buildkit's reference parser
// (github.com/moby/buildkit/frontend/dockerfile/parser), and variable
// expansion from its shell lexer (.../shell). This package turns the
// parser's tree into plain values and checks each instruction's
// arguments and flags the way buildkit's instructions package does,
// without importing it.
//
// Variables are not expanded here, except in what must be known before
// any step runs: the meta ARGs (those before the first FROM) and FROM's
// image and --platform. Everything else depends on the build state (ENV
// set by earlier steps, ARG scoping), so commands keep their arguments
// as written and the executor calls Expand or ExpandWords with the
// environment in effect; Command.Expands says which instructions docker
// substitutes in.
package dockerfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// DefaultEscape is the escape character when no `# escape=` directive
// sets one.
const DefaultEscape = '\\'

// File is a parsed Dockerfile.
type File struct {
	MetaArgs []Arg    // ARGs before the first FROM, defaults resolved against the build args
	Stages   []*Stage // in order; the last is the default target
	Warnings []string // what docker warns about: unused --build-arg, deprecated MAINTAINER, ...
	Escape   rune     // from `# escape=`; DefaultEscape if absent
	Syntax   string   // from `# syntax=`, recorded only
}

// Arg is one ARG.
type Arg struct {
	Name  string
	Value *string // nil: no default and not given with --build-arg
}

// Stage is one FROM and the commands up to the next.
type Stage struct {
	Name     string // the AS name, lowercased; "" if none
	Index    int
	BaseName string // FROM's image after substitution of the meta ARGs ("scratch" allowed)
	Platform string // FROM --platform, substituted
	Line     int    // FROM's line
	Original string // the FROM line as written
	Commands []Command
}

// Command is one instruction. Its arguments are as written: variables
// are not expanded (see Expand).
type Command struct {
	Name     string            // lowercased: "run", "copy", "env", ...
	Original string            // the instruction as written, continuation lines joined as docker does; heredoc bodies are in Heredocs
	Line     int               // the line it starts on
	Flags    map[string]string // --name=value as given (last wins); a bool flag given bare is "true"
	AllFlags [][2]string       // every flag in order, for the repeatable ones (RUN --mount, COPY --exclude)
	// Args are the arguments. RUN, CMD, ENTRYPOINT and SHELL: in
	// shell form one element (the command line), in JSON form the
	// elements. ADD, COPY, VOLUME, EXPOSE: the words, sources then
	// destination (wildcards and heredoc markers like "<<EOF" kept).
	// ENV, LABEL, ARG: the raw words; use KeyValues. HEALTHCHECK: its
	// type then command; use Health. WORKDIR, USER, STOPSIGNAL,
	// MAINTAINER: one element.
	Args     []string
	JSON     bool      // exec (JSON) form
	Heredocs []Heredoc // RUN <<EOF ... and COPY <<EOF file
	// KeyValues of ENV, LABEL, ARG and MAINTAINER (["maintainer", who]),
	// keys and values as written (quotes kept: Expand removes them, as
	// docker's evaluation does). KeyValueSet[i] is false for an ARG
	// without a default.
	KeyValues   [][2]string
	KeyValueSet []bool
	Health      *HealthConfig // HEALTHCHECK
	Inner       *Command      // ONBUILD: the trigger, parsed
	Trigger     string        // ONBUILD: the trigger as stored in an image's config (OnBuild)
}

// Heredoc is the body of a `<<NAME` in RUN, ADD or COPY.
type Heredoc struct {
	Name    string
	Content string // the body; leading tabs already removed when Chomp
	Expand  bool   // the name was not quoted: variables in Content are expanded
	Chomp   bool   // <<-NAME
}

// HealthConfig is HEALTHCHECK, in the image config's terms.
type HealthConfig struct {
	// Test is ["NONE"], ["CMD", args...] (JSON form) or
	// ["CMD-SHELL", command] (shell form).
	Test          []string
	Interval      time.Duration
	Timeout       time.Duration
	StartPeriod   time.Duration
	StartInterval time.Duration
	Retries       int
}

// Error is a Dockerfile error at a line; Line 0 when it has none.
type Error struct {
	Line int
	Msg  string
}

func (e *Error) Error() string {
	if e.Line <= 0 {
		return e.Msg
	}
	return fmt.Sprintf("Dockerfile:%d: %s", e.Line, e.Msg)
}

func errorf(line int, format string, args ...any) error {
	return &Error{Line: line, Msg: fmt.Sprintf(format, args...)}
}

// Parse reads a Dockerfile. buildArgs are the --build-arg values.
func Parse(r io.Reader, buildArgs map[string]string) (*File, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read Dockerfile: %w", err)
	}
	res, err := parse(data)
	if err != nil {
		return nil, err
	}
	f := &File{Escape: res.EscapeToken}
	if syntax, _, _, ok := parser.DetectSyntax(data); ok {
		f.Syntax = syntax
	}
	for _, w := range res.Warnings {
		f.Warnings = append(f.Warnings, w.Short)
	}

	// The meta ARGs and the platform ones docker predefines are the
	// scope of FROM.
	scope := platformArgs(buildArgs)
	var stage *Stage
	declared := map[string]bool{}
	for _, n := range res.AST.Children {
		c, err := convert(n, res.EscapeToken)
		if err != nil {
			return nil, err
		}
		switch {
		case c.Name == "from":
			if stage, err = f.newStage(c, scope); err != nil {
				return nil, err
			}
			f.Stages = append(f.Stages, stage)
		case stage == nil && c.Name == "arg":
			for i, kv := range c.KeyValues {
				declared[kv[0]] = true
				a := Arg{Name: kv[0]}
				if v, ok := buildArgs[kv[0]]; ok {
					a.Value = &v
				} else if c.KeyValueSet[i] {
					v, err := Expand(kv[1], scope, f.Escape)
					if err != nil {
						return nil, errorf(c.Line, "ARG %s: %v", kv[0], err)
					}
					a.Value = &v
				}
				if a.Value != nil {
					scope = append(scope, a.Name+"="+*a.Value)
				}
				f.MetaArgs = append(f.MetaArgs, a)
			}
		case stage == nil:
			return nil, errorf(c.Line, "no FROM: a Dockerfile must start with FROM (after ARG and comments), not %s", strings.ToUpper(c.Name))
		default:
			if c.Name == "arg" {
				for _, kv := range c.KeyValues {
					declared[kv[0]] = true
				}
			}
			if c.Name == "maintainer" {
				f.Warnings = append(f.Warnings, fmt.Sprintf("Dockerfile:%d: MAINTAINER is deprecated: use LABEL maintainer=...", c.Line))
			}
			stage.Commands = append(stage.Commands, c)
		}
	}
	if len(f.Stages) == 0 {
		line := 1
		if n := res.AST.Children; len(n) > 0 {
			line = n[len(n)-1].EndLine
		}
		return nil, errorf(line, "no FROM: a Dockerfile must start with FROM (after ARG and comments)")
	}
	var unused []string
	for k := range buildArgs {
		if !declared[k] && !predefinedArgs[k] && !platformArgNames[k] {
			unused = append(unused, k)
		}
	}
	sort.Strings(unused)
	for _, k := range unused {
		f.Warnings = append(f.Warnings, fmt.Sprintf("build-arg %s is not consumed by any ARG in the Dockerfile: it is ignored", k))
	}
	return f, nil
}

// predefinedArgs are the ARGs docker accepts from --build-arg without a
// declaration (the proxy settings).
var predefinedArgs = map[string]bool{
	"HTTP_PROXY": true, "http_proxy": true, "HTTPS_PROXY": true, "https_proxy": true,
	"FTP_PROXY": true, "ftp_proxy": true, "NO_PROXY": true, "no_proxy": true,
	"ALL_PROXY": true, "all_proxy": true,
}

var platformArgNames = map[string]bool{
	"BUILDPLATFORM": true, "BUILDOS": true, "BUILDARCH": true, "BUILDVARIANT": true,
	"TARGETPLATFORM": true, "TARGETOS": true, "TARGETARCH": true, "TARGETVARIANT": true,
}

// platformArgs are the ARGs buildkit defines in the scope of FROM:
// the build's platform, which is also the target (strata does not
// cross-build), unless a build arg sets them.
func platformArgs(buildArgs map[string]string) []string {
	p := runtime.GOOS + "/" + runtime.GOARCH
	env := []string{
		"BUILDPLATFORM=" + p, "BUILDOS=" + runtime.GOOS, "BUILDARCH=" + runtime.GOARCH, "BUILDVARIANT=",
		"TARGETPLATFORM=" + p, "TARGETOS=" + runtime.GOOS, "TARGETARCH=" + runtime.GOARCH, "TARGETVARIANT=",
	}
	for i, e := range env {
		k, _, _ := strings.Cut(e, "=")
		if v, ok := buildArgs[k]; ok {
			env[i] = k + "=" + v
		}
	}
	return env
}

func parse(data []byte) (*parser.Result, error) {
	res, err := parser.Parse(bytes.NewReader(data))
	if err != nil {
		return nil, locate(err)
	}
	return res, nil
}

// locate turns a parser error into an Error naming its first line.
func locate(err error) error {
	var le *parser.LocationError
	if !errors.As(err, &le) {
		return err
	}
	line := 0
	if len(le.Locations) > 0 && len(le.Locations[0]) > 0 {
		line = le.Locations[0][0].Start.Line
	}
	msg := le.Unwrap().Error()
	// The parser numbers lines from 0 in its errors about directives
	// only (it reports them before counting the line).
	if strings.HasPrefix(msg, "invalid escape token") || strings.HasPrefix(msg, "only one ") {
		line++
	}
	if msg == "file with no instructions" {
		return errorf(1, "no FROM: a Dockerfile must start with FROM (after ARG and comments); this one has no instructions")
	}
	return errorf(line, "%s", msg)
}

func (f *File) newStage(c Command, scope []string) (*Stage, error) {
	s := &Stage{Index: len(f.Stages), Line: c.Line, Original: c.Original}
	switch {
	case len(c.Args) == 3 && strings.EqualFold(c.Args[1], "as"):
		s.Name = strings.ToLower(c.Args[2])
		if !validStageName(s.Name) {
			return nil, errorf(c.Line, "FROM: invalid stage name %q: a name starts with a letter and has only letters, digits, '-', '_' and '.'", c.Args[2])
		}
		for _, o := range f.Stages {
			if o.Name == s.Name {
				return nil, errorf(c.Line, "FROM: duplicate stage name %q (also on line %d)", s.Name, o.Line)
			}
		}
	case len(c.Args) != 1:
		return nil, errorf(c.Line, "FROM requires either one or three arguments: FROM image [AS name]")
	}
	var err error
	if s.BaseName, err = Expand(c.Args[0], scope, f.Escape); err != nil {
		return nil, errorf(c.Line, "FROM %s: %v", c.Args[0], err)
	}
	if s.BaseName == "" {
		return nil, errorf(c.Line, "FROM %s: the image name is empty after substitution (is the ARG set?)", c.Args[0])
	}
	if p, ok := c.Flags["platform"]; ok {
		if s.Platform, err = Expand(p, scope, f.Escape); err != nil {
			return nil, errorf(c.Line, "FROM --platform=%s: %v", p, err)
		}
	}
	return s, nil
}

func validStageName(s string) bool {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.", r)) {
			return false
		}
	}
	return true
}

// Stage finds a stage by its name (any case) or its index, as --target
// and COPY --from name them.
func (f *File) Stage(nameOrIndex string) (*Stage, error) {
	name := strings.ToLower(nameOrIndex)
	for _, s := range f.Stages {
		if s.Name != "" && s.Name == name {
			return s, nil
		}
	}
	if i, err := strconv.Atoi(nameOrIndex); err == nil {
		if i >= 0 && i < len(f.Stages) {
			return f.Stages[i], nil
		}
		return nil, fmt.Errorf("stage %d not found: the Dockerfile has stages 0 to %d", i, len(f.Stages)-1)
	}
	var names []string
	for _, s := range f.Stages {
		if s.Name != "" {
			names = append(names, s.Name)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("stage %q not found: the Dockerfile names no stage (use FROM image AS name, or an index)", nameOrIndex)
	}
	return nil, fmt.Errorf("stage %q not found: the Dockerfile's stages are %s (or an index)", nameOrIndex, strings.Join(names, ", "))
}

// stageRef is the stage a FROM or --from names, or nil for an image.
func (f *File) stageRef(ref string, before int, byIndex bool) *Stage {
	name := strings.ToLower(ref)
	for _, s := range f.Stages[:before] {
		if s.Name != "" && s.Name == name {
			return s
		}
	}
	if byIndex {
		if i, err := strconv.Atoi(ref); err == nil && i >= 0 && i < len(f.Stages) {
			return f.Stages[i]
		}
		for _, s := range f.Stages[before:] {
			if s.Name != "" && s.Name == name {
				return s
			}
		}
	}
	return nil
}

// Deps are the stages s builds on: its FROM when that names an earlier
// stage, and the stages of COPY --from and RUN --mount=from=. A --from
// holding variables is expanded with the meta ARGs only; one naming no
// stage is an image.
func (f *File) Deps(s *Stage) []*Stage {
	var deps []*Stage
	add := func(d *Stage) {
		if d != nil && !slices.Contains(deps, d) {
			deps = append(deps, d)
		}
	}
	add(f.stageRef(s.BaseName, s.Index, false))
	var env []string
	for _, a := range f.MetaArgs {
		if a.Value != nil {
			env = append(env, a.Name+"="+*a.Value)
		}
	}
	ref := func(r string) {
		if x, err := Expand(r, env, f.Escape); err == nil {
			r = x
		}
		add(f.stageRef(r, s.Index, true))
	}
	for _, c := range s.Commands {
		if from, ok := c.Flags["from"]; ok && c.Name == "copy" {
			ref(from)
		}
		for _, fl := range c.AllFlags {
			if c.Name == "run" && fl[0] == "mount" {
				for _, field := range strings.Split(fl[1], ",") {
					if k, v, ok := strings.Cut(field, "="); ok && strings.EqualFold(k, "from") {
						ref(v)
					}
				}
			}
		}
	}
	return deps
}

// Needed lists the stages building target needs, target last, in
// Dockerfile order: stages it does not depend on are skipped, as
// buildkit does. target "" is the last stage.
func (f *File) Needed(target string) ([]*Stage, error) {
	t := f.Stages[len(f.Stages)-1]
	if target != "" {
		var err error
		if t, err = f.Stage(target); err != nil {
			return nil, fmt.Errorf("--target: %w", err)
		}
	}
	const (
		visiting = 1
		done     = 2
	)
	state := map[*Stage]int{}
	var visit func(s *Stage, path []string) error
	visit = func(s *Stage, path []string) error {
		path = append(path, stageLabel(s))
		switch state[s] {
		case visiting:
			return errorf(s.Line, "circular dependency between stages: %s", strings.Join(path, " -> "))
		case done:
			return nil
		}
		state[s] = visiting
		for _, d := range f.Deps(s) {
			if err := visit(d, path); err != nil {
				return err
			}
		}
		state[s] = done
		return nil
	}
	if err := visit(t, nil); err != nil {
		return nil, err
	}
	var out []*Stage
	for _, s := range f.Stages {
		if state[s] == done {
			out = append(out, s)
		}
	}
	return out, nil
}

func stageLabel(s *Stage) string {
	if s.Name != "" {
		return s.Name
	}
	return strconv.Itoa(s.Index)
}

// ParseChange parses one instruction, as `docker commit --change` takes
// it: no FROM needed. Its errors name no line.
func ParseChange(change string) (Command, error) {
	cs, err := parseLoose(change)
	if err != nil {
		return Command{}, err
	}
	if len(cs) != 1 {
		return Command{}, fmt.Errorf("want one instruction, got %d", len(cs))
	}
	return cs[0], nil
}

// ParseTriggers parses an image's ONBUILD triggers (its config's
// OnBuild), to run them at the start of a stage built on it.
func ParseTriggers(triggers []string) ([]Command, error) {
	var out []Command
	for _, t := range triggers {
		cs, err := parseLoose(t)
		if err != nil {
			return nil, fmt.Errorf("ONBUILD trigger %q: %w", t, err)
		}
		for _, c := range cs {
			if err := checkTrigger(c.Name); err != nil {
				return nil, fmt.Errorf("ONBUILD trigger %q: %w", t, err)
			}
		}
		out = append(out, cs...)
	}
	return out, nil
}

// parseLoose parses instructions outside a Dockerfile: no FROM needed,
// errors without a line.
func parseLoose(text string) ([]Command, error) {
	res, err := parse([]byte(text))
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.Line = 0
			if strings.HasPrefix(e.Msg, "no FROM") {
				e.Msg = "no instruction"
			}
		}
		return nil, err
	}
	var out []Command
	for _, n := range res.AST.Children {
		c, err := convert(n, res.EscapeToken)
		if err != nil {
			var e *Error
			if errors.As(err, &e) {
				e.Line = 0
			}
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func checkTrigger(name string) error {
	switch name {
	case "onbuild":
		return errors.New("ONBUILD ONBUILD is not allowed: a trigger cannot add triggers")
	case "from", "maintainer":
		return fmt.Errorf("%s is not allowed as an ONBUILD trigger", strings.ToUpper(name))
	}
	return nil
}

// PlatformArgs are the values of the platform ARGs buildkit predefines
// (BUILDPLATFORM, TARGETARCH, ...), K=V, for a stage that declares them:
// this machine's platform, unless a build arg sets them.
func PlatformArgs(buildArgs map[string]string) []string { return platformArgs(buildArgs) }
