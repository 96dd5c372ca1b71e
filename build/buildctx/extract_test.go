package buildctx

import (
	"archive/tar"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// addCtx makes a context holding the archive name with content b.
func addCtx(t *testing.T, name string, b []byte) *Context {
	t.Helper()
	c := newCtx(t, nil)
	if err := os.WriteFile(filepath.Join(c.Root(), name), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return c
}

func goodEntries() []tarEntry {
	return []tarEntry{
		{hdr: tar.Header{Name: "./", Typeflag: tar.TypeDir}},
		{hdr: tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755}},
		{hdr: tar.Header{Name: "bin/tool", Mode: 0o755, Uid: 7, Gid: 8}, data: "tool"},
		{hdr: tar.Header{Name: "bin/alias", Typeflag: tar.TypeSymlink, Linkname: "tool"}},
		{hdr: tar.Header{Name: "bin/hard", Typeflag: tar.TypeLink, Linkname: "bin/tool"}},
		{hdr: tar.Header{Name: "implicit/parent/file"}, data: "deep"},
	}
}

func checkGood(t *testing.T, dir string, uid, gid int) {
	t.Helper()
	if readFile(t, filepath.Join(dir, "bin/tool")) != "tool" || readFile(t, filepath.Join(dir, "implicit/parent/file")) != "deep" {
		t.Fatal("extracted contents wrong")
	}
	if l, _ := os.Readlink(filepath.Join(dir, "bin/alias")); l != "tool" {
		t.Fatalf("symlink %q", l)
	}
	a, _ := os.Stat(filepath.Join(dir, "bin/tool"))
	h, _ := os.Stat(filepath.Join(dir, "bin/hard"))
	if !os.SameFile(a, h) {
		t.Fatal("hard link not made")
	}
	if a.Mode().Perm() != 0o755 {
		t.Fatalf("mode %v", a.Mode())
	}
	if u, g := owner(t, filepath.Join(dir, "bin/tool")); u != uid || g != gid {
		t.Fatalf("owner %d:%d, want %d:%d", u, g, uid, gid)
	}
}

func TestAddExtractTarGz(t *testing.T) {
	c := addCtx(t, "rootfs.tar.gz", makeTar(t, true, goodEntries()...))
	root := t.TempDir()
	if err := Copy(root, "/opt/", resolve(t, c, "rootfs.tar.gz"), CopyOptions{Extract: true}); err != nil {
		t.Fatal(err)
	}
	checkGood(t, filepath.Join(root, "opt"), 7, 8)
	mustNotExist(t, filepath.Join(root, "opt/rootfs.tar.gz"))

	// --chown applies to what is extracted.
	root2 := t.TempDir()
	if err := Copy(root2, "/", resolve(t, c, "rootfs.tar.gz"), CopyOptions{Extract: true, Chown: true, UID: 5, GID: 6}); err != nil {
		t.Fatal(err)
	}
	checkGood(t, root2, 5, 6)

	// COPY does not extract.
	root3 := t.TempDir()
	if err := Copy(root3, "/opt/", resolve(t, c, "rootfs.tar.gz"), CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	readFile(t, filepath.Join(root3, "opt/rootfs.tar.gz"))
}

func TestAddExtractPlainAndCompressed(t *testing.T) {
	plain := makeTar(t, false, goodEntries()...)
	cases := map[string][]byte{"plain.tar": plain}
	for _, z := range []struct{ prog, ext string }{{"bzip2", "bz2"}, {"xz", "xz"}, {"zstd", "zst"}} {
		p, err := exec.LookPath(z.prog)
		if err != nil {
			if os.Getenv("CI") == "true" && z.prog != "zstd" {
				t.Fatalf("%s not installed", z.prog)
			}
			t.Logf("%s not installed: not tested", z.prog)
			continue
		}
		cmd := exec.Command(p, "-c")
		cmd.Stdin = bytes.NewReader(plain)
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		cases["a.tar."+z.ext] = out
	}
	for name, b := range cases {
		c := addCtx(t, name, b)
		root := t.TempDir()
		if err := Copy(root, "/x", resolve(t, c, name), CopyOptions{Extract: true}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		checkGood(t, filepath.Join(root, "x"), 7, 8)
	}
	// Not an archive (gzip of a non-tar too): copied as a file.
	c := addCtx(t, "notes.txt", []byte("just text"))
	root := t.TempDir()
	if err := Copy(root, "/x/", resolve(t, c, "notes.txt"), CopyOptions{Extract: true}); err != nil {
		t.Fatal(err)
	}
	if readFile(t, filepath.Join(root, "x/notes.txt")) != "just text" {
		t.Fatal("a plain file given to ADD was not copied")
	}
}

// hostile are archives that try to write outside where they are
// extracted; each must be refused with nothing written outside.
func hostile() map[string][]tarEntry {
	return map[string][]tarEntry{
		"dotdot":   {reg("../escaped", "x")},
		"dotdot2":  {reg("a/../../escaped", "x")},
		"absolute": {reg("/escaped", "x")},
		"symlink-abs": {
			{hdr: tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/"}},
			reg("l/escaped", "x"),
		},
		"symlink-up": {
			{hdr: tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "../../../../../../.."}},
			reg("l/escaped", "x"),
		},
		"symlink-dir-deep": {
			{hdr: tar.Header{Name: "a/", Typeflag: tar.TypeDir}},
			{hdr: tar.Header{Name: "a/l", Typeflag: tar.TypeSymlink, Linkname: "../.."}},
			reg("a/l/escaped", "x"),
		},
		"hardlink-up":  {{hdr: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "../victim"}}},
		"hardlink-abs": {{hdr: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "/etc/passwd"}}},
		"hardlink-via-symlink": {
			{hdr: tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/"}},
			{hdr: tar.Header{Name: "h", Typeflag: tar.TypeLink, Linkname: "l/victim"}},
		},
	}
}

func TestAddExtractHostile(t *testing.T) {
	for name, entries := range hostile() {
		t.Run(name, func(t *testing.T) {
			outer := t.TempDir()
			if err := os.WriteFile(filepath.Join(outer, "victim"), []byte("v"), 0o644); err != nil {
				t.Fatal(err)
			}
			root := filepath.Join(outer, "root")
			if err := os.Mkdir(root, 0o755); err != nil {
				t.Fatal(err)
			}
			c := addCtx(t, "evil.tar.gz", makeTar(t, true, entries...))
			err := Copy(root, "/dest/", resolve(t, c, "evil.tar.gz"), CopyOptions{Extract: true})
			if err == nil {
				t.Fatal("hostile archive extracted without error")
			}
			t.Log(err)
			for _, p := range []string{filepath.Join(outer, "escaped"), filepath.Join(root, "escaped"), "/escaped", filepath.Join(root, "dest", "h")} {
				mustNotExist(t, p)
			}
		})
	}
}

func TestFromTar(t *testing.T) {
	b := makeTar(t, true, append(goodEntries(),
		reg("Dockerfile", "FROM scratch\n"),
		reg(".dockerignore", "*.secret\n"),
		reg("x.secret", "s"),
		tarEntry{hdr: tar.Header{Name: "fifo", Typeflag: tar.TypeFifo}})...)
	tmp := t.TempDir()
	c, err := FromTar(bytes.NewReader(b), tmp)
	if err != nil {
		t.Fatal(err)
	}
	checkGood(t, c.Root(), 7, 8)
	if err := c.LoadIgnore("Dockerfile"); err != nil {
		t.Fatal(err)
	}
	_, err = c.Resolve([]string{"x.secret"})
	wantErr(t, err, "excluded by .dockerignore")
	if _, err := c.Resolve([]string{"bin"}); err != nil {
		t.Fatal(err)
	}
	dir := c.Root()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	mustNotExist(t, dir)
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Fatalf("Close left %v", ents)
	}
}

func TestFromTarHostile(t *testing.T) {
	cases := hostile()
	cases["device"] = []tarEntry{{hdr: tar.Header{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}}}
	cases["block"] = []tarEntry{{hdr: tar.Header{Name: "sda", Typeflag: tar.TypeBlock, Devmajor: 8}}}
	// In a context even a symlink that stays inside may not be written
	// through: nothing was there before the tar.
	cases["symlink-inside"] = []tarEntry{
		{hdr: tar.Header{Name: "d/", Typeflag: tar.TypeDir}},
		{hdr: tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "d"}},
		reg("l/f", "x"),
	}
	for name, entries := range cases {
		t.Run(name, func(t *testing.T) {
			outer := t.TempDir()
			if err := os.WriteFile(filepath.Join(outer, "victim"), []byte("v"), 0o644); err != nil {
				t.Fatal(err)
			}
			tmp := filepath.Join(outer, "tmp")
			if err := os.Mkdir(tmp, 0o755); err != nil {
				t.Fatal(err)
			}
			c, err := FromTar(bytes.NewReader(makeTar(t, false, entries...)), tmp)
			if err == nil {
				c.Close()
				t.Fatal("hostile context tar unpacked without error")
			}
			t.Log(err)
			mustNotExist(t, filepath.Join(outer, "escaped"))
			mustNotExist(t, "/escaped")
			if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
				t.Fatalf("a refused tar left %v", ents)
			}
		})
	}
}

// An archive directory over an existing symlink of the image replaces
// the symlink, as docker's untar does, and writes nothing where it led.
func TestAddExtractOverImageSymlink(t *testing.T) {
	outside := t.TempDir()
	root := t.TempDir()
	writeTree(t, root, map[string]file{"opt/bin": {Link: outside}})
	c := addCtx(t, "a.tar.gz", makeTar(t, true, goodEntries()...))
	if err := Copy(root, "/opt", resolve(t, c, "a.tar.gz"), CopyOptions{Extract: true}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(filepath.Join(root, "opt/bin")); err != nil || !fi.IsDir() {
		t.Fatalf("opt/bin: %v, %v; want a directory", fi, err)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("extraction wrote %v outside root", ents)
	}
	// Reached only as a parent, an image symlink that leads out of the
	// destination is refused, as docker refuses a breakout.
	root2 := t.TempDir()
	writeTree(t, root2, map[string]file{"opt/implicit": {Link: outside}})
	err := Copy(root2, "/opt", resolve(t, c, "a.tar.gz"), CopyOptions{Extract: true})
	wantErr(t, err, "implicit/parent is reached through a symlink that leads out of the destination")
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("extraction wrote %v outside root", ents)
	}
}
