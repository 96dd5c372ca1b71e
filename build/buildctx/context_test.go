package buildctx

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestReadIgnore(t *testing.T) {
	in := "# a comment\n\n  *.log  \n/build\n!keep.log\n./docs/../tmp\n**/cache\n"
	got, err := ReadIgnore(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"*.log", "build", "!keep.log", "tmp", "**/cache"}
	if !slices.Equal(got, want) {
		t.Fatalf("patterns %q, want %q", got, want)
	}
}

func TestIgnoreRules(t *testing.T) {
	c := newCtx(t, map[string]file{
		"a.log":              {Data: "a"},
		"keep.log":           {Data: "k"},
		"build/out":          {Data: "o"},
		"src/build/x":        {Data: "x"}, // "/build" is anchored: not this one
		"src/deep/cache/c":   {Data: "c"},
		"cache/top":          {Data: "t"},
		"src/main.go":        {Data: "m"},
		"src/tmp.txt":        {Data: "t"},
		"docs/a/b/readme.md": {Data: "r"},
		"docs/a/b/keep.txt":  {Data: "k"},
		"secret/key":         {Data: "s"},
		"secret/public":      {Data: "p"},
		".dockerignore":      {Data: "# comment line\n*.log\n!keep.log\n/build\n**/cache\ndocs/**/*.md\nsrc/*.txt\nsecret\n!secret/public\n"},
	})
	if err := c.LoadIgnore(""); err != nil {
		t.Fatal(err)
	}
	srcs, err := c.Resolve([]string{"."})
	if err != nil {
		t.Fatal(err)
	}
	got := names(srcs)
	want := []string{".", "./.dockerignore", "./docs", "./docs/a", "./docs/a/b", "./docs/a/b/keep.txt",
		"./keep.log", "./secret", "./secret/public", "./src", "./src/build", "./src/build/x",
		"./src/deep", "./src/main.go"}
	if !slices.Equal(got, want) {
		t.Fatalf("entries\n%q\nwant\n%q", got, want)
	}
	// An excluded file named as a source does not exist.
	_, err = c.Resolve([]string{"a.log"})
	wantErr(t, err, "COPY failed: file not found in build context or excluded by .dockerignore: stat a.log")
	_, err = c.Resolve([]string{"secret/key"})
	wantErr(t, err, "file not found in build context or excluded by .dockerignore")
	if _, err := c.Resolve([]string{"secret/public"}); err != nil {
		t.Fatalf("exception: %v", err)
	}
}

func TestIgnoreBadPattern(t *testing.T) {
	c := newCtx(t, map[string]file{"a": {Data: "a"}})
	wantErr(t, c.SetIgnore([]string{"[a-"}), ".dockerignore")
}

// The Dockerfile-specific ignore file wins over .dockerignore, and an
// excluded Dockerfile is still readable by the builder but not by COPY.
func TestLoadIgnoreDockerfileSpecific(t *testing.T) {
	c := newCtx(t, map[string]file{
		"Dockerfile":                      {Data: "FROM scratch\n"},
		"sub/app.Dockerfile":              {Data: "FROM app\n"},
		"sub/app.Dockerfile.dockerignore": {Data: "*.txt\nsub/app.Dockerfile\n"},
		".dockerignore":                   {Data: "*.bin\nDockerfile\n.dockerignore\n"},
		"a.txt":                           {Data: "t"},
		"a.bin":                           {Data: "b"},
	})
	if err := c.LoadIgnore("sub/app.Dockerfile"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Resolve([]string{"a.bin"}); err != nil {
		t.Fatalf("a.bin should be copied with the Dockerfile-specific ignore file: %v", err)
	}
	_, err := c.Resolve([]string{"a.txt"})
	wantErr(t, err, "excluded by .dockerignore")
	b, err := c.ReadFile("sub/app.Dockerfile")
	if err != nil || string(b) != "FROM app\n" {
		t.Fatalf("ReadFile of the excluded Dockerfile: %q, %v", b, err)
	}

	if err := c.LoadIgnore("Dockerfile"); err != nil {
		t.Fatal(err)
	}
	_, err = c.Resolve([]string{"a.bin"})
	wantErr(t, err, "excluded by .dockerignore")
	_, err = c.Resolve([]string{"Dockerfile"})
	wantErr(t, err, "excluded by .dockerignore")
	if b, err := c.ReadFile("Dockerfile"); err != nil || string(b) != "FROM scratch\n" {
		t.Fatalf("ReadFile Dockerfile: %q, %v", b, err)
	}
	if b, err := c.ReadFile(".dockerignore"); err != nil || !strings.Contains(string(b), "*.bin") {
		t.Fatalf("ReadFile .dockerignore: %q, %v", b, err)
	}
}

// ReadFile follows a symlink inside the context only.
func TestReadFileSymlinkOutside(t *testing.T) {
	c := newCtx(t, map[string]file{"Dockerfile": {Link: "/etc/hostname"}})
	if _, err := c.ReadFile("Dockerfile"); err == nil {
		t.Fatal("ReadFile followed a symlink out of the context")
	}
	c2 := newCtx(t, map[string]file{"Dockerfile": {Link: "/real/Df"}, "real/Df": {Data: "FROM x"}})
	if b, err := c2.ReadFile("Dockerfile"); err != nil || string(b) != "FROM x" {
		t.Fatalf("symlink inside the context: %q, %v", b, err)
	}
}

func TestFromDirNotDir(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := FromDir(p)
	wantErr(t, err, "not a directory")
	_, err = FromDir(filepath.Join(t.TempDir(), "missing"))
	wantErr(t, err, "build context")
}
