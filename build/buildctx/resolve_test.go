package buildctx

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func resolveTree() map[string]file {
	return map[string]file{
		"a.txt":         {Data: "a"},
		"b.txt":         {Data: "b"},
		"c.go":          {Data: "c"},
		"sub/x/f":       {Data: "x"},
		"sub/y/f":       {Data: "y"},
		"sub/y/g":       {Data: "g"},
		"dir/one":       {Data: "1"},
		"dir/two/three": {Data: "3"},
		"link-in":       {Link: "/dir/one"},
		"link-rel":      {Link: "../../../a.txt"},
		"link-host":     {Link: "/etc/hostname"},
		"lnkdir":        {Link: "dir"},
		"we[ird]":       {Data: "w"},
	}
}

func TestResolve(t *testing.T) {
	c := newCtx(t, resolveTree())
	for _, tc := range []struct {
		srcs []string
		want []string
	}{
		{[]string{"*.txt"}, []string{"a.txt", "b.txt"}},
		{[]string{"sub/*/f"}, []string{"sub/x/f", "sub/y/f"}},
		{[]string{"s?b/y/[fg]"}, []string{"sub/y/f", "sub/y/g"}},
		{[]string{"/a.txt", "./c.go"}, []string{"a.txt", "c.go"}},
		{[]string{"dir"}, []string{"dir", "dir/one", "dir/two", "dir/two/three"}},
		{[]string{"dir/two/../one"}, []string{"dir/one"}},
		{[]string{"lnkdir/two"}, []string{"lnkdir/two", "lnkdir/two/three"}},
		{[]string{`we\[ird]*`}, []string{"we[ird]"}},
	} {
		srcs, err := c.Resolve(tc.srcs)
		if err != nil {
			t.Fatalf("%q: %v", tc.srcs, err)
		}
		if got := names(srcs); !slices.Equal(got, tc.want) {
			t.Errorf("%q: %q, want %q", tc.srcs, got, tc.want)
		}
	}

	all, err := c.Resolve([]string{"."})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || !all[0].Dir || len(all[0].Entries) != 19 {
		t.Fatalf(". resolved to %q", names(all))
	}

	// A symlink named as a source is followed inside the context.
	for _, n := range []string{"link-in", "link-rel"} {
		srcs, err := c.Resolve([]string{n})
		if err != nil {
			t.Fatal(err)
		}
		e := srcs[0].Entries[0]
		if !e.Info.Mode().IsRegular() || srcs[0].Base != n {
			t.Fatalf("%s: entry %+v base %s", n, e, srcs[0].Base)
		}
		if rel, _ := filepath.Rel(c.Root(), e.Path); rel == ".." || filepath.IsAbs(rel) || rel[:2] == ".." {
			t.Fatalf("%s resolved outside the context: %s", n, e.Path)
		}
	}
	// One pointing at a host file is looked up in the context: absent.
	_, err = c.Resolve([]string{"link-host"})
	wantErr(t, err, "COPY failed: file not found in build context or excluded by .dockerignore: stat link-host")
}

func TestResolveErrors(t *testing.T) {
	c := newCtx(t, resolveTree())
	_, err := c.Resolve([]string{"../etc/passwd"})
	wantErr(t, err, "forbidden path outside the build context: ../etc/passwd")
	_, err = c.Resolve([]string{"dir/../../x"})
	wantErr(t, err, "forbidden path outside the build context")
	_, err = c.Resolve([]string{"missing.txt"})
	if err == nil || err.Error() != "COPY failed: file not found in build context or excluded by .dockerignore: stat missing.txt: file does not exist" {
		t.Fatalf("missing source: %v", err)
	}
	_, err = c.ResolveFor("ADD", []string{"*.none"})
	wantErr(t, err, "ADD failed: file not found in build context or excluded by .dockerignore: stat *.none")
	for _, u := range []string{"https://example.com/x.tgz", "http://example.com/x", "git@github.com:a/b.git"} {
		_, err = c.ResolveFor("ADD", []string{u})
		wantErr(t, err, "ADD of a URL needs the network, which strata build does not use: download it into the context and COPY it")
	}
	_, err = c.Resolve(nil)
	wantErr(t, err, "no source files")
}

func digestOf(t *testing.T, c *Context, srcs ...string) string {
	t.Helper()
	s, err := c.Resolve(srcs)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Digest(s)
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

func TestDigest(t *testing.T) {
	tree := map[string]file{
		"app/main.go":  {Data: "package main"},
		"app/lib/x.go": {Data: "package lib"},
		"app/run":      {Data: "#!/bin/sh", Mode: 0o755},
		"app/link":     {Link: "lib/x.go"},
	}
	c := newCtx(t, tree)
	base := digestOf(t, c, "app")
	if again := digestOf(t, c, "app"); again != base {
		t.Fatalf("digest not stable: %s then %s", base, again)
	}
	// Another copy of the same tree, other inodes and mtimes: same digest.
	c2 := newCtx(t, tree)
	old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(c2.Root(), "app/main.go"), old, old); err != nil {
		t.Fatal(err)
	}
	if d := digestOf(t, c2, "app"); d != base {
		t.Fatalf("digest of an identical tree with other mtimes differs: %s vs %s", d, base)
	}

	p := func(n string) string { return filepath.Join(c.Root(), n) }
	changes := []struct {
		what string
		do   func() error
		undo func() error
	}{
		{"content", func() error { return os.WriteFile(p("app/main.go"), []byte("package mair"), 0o644) },
			func() error { return os.WriteFile(p("app/main.go"), []byte("package main"), 0o644) }},
		{"mode", func() error { return os.Chmod(p("app/run"), 0o700) },
			func() error { return os.Chmod(p("app/run"), 0o755) }},
		{"owner", func() error { return os.Lchown(p("app/main.go"), 1000, 1000) },
			func() error { return os.Lchown(p("app/main.go"), 0, 0) }},
		{"name", func() error { return os.Rename(p("app/lib/x.go"), p("app/lib/y.go")) },
			func() error { return os.Rename(p("app/lib/y.go"), p("app/lib/x.go")) }},
		{"symlink target", func() error { os.Remove(p("app/link")); return os.Symlink("lib/y.go", p("app/link")) },
			func() error { os.Remove(p("app/link")); return os.Symlink("lib/x.go", p("app/link")) }},
		{"new file", func() error { return os.WriteFile(p("app/new"), nil, 0o644) },
			func() error { return os.Remove(p("app/new")) }},
		{"hard link", func() error { os.Remove(p("app/run")); return os.Link(p("app/main.go"), p("app/run")) },
			func() error {
				os.Remove(p("app/run"))
				return os.WriteFile(p("app/run"), []byte("#!/bin/sh"), 0o755)
			}},
	}
	for _, ch := range changes {
		if err := ch.do(); err != nil {
			t.Fatalf("%s: %v", ch.what, err)
		}
		if d := digestOf(t, c, "app"); d == base {
			t.Errorf("changing the %s did not change the digest", ch.what)
		}
		if err := ch.undo(); err != nil {
			t.Fatalf("%s undo: %v", ch.what, err)
		}
		os.Chmod(p("app/run"), 0o755)
		if d := digestOf(t, c, "app"); d != base {
			t.Fatalf("undoing the %s did not restore the digest", ch.what)
		}
	}
	// Touching mtime does not change it.
	now := time.Now().Add(time.Hour)
	if err := os.Chtimes(p("app/lib/x.go"), now, now); err != nil {
		t.Fatal(err)
	}
	if d := digestOf(t, c, "app"); d != base {
		t.Fatal("touching a file's mtime changed the digest")
	}
	// An ignored file does not count.
	if err := os.WriteFile(p("app/debug.log"), []byte("noise"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.SetIgnore([]string{"**/*.log"}); err != nil {
		t.Fatal(err)
	}
	if d := digestOf(t, c, "app"); d != base {
		t.Fatal("an ignored file changed the digest")
	}
	// A file source's destination name counts.
	if digestOf(t, c, "app/main.go") == digestOf(t, c, "app/lib/x.go") {
		t.Fatal("different files, same digest")
	}
}
