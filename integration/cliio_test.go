package integration

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Black-box tests of how strata reads and writes images and talks to
// users: the transports of import and export (oci:DIR[:TAG],
// oci-archive:FILE[:TAG], docker-archive:FILE[:REF]), export to stdout
// and gzip-compressed, its messages, diff's escaping of names, exit
// statuses, and the completion scripts and manual pages.

// ioImages are two fixture images of distinct layers, the first's
// layer gzip-compressed (a docker archive must hold it uncompressed).
func ioImages(t *testing.T) (a, b *imgFixture) {
	a = buildImage(t, imgSpec{layers: []imgLayerSpec{{files: map[string]string{"etc/": "", "etc/a": "image a\n"}, comp: "gzip"}}})
	b = buildImage(t, imgSpec{layers: []imgLayerSpec{
		{files: map[string]string{"etc/": "", "etc/b": "image b\n"}},
		{files: map[string]string{"etc/": "", "etc/b2": "image b, layer 2\n"}, comp: "gzip"},
	}})
	return a, b
}

// ioLayout writes a layout holding a as v1 and b as v2.
func ioLayout(t *testing.T, dir string, a, b *imgFixture) string {
	l := newImgLayout(t, dir)
	l.add(l.image(a), "v1")
	l.add(l.image(b), "v2")
	l.close()
	return dir
}

// ioIDs is the IDs of the images a store holds, sorted.
func ioIDs(s *cliStore) []string {
	var ids []string
	for _, r := range s.imagesJSON() {
		ids = append(ids, r.ID)
	}
	sort.Strings(ids)
	return ids
}

func TestCLIIOImportTransports(t *testing.T) {
	a, b := ioImages(t)
	dir := t.TempDir()
	layout := ioLayout(t, filepath.Join(dir, "layout"), a, b)

	t.Run("oci:DIR:TAG picks one", func(t *testing.T) {
		s := newCLIStore(t)
		out := s.imgMust("import", "oci:"+layout+":v2", "app:2")
		if names, _, _ := imported(t, out); len(names) != 1 || names[0] != "app:2" {
			t.Errorf("import oci:DIR:v2 app:2: loaded %q, want only app:2", names)
		}
		if got := s.inspectImage("app:2").Id; got != b.id() {
			t.Errorf("app:2 is %s, want the image tagged v2, %s", got, b.id())
		}
		if n := len(s.imagesJSON()); n != 1 {
			t.Errorf("%d images after picking one, want 1", n)
		}
		// Without a name: the directory's name and the tag.
		s.imgMust("import", "oci:"+layout+":v1")
		if got := s.inspectImage("layout:v1").Id; got != a.id() {
			t.Errorf("layout:v1 is %s, want %s", got, a.id())
		}
		r := s.imgRun("import", "oci:"+layout+":v3")
		if r.code != 1 || !strings.Contains(r.stderr, `no image named "v3"`) || !strings.Contains(r.stderr, `"v1"`) || !strings.Contains(r.stderr, `"v2"`) {
			t.Errorf("import of a tag the layout lacks: want exit 1 naming it and the tags there; got %v", r)
		}
		// A layout of two images with a name and no tag is refused, and
		// says how to pick.
		r = s.imgRun("import", layout, "both")
		if r.code != 1 || !strings.Contains(r.stderr, "oci:DIR:TAG") {
			t.Errorf("import of two images under one name: want exit 1 pointing at oci:DIR:TAG; got %v", r)
		}
		r = s.imgRun("import", "oci-archive:"+layout)
		if r.code != 1 || !strings.Contains(r.stderr, "oci:"+layout) {
			t.Errorf("oci-archive: of a directory: want exit 1 pointing at oci:; got %v", r)
		}
		s.mustCheck()
	})

	t.Run("a directory with a colon", func(t *testing.T) {
		s := newCLIStore(t)
		colon := ioLayout(t, filepath.Join(dir, "with:colon", "lay"), a, b)
		s.imgMust("import", "oci:"+colon+":v1", "c:1")
		if got := s.inspectImage("c:1").Id; got != a.id() {
			t.Errorf("c:1 is %s, want %s", got, a.id())
		}
		// No tag: every image, the colon part of the path.
		if names, _, _ := imported(t, s.imgMust("import", "oci:"+colon)); len(names) != 2 {
			t.Errorf("import oci:%s: loaded %q, want both images", colon, names)
		}
	})

	t.Run("oci-archive:FILE:TAG", func(t *testing.T) {
		s := newCLIStore(t)
		archive := tarDir(t, layout, filepath.Join(dir, "layout.tar"))
		s.imgMust("import", "oci-archive:"+archive+":v1", "arch:1")
		if got := s.inspectImage("arch:1").Id; got != a.id() || len(s.imagesJSON()) != 1 {
			t.Errorf("import oci-archive:FILE:v1: arch:1 is %s (%d images), want only %s", got, len(s.imagesJSON()), a.id())
		}
		r := s.imgRun("import", "oci:"+archive)
		if r.code != 1 || !strings.Contains(r.stderr, "oci-archive:"+archive) {
			t.Errorf("oci: of a file: want exit 1 pointing at oci-archive:; got %v", r)
		}
	})

	// (The docker25 fixture names a registry's image docker.io/library/...,
	// so the reference with a port is tried on the legacy one.)
	for _, style := range []string{"legacy", "docker25"} {
		t.Run("docker-archive:FILE:REF "+style, func(t *testing.T) {
			s := newCLIStore(t)
			save := writeDockerSave(t, filepath.Join(t.TempDir(), "save.tar"), style,
				imgDockerItem{a, []string{"app:1", "localhost:5000/team/app:v1"}},
				imgDockerItem{b, []string{"other:latest"}})
			s.imgMust("import", "docker-archive:"+save+":other")
			if got := s.inspectImage("other:latest").Id; got != b.id() || len(s.imagesJSON()) != 1 {
				t.Errorf("import docker-archive:FILE:other: other is %s (%d images), want only %s", got, len(s.imagesJSON()), b.id())
			}
			// A reference with a registry's port: the first colon ends FILE.
			ref := "localhost:5000/team/app:v1"
			if style == "docker25" {
				ref = "app:1"
			}
			s.imgMust("import", "docker-archive:"+save+":"+ref)
			if got := s.inspectImage(ref).Id; got != a.id() {
				t.Errorf("%s is %s, want %s", ref, got, a.id())
			}
			r := s.imgRun("import", "docker-archive:"+save+":nosuch")
			if r.code != 1 || !strings.Contains(r.stderr, `no image named "nosuch"`) {
				t.Errorf("import of a ref the archive lacks: want exit 1 naming it; got %v", r)
			}
		})
	}

}

// ioIndex reads a layout's index.json.
func ioIndex(t *testing.T, dir string) v1.Index {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ix v1.Index
	if err := json.Unmarshal(b, &ix); err != nil {
		t.Fatal(err)
	}
	return ix
}

// ioTarFiles reads the regular files of a tar.
func ioTarFiles(t *testing.T, p string) map[string][]byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if h.Typeflag == tar.TypeReg {
			b, _ := io.ReadAll(tr)
			out[h.Name] = b
		}
	}
}

func TestCLIIOExportTransports(t *testing.T) {
	needTool(t, "skopeo")
	a, b := ioImages(t)
	dir := t.TempDir()
	s := newCLIStore(t)
	s.imgMust("import", ioLayout(t, filepath.Join(dir, "in"), a, b))
	s.imgMust("tag", b.id(), "app:2")

	t.Run("oci:DIR:TAG", func(t *testing.T) {
		out := filepath.Join(dir, "oci")
		s.imgMust("export", "app:2", "oci:"+out+":v9")
		ix := ioIndex(t, out)
		if len(ix.Manifests) != 1 || ix.Manifests[0].Annotations[v1.AnnotationRefName] != "v9" || ix.Manifests[0].Digest != b.manifestDesc.Digest {
			t.Fatalf("index.json: %+v, want the manifest %s named v9", ix.Manifests, b.manifestDesc.Digest)
		}
		if got := runTool(t, "skopeo", "inspect", "--format", "{{.Digest}}", "oci:"+out+":v9"); strings.TrimSpace(got) != b.manifestDesc.Digest.String() {
			t.Errorf("skopeo inspect oci:DIR:v9: %s, want %s", got, b.manifestDesc.Digest)
		}
		// A second image added to the layout, under its own tag.
		s.imgMust("export", a.id(), "oci:"+out+":v1")
		if ix := ioIndex(t, out); len(ix.Manifests) != 2 {
			t.Errorf("index.json after a second export: %d manifests, want 2", len(ix.Manifests))
		}
	})

	t.Run("oci-archive:FILE:TAG", func(t *testing.T) {
		out := filepath.Join(dir, "a.tar")
		s.imgMust("export", "app:2", "oci-archive:"+out+":v7")
		if got := runTool(t, "skopeo", "inspect", "--format", "{{.Digest}}", "oci-archive:"+out+":v7"); strings.TrimSpace(got) != b.manifestDesc.Digest.String() {
			t.Errorf("skopeo inspect oci-archive:FILE:v7: %s, want %s", got, b.manifestDesc.Digest)
		}
	})

	for _, name := range []string{"", "example.com/team/app:v3"} {
		t.Run("docker-archive "+name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "d.tar")
			dest := "docker-archive:" + out
			want := "app:2"
			if name != "" {
				dest += ":" + name
				want = name
			}
			s.imgMust("export", "app:2", dest)
			files := ioTarFiles(t, out)
			var items []struct {
				Config           string
				RepoTags, Layers []string
			}
			if err := json.Unmarshal(files["manifest.json"], &items); err != nil || len(items) != 1 {
				t.Fatalf("manifest.json: %v\n%s", err, files["manifest.json"])
			}
			it := items[0]
			if it.Config != "blobs/sha256/"+b.configDesc.Digest.Encoded() || len(it.RepoTags) != 1 || it.RepoTags[0] != want || len(it.Layers) != 2 {
				t.Errorf("manifest.json: %+v, want Config the config blob, RepoTags [%s], 2 layers", it, want)
			}
			for i, l := range it.Layers {
				// Layers as docker save writes them: uncompressed, named by
				// diff ID.
				if body, ok := files[l]; !ok || l != "blobs/sha256/"+b.layers[i].diffID.Encoded() || !bytes.Equal(body, b.layers[i].tar) {
					t.Errorf("layer %d: %q (in the archive: %v), want the uncompressed tar named by its diff ID %s", i, l, ok, b.layers[i].diffID)
				}
			}
			for _, f := range []string{"oci-layout", "index.json", it.Config} {
				if _, ok := files[f]; !ok {
					t.Errorf("%s: not in the archive", f)
				}
			}
			// skopeo reads it as docker load would.
			var cfg struct {
				RootFS struct {
					DiffIDs []string `json:"diff_ids"`
				} `json:"rootfs"`
			}
			if err := json.Unmarshal([]byte(runTool(t, "skopeo", "inspect", "--config", "docker-archive:"+out)), &cfg); err != nil {
				t.Fatal(err)
			}
			if len(cfg.RootFS.DiffIDs) != 2 || cfg.RootFS.DiffIDs[1] != b.layers[1].diffID.String() {
				t.Errorf("skopeo inspect --config docker-archive: diff IDs %q", cfg.RootFS.DiffIDs)
			}
			copied := filepath.Join(t.TempDir(), "copied")
			runTool(t, "skopeo", "copy", "docker-archive:"+out, "oci:"+copied+":c")
			// And strata reads back both, with the same diff IDs.
			s2 := newCLIStore(t)
			s2.imgMust("import", out)
			s2.imgMust("import", "oci:"+copied+":c", "copied:c")
			for _, ref := range []string{want, "copied:c"} {
				in := s2.inspectImage(ref)
				if in.Id != b.id() || len(in.RootFS.Layers) != 2 || in.RootFS.Layers[0] != b.layers[0].diffID.String() || in.RootFS.Layers[1] != b.layers[1].diffID.String() {
					t.Errorf("%s imported back: ID %s, diff IDs %q; want %s with %s, %s", ref, in.Id, in.RootFS.Layers, b.id(), b.layers[0].diffID, b.layers[1].diffID)
				}
			}
			checkSameTree(t, "the image exported to a docker archive and imported back", imgMergedTree(b.layers[0].files, b.layers[1].files), s2.imageTree(want))
			s2.mustCheck()
		})
	}
}

// ioShell runs sh -c script with strata as $S, the store as
// $STRATA_ROOT and args as $1..., and returns its stdout and stderr.
func ioShell(t *testing.T, s *cliStore, script string, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command("sh", append([]string{"-c", script, "sh"}, args...)...)
	cmd.Env = cliEnv("S="+strataBin, "STRATA_ROOT="+s.root)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// ioPTY opens a pseudo-terminal (openPTY) that t's cleanup closes.
func ioPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, sl, err := openPTY()
	if err != nil {
		t.Fatalf("open a pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { sl.Close(); m.Close() })
	return m, sl
}

func TestCLIIOExportStdoutGzip(t *testing.T) {
	a, _ := ioImages(t)
	dir := t.TempDir()
	s := newCLIStore(t)
	s.imgMust("import", writeLayout(t, filepath.Join(dir, "in"), a, "latest"), "app:1")

	// To stdout: an OCI archive, read back by import, from a file and
	// from stdin.
	out, stderr, err := ioShell(t, s, `umask 022; "$S" export app:1 - > "$1/stdout.tar" && "$S" import "$1/stdout.tar" fromfile:1 && "$S" import - fromstdin:1 < "$1/stdout.tar"`, dir)
	if err != nil {
		t.Fatalf("export to stdout and import back: %v\n%s%s", err, out, stderr)
	}
	if files := ioTarFiles(t, filepath.Join(dir, "stdout.tar")); files["oci-layout"] == nil || files["index.json"] == nil {
		t.Errorf("export to -: not an OCI archive (files %d)", len(files))
	}
	for _, ref := range []string{"fromfile:1", "fromstdin:1"} {
		if got := s.inspectImage(ref).Id; got != a.id() {
			t.Errorf("%s: %s, want %s", ref, got, a.id())
		}
	}

	// Not to a terminal.
	_, tty := ioPTY(t)
	cmd := exec.Command(strataBin, "export", "--root", s.root, "app:1", "-")
	cmd.Env = cliEnv()
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = tty, &errb
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(errb.String(), "terminal") {
		t.Errorf("export to a terminal: want exit 1 saying terminal; got %v, %q", err, errb.String())
	}

	// Compressed, and mode 0666 less the umask.
	for _, tc := range []struct {
		name, umask string
		mode        os.FileMode
	}{{"a.tar.gz", "022", 0o644}, {"b.tgz", "027", 0o640}, {"c.tar", "022", 0o644}} {
		p := filepath.Join(dir, tc.name)
		if out, stderr, err := ioShell(t, s, `umask "$1"; "$S" export app:1 "$2"`, tc.umask, p); err != nil {
			t.Fatalf("export %s: %v\n%s%s", tc.name, err, out, stderr)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != tc.mode {
			t.Errorf("%s under umask %s: mode %v, want %v", tc.name, tc.umask, fi.Mode().Perm(), tc.mode)
		}
		b, _ := os.ReadFile(p)
		gz := len(b) > 2 && b[0] == 0x1f && b[1] == 0x8b
		if gz != !strings.HasSuffix(tc.name, ".tar") {
			t.Errorf("%s: gzip %v", tc.name, gz)
		}
		s2 := newCLIStore(t)
		s2.imgMust("import", p, "back:1")
		if got := s2.inspectImage("back:1").Id; got != a.id() {
			t.Errorf("%s imported back: %s, want %s", tc.name, got, a.id())
		}
	}
	if names := imgDirNames(t, dir); len(names) != 5 {
		t.Errorf("export left files behind: %q", names)
	}
}

func TestCLIIOMessages(t *testing.T) {
	a, _ := ioImages(t)
	s := newCLIStore(t)
	s.imgMust("import", writeLayout(t, filepath.Join(t.TempDir(), "in"), a, "latest"), "mybase:1")

	t.Run(":latest assumed", func(t *testing.T) {
		for _, args := range [][]string{
			{"rmi", "mybase"}, {"history", "mybase"}, {"tag", "mybase", "x"}, {"export", "mybase", filepath.Join(t.TempDir(), "x.tar")},
			{"run", "mybase"}, {"create", "mybase", "sh"},
		} {
			r := s.imgRun(args...)
			if r.code == 0 || !strings.Contains(r.stderr, `no image "mybase:latest"`) {
				t.Errorf("strata %s: want a failure saying no image \"mybase:latest\"; got %v", strings.Join(args, " "), r)
			}
		}
		if r := s.imgRun("inspect", "mybase"); r.code != 1 || !strings.Contains(r.stderr, `nor image "mybase:latest"`) {
			t.Errorf("strata inspect mybase: want a failure naming image \"mybase:latest\"; got %v", r)
		}
		r := s.imgRun("rmi", "mybase:2")
		if !strings.Contains(r.stderr, `no image "mybase:2"`) {
			t.Errorf("rmi mybase:2: %v", r)
		}
	})

	t.Run("duplicate name", func(t *testing.T) {
		s.must("create", "--name", "c2", "mybase:1")
		for _, args := range [][]string{
			{"create", "--name", "c2", "mybase:1"}, {"create", "--name", "c2"}, {"run", "--name", "c2", "mybase:1", "true"},
		} {
			r := s.imgRun(args...)
			if r.code == 0 || !strings.Contains(r.stderr, `a container named "c2" already exists`) || strings.Contains(r.stderr, "snapshot") {
				t.Errorf("strata %s: want a failure saying a container named \"c2\" already exists; got %v", strings.Join(args, " "), r)
			}
		}
		s.must("rm", "c2")
	})
}

func TestCLIIOPruneConfirm(t *testing.T) {
	a, b := ioImages(t)
	s := newCLIStore(t)
	s.imgMust("import", writeLayout(t, filepath.Join(t.TempDir(), "a"), a, "latest"), "keep:1")
	// Without a ref name, b is imported without a tag: dangling.
	s.imgMust("import", writeLayout(t, filepath.Join(t.TempDir(), "b"), b, ""))
	before := ioIDs(s)
	if len(before) != 2 {
		t.Fatalf("fixture: %d images, want 2", len(before))
	}
	for _, args := range [][]string{{"image", "prune"}, {"system", "prune"}, {"image", "prune", "-a"}} {
		r := s.imgRun(args...) // stdin: /dev/null
		if r.code != 1 || !strings.Contains(r.stderr, "-f") || !strings.Contains(r.stderr, "terminal") {
			t.Errorf("strata %s without -f nor a terminal: want exit 1 saying -f; got %v", strings.Join(args, " "), r)
		}
	}
	if got := ioIDs(s); strings.Join(got, " ") != strings.Join(before, " ") {
		t.Errorf("a refused prune removed images: %q, were %q", got, before)
	}
	// On a terminal it asks: no keeps everything, y prunes.
	for _, answer := range []string{"n\n", "y\n"} {
		m, tty := ioPTY(t)
		if _, err := m.WriteString(answer); err != nil {
			t.Fatal(err)
		}
		r := s.imgRunWith(cliOpts{stdin: tty}, "image", "prune")
		if r.code != 0 || !strings.Contains(r.stdout, "Are you sure you want to continue? [y/N]") {
			t.Errorf("image prune on a terminal, answer %q: want the question and exit 0; got %v", answer, r)
		}
		n := len(s.imagesJSON())
		if answer == "n\n" && n != 2 || answer == "y\n" && n != 1 {
			t.Errorf("image prune answered %q: %d images left", answer, n)
		}
	}
	if got := s.inspectImage("keep:1").Id; got != a.id() {
		t.Errorf("keep:1 is %s after the prune", got)
	}
}

func TestCLIIODiffEscapes(t *testing.T) {
	s := newCLIStore(t)
	s.must("create", "--name", "st")
	mnt, w := s.mount("st")
	// "x\nD " is a directory: unescaped, its file etc/passwd would print
	// as "A /x" and a forged "D /etc/passwd".
	for _, name := range []string{"x\nD /etc/passwd", `back\slash`, "tab\there", "esc\x1b[2J", "plain name"} {
		p := filepath.Join(mnt, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s.unmount("st", w)
	got := s.must("diff", "st")
	want := []string{`A /back\\slash`, `A /esc\x1b[2J`, `A /plain name`, `A /tab\there`, `A /x\nD `, `A /x\nD /etc`, `A /x\nD /etc/passwd`}
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	sort.Strings(lines)
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("strata diff:\n%s\nwant (in some order):\n%s", got, strings.Join(want, "\n"))
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "D ") {
			t.Errorf("a file name forged a deletion: %q", l)
		}
	}
}

func TestCLIIOExitStatus(t *testing.T) {
	t.Run("usage", func(t *testing.T) {
		s := newCLIStore(t)
		for _, args := range [][]string{{"export", "onlyone"}, {"import"}, {"images", "--bogus"}, {"nosuchcommand"}, {"completion", "tcsh"}} {
			if r := s.imgRun(args...); r.code != 2 || !strings.Contains(r.stderr, "strata") {
				t.Errorf("strata %s: want exit 2; got %v", strings.Join(args, " "), r)
			}
		}
		if r := s.imgRun("rmi", "nosuch:1"); r.code != 1 {
			t.Errorf("rmi nosuch:1: want exit 1; got %v", r)
		}
	})
	t.Run("run", func(t *testing.T) {
		s := newRunStore(t)
		for _, tc := range []struct {
			args []string
			code int
		}{
			{[]string{"--bogus", "busybox:test"}, 125},
			{[]string{"nosuch:image"}, 125},
			{[]string{"busybox:test", "/etc/passwd"}, 126},
			{[]string{"busybox:test", "nosuchcommand"}, 127},
			{[]string{"busybox:test", "sh", "-c", "exit 42"}, 42},
		} {
			s.runArgs(t, tc.args, tc.code, "")
		}
	})
}

// ioHelpCommands is the commands `strata --help` lists.
func ioHelpCommands(t *testing.T) []string {
	t.Helper()
	r := cliRun(t, cliOpts{}, "--help")
	var cmds []string
	in := false
	for _, l := range strings.Split(r.stdout, "\n") {
		switch {
		case l == "Commands:":
			in = true
		case in && strings.HasPrefix(l, "  "):
			f := strings.Fields(l)
			cmds = append(cmds, f[0])
			if len(f) > 1 && (f[0] == "image" || f[0] == "system" || f[0] == "builder") && !strings.HasPrefix(f[1], strings.ToUpper(f[1][:1])) {
				cmds[len(cmds)-1] += " " + f[1]
			}
		case in && l == "":
			in = len(cmds) == 0
		}
	}
	if len(cmds) < 20 {
		t.Fatalf("strata --help lists %d commands:\n%s", len(cmds), r.stdout)
	}
	return cmds
}

func TestCLIIOCompletion(t *testing.T) {
	bash := needTool(t, "bash")[0]
	// No store is opened: a user without one makes the script.
	root := filepath.Join(t.TempDir(), "nostore")
	r := cliRun(t, cliOpts{}, "completion", "--root", root, "bash")
	if r.code != 0 || !strings.Contains(r.stdout, "complete ") {
		t.Fatalf("completion bash: %v", r)
	}
	if _, err := os.Stat(root); err == nil {
		t.Errorf("strata completion made a store at %s", root)
	}
	script := filepath.Join(t.TempDir(), "strata.bash")
	if err := os.WriteFile(script, []byte(r.stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	// complete LINE: what the generated function offers for the last word.
	driver := `source "$1" || exit 1
complete -p strata || exit 1
shift
for line in "$@"; do
	read -ra COMP_WORDS <<< "$line"
	[[ "$line" == *" " ]] && COMP_WORDS+=("")
	COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
	COMPREPLY=()
	_strata
	echo "${COMPREPLY[*]}"
done`
	cases := []struct {
		line string
		want []string
		not  []string
	}{
		{"strata im", []string{"images", "image", "import"}, []string{"inspect", "export"}},
		{"strata image p", []string{"prune"}, nil},
		{"strata image ", []string{"ls", "prune", "rm", "tag"}, []string{"run"}},
		{"strata system ", []string{"df", "prune"}, nil},
		{"strata image prune -", []string{"--all", "-a", "--force", "-f", "--root"}, nil},
		{"strata --root /x imp", []string{"import"}, nil},
		{"strata run --net", []string{"--network"}, nil},
		{"strata export --h", []string{"--help"}, nil},
		{"strata completion ", []string{"bash", "zsh", "fish"}, nil},
		{"strata ", []string{"completion", "container", "diff", "run"}, []string{"man", "shim"}},
	}
	args := []string{"-c", driver, "driver", script}
	for _, c := range cases {
		args = append(args, c.line)
	}
	cmd := exec.Command(bash, args...)
	cmd.Env = cliEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(lines) != len(cases)+1 || !strings.HasPrefix(lines[0], "complete ") || !strings.HasSuffix(lines[0], " strata") {
		t.Fatalf("bash output:\n%s", out)
	}
	for i, c := range cases {
		got := strings.Fields(lines[i+1])
		for _, w := range c.want {
			if !slices.Contains(got, w) {
				t.Errorf("completing %q: %q, want %q among them", c.line, got, w)
			}
		}
		for _, w := range c.not {
			if slices.Contains(got, w) {
				t.Errorf("completing %q: %q, want no %q", c.line, got, w)
			}
		}
	}
	// Every command of --help is offered after "strata ".
	top := strings.Fields(lines[len(lines)-1])
	for _, c := range ioHelpCommands(t) {
		if f := strings.Fields(c)[0]; !slices.Contains(top, f) {
			t.Errorf("completing %q: no %q", "strata ", f)
		}
	}
	for _, sh := range []string{"zsh", "fish"} {
		r := cliRun(t, cliOpts{}, "completion", sh)
		if r.code != 0 || !strings.Contains(r.stdout, "strata") || !strings.Contains(r.stdout, "import") {
			t.Errorf("completion %s: %v", sh, r)
		}
		if p, err := exec.LookPath(sh); err == nil {
			check := exec.Command(p, "-n", "/dev/stdin")
			if sh == "fish" {
				check = exec.Command(p, "--no-execute", "/dev/stdin")
			}
			check.Stdin = strings.NewReader(r.stdout)
			if out, err := check.CombinedOutput(); err != nil {
				t.Errorf("%s -n of the script: %v\n%s", sh, err, out)
			}
		}
	}
}

func TestCLIIOManPages(t *testing.T) {
	man := needTool(t, "man")[0]
	dir := filepath.Join(t.TempDir(), "man")
	if r := cliRun(t, cliOpts{}, "man", dir); r.code != 0 {
		t.Fatalf("strata man: %v", r)
	}
	render := func(page string) string {
		t.Helper()
		cmd := exec.Command(man, "--warnings", "-l", "-P", "cat", filepath.Join(dir, page))
		cmd.Env = cliEnv("MANWIDTH=100", "LC_ALL=C.UTF-8")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 {
			t.Errorf("man -l %s: %v, warnings:\n%s", page, err, stderr.String())
		}
		return stdout.String()
	}
	main := render("strata.1")
	// Hyphens are minus signs in roff; the rendering keeps them ASCII.
	flat := strings.Join(strings.Fields(main), " ")
	for _, c := range ioHelpCommands(t) {
		page := "strata-" + strings.ReplaceAll(c, " ", "-") + ".1"
		if _, err := os.Stat(filepath.Join(dir, page)); err != nil {
			t.Errorf("no page for %q: %v", c, err)
			continue
		}
		if !strings.Contains(flat, strings.TrimSuffix(page, ".1")+"(1)") && !strings.Contains(flat, "strata "+c) {
			t.Errorf("strata.1 does not mention %q", c)
		}
		out := render(page)
		if !regexp.MustCompile(`(?m)^\s+--root DIR`).MatchString(out) {
			t.Errorf("%s: no --root DIR option:\n%s", page, out)
		}
	}
	for _, s := range []string{"EXIT STATUS", "125", "126", "127", "STRATA_ROOT", "strata image ls"} {
		if !strings.Contains(main, s) {
			t.Errorf("strata.1 does not mention %q", s)
		}
	}
	imp := render("strata-import.1")
	if !strings.Contains(imp, "--platform OS/ARCH[/VARIANT]") || !strings.Contains(imp, "strata image import") {
		t.Errorf("strata-import.1:\n%s", imp)
	}

	// make install puts them, the binaries and the bash completion under
	// PREFIX.
	if _, err := exec.LookPath("make"); err != nil {
		missingTool(t, "needs make (apt-get install make)")
	}
	dest := t.TempDir()
	mk := exec.Command("make", "-C", "..", "install", "DESTDIR="+dest, "PREFIX=/usr", "BIN="+filepath.Join(dest, "build"))
	mk.Env = cliEnv()
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	for _, p := range []string{"usr/bin/strata", "usr/bin/strata-fuse", "usr/share/man/man1/strata.1", "usr/share/man/man1/strata-image-prune.1", "usr/share/bash-completion/completions/strata"} {
		fi, err := os.Stat(filepath.Join(dest, p))
		if err != nil || fi.Size() == 0 {
			t.Errorf("make install: %s: %v", p, err)
		}
	}
}

// TestCLIIOExportRepeatedLayer exports, as a docker save archive, an
// image that gives one compressed layer twice (as images with repeated
// empty layers do), and imports it back.
func TestCLIIOExportRepeatedLayer(t *testing.T) {
	s := newCLIStore(t)
	l := imgLayerSpec{files: map[string]string{"f": "x\n"}, comp: "gzip"}
	img := buildImage(t, imgSpec{layers: []imgLayerSpec{l, {files: map[string]string{"g": "y\n"}, comp: "gzip"}, l}})
	s.imgMust("import", writeLayout(t, filepath.Join(t.TempDir(), "in"), img, "latest"), "rep:1")
	out := filepath.Join(t.TempDir(), "rep.tar")
	s.imgMust("export", "rep:1", "docker-archive:"+out)
	s2 := newCLIStore(t)
	s2.imgMust("import", out, "back:1")
	if got := s2.inspectImage("back:1").Id; got != img.id() {
		t.Errorf("imported back as %s, want %s", got, img.id())
	}
}
