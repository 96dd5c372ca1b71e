package dockerfile

import (
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

func str(s string) *string { return &s }

func mustParse(t *testing.T, src string, args map[string]string) *File {
	t.Helper()
	f, err := Parse(strings.NewReader(src), args)
	if err != nil {
		t.Fatalf("Parse(%q): %v", src, err)
	}
	return f
}

// oneCommand parses "FROM scratch\n"+line and returns its only command.
func oneCommand(t *testing.T, src string) Command {
	t.Helper()
	f := mustParse(t, "FROM scratch\n"+src, nil)
	if len(f.Stages) != 1 || len(f.Stages[0].Commands) != 1 {
		t.Fatalf("%q: want one stage with one command, got %+v", src, f.Stages)
	}
	return f.Stages[0].Commands[0]
}

func TestCommands(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  string
		want Command // Line 2 unless set; Original and AllFlags are filled in from want when empty
	}{
		{"run shell", "RUN echo $HOME && ls", Command{Name: "run", Args: []string{"echo $HOME && ls"}}},
		{"run exec", `RUN ["echo", "$HOME"]`, Command{Name: "run", Args: []string{"echo", "$HOME"}, JSON: true}},
		{"run lowercase", "run make", Command{Name: "run", Original: "run make", Args: []string{"make"}}},
		{"run flags", "RUN --network=none --mount=type=cache,target=/c --mount=type=bind,from=b,target=/b make",
			Command{Name: "run", Args: []string{"make"},
				Flags:    map[string]string{"network": "none", "mount": "type=bind,from=b,target=/b"},
				AllFlags: [][2]string{{"network", "none"}, {"mount", "type=cache,target=/c"}, {"mount", "type=bind,from=b,target=/b"}}}},
		{"run bad json is shell form", `RUN [not json`, Command{Name: "run", Args: []string{"[not json"}}},
		{"run heredoc", "RUN <<EOF\necho a\n\techo b\nEOF", Command{Name: "run", Original: "RUN <<EOF", Args: []string{"<<EOF"},
			Heredocs: []Heredoc{{Name: "EOF", Content: "echo a\n\techo b\n", Expand: true}}}},
		{"run heredoc chomp quoted", "RUN <<-'EOT' bash\n\techo $A\n\tEOT", Command{Name: "run", Original: "RUN <<-'EOT' bash", Args: []string{"<<-'EOT' bash"},
			Heredocs: []Heredoc{{Name: "EOT", Content: "echo $A\n", Chomp: true}}}},
		{"copy", "COPY --chown=1:2 --chmod=0644 a*.txt b/ /dst/", Command{Name: "copy", Args: []string{"a*.txt", "b/", "/dst/"},
			Flags: map[string]string{"chown": "1:2", "chmod": "0644"}}},
		{"copy from link", "COPY --from=build --link /out/app /usr/bin/", Command{Name: "copy", Args: []string{"/out/app", "/usr/bin/"},
			Flags: map[string]string{"from": "build", "link": "true"}}},
		{"copy vars kept", "COPY $SRC ${DST:-/d}", Command{Name: "copy", Args: []string{"$SRC", "${DST:-/d}"}}},
		{"copy json", `COPY ["a b", "/c d/"]`, Command{Name: "copy", Args: []string{"a b", "/c d/"}, JSON: true}},
		{"copy heredoc", "COPY <<EOF /etc/motd\nhello $USER\nEOF", Command{Name: "copy", Original: "COPY <<EOF /etc/motd", Args: []string{"<<EOF", "/etc/motd"},
			Heredocs: []Heredoc{{Name: "EOF", Content: "hello $USER\n", Expand: true}}}},
		{"add", "ADD --chmod=755 --checksum=sha256:abc https://example.com/x.tgz /x/", Command{Name: "add", Args: []string{"https://example.com/x.tgz", "/x/"},
			Flags: map[string]string{"chmod": "755", "checksum": "sha256:abc"}}},
		{"env kv", `ENV A=1 B="two words" C='$x' D=a\ b`, Command{Name: "env",
			Args:      []string{"A", "1", "=", "B", `"two words"`, "=", "C", "'$x'", "=", "D", `a\ b`, "="},
			KeyValues: [][2]string{{"A", "1"}, {"B", `"two words"`}, {"C", "'$x'"}, {"D", `a\ b`}}, KeyValueSet: []bool{true, true, true, true}}},
		{"env legacy", "ENV GREETING hello   big world", Command{Name: "env", Args: []string{"GREETING", "hello   big world", ""},
			KeyValues: [][2]string{{"GREETING", "hello   big world"}}, KeyValueSet: []bool{true}}},
		{"arg", `ARG A B=2 C="x y" D=`, Command{Name: "arg", Args: []string{"A", "B=2", `C="x y"`, "D="},
			KeyValues: [][2]string{{"A", ""}, {"B", "2"}, {"C", `"x y"`}, {"D", ""}}, KeyValueSet: []bool{false, true, true, true}}},
		{"workdir", "WORKDIR /app/$SUB", Command{Name: "workdir", Args: []string{"/app/$SUB"}}},
		{"user", "USER app:staff", Command{Name: "user", Args: []string{"app:staff"}}},
		{"expose", "EXPOSE 80 443/tcp 53/udp", Command{Name: "expose", Args: []string{"80", "443/tcp", "53/udp"}}},
		{"label", `LABEL org.opencontainers.image.title="My app" version=1`, Command{Name: "label",
			Args:      []string{"org.opencontainers.image.title", `"My app"`, "=", "version", "1", "="},
			KeyValues: [][2]string{{"org.opencontainers.image.title", `"My app"`}, {"version", "1"}}, KeyValueSet: []bool{true, true}}},
		{"cmd shell", "CMD nginx -g 'daemon off;'", Command{Name: "cmd", Args: []string{"nginx -g 'daemon off;'"}}},
		{"cmd exec", `CMD ["nginx", "-g", "daemon off;"]`, Command{Name: "cmd", Args: []string{"nginx", "-g", "daemon off;"}, JSON: true}},
		{"cmd empty json", `CMD []`, Command{Name: "cmd", Args: []string{}, JSON: true}},
		{"entrypoint exec", `ENTRYPOINT ["/init"]`, Command{Name: "entrypoint", Args: []string{"/init"}, JSON: true}},
		{"entrypoint shell", `ENTRYPOINT exec /init`, Command{Name: "entrypoint", Args: []string{"exec /init"}}},
		{"volume words", "VOLUME /data /logs", Command{Name: "volume", Args: []string{"/data", "/logs"}}},
		{"volume json", `VOLUME ["/data", "/var/my logs"]`, Command{Name: "volume", Args: []string{"/data", "/var/my logs"}, JSON: true}},
		{"stopsignal", "STOPSIGNAL SIGQUIT", Command{Name: "stopsignal", Args: []string{"SIGQUIT"}}},
		{"shell", `SHELL ["/bin/bash", "-eo", "pipefail", "-c"]`, Command{Name: "shell", Args: []string{"/bin/bash", "-eo", "pipefail", "-c"}, JSON: true}},
		{"maintainer", "MAINTAINER Jane Doe <jane@example.com>", Command{Name: "maintainer", Args: []string{"Jane Doe <jane@example.com>"},
			KeyValues: [][2]string{{"maintainer", "Jane Doe <jane@example.com>"}}, KeyValueSet: []bool{true}}},
		{"continuation", "RUN apt-get update && \\\n    apt-get install -y \\\n# a comment inside\n    curl", Command{Name: "run",
			Original: "RUN apt-get update &&     apt-get install -y     curl", Args: []string{"apt-get update &&     apt-get install -y     curl"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := oneCommand(t, tc.src)
			want := tc.want
			if want.Line == 0 {
				want.Line = 2
			}
			if want.Original == "" {
				want.Original = tc.src
			}
			if want.AllFlags == nil {
				for k, v := range want.Flags {
					want.AllFlags = append(want.AllFlags, [2]string{k, v})
				}
				// Map order is random: compare AllFlags as a set.
				if len(got.AllFlags) == len(want.AllFlags) {
					gf := map[string]string{}
					for _, f := range got.AllFlags {
						gf[f[0]] = f[1]
					}
					if reflect.DeepEqual(gf, want.Flags) || len(gf) == 0 && want.Flags == nil {
						want.AllFlags = got.AllFlags
					}
				}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%q:\n got %#v\nwant %#v", tc.src, got, want)
			}
		})
	}
}

func TestHealthcheck(t *testing.T) {
	for _, tc := range []struct {
		src  string
		want HealthConfig
	}{
		{"HEALTHCHECK NONE", HealthConfig{Test: []string{"NONE"}}},
		{"HEALTHCHECK CMD curl -f http://localhost/ || exit 1", HealthConfig{Test: []string{"CMD-SHELL", "curl -f http://localhost/ || exit 1"}}},
		{`HEALTHCHECK --interval=5m --timeout=3s --start-period=1m30s --start-interval=2s --retries=4 CMD ["/bin/check", "-q"]`,
			HealthConfig{Test: []string{"CMD", "/bin/check", "-q"}, Interval: 5 * time.Minute, Timeout: 3 * time.Second,
				StartPeriod: 90 * time.Second, StartInterval: 2 * time.Second, Retries: 4}},
		{"healthcheck --interval=0s cmd true", HealthConfig{Test: []string{"CMD-SHELL", "true"}}},
	} {
		c := oneCommand(t, tc.src)
		if c.Name != "healthcheck" || c.Health == nil || !reflect.DeepEqual(*c.Health, tc.want) {
			t.Errorf("%q: got %s %+v, want %+v", tc.src, c.Name, c.Health, tc.want)
		}
	}
}

func TestOnbuild(t *testing.T) {
	c := oneCommand(t, "ONBUILD COPY --chown=app . /src")
	want := &Command{Name: "copy", Original: "COPY --chown=app . /src", Line: 2, Args: []string{".", "/src"},
		Flags: map[string]string{"chown": "app"}, AllFlags: [][2]string{{"chown", "app"}}}
	if c.Name != "onbuild" || c.Trigger != "COPY --chown=app . /src" || !reflect.DeepEqual(c.Inner, want) {
		t.Errorf("ONBUILD COPY: got %+v inner %+v; want trigger %q and inner %+v", c, c.Inner, want.Original, want)
	}
	c = oneCommand(t, "ONBUILD RUN <<EOF\necho triggered\nEOF")
	if c.Trigger != "RUN <<EOF\necho triggered\nEOF" || c.Inner == nil || c.Inner.Name != "run" || len(c.Inner.Heredocs) != 1 || c.Inner.Heredocs[0].Content != "echo triggered\n" {
		t.Errorf("ONBUILD RUN heredoc: trigger %q inner %+v", c.Trigger, c.Inner)
	}

	cs, err := ParseTriggers([]string{"RUN make", `ENV A="b c"`, "COPY <<EOF /f\nx\nEOF"})
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 3 || cs[0].Name != "run" || cs[0].Args[0] != "make" || cs[1].KeyValues[0] != [2]string{"A", `"b c"`} || cs[2].Heredocs[0].Content != "x\n" {
		t.Errorf("ParseTriggers: %+v", cs)
	}
	for _, tr := range []string{"ONBUILD RUN x", "FROM alpine", "MAINTAINER me", "FROB x", ""} {
		if _, err := ParseTriggers([]string{tr}); err == nil || !strings.Contains(err.Error(), "ONBUILD trigger") {
			t.Errorf("ParseTriggers(%q): err %v, want a refusal naming the trigger", tr, err)
		}
	}
}

func TestStages(t *testing.T) {
	src := `# syntax=docker/dockerfile:1
# comment
ARG BASE=alpine
ARG TAG=3.20
ARG UNSET
ARG DERIVED=${BASE}-${TAG}
FROM --platform=$BUILDPLATFORM ${BASE}:${TAG} AS Build
ARG TAG
RUN make

from scratch
COPY --from=build /out /
FROM build as test
FROM $UNSET${DERIVED:+x}
`
	f := mustParse(t, src, map[string]string{"TAG": "3.21", "NOPE": "1", "HTTP_PROXY": "p"})
	want := []Arg{{"BASE", str("alpine")}, {"TAG", str("3.21")}, {"UNSET", nil}, {"DERIVED", str("alpine-3.21")}}
	if !reflect.DeepEqual(f.MetaArgs, want) {
		t.Errorf("MetaArgs %+v, want %+v", f.MetaArgs, want)
	}
	if f.Syntax != "docker/dockerfile:1" || f.Escape != '\\' {
		t.Errorf("Syntax %q Escape %q", f.Syntax, f.Escape)
	}
	type st struct {
		name, base, platform string
		index, line, n       int
	}
	var got []st
	for _, s := range f.Stages {
		got = append(got, st{s.Name, s.BaseName, s.Platform, s.Index, s.Line, len(s.Commands)})
	}
	plat := runtime.GOOS + "/" + runtime.GOARCH
	wantStages := []st{{"build", "alpine:3.21", plat, 0, 7, 2}, {"", "scratch", "", 1, 11, 1}, {"test", "build", "", 2, 13, 0}, {"", "x", "", 3, 14, 0}}
	if !reflect.DeepEqual(got, wantStages) {
		t.Errorf("stages %+v\nwant %+v", got, wantStages)
	}
	if len(f.Warnings) != 1 || !strings.Contains(f.Warnings[0], "NOPE") {
		t.Errorf("warnings %q: want one, about the unused build-arg NOPE", f.Warnings)
	}
	for _, q := range []struct{ ref, want string }{{"build", "build"}, {"BUILD", "build"}, {"1", ""}, {"test", "test"}} {
		s, err := f.Stage(q.ref)
		if err != nil || s.Name != q.want {
			t.Errorf("Stage(%q): %v %v, want %q", q.ref, s, err, q.want)
		}
	}
	for _, q := range []struct{ ref, want string }{{"nope", `stage "nope" not found: the Dockerfile's stages are build, test`}, {"7", "stage 7 not found: the Dockerfile has stages 0 to 3"}} {
		if _, err := f.Stage(q.ref); err == nil || !strings.Contains(err.Error(), q.want) {
			t.Errorf("Stage(%q): err %v, want %q", q.ref, err, q.want)
		}
	}
	if f := mustParse(t, "FROM --platform=linux/arm64 x\n", map[string]string{"BUILDPLATFORM": "linux/riscv64"}); f.Stages[0].Platform != "linux/arm64" {
		t.Errorf("literal --platform: %q", f.Stages[0].Platform)
	}
	if f := mustParse(t, "FROM --platform=$BUILDPLATFORM x\n", map[string]string{"BUILDPLATFORM": "linux/riscv64"}); f.Stages[0].Platform != "linux/riscv64" || len(f.Warnings) != 0 {
		t.Errorf("--build-arg BUILDPLATFORM: %q, warnings %q", f.Stages[0].Platform, f.Warnings)
	}
	if f := mustParse(t, "FROM x\nMAINTAINER me\n", nil); len(f.Warnings) != 1 || !strings.Contains(f.Warnings[0], "Dockerfile:2: MAINTAINER is deprecated") {
		t.Errorf("MAINTAINER warnings %q", f.Warnings)
	}
	if f := mustParse(t, "FROM x\nRUN a \\\n\n  b\n", nil); len(f.Warnings) != 1 || !strings.Contains(f.Warnings[0], "Empty continuation line") || f.Stages[0].Commands[0].Args[0] != "a   b" {
		t.Errorf("empty continuation line: warnings %q, command %+v", f.Warnings, f.Stages[0].Commands)
	}
	// A build arg consumed by an ARG in a stage is not warned about.
	if f := mustParse(t, "FROM x\nARG V\n", map[string]string{"V": "1"}); len(f.Warnings) != 0 {
		t.Errorf("consumed build arg: warnings %q", f.Warnings)
	}
}

func TestEscapeDirective(t *testing.T) {
	src := "# escape=`\nFROM mcr.microsoft.com/windows\nRUN dir `\n  c:\\\nCOPY a\\b c:\\dst\\\n"
	f := mustParse(t, src, nil)
	if f.Escape != '`' {
		t.Fatalf("Escape %q", f.Escape)
	}
	cs := f.Stages[0].Commands
	if len(cs) != 2 || cs[0].Args[0] != `dir   c:\` || cs[0].Line != 3 || cs[1].Line != 5 || !reflect.DeepEqual(cs[1].Args, []string{`a\b`, `c:\dst\`}) {
		t.Errorf("commands %+v", cs)
	}
	if got, err := Expand("`$HOME-$X", []string{"X=1"}, '`'); err != nil || got != "$HOME-1" {
		t.Errorf("Expand with escape `: %q %v", got, err)
	}
}

func TestExpand(t *testing.T) {
	env := []string{"A=1", "B=two words", "E=", "A=3"}
	for _, tc := range []struct{ word, want string }{
		{"$A", "3"}, // later wins
		{"${A}x", "3x"},
		{"${U:-def}", "def"},
		{"${E:-def}", "def"},
		{"${E-def}", ""},
		{"${A:-def}", "3"},
		{"${A:+x}", "x"},
		{"${U:+x}", ""},
		{`\$A`, "$A"},
		{"'$A'", "$A"},
		{`"$B"`, "two words"},
		{"$U", ""},
		{"pre-${U}-post", "pre--post"},
		{"${A}$A", "33"},
		{"$1", ""},
	} {
		got, err := Expand(tc.word, env, '\\')
		if err != nil || got != tc.want {
			t.Errorf("Expand(%q) = %q, %v; want %q", tc.word, got, err, tc.want)
		}
	}
	if _, err := Expand("${U:?must be set}", env, '\\'); err == nil || !strings.Contains(err.Error(), "must be set") {
		t.Errorf("${U:?...}: err %v", err)
	}
	if _, err := Expand("${A", env, '\\'); err == nil {
		t.Errorf("unterminated ${: no error")
	}
	words, err := ExpandWords(`$B "a b" c*.txt`, env, '\\')
	if want := []string{"two", "words", "a b", "c*.txt"}; err != nil || !reflect.DeepEqual(words, want) {
		t.Errorf("ExpandWords = %q, %v; want %q", words, err, want)
	}
}

func TestNeeded(t *testing.T) {
	src := `ARG HELPER=helper
FROM alpine AS base
FROM base AS deps
RUN --mount=type=cache,target=/c --mount=type=bind,from=tools,target=/t make deps
FROM golang AS tools
FROM busybox AS helper
FROM deps AS build
COPY --from=${HELPER} /x /x
COPY --from=0 /y /y
COPY --from=nginx:latest /etc/nginx /etc/nginx
FROM scratch AS unused
COPY --from=build /a /a
FROM scratch AS final
COPY --from=build /app /app
`
	f := mustParse(t, src, nil)
	for _, tc := range []struct {
		target string
		want   string
	}{
		{"", "base deps tools helper build final"},
		{"build", "base deps tools helper build"},
		{"deps", "base deps tools"},
		{"tools", "tools"},
		{"5", "base deps tools helper build unused"},
	} {
		ss, err := f.Needed(tc.target)
		if err != nil {
			t.Fatalf("Needed(%q): %v", tc.target, err)
		}
		var names []string
		for _, s := range ss {
			names = append(names, s.Name)
		}
		if strings.Join(names, " ") != tc.want {
			t.Errorf("Needed(%q) = %q, want %q", tc.target, names, tc.want)
		}
	}
	if _, err := f.Needed("nope"); err == nil || !strings.Contains(err.Error(), `--target: stage "nope" not found`) {
		t.Errorf("Needed(nope): %v", err)
	}
	// FROM a later stage's name is an image, not a dependency.
	f = mustParse(t, "FROM later AS first\nFROM alpine AS later\n", nil)
	if ss, err := f.Needed("first"); err != nil || len(ss) != 1 || ss[0].Name != "first" {
		t.Errorf("FROM a later name: %v %v", ss, err)
	}
	f = mustParse(t, "FROM alpine AS a\nCOPY --from=b / /\nFROM alpine AS b\nCOPY --from=a / /\n", nil)
	if _, err := f.Needed("b"); err == nil || !strings.Contains(err.Error(), "circular dependency between stages: b -> a -> b") {
		t.Errorf("cycle: %v", err)
	}
}

func TestErrors(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"FROM alpine\nRUN x\nFOO bar\n", `Dockerfile:3: unknown instruction "FOO"`},
		{"FROM alpine\n\nCOPY onlyone\n", "Dockerfile:3: COPY requires at least two arguments"},
		{"FROM alpine\nADD x\n", "Dockerfile:2: ADD requires at least two arguments"},
		{"RUN x\nFROM alpine\n", "Dockerfile:1: no FROM: a Dockerfile must start with FROM (after ARG and comments)"},
		{"# just a comment\nARG X\n", "Dockerfile:2: no FROM: a Dockerfile must start with FROM (after ARG and comments)"},
		{"", "Dockerfile:1: no FROM"},
		{"FROM alpine\nONBUILD ONBUILD RUN x\n", "Dockerfile:2: ONBUILD ONBUILD is not allowed"},
		{"FROM alpine\nONBUILD FROM x\n", "Dockerfile:2: FROM is not allowed as an ONBUILD trigger"},
		{"FROM alpine\nONBUILD\n", "Dockerfile:2: ONBUILD requires at least one argument"},
		{"FROM alpine\nONBUILD FOO x\n", `Dockerfile:2: unknown instruction "FOO"`},
		{"FROM alpine AS 1st\n", `Dockerfile:1: FROM: invalid stage name "1st"`},
		{"FROM alpine AS my/stage\n", `Dockerfile:1: FROM: invalid stage name "my/stage"`},
		{"FROM alpine AS\n", "Dockerfile:1: FROM requires either one or three arguments"},
		{"FROM alpine BS x\n", "Dockerfile:1: FROM requires either one or three arguments"},
		{"FROM\n", "Dockerfile:1: FROM requires either one or three arguments"},
		{"FROM a AS x\nFROM b AS X\n", `Dockerfile:2: FROM: duplicate stage name "x" (also on line 1)`},
		{"ARG B\nFROM $B\n", "Dockerfile:2: FROM $B: the image name is empty after substitution"},
		{"FROM alpine\nSHELL /bin/bash -c\n", "Dockerfile:2: SHELL requires the arguments to be in JSON form"},
		{"FROM alpine\nSHELL []\n", "Dockerfile:2: SHELL requires at least one argument"},
		{"FROM alpine\nRUN\n", "Dockerfile:2: RUN requires at least one argument"},
		{"FROM alpine\nCMD\n", "Dockerfile:2: CMD requires at least one argument"},
		{"FROM alpine\nRUN [\"a\", 1]\n", "Dockerfile:2: when using JSON array syntax, arrays must be comprised of strings only"},
		{"FROM alpine\nENV\n", "Dockerfile:2: ENV requires at least one argument"},
		{"FROM alpine\nENV A\n", "Dockerfile:2: ENV must have two arguments"},
		{"FROM alpine\nENV A=1 B\n", `Dockerfile:2: Syntax error - can't find = in "B"`},
		{"FROM alpine\nLABEL\n", "Dockerfile:2: LABEL requires at least one argument"},
		{"FROM alpine\nARG =x\n", `Dockerfile:2: ARG names cannot be blank: "=x"`},
		{"FROM alpine\nARG\n", "Dockerfile:2: ARG requires at least one argument"},
		{"FROM alpine\nWORKDIR\n", "Dockerfile:2: WORKDIR requires exactly one argument"},
		{"FROM alpine\nUSER\n", "Dockerfile:2: USER requires exactly one argument"},
		{"FROM alpine\nSTOPSIGNAL\n", "Dockerfile:2: STOPSIGNAL requires exactly one argument"},
		{"FROM alpine\nMAINTAINER\n", "Dockerfile:2: MAINTAINER requires exactly one argument"},
		{"FROM alpine\nEXPOSE\n", "Dockerfile:2: EXPOSE requires at least one argument"},
		{"FROM alpine\nVOLUME\n", "Dockerfile:2: VOLUME requires at least one argument"},
		{"FROM alpine\nVOLUME [\"\"]\n", "Dockerfile:2: VOLUME: a path cannot be an empty string"},
		{"FROM alpine\nHEALTHCHECK\n", "Dockerfile:2: HEALTHCHECK requires at least one argument"},
		{"FROM alpine\nHEALTHCHECK NONE x\n", "Dockerfile:2: HEALTHCHECK NONE takes no arguments"},
		{"FROM alpine\nHEALTHCHECK CMD\n", "Dockerfile:2: HEALTHCHECK CMD: missing the command"},
		{"FROM alpine\nHEALTHCHECK PING x\n", `Dockerfile:2: HEALTHCHECK: unknown type "PING": want CMD or NONE`},
		{"FROM alpine\nHEALTHCHECK --interval=5 CMD x\n", "Dockerfile:2: HEALTHCHECK --interval=5: not a duration"},
		{"FROM alpine\nHEALTHCHECK --timeout=1us CMD x\n", "Dockerfile:2: HEALTHCHECK --timeout=1us: cannot be less than 1ms"},
		{"FROM alpine\nHEALTHCHECK --retries=-1 CMD x\n", "Dockerfile:2: HEALTHCHECK --retries=-1: cannot be negative"},
		{"FROM alpine\nHEALTHCHECK --retries=many CMD x\n", "Dockerfile:2: HEALTHCHECK --retries=many: not a number"},
		{"FROM alpine\nCOPY --frm=x a b\n", "Dockerfile:2: COPY: unknown flag --frm (COPY takes --chmod, --chown, --exclude, --from, --link, --parents)"},
		{"FROM alpine\nCOPY --from a b\n", "Dockerfile:2: COPY --from needs a value: --from=..."},
		{"FROM alpine\nCOPY --link=maybe a b\n", "Dockerfile:2: COPY --link=maybe: want true or false"},
		{"FROM alpine\nWORKDIR --x=1 /a\n", "Dockerfile:2: WORKDIR takes no flags, got --x"},
		{"FROM --plat=x alpine\n", "Dockerfile:1: FROM: unknown flag --plat (FROM takes --platform)"},
		{"FROM alpine\nCOPY a <<EOF\nx\nEOF\n", "Dockerfile:2: COPY cannot take a heredoc as its destination"},
		{"FROM alpine\nRUN <<EOF\necho\n", "Dockerfile:2: unterminated heredoc"},
		{"# escape=x\nFROM alpine\n", "Dockerfile:1: invalid escape token 'x'"},
		{"# escape=\\\n# escape=`\nFROM alpine\n", "Dockerfile:2: only one escape parser directive can be used"},
		{"ARG A=${B\nFROM alpine\n", "Dockerfile:1: ARG A: "},
	} {
		_, err := Parse(strings.NewReader(tc.src), nil)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("Parse(%q):\n got error %v\nwant %q...", tc.src, err, tc.want)
		}
	}
}

func TestParseChange(t *testing.T) {
	c, err := ParseChange(`CMD ["sh"]`)
	if err != nil || c.Name != "cmd" || !c.JSON || !reflect.DeepEqual(c.Args, []string{"sh"}) || c.Line != 1 {
		t.Errorf("ParseChange(CMD): %+v %v", c, err)
	}
	c, err = ParseChange(`ENV A="b c" D=e`)
	if err != nil || !reflect.DeepEqual(c.KeyValues, [][2]string{{"A", `"b c"`}, {"D", "e"}}) {
		t.Errorf("ParseChange(ENV): %+v %v", c, err)
	}
	for _, tc := range []struct{ change, want string }{
		{"FROB x", `unknown instruction "FROB"`},
		{"COPY x", "COPY requires at least two arguments"},
		{"", "no instruction"},
		{"CMD a\nCMD b", "want one instruction, got 2"},
	} {
		if _, err := ParseChange(tc.change); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("ParseChange(%q): err %v, want %q", tc.change, err, tc.want)
		}
	}
}
