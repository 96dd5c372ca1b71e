package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// The command line docker and podman users expect: global options before
// the command, --format Go templates, --filter, REPO[:TAG] and ps -a.

var (
	shortHexRE = regexp.MustCompile(`^[0-9a-f]{12}$`)
	longHexRE  = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// global runs strata with the store's --root before the command, as
// `podman --root DIR images`.
func (s *cliStore) global(args ...string) cliResult {
	s.t.Helper()
	return cliRun(s.t, cliOpts{}, append([]string{"--root", s.root}, args...)...)
}

// globalMust is global, which must succeed; it returns stdout.
func (s *cliStore) globalMust(args ...string) string {
	s.t.Helper()
	r := s.global(args...)
	if r.code != 0 || r.err != nil {
		s.t.Fatalf("%v", r)
	}
	return r.stdout
}

// lines splits output into its lines, without the last newline.
func lines(out string) []string {
	out = strings.TrimSuffix(out, "\n")
	if out == "" {
		return nil
	}
	return strings.Split(out, "\n")
}

// sortedOut is lines, sorted.
func sortedOut(out string) []string {
	l := lines(out)
	sort.Strings(l)
	return l
}

// wantUsage checks that r failed as a usage error (exit 2) whose stderr
// says each of want.
func wantUsage(t *testing.T, r cliResult, want ...string) {
	t.Helper()
	if r.code != 2 || r.err != nil {
		t.Errorf("want a usage error, exit 2; got %v", r)
		return
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("%v\nwant stderr to say %q", r, w)
		}
	}
}

// TestCLIGlobalOptions gives --root, --root=, --debug, --log-level and
// --help before the command, also before the two-word commands, and
// checks they act as they do after it.
func TestCLIGlobalOptions(t *testing.T) {
	s := newCLIStore(t)
	other := newCLIStore(t)
	base, _ := imgFixtures(t, "", "")
	layout := writeLayout(t, filepath.Join(t.TempDir(), "base"), base, "3.19")

	if out := s.globalMust("import", layout, "base:3.19"); !strings.Contains(out, "base:3.19") {
		t.Errorf("--root DIR import: %q", out)
	}
	want := base.shortID() + "\n"
	for _, args := range [][]string{
		{"--root", s.root, "images", "-q"},
		{"--root=" + s.root, "images", "-q"},
		{"images", "-q", "--root", s.root},
		{"--root", s.root, "image", "ls", "-q"},
		{"--root", other.root, "images", "-q", "--root", s.root}, // the last one given wins
		{"--debug", "--root", s.root, "--log-level", "warn", "image", "list", "-q"},
	} {
		if r := cliRun(t, cliOpts{}, args...); r.code != 0 || r.stdout != want {
			t.Errorf("got %v\nwant stdout %q", r, want)
		}
	}
	if out := cliRun(t, cliOpts{}, "--root", other.root, "images", "-q"); out.code != 0 || out.stdout != "" {
		t.Errorf("--root of another store: want its empty list, got %v", out)
	}
	if out := s.globalMust("container", "ps", "-a", "--format", "json"); out != "[]\n" {
		t.Errorf("--root DIR container ps -a --format json: %q, want []", out)
	}
	if out := s.globalMust("system", "df", "--format", "{{.Type}}"); out != "Images\nContainers\nBuild Cache\n" {
		t.Errorf("--root DIR system df --format {{.Type}}: %q", out)
	}

	// --debug, or --log-level=debug, logs; info does not.
	s.globalMust("create", "--name", "plain")
	for _, level := range []string{"--debug", "--log-level=debug", "--log-level=info"} {
		r := s.global(level, "commit", "plain")
		if r.code != 0 {
			t.Fatalf("%v", r)
		}
		if logs := strings.HasPrefix(r.stderr, "strata: debug: ") && strings.Contains(r.stderr, " committed in "); logs != (level != "--log-level=info") {
			t.Errorf("%s commit: debug messages %v; stderr:\n%s", level, logs, r.stderr)
		}
	}
	wantUsage(t, s.global("--log-level", "loud", "images"), `--log-level "loud"`, "debug, info, warn, error")
	wantUsage(t, s.global("images", "--log-level=loud"), `--log-level "loud"`)
	wantUsage(t, cliRun(t, cliOpts{}, "--bogus", "images"), "unknown flag: --bogus", "strata --help")
	wantUsage(t, cliRun(t, cliOpts{}, "--root"), "flag needs an argument")
	wantUsage(t, s.global("frobnicate"), `unknown command "frobnicate"`)

	for _, args := range [][]string{{"--help"}, {"--root", s.root, "--help"}, {"--debug", "-h"}} {
		r := cliRun(t, cliOpts{}, args...)
		if r.code != 0 || !strings.Contains(r.stdout, "Global options") || !strings.Contains(r.stdout, "--log-level") || !strings.Contains(r.stdout, "--runtime") {
			t.Errorf("want the main help with the global options; got %v", r)
		}
	}
	if r := s.global("--help", "images"); r.code != 0 || !strings.HasPrefix(r.stdout, "Usage: strata images") {
		t.Errorf("strata --root DIR --help images: want images' help; got %v", r)
	}
	if r := s.global("images", "--help"); r.code != 0 || !strings.Contains(r.stdout, "--log-level") || !strings.Contains(r.stdout, "--filter") {
		t.Errorf("strata images --help: want the global options and --filter; got %v", r)
	}
	if r := s.global("image"); r.code != 0 || !strings.Contains(r.stdout, "Usage: strata image COMMAND") {
		t.Errorf("strata --root DIR image: want the group's help; got %v", r)
	}
	if r := s.global("--version"); r.code != 0 || !strings.HasPrefix(r.stdout, "strata version") {
		t.Errorf("strata --root DIR --version: %v", r)
	}
	s.mustCheck()
}

// TestCLIGlobalRuntime runs a container with the global --runtime, a
// wrapper of runc that logs its calls: the container records it, so
// that running it again uses it without the option.
func TestCLIGlobalRuntime(t *testing.T) {
	s := newRunStore(t)
	runc, err := exec.LookPath("runc")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	wrapper := filepath.Join(dir, "logged-runc")
	script := fmt.Sprintf("#!/bin/sh\necho \"$@\" >>%s\nexec %s \"$@\"\n", calls, runc)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	ncalls := func() int {
		b, err := os.ReadFile(calls)
		if os.IsNotExist(err) {
			return 0
		}
		if err != nil {
			t.Fatal(err)
		}
		return len(lines(string(b)))
	}

	if out := s.globalMust("--runtime", wrapper, "run", "--name", "rt", "busybox:test", "echo", "via wrapper"); out != "via wrapper\n" {
		t.Errorf("strata --runtime WRAPPER run: stdout %q", out)
	}
	first := ncalls()
	if first == 0 {
		t.Fatalf("strata --runtime WRAPPER run did not call the wrapper")
	}
	cfg := s.globalMust("inspect", "--format", `{{index .Labels "strata.container.config"}}`, "rt")
	if !strings.Contains(cfg, `"Runtime":"`+wrapper+`"`) {
		t.Errorf("the container did not record the runtime %s: its config %s", wrapper, cfg)
	}
	if out := s.must("run", "rt"); out != "via wrapper\n" {
		t.Errorf("strata run rt again: stdout %q", out)
	}
	if ncalls() <= first {
		t.Errorf("running rt again without --runtime did not use the runtime it recorded")
	}

	r := s.global("--runtime", filepath.Join(dir, "no-such-runtime"), "run", "--rm", "busybox:test", "true")
	if r.code != 125 || !strings.Contains(r.stderr, `--runtime "`+filepath.Join(dir, "no-such-runtime")+`"`) {
		t.Errorf("a missing --runtime: want exit 125 naming it; got %v", r)
	}
	r = s.global("--runtime", "no-such-runtime-on-path", "create", "busybox:test")
	if r.code == 0 || !strings.Contains(r.stderr, "$PATH") {
		t.Errorf("a --runtime not on $PATH: want a failure saying so; got %v", r)
	}
	if ps := s.ps(); len(ps) != 1 {
		t.Errorf("failed runs left containers: %v", ps)
	}
}

// formatStore is a store with the image command fixtures (base:3.19,
// app:1.0 also tagged app:latest and localhost:5000/team/app:v2,
// example.com/tools:1 and its dangling older image) and two containers,
// web on app:1.0 and idle on base:3.19.
func formatStore(t *testing.T) (s *cliStore, base, app, toolsOld, tools *imgFixture) {
	s = newCLIStore(t)
	tr := &imgTranscript{s: s, work: t.TempDir()}
	base, app, toolsOld, tools = imgCommandFixtures(t, tr)
	s.must("create", "--name", "web", "app:1.0")
	s.must("create", "--name", "idle", "base:3.19")
	return s, base, app, toolsOld, tools
}

// TestCLIFormat prints images, ps, ls, history, inspect and system df
// with Go templates, table templates and json.
func TestCLIFormat(t *testing.T) {
	empty := newCLIStore(t)
	for _, args := range [][]string{
		{"images", "--format", "json"}, {"ps", "--format", "json"}, {"ps", "-a", "--format", "json"},
		{"ls", "--format", "json"}, {"images", "--filter", "dangling=true", "--format", "json"},
	} {
		if out := empty.globalMust(args...); out != "[]\n" {
			t.Errorf("%s on an empty store: %q, want []", strings.Join(args, " "), out)
		}
	}
	if out := empty.globalMust("images", "--format", "{{.ID}}"); out != "" {
		t.Errorf("a template on an empty store: %q, want nothing", out)
	}
	if out := empty.globalMust("images", "--format", `table {{.ID}}\t{{.Size}}`); strings.TrimSpace(out) != "IMAGE ID   SIZE" {
		t.Errorf("a table template on an empty store: %q, want its header only", out)
	}

	s, base, app, toolsOld, tools := formatStore(t)
	// images
	if got, want := sortedOut(s.globalMust("images", "--format", "{{.Repository}}:{{.Tag}}")),
		[]string{"<none>:<none>", "app:1.0", "app:latest", "base:3.19", "example.com/tools:1", "localhost:5000/team/app:v2"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("images --format {{.Repository}}:{{.Tag}}: %q, want %q", got, want)
	}
	out := s.globalMust("images", "--format", "{{json .}}", "base:3.19")
	var view map[string]string
	if err := json.Unmarshal([]byte(out), &view); err != nil {
		t.Fatalf("images --format {{json .}}: %v: %q", err, out)
	}
	if view["Repository"] != "base" || view["Tag"] != "3.19" || view["ID"] != base.shortID() || view["Size"] == "" ||
		!strings.Contains(view["CreatedSince"], "ago") || !strings.HasPrefix(view["CreatedAt"], "2020-01-01 00:00:00 +0000") ||
		!strings.HasPrefix(view["Digest"], "sha256:") {
		t.Errorf("images --format {{json .}}: %v", view)
	}
	if out := s.globalMust("images", "--no-trunc", "--format", "{{.ID}}", "base"); out != base.id()+"\n" {
		t.Errorf("images --no-trunc --format {{.ID}}: %q, want %s", out, base.id())
	}
	table := lines(s.globalMust("images", "--format", `table {{.Repository}}\t{{.ID}}\t{{.CreatedSince}}`, "app"))
	if len(table) != 3 || !regexp.MustCompile(`^REPOSITORY +IMAGE ID +CREATED$`).MatchString(table[0]) ||
		!regexp.MustCompile(`^app +`+app.shortID()+` +\S.* ago$`).MatchString(table[1]) ||
		strings.Index(table[0], "IMAGE ID") != strings.Index(table[1], app.shortID()) {
		t.Errorf("images --format 'table ...': want a header and two aligned rows; got\n%s", strings.Join(table, "\n"))
	}
	var raw []struct {
		Repository, Tag, ID string
		Size                int64
	}
	if err := json.Unmarshal([]byte(s.globalMust("images", "--format", "json", "app:1.0")), &raw); err != nil || len(raw) != 1 || raw[0].ID != app.id() || raw[0].Size <= 0 {
		t.Errorf("images --format json app:1.0: %v %+v", err, raw)
	}
	if out := s.globalMust("images", "--format", `{{.Repository | upper}} {{join (split .Tag ".") "-"}}`, "app:1.0"); out != "APP 1-0\n" {
		t.Errorf("images --format with docker's functions: %q", out)
	}

	// ps: only the running or mounted containers, unless -a
	if out := s.globalMust("ps", "--format", "{{.Names}}"); out != "" {
		t.Errorf("ps lists containers that neither run nor are mounted: %q", out)
	}
	if got := sortedOut(s.globalMust("ps", "-a", "--format", "{{.Names}} {{.Image}} {{.State}} {{.Status}} {{.Command}}")); fmt.Sprint(got) != fmt.Sprint([]string{`idle base:3.19 created Created "sh"`, `web app:1.0 created Created "/app/run.sh --serve"`}) {
		t.Errorf("ps -a --format: %q", got)
	}
	ids := lines(s.globalMust("ps", "-a", "--format", "{{.ID}}"))
	full := lines(s.globalMust("ps", "-a", "--no-trunc", "--format", "{{.ID}}"))
	if len(ids) != 2 || len(full) != 2 || !shortHexRE.MatchString(ids[0]) || !longHexRE.MatchString(full[0]) || !strings.HasPrefix(full[0], ids[0]) {
		t.Errorf("ps --format {{.ID}}: %q, with --no-trunc %q", ids, full)
	}
	mnt, w := s.mount("web")
	if out := s.globalMust("ps", "--format", "{{.Names}} {{.Mounted}}"); out != "web "+mnt+"\n" {
		t.Errorf("ps with web mounted: %q, want web at %s", out, mnt)
	}
	if table := lines(s.globalMust("ps", "--format", `table {{.ID}}\t{{.Names}}\t{{.RunningFor}}`)); len(table) != 2 ||
		!regexp.MustCompile(`^CONTAINER ID +NAMES +CREATED$`).MatchString(table[0]) || !strings.HasPrefix(table[1], ids[0]) && !strings.HasPrefix(table[1], ids[1]) {
		t.Errorf("ps --format 'table ...': %q", table)
	}
	s.unmount("web", w)

	// ls
	if got := sortedOut(s.globalMust("ls", "--format", "{{.Name}} {{.Kind}}")); len(got) != 2+len(app.chainIDs())+2 || got[len(got)-2] != "idle active" || got[len(got)-1] != "web active" {
		t.Errorf("ls --format '{{.Name}} {{.Kind}}': %q", got)
	}
	if out := s.globalMust("ls", "--no-trunc", "--format", "{{.Parent}}", "-q"); !strings.Contains(out, "web") {
		t.Errorf("ls -q wins over --format: %q", out)
	}

	// history
	hist := lines(s.globalMust("history", "--format", "{{.ID}}|{{.CreatedBy}}|{{.Comment}}", "app:1.0"))
	if len(hist) != 4 || hist[0] != app.shortID()+`|ENTRYPOINT ["/app/run.sh"]|buildkit.dockerfile.v0` || !strings.HasPrefix(hist[2], base.shortID()+"|") {
		t.Errorf("history --format: %q", hist)
	}
	if table := lines(s.globalMust("history", "--format", `table {{.ID}}\t{{.CreatedBy}}\t{{.Size}}`, "base:3.19")); len(table) != 3 || !regexp.MustCompile(`^IMAGE +CREATED BY +SIZE$`).MatchString(table[0]) {
		t.Errorf("history --format 'table ...': %q", table)
	}
	var hraw []struct {
		ID, CreatedBy string
		Size          int64
	}
	if err := json.Unmarshal([]byte(s.globalMust("history", "--format", "json", "base:3.19")), &hraw); err != nil || len(hraw) != 2 ||
		hraw[0].ID != base.id() || hraw[1].CreatedBy != "/bin/sh -c #(nop) ADD file:5a1d1c3b9e3f6e2f0a4b8c7d in / " || hraw[1].Size <= 0 {
		t.Errorf("history --format json: %v %+v", err, hraw)
	}

	// inspect
	if out := s.globalMust("inspect", "--format", "{{.Id}}", "app:1.0", "base:3.19"); out != app.id()+"\n"+base.id()+"\n" {
		t.Errorf("inspect --format {{.Id}}: %q", out)
	}
	var cfg struct {
		Entrypoint []string
		WorkingDir string
	}
	if out := s.globalMust("inspect", "-f", "{{json .Config}}", "app:1.0"); json.Unmarshal([]byte(out), &cfg) != nil || cfg.WorkingDir != "/app" || fmt.Sprint(cfg.Entrypoint) != "[/app/run.sh]" {
		t.Errorf("inspect -f {{json .Config}}: %q", out)
	}
	if out := s.globalMust("inspect", "--format", "{{.Name}} {{.Kind}} {{.Size}}", "web"); !regexp.MustCompile(`^web active [0-9]+\n$`).MatchString(out) {
		t.Errorf("inspect --format on a container: %q", out)
	}
	if out := s.globalMust("inspect", "--format", "json", "web"); !strings.HasPrefix(out, "[") || !strings.Contains(out, `"Name": "web"`) {
		t.Errorf("inspect --format json: %q", out)
	}

	// system df
	if out := s.globalMust("system", "df", "--format", "{{.Type}} {{.TotalCount}} {{.Active}}"); out != "Images 4 2\nContainers 2 0\nBuild Cache 0 0\n" {
		t.Errorf("system df --format: %q", out)
	}
	if df := s.globalMust("system", "df"); strings.Contains(df, "Volumes") {
		t.Errorf("system df has rows strata cannot have:\n%s", df)
	}
	if df := s.globalMust("system", "df", "-v"); strings.Contains(df, "Volumes") || strings.Contains(df, "Build cache") {
		t.Errorf("system df -v has sections strata cannot have:\n%s", df)
	}
	if df := s.globalMust("system", "df", "-v", "--no-trunc"); !strings.Contains(df, tools.id()) || !strings.Contains(df, toolsOld.id()) {
		t.Errorf("system df -v --no-trunc: want full image IDs:\n%s", df)
	}
	var dfRaw []struct {
		Type               string
		TotalCount, Active int
		Size, Reclaimable  int64
	}
	if err := json.Unmarshal([]byte(s.globalMust("system", "df", "--format", "json")), &dfRaw); err != nil || len(dfRaw) != 3 || dfRaw[0].Type != "Images" || dfRaw[2].Type != "Build Cache" || dfRaw[0].TotalCount != 4 || dfRaw[0].Size <= 0 {
		t.Errorf("system df --format json: %v %+v", err, dfRaw)
	}

	// Bad templates are usage errors, which write nothing.
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"images", "--format", "{{.Nope}}"}, []string{"Nope", "Repository, Tag, ID, Digest, CreatedSince, CreatedAt, Size"}},
		{[]string{"images", "--format", "{{.Repository"}, []string{`--format "{{.Repository"`, "unclosed action"}},
		{[]string{"ps", "--format", "table {{.Name}}"}, []string{"Name", "Names"}},
		{[]string{"history", "--format", "{{.Tag}}", "app:1.0"}, []string{"Tag", "CreatedBy"}},
		{[]string{"system", "df", "--format", "{{.Nope}}"}, []string{"TotalCount"}},
		{[]string{"system", "df", "-v", "--format", "{{.Type}}"}, []string{"-v"}},
		{[]string{"ls", "--format", "{{nofunc .Name}}"}, []string{`function "nofunc" not defined`}},
		{[]string{"inspect", "--format", "{{.Id", "app:1.0"}, []string{"unclosed action"}},
		{[]string{"inspect", "--format", "table {{.Id}}", "app:1.0"}, []string{"no table"}},
		{[]string{"images", "--format", "yaml"}, []string{`--format "yaml"`, "table, json, or a Go template"}},
		{[]string{"inspect", "--format", "yaml", "app:1.0"}, []string{`--format "yaml"`, "json, or a Go template"}},
	} {
		r := s.global(c.args...)
		wantUsage(t, r, c.want...)
		if r.stdout != "" {
			t.Errorf("%v\nwant nothing on stdout", r)
		}
	}
	s.mustCheck()
}

// TestCLIFilters lists images by REPOSITORY[:TAG] and --filter, and
// containers by --filter.
func TestCLIFilters(t *testing.T) {
	s, _, _, toolsOld, tools := formatStore(t)
	refs := func(args ...string) []string {
		t.Helper()
		return sortedOut(s.globalMust(append([]string{"images", "--format", "{{.Repository}}:{{.Tag}}"}, args...)...))
	}
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"app"}, []string{"app:1.0", "app:latest"}},
		{[]string{"app:1.0"}, []string{"app:1.0"}},
		{[]string{"docker.io/library/app:latest"}, []string{"app:latest"}},
		{[]string{"localhost:5000/team/app"}, []string{"localhost:5000/team/app:v2"}},
		{[]string{"nosuch"}, nil},
		{[]string{"-a", "base"}, []string{"base:3.19"}},
		{[]string{"--filter", "dangling=true"}, []string{"<none>:<none>"}},
		{[]string{"--filter", "dangling=false", "--filter", "reference=example.com/*"}, []string{"example.com/tools:1"}},
		{[]string{"--filter", "reference=*app*"}, []string{"app:1.0", "app:latest"}},
		{[]string{"--filter", "reference=*/*/app"}, []string{"localhost:5000/team/app:v2"}},
		{[]string{"--filter", "reference=app:l*"}, []string{"app:latest"}},
		{[]string{"--filter", "reference=base", "--filter", "reference=app:1.0"}, []string{"app:1.0", "base:3.19"}},
		{[]string{"--filter", "before=app:1.0"}, []string{"base:3.19"}},
		{[]string{"--filter", "since=example.com/tools:1"}, nil},
		{[]string{"--filter", "since=" + toolsOld.shortID()}, []string{"example.com/tools:1"}},
		{[]string{"--filter", "since=base:3.19", "--filter", "before=" + tools.id()}, []string{"<none>:<none>", "app:1.0", "app:latest", "localhost:5000/team/app:v2"}},
		{[]string{"--filter", "label=org.opencontainers.image.title"}, []string{"app:1.0", "app:latest", "localhost:5000/team/app:v2"}},
		{[]string{"--filter", "label=org.opencontainers.image.title=app", "app"}, []string{"app:1.0", "app:latest"}},
		{[]string{"--filter", "label=org.opencontainers.image.title=other"}, nil},
	} {
		if got := refs(c.args...); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("images %s: %q, want %q", strings.Join(c.args, " "), got, c.want)
		}
	}
	if out := s.globalMust("images", "-q", "--filter", "dangling=true"); out != toolsOld.shortID()+"\n" {
		t.Errorf("images -q --filter dangling=true: %q", out)
	}
	wantUsage(t, s.global("images", "--filter", "color=red"), `"color"`, "dangling, reference, before, since, label")
	wantUsage(t, s.global("images", "--filter", "dangling=maybe"), "dangling=true")
	wantUsage(t, s.global("images", "--filter", "reference"), "reference=VALUE")
	wantUsage(t, s.global("images", "--filter", "reference=[a"), "bad pattern")
	wantUsage(t, s.global("images", "Bad:Name:x"), "REPOSITORY:TAG")
	wantUsage(t, s.global("images", "a", "b"), "at most one")
	if r := s.global("images", "--filter", "before=nosuch:1"); r.code != 1 || !strings.Contains(r.stderr, "nosuch") {
		t.Errorf("before= an image that is not there: %v", r)
	}

	names := func(args ...string) []string {
		t.Helper()
		return sortedOut(s.globalMust(append([]string{"ps", "--format", "{{.Names}}"}, args...)...))
	}
	webID := strings.TrimSpace(s.globalMust("ps", "-a", "--no-trunc", "--filter", "name=^web$", "--format", "{{.ID}}"))
	if !longHexRE.MatchString(webID) {
		t.Fatalf("ps --filter name=^web$ --format {{.ID}}: %q", webID)
	}
	for _, c := range []struct {
		args []string
		want []string
	}{
		{nil, nil},
		{[]string{"-a"}, []string{"idle", "web"}},
		{[]string{"--filter", "status=created"}, []string{"idle", "web"}},
		{[]string{"--filter", "status=running"}, nil},
		{[]string{"-a", "--filter", "status=exited", "--filter", "status=created"}, []string{"idle", "web"}},
		{[]string{"-a", "--filter", "name=^id"}, []string{"idle"}},
		{[]string{"-a", "--filter", "name=e"}, []string{"idle", "web"}},
		{[]string{"-a", "--filter", "id=" + webID[:8]}, []string{"web"}},
		{[]string{"-a", "--filter", "ancestor=app:1.0"}, []string{"web"}},
		{[]string{"-a", "--filter", "ancestor=localhost:5000/team/app:v2"}, []string{"web"}},
		{[]string{"-a", "--filter", "ancestor=base:3.19", "--filter", "name=web"}, nil},
		{[]string{"-a", "--filter", "label=org.opencontainers.image.title=app"}, []string{"web"}},
	} {
		if got := names(c.args...); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("ps %s: %q, want %q", strings.Join(c.args, " "), got, c.want)
		}
	}
	if out := s.globalMust("ps", "-q", "-a", "--filter", "ancestor=base:3.19"); out != "idle\n" {
		t.Errorf("ps -q -a --filter ancestor=base:3.19: %q", out)
	}
	wantUsage(t, s.global("ps", "--filter", "color=red"), `"color"`, "status, name, id, ancestor, label")
	wantUsage(t, s.global("ps", "--filter", "status=sleeping"), `"sleeping"`, "created, running, exited")
	wantUsage(t, s.global("ps", "--filter", "name=("), "name=(")
	if r := s.global("ps", "--filter", "ancestor=nosuch:1"); r.code != 1 || !strings.Contains(r.stderr, "nosuch") {
		t.Errorf("ancestor= an image that is not there: %v", r)
	}
	s.mustCheck()
}
