package dockerfile

import (
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// flagKind says whether an instruction's flag is a bool ("--link") or
// takes a value ("--from=x"); instrFlags lists the flags each
// instruction takes, as buildkit does.
type flagKind int

const (
	valueFlag flagKind = iota
	boolFlag
)

var instrFlags = map[string]map[string]flagKind{
	"add":         {"chown": valueFlag, "chmod": valueFlag, "link": boolFlag, "keep-git-dir": boolFlag, "checksum": valueFlag, "unpack": boolFlag, "exclude": valueFlag},
	"arg":         {},
	"cmd":         {},
	"copy":        {"chown": valueFlag, "chmod": valueFlag, "from": valueFlag, "link": boolFlag, "parents": boolFlag, "exclude": valueFlag},
	"entrypoint":  {},
	"env":         {},
	"expose":      {},
	"from":        {"platform": valueFlag},
	"healthcheck": {"interval": valueFlag, "timeout": valueFlag, "start-period": valueFlag, "start-interval": valueFlag, "retries": valueFlag},
	"label":       {},
	"maintainer":  {},
	"onbuild":     {},
	"run":         {"mount": valueFlag, "network": valueFlag, "security": valueFlag},
	"shell":       {},
	"stopsignal":  {},
	"user":        {},
	"volume":      {},
	"workdir":     {},
}

// Expands reports whether docker substitutes variables in this
// instruction's arguments (in RUN, CMD, ENTRYPOINT, SHELL and
// HEALTHCHECK the shell does, at run time).
func (c *Command) Expands() bool {
	switch c.Name {
	case "add", "copy", "env", "expose", "from", "label", "stopsignal", "user", "volume", "workdir", "arg", "onbuild":
		return true
	}
	return false
}

// nodeArgs flattens a node's arguments as buildkit does.
func nodeArgs(n *parser.Node) []string {
	out := []string{}
	for ; n.Next != nil; n = n.Next {
		a := n.Next
		switch len(a.Children) {
		case 0:
			out = append(out, a.Value)
		case 1:
			out = append(out, a.Children[0].Value)
			out = append(out, nodeArgs(a.Children[0])...)
		}
	}
	return out
}

// convert checks one parsed instruction and makes it a Command.
func convert(n *parser.Node, escape rune) (Command, error) {
	c := Command{
		Name:     strings.ToLower(n.Value),
		Original: strings.TrimSpace(n.Original),
		Line:     n.StartLine,
		Args:     nodeArgs(n),
		JSON:     n.Attributes["json"],
	}
	NAME := strings.ToUpper(c.Name)
	allowed, ok := instrFlags[c.Name]
	if !ok {
		return c, errorf(c.Line, "unknown instruction %q", n.Value)
	}
	for _, h := range n.Heredocs {
		content := h.Content
		if h.Chomp {
			content = parser.ChompHeredocContent(content)
		}
		c.Heredocs = append(c.Heredocs, Heredoc{Name: h.Name, Content: content, Expand: h.Expand, Chomp: h.Chomp})
	}
	if err := c.parseFlags(n.Flags, allowed); err != nil {
		return c, err
	}
	bad := func(format string, args ...any) (Command, error) {
		return c, errorf(c.Line, format, args...)
	}
	switch c.Name {
	case "from":
		// Checked by newStage, which knows the other stages.
		if len(c.Args) == 0 {
			return bad("FROM requires either one or three arguments: FROM image [AS name]")
		}
	case "run", "cmd", "entrypoint":
		if len(c.Args) == 0 && !c.JSON {
			return bad("%s requires at least one argument (%s [] for none)", NAME, NAME)
		}
		if !c.JSON && len(c.Args) > 1 {
			c.Args = []string{strings.Join(c.Args, " ")}
		}
	case "shell":
		if !c.JSON {
			return bad(`SHELL requires the arguments to be in JSON form: SHELL ["executable", "parameters"]`)
		}
		if len(c.Args) == 0 {
			return bad(`SHELL requires at least one argument: SHELL ["executable", "parameters"]`)
		}
	case "add", "copy":
		if len(c.Args) < 2 {
			return bad("%s requires at least two arguments: the sources and the destination", NAME)
		}
		if parser.MustParseHeredoc(c.Args[len(c.Args)-1]) != nil {
			return bad("%s cannot take a heredoc as its destination", NAME)
		}
	case "env", "label":
		if len(c.Args) == 0 {
			return bad("%s requires at least one argument: %s key=value ...", NAME, NAME)
		}
		if len(c.Args)%3 != 0 {
			return bad("%s: malformed arguments", NAME)
		}
		for i := 0; i < len(c.Args); i += 3 {
			if c.Args[i] == "" {
				return bad("%s names cannot be blank", NAME)
			}
			c.KeyValues = append(c.KeyValues, [2]string{c.Args[i], c.Args[i+1]})
			c.KeyValueSet = append(c.KeyValueSet, true)
		}
	case "arg":
		if len(c.Args) == 0 {
			return bad("ARG requires at least one argument: ARG name[=default]")
		}
		for _, a := range c.Args {
			k, v, set := strings.Cut(a, "=")
			if k == "" {
				return bad("ARG names cannot be blank: %q", a)
			}
			c.KeyValues = append(c.KeyValues, [2]string{k, v})
			c.KeyValueSet = append(c.KeyValueSet, set)
		}
	case "maintainer":
		if len(c.Args) != 1 {
			return bad("MAINTAINER requires exactly one argument")
		}
		c.KeyValues = [][2]string{{"maintainer", c.Args[0]}}
		c.KeyValueSet = []bool{true}
	case "workdir", "user", "stopsignal":
		if len(c.Args) != 1 {
			return bad("%s requires exactly one argument", NAME)
		}
	case "expose":
		if len(c.Args) == 0 {
			return bad("EXPOSE requires at least one argument: EXPOSE port[/protocol] ...")
		}
	case "volume":
		if len(c.Args) == 0 {
			return bad("VOLUME requires at least one argument: VOLUME path ... or VOLUME [\"path\", ...]")
		}
		for i, v := range c.Args {
			if c.Args[i] = strings.TrimSpace(v); c.Args[i] == "" {
				return bad("VOLUME: a path cannot be an empty string")
			}
		}
	case "healthcheck":
		h, err := c.healthConfig()
		if err != nil {
			return c, err
		}
		c.Health = h
	case "onbuild":
		if n.Next == nil || len(n.Next.Children) != 1 {
			return bad("ONBUILD requires at least one argument: ONBUILD INSTRUCTION ...")
		}
		child := n.Next.Children[0]
		child.StartLine, child.EndLine = n.StartLine, n.EndLine
		child.Heredocs = n.Heredocs
		if err := checkTrigger(strings.ToLower(child.Value)); err != nil {
			return bad("%v", err)
		}
		inner, err := convert(child, escape)
		if err != nil {
			return c, err
		}
		c.Inner = &inner
		c.Trigger = triggerExpr(n)
	}
	return c, nil
}

var reOnbuild = regexp.MustCompile(`(?i)^\s*ONBUILD\s*`)

// triggerExpr is what buildkit stores in the image config for an
// ONBUILD: the instruction after ONBUILD, heredoc bodies appended.
func triggerExpr(n *parser.Node) string {
	var b strings.Builder
	b.WriteString(reOnbuild.ReplaceAllString(n.Original, ""))
	for _, h := range n.Heredocs {
		b.WriteByte('\n')
		b.WriteString(h.Content)
		b.WriteString(h.Name)
	}
	return b.String()
}

func (c *Command) parseFlags(flags []string, allowed map[string]flagKind) error {
	NAME := strings.ToUpper(c.Name)
	for _, fl := range flags {
		name, value, hasValue := strings.Cut(strings.TrimPrefix(fl, "--"), "=")
		kind, ok := allowed[name]
		switch {
		case !strings.HasPrefix(fl, "--") || name == "":
			return errorf(c.Line, "%s: bad flag %q: want --name=value", NAME, fl)
		case !ok && len(allowed) == 0:
			return errorf(c.Line, "%s takes no flags, got --%s", NAME, name)
		case !ok:
			var names []string
			for k := range allowed {
				names = append(names, "--"+k)
			}
			sort.Strings(names)
			return errorf(c.Line, "%s: unknown flag --%s (%s takes %s)", NAME, name, NAME, strings.Join(names, ", "))
		case kind == boolFlag && !hasValue:
			value = "true"
		case kind == boolFlag && value != "true" && value != "false":
			return errorf(c.Line, "%s --%s=%s: want true or false", NAME, name, value)
		case kind == valueFlag && !hasValue:
			return errorf(c.Line, "%s --%s needs a value: --%s=...", NAME, name, name)
		}
		if c.Flags == nil {
			c.Flags = map[string]string{}
		}
		c.Flags[name] = value
		c.AllFlags = append(c.AllFlags, [2]string{name, value})
	}
	return nil
}

func (c *Command) healthConfig() (*HealthConfig, error) {
	if len(c.Args) == 0 {
		return nil, errorf(c.Line, "HEALTHCHECK requires at least one argument: HEALTHCHECK [options] CMD command, or HEALTHCHECK NONE")
	}
	typ, args := strings.ToUpper(c.Args[0]), c.Args[1:]
	switch typ {
	case "NONE":
		if len(args) != 0 {
			return nil, errorf(c.Line, "HEALTHCHECK NONE takes no arguments")
		}
		return &HealthConfig{Test: []string{"NONE"}}, nil
	case "CMD":
	default:
		return nil, errorf(c.Line, "HEALTHCHECK: unknown type %q: want CMD or NONE", c.Args[0])
	}
	h := &HealthConfig{}
	if len(args) == 0 {
		return nil, errorf(c.Line, "HEALTHCHECK CMD: missing the command")
	}
	if c.JSON {
		h.Test = append([]string{"CMD"}, args...)
	} else {
		h.Test = []string{"CMD-SHELL", strings.Join(args, " ")}
	}
	for _, d := range []struct {
		flag string
		to   *time.Duration
	}{{"interval", &h.Interval}, {"timeout", &h.Timeout}, {"start-period", &h.StartPeriod}, {"start-interval", &h.StartInterval}} {
		v, ok := c.Flags[d.flag]
		if !ok || v == "" {
			continue
		}
		dur, err := time.ParseDuration(v)
		if err != nil {
			return nil, errorf(c.Line, "HEALTHCHECK --%s=%s: not a duration (like 30s or 1m30s)", d.flag, v)
		}
		if dur < 0 {
			return nil, errorf(c.Line, "HEALTHCHECK --%s=%s: cannot be negative", d.flag, v)
		}
		if dur != 0 && dur < time.Millisecond {
			return nil, errorf(c.Line, "HEALTHCHECK --%s=%s: cannot be less than 1ms", d.flag, v)
		}
		*d.to = dur
	}
	if v, ok := c.Flags["retries"]; ok && v != "" {
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil {
			return nil, errorf(c.Line, "HEALTHCHECK --retries=%s: not a number", v)
		}
		if n < 0 {
			return nil, errorf(c.Line, "HEALTHCHECK --retries=%s: cannot be negative", v)
		}
		h.Retries = int(n)
	}
	return h, nil
}

// Expand substitutes variables in word as docker does ($VAR, ${VAR},
// ${VAR:-default}, ${VAR:+alt}, quotes and escapes), given the
// environment in effect: K=V entries in order, a later one winning.
// Unset variables expand to "".
func Expand(word string, env []string, escape rune) (string, error) {
	s, _, err := shell.NewLex(escape).ProcessWord(word, shell.EnvsFromSlice(env))
	if err != nil {
		return "", err
	}
	return s, nil
}

// ExpandWords is Expand, then splitting into words on unquoted
// whitespace, as docker does for the sources of COPY and ADD.
func ExpandWords(word string, env []string, escape rune) ([]string, error) {
	return shell.NewLex(escape).ProcessWords(word, shell.EnvsFromSlice(env))
}
