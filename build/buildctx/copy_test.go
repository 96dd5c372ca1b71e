package buildctx

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func resolve(t *testing.T, c *Context, srcs ...string) []Source {
	t.Helper()
	s, err := c.Resolve(srcs)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCopyFile(t *testing.T) {
	c := newCtx(t, map[string]file{"app.conf": {Data: "conf", Mode: 0o640}, "b": {Data: "b"}})
	root := t.TempDir()
	writeTree(t, root, map[string]file{"etc": {Dir: true}})

	// Into a missing directory named with a trailing slash.
	if err := Copy(root, "/opt/app/", resolve(t, c, "app.conf"), CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(root, "opt/app/app.conf")); got != "conf" {
		t.Fatalf("content %q", got)
	}
	fi, _ := os.Stat(filepath.Join(root, "opt/app/app.conf"))
	if fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v, want 0640 kept", fi.Mode())
	}
	// Created parents: 0755.
	for _, d := range []string{"opt", "opt/app"} {
		fi, _ := os.Stat(filepath.Join(root, d))
		if fi.Mode().Perm() != 0o755 {
			t.Fatalf("%s mode %v, want 0755", d, fi.Mode())
		}
	}
	// Into an existing directory without a slash.
	if err := Copy(root, "/etc", resolve(t, c, "app.conf"), CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	readFile(t, filepath.Join(root, "etc/app.conf"))
	// To a file path: renamed.
	if err := Copy(root, "/srv/renamed.conf", resolve(t, c, "app.conf"), CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(root, "srv/renamed.conf")); got != "conf" {
		t.Fatalf("renamed: %q", got)
	}
	// Over an existing file: replaced.
	if err := Copy(root, "/srv/renamed.conf", resolve(t, c, "b"), CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(root, "srv/renamed.conf")); got != "b" {
		t.Fatalf("overwritten: %q", got)
	}
	// Several sources need a directory destination.
	err := Copy(root, "/srv/x", resolve(t, c, "app.conf", "b"), CopyOptions{})
	wantErr(t, err, "When using COPY with more than one source file, the destination must be a directory and end with a /")
	if err := Copy(root, "/multi/", resolve(t, c, "app.conf", "b"), CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	readFile(t, filepath.Join(root, "multi/app.conf"))
	readFile(t, filepath.Join(root, "multi/b"))
	// A file in the way of a directory.
	err = Copy(root, "/srv/renamed.conf/x/", resolve(t, c, "b"), CopyOptions{})
	wantErr(t, err, "/srv/renamed.conf")
}

func TestCopyDirContents(t *testing.T) {
	c := newCtx(t, map[string]file{
		"src/a":          {Data: "a"},
		"src/sub":        {Dir: true, Mode: 0o750},
		"src/sub/b":      {Data: "b", Mode: 0o600},
		"src/sub/link":   {Link: "../a"},
		"src/abs":        {Link: "/etc/passwd"},
		"src/bin/setuid": {Data: "s", Mode: 0o755 | os.ModeSetuid},
	})
	old := time.Date(2010, 5, 6, 7, 8, 9, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(c.Root(), "src/a"), old, old); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	writeTree(t, root, map[string]file{"dst/keep": {Data: "k"}})
	if err := Copy(root, "/dst", resolve(t, c, "src"), CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	// Contents, not the directory itself; existing contents stay.
	mustNotExist(t, filepath.Join(root, "dst/src"))
	readFile(t, filepath.Join(root, "dst/keep"))
	if readFile(t, filepath.Join(root, "dst/sub/b")) != "b" {
		t.Fatal("dst/sub/b")
	}
	for p, want := range map[string]os.FileMode{"dst/sub": 0o750 | os.ModeDir, "dst/sub/b": 0o600, "dst/bin/setuid": 0o755 | os.ModeSetuid} {
		fi, err := os.Lstat(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s mode %v, want %v", p, fi.Mode(), want)
		}
	}
	// Symlinks are copied as symlinks, targets untouched.
	for p, want := range map[string]string{"dst/sub/link": "../a", "dst/abs": "/etc/passwd"} {
		got, err := os.Readlink(filepath.Join(root, p))
		if err != nil || got != want {
			t.Errorf("%s: link %q, %v; want %q", p, got, err, want)
		}
	}
	// mtime kept.
	fi, _ := os.Stat(filepath.Join(root, "dst/a"))
	if !fi.ModTime().Equal(old) {
		t.Errorf("mtime %v, want %v", fi.ModTime(), old)
	}
	// Owners are root's without --chown.
	os.Lchown(filepath.Join(c.Root(), "src/a"), 1234, 1234)
	if err := Copy(root, "/dst2/", resolve(t, c, "src"), CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	if u, g := owner(t, filepath.Join(root, "dst2/a")); u != 0 || g != 0 {
		t.Errorf("owner %d:%d, want 0:0", u, g)
	}
}

func TestCopyChownChmod(t *testing.T) {
	c := newCtx(t, map[string]file{"d/f": {Data: "f", Mode: 0o600}, "d/l": {Link: "f"}, "d/s": {Dir: true}})
	root := t.TempDir()
	mode := os.FileMode(0o751)
	opts := CopyOptions{Chown: true, UID: 1001, GID: 1002, Mode: &mode}
	if err := Copy(root, "/new/parent/", resolve(t, c, "d"), opts); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"new", "new/parent", "new/parent/f", "new/parent/l", "new/parent/s"} {
		if u, g := owner(t, filepath.Join(root, p)); u != 1001 || g != 1002 {
			t.Errorf("%s owner %d:%d, want 1001:1002", p, u, g)
		}
	}
	for p, want := range map[string]os.FileMode{"new": 0o755, "new/parent/f": 0o751, "new/parent/s": 0o751} {
		fi, _ := os.Stat(filepath.Join(root, p))
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", p, fi.Mode().Perm(), want)
		}
	}
}

func TestCopyXattrs(t *testing.T) {
	c := newCtx(t, map[string]file{"f": {Data: "f"}})
	if err := unix.Setxattr(filepath.Join(c.Root(), "f"), "user.strata", []byte("v1"), 0); err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			t.Skip("the test directory's file system has no user xattrs")
		}
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := Copy(root, "/f", resolve(t, c, "f"), CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, err := unix.Getxattr(filepath.Join(root, "f"), "user.strata", buf)
	if err != nil || string(buf[:n]) != "v1" {
		t.Fatalf("xattr %q, %v", buf[:n], err)
	}
}

func TestCopyHardLinks(t *testing.T) {
	c := newCtx(t, map[string]file{"d/a": {Data: "same"}, "d/other": {Data: "o"}})
	if err := os.Link(filepath.Join(c.Root(), "d/a"), filepath.Join(c.Root(), "d/z")); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := Copy(root, "/x", resolve(t, c, "d"), CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	a, _ := os.Stat(filepath.Join(root, "x/a"))
	z, _ := os.Stat(filepath.Join(root, "x/z"))
	o, _ := os.Stat(filepath.Join(root, "x/other"))
	if !os.SameFile(a, z) || os.SameFile(a, o) {
		t.Fatal("hard links between the sources not kept")
	}
}

// A destination through a symlink of the image is followed inside root,
// never to the host.
func TestCopyDestSymlinkStaysInRoot(t *testing.T) {
	c := newCtx(t, map[string]file{"f": {Data: "payload"}, "d/g": {Data: "g"}})
	outside := t.TempDir()
	outsideFile := filepath.Join(outside, "victim")
	if err := os.WriteFile(outsideFile, []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	writeTree(t, root, map[string]file{
		"abs":          {Link: outside},                        // absolute, to a host dir
		"rel":          {Link: "../../../../../../" + outside}, // climbing
		"etc/target":   {Link: outsideFile},                    // a file dest that is a symlink
		"lib":          {Link: "usr/lib"},                      // usrmerge: followed
		"usr/lib":      {Dir: true},
		"in" + outside: {Dir: true},
	})
	// The image's view of outside: make it exist inside root too.
	if err := os.MkdirAll(filepath.Join(root, outside), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, dest := range []string{"/abs/", "/rel/", "/abs/deeper/", "/rel/d/"} {
		if err := Copy(root, dest, resolve(t, c, "f"), CopyOptions{}); err != nil {
			t.Fatalf("%s: %v", dest, err)
		}
	}
	if err := Copy(root, "/abs/", resolve(t, c, "d"), CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	readFile(t, filepath.Join(root, outside, "f"))
	readFile(t, filepath.Join(root, outside, "deeper/f"))
	readFile(t, filepath.Join(root, outside, "d/f"))
	readFile(t, filepath.Join(root, outside, "g"))
	for _, p := range []string{"f", "deeper", "d", "g"} {
		mustNotExist(t, filepath.Join(outside, p))
	}
	// A file destination that is a symlink is followed inside root, as
	// docker does: the host file is untouched, its in-root namesake
	// written.
	if err := Copy(root, "/etc/target", resolve(t, c, "f"), CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	if readFile(t, outsideFile) != "host" {
		t.Fatal("wrote through a symlink to the host")
	}
	if readFile(t, filepath.Join(root, outsideFile)) != "payload" {
		t.Fatal("the symlink's target inside root was not written")
	}
	if fi, _ := os.Lstat(filepath.Join(root, "etc/target")); fi.Mode()&os.ModeSymlink == 0 {
		t.Fatal("etc/target symlink replaced, want it followed")
	}
	// Climbing relative links, and a link to a link, stay inside too.
	writeTree(t, root, map[string]file{
		"etc/up":    {Link: "../../../../../../../../" + outsideFile + "2"},
		"etc/chain": {Link: "up"},
		"etc/loop":  {Link: "loop"},
	})
	if err := Copy(root, "/etc/chain", resolve(t, c, "f"), CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	mustNotExist(t, outsideFile+"2")
	if readFile(t, filepath.Join(root, outsideFile+"2")) != "payload" {
		t.Fatal("relative link target inside root not written")
	}
	err := Copy(root, "/etc/loop", resolve(t, c, "f"), CopyOptions{})
	wantErr(t, err, "too many levels of symbolic links")
	if err := Copy(root, "/lib/", resolve(t, c, "f"), CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	readFile(t, filepath.Join(root, "usr/lib/f"))
	// A dangling symlink on the way: an error, nothing outside.
	writeTree(t, root, map[string]file{"dangling": {Link: filepath.Join(outside, "nothere")}})
	err = Copy(root, "/dangling/x/", resolve(t, c, "f"), CopyOptions{})
	wantErr(t, err, "not a directory")
	mustNotExist(t, filepath.Join(outside, "nothere"))
}

func TestCopyMergeAndConflicts(t *testing.T) {
	c := newCtx(t, map[string]file{"d/sub/f": {Data: "f"}, "d/x": {Data: "x"}})
	if err := unix.Mkfifo(filepath.Join(c.Root(), "d/pipe"), 0o640); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	writeTree(t, root, map[string]file{
		"srv/app/old": {Data: "old"},
		"srv/other":   {Dir: true},
		"srv/app/sub": {Link: "../other"}, // an image symlink to a directory: merged into
		"app":         {Link: "/srv/app"},
		"file/sub":    {Data: "in the way"},
		"dirdest/x/y": {Data: "a directory where a file goes"},
	})
	if err := Copy(root, "/app", resolve(t, c, "d"), CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	readFile(t, filepath.Join(root, "srv/app/old"))
	if readFile(t, filepath.Join(root, "srv/other/f")) != "f" || readFile(t, filepath.Join(root, "srv/app/x")) != "x" {
		t.Fatal("not merged through the image's symlinks")
	}
	if fi, err := os.Lstat(filepath.Join(root, "srv/app/pipe")); err != nil || fi.Mode() != os.ModeNamedPipe|0o640 {
		t.Fatalf("fifo: %v %v", fi, err)
	}
	err := Copy(root, "/file", resolve(t, c, "d"), CopyOptions{})
	wantErr(t, err, "/file/sub exists and is not a directory")
	err = Copy(root, "/dirdest", resolve(t, c, "d"), CopyOptions{})
	wantErr(t, err, "cannot replace a directory with a file")
}

func TestDigestXattr(t *testing.T) {
	c := newCtx(t, map[string]file{"d/f": {Data: "f"}})
	before := digestOf(t, c, "d")
	if err := unix.Setxattr(filepath.Join(c.Root(), "d/f"), "user.strata", []byte("v"), 0); err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			t.Skip("the test directory's file system has no user xattrs")
		}
		t.Fatal(err)
	}
	if digestOf(t, c, "d") == before {
		t.Fatal("an extended attribute did not change the digest")
	}
}
