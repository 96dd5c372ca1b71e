package integration

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Containment tests: the daemon must never read or write outside its
// layer directories, whatever symlinks or hard links the layers hold.
//
// The kernel resolves symlinks in a caller's path itself: `cat MNT/etc/x`
// with a merged symlink `etc -> /elsewhere` reads /elsewhere/x in the
// caller's namespace, which is ordinary symlink behaviour and not an
// escape (so is writing through MNT/x/.. when x is a symlink). What these
// tests pin down is the daemon's side: a symlink inside a layer is shown
// as a symlink and never used as a directory by the daemon, and no
// operation reaching the daemon through a directory it already resolved
// follows a symlink planted in the upper layer (a hostile upper) or
// swapped into a lower one. Each test snapshots a sentinel directory
// "outside" and everything else below the test's base directory other
// than the upper and work dirs, and fails on any change there.

const ctOutsideMark = "OUTSIDE"

// ctSeedOutside fills the sentinel directory with files an escaping daemon
// would read or overwrite.
func ctSeedOutside(t *testing.T, l *layout) {
	t.Helper()
	writeTree(t, l.outside, map[string]string{
		"passwd":   ctOutsideMark + " passwd\n",
		"secret":   ctOutsideMark + " secret\n",
		"f":        ctOutsideMark + " f\n",
		"g":        ctOutsideMark + " g\n",
		"bait":     ctOutsideMark + " bait\n",
		"sub/":     "",
		"b/f":      ctOutsideMark + " b/f\n",
		"b/g":      ctOutsideMark + " b/g\n",
		"b/bait":   ctOutsideMark + " b/bait\n",
		"b/sub/":   "",
		"q/file":   ctOutsideMark + " q/file\n",
		"q/bait":   ctOutsideMark + " q/bait\n",
		"deep/x/y": ctOutsideMark + " deep\n",
	})
}

// ctSnapshot snapshots everything below the base directory except the
// writable layer, the work dir and the mountpoint.
func ctSnapshot(t *testing.T, l *layout) map[string]string {
	t.Helper()
	return treeSnapshot(t, l.base, "upper", "work", "mnt")
}

// ctCheckUnchanged fails if anything outside the upper and work dirs
// changed since before.
func ctCheckUnchanged(t *testing.T, l *layout, before map[string]string) {
	t.Helper()
	if d := diffSnapshots(before, ctSnapshot(t, l)); len(d) > 0 {
		t.Errorf("changes outside the upper and work dirs:\n%s", strings.Join(d, "\n"))
	}
}

// ctCheckAlive fails if the daemon no longer answers new requests.
func ctCheckAlive(t *testing.T, l *layout) {
	t.Helper()
	if _, err := os.ReadDir(l.mnt); err != nil {
		t.Errorf("daemon no longer answers (readdir of the root): %v", err)
	}
}

// TestContainmentLayerSymlinks mounts layers holding absolute and relative
// escaping symlinks and hard links, and checks that the merged view shows
// each symlink verbatim (never merged as a directory), that operations on
// the symlinks and hard links act on the link itself inside the upper
// layer, and that nothing outside the layers changes.
func TestContainmentLayerSymlinks(t *testing.T) {
	needFUSE(t)
	l := newLayout(t, 2)
	ctSeedOutside(t, l)
	links := map[string]string{ // merged name -> target, top layer's
		"etc":         l.outside,
		"p/q/x":       "../../..",
		"d/link":      "../../outside",
		"d/deeplink":  "../../../../../../../../../../etc",
		"root":        "/",
		"ud":          l.outside,
		"rel-outside": "../outside",
	}
	writeTree(t, l.lowers[0], map[string]string{
		"etc":         "->" + links["etc"],
		"p/q/x":       "->" + links["p/q/x"],
		"d/link":      "->" + links["d/link"],
		"d/deeplink":  "->" + links["d/deeplink"],
		"root":        "->" + links["root"],
		"rel-outside": "->" + links["rel-outside"],
		"h1":          "hard\n",
	})
	// etc, x, ud and rel-outside are real directories in the layer below
	// the one holding the symlink; merging them would be the bug.
	writeTree(t, l.lowers[1], map[string]string{
		"etc/passwd":    "LOWER passwd\n",
		"etc/a":         "LOWER a\n",
		"p/q/x/f":       "LOWER x/f\n",
		"d/real":        "LOWER real\n",
		"ud/only-lower": "LOWER ud/only-lower\n",
		"rel-outside/f": "LOWER rel/f\n",
	})
	writeTree(t, l.upper, map[string]string{"ud": "->" + links["ud"]})
	if err := os.Link(filepath.Join(l.lowers[0], "h1"), filepath.Join(l.lowers[0], "h2")); err != nil {
		t.Fatal(err)
	}
	// A lower file hard-linked to a file of the sentinel dir: writes
	// through the mount must copy up, never write the shared inode.
	haveOutsideLink := os.Link(filepath.Join(l.outside, "secret"), filepath.Join(l.lowers[0], "hl")) == nil

	before := ctSnapshot(t, l)
	mountFUSE(t, l.mnt, "-o", l.opts(), l.mnt)
	m := func(p string) string { return filepath.Join(l.mnt, p) }

	// Every symlink shows as a symlink with its target verbatim.
	for name, target := range links {
		fi, err := os.Lstat(m(name))
		if err != nil {
			t.Errorf("lstat %s: %v", name, err)
			continue
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("lstat %s: got mode %v, want a symlink", name, fi.Mode())
		}
		if got, err := os.Readlink(m(name)); err != nil || got != target {
			t.Errorf("readlink %s: got %q, %v; want %q", name, got, err, target)
		}
	}
	ents, err := os.ReadDir(l.mnt)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if _, ok := links[e.Name()]; ok && e.Type()&os.ModeSymlink == 0 {
			t.Errorf("readdir of the root: %s has type %v, want a symlink", e.Name(), e.Type())
		}
	}
	// The caller follows etc to the sentinel dir, which has no "a": a
	// merged etc directory would show the lower layer's etc/a instead.
	if _, err := os.Stat(m("etc/a")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat etc/a (etc is a symlink to a dir without a): got %v, want ENOENT", err)
	}
	if got, err := os.ReadFile(m("etc/passwd")); err != nil || !strings.HasPrefix(string(got), ctOutsideMark) {
		t.Errorf("read etc/passwd following the symlink: got %q, %v; want the symlink target's file", got, err)
	}
	if _, err := os.Stat(m("ud/only-lower")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat ud/only-lower (upper symlink over a lower dir): got %v, want ENOENT", err)
	}
	if _, err := os.Stat(m("p/q/x/f")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat p/q/x/f (x -> ../../.. resolves to the mount root): got %v, want ENOENT", err)
	}

	// Operations on the symlinks themselves (never following them). Only
	// links pointing into the sentinel dir are touched.
	if err := unix.Lchown(m("etc"), 4242, 4242); err == nil {
		var st unix.Stat_t
		if err := unix.Lstat(m("etc"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFLNK || st.Uid != 4242 {
			t.Errorf("after lchown etc: lstat got mode %#o uid %d (%v), want a symlink owned by 4242", st.Mode, st.Uid, err)
		}
	} else {
		t.Logf("lchown etc: %v", err)
	}
	ts := []unix.Timespec{unix.NsecToTimespec(1e9), unix.NsecToTimespec(2e9)}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, m("d/link"), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Logf("lutimes d/link: %v", err)
	}
	if err := unix.Lsetxattr(m("rel-outside"), "trusted.strata-test", []byte("v"), 0); err != nil {
		t.Logf("lsetxattr rel-outside: %v", err)
	}
	if err := os.Rename(m("ud"), m("ud-moved")); err != nil {
		t.Errorf("rename ud: %v", err)
	} else if got, err := os.Readlink(m("ud-moved")); err != nil || got != links["ud"] {
		t.Errorf("readlink ud-moved after rename: got %q, %v; want %q", got, err, links["ud"])
	}
	if err := os.Rename(m("rel-outside"), m("rel-moved")); err != nil {
		t.Errorf("rename rel-outside: %v", err)
	} else if got, err := os.Readlink(m("rel-moved")); err != nil || got != links["rel-outside"] {
		t.Errorf("readlink rel-moved after rename: got %q, %v; want %q", got, err, links["rel-outside"])
	}
	if err := unix.Linkat(unix.AT_FDCWD, m("etc"), unix.AT_FDCWD, m("etc-link"), 0); err != nil {
		t.Logf("link etc (no follow): %v", err)
	} else if fi, err := os.Lstat(m("etc-link")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("hard link of the symlink etc: got %v, %v; want a symlink", fi, err)
	}
	if err := os.Remove(m("p/q/x")); err != nil {
		t.Errorf("unlink p/q/x: %v", err)
	}
	if err := os.WriteFile(m("d/new"), []byte("new\n"), 0o644); err != nil {
		t.Errorf("create d/new beside the symlinks: %v", err)
	}

	// Hard links: writing through one name copies up; the lower inode,
	// shared with another lower name or a sentinel file, is untouched.
	if err := os.WriteFile(m("h1"), []byte("rewritten\n"), 0o644); err != nil {
		t.Errorf("write h1: %v", err)
	}
	procCheckContent(t, m("h1"), "rewritten\n")
	if haveOutsideLink {
		procCheckContent(t, m("hl"), ctOutsideMark+" secret\n")
		f, err := os.OpenFile(m("hl"), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Errorf("open hl for append: %v", err)
		} else {
			if _, err := f.WriteString("appended\n"); err != nil {
				t.Errorf("append hl: %v", err)
			}
			f.Close()
		}
		if err := os.Chmod(m("hl"), 0o600); err != nil {
			t.Errorf("chmod hl: %v", err)
		}
		if err := os.Chown(m("hl"), 4243, 4243); err != nil {
			t.Errorf("chown hl: %v", err)
		}
		if err := unix.Setxattr(m("hl"), "user.strata-test", []byte("v"), 0); err != nil {
			t.Logf("setxattr hl: %v", err)
		}
		procCheckContent(t, m("hl"), ctOutsideMark+" secret\nappended\n")
	} else {
		t.Log("sentinel and layers on different filesystems: no cross hard link case")
	}

	ctCheckAlive(t, l)
	unmountT(t, l.mnt)
	ctCheckUnchanged(t, l, before)
}

// ctOp is an operation reaching the daemon through a directory fd of a
// merged directory opened before the test plants a symlink. run returns
// the operation's error (failing is allowed) and reports as test failures
// only what must never be seen, such as data from outside the layers.
type ctOp struct {
	name string
	run  func(t *testing.T, dirfd int) error
}

// ctOps are the operations, covering reads, copy-up, creation, whiteouts
// and metadata changes.
func ctOps() []ctOp {
	return []ctOp{
		{"read", func(t *testing.T, dirfd int) error {
			fd, err := unix.Openat(dirfd, "f", unix.O_RDONLY, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			b := make([]byte, 4096)
			n, err := unix.Read(fd, b)
			if err != nil {
				return err
			}
			if bytes.Contains(b[:n], []byte(ctOutsideMark)) {
				t.Errorf("read f: got %q from outside the layers, want the lower file", b[:n])
			} else if string(b[:n]) != "lower f\n" {
				t.Errorf("read f: got %q, want %q", b[:n], "lower f\n")
			}
			return nil
		}},
		{"readdir", func(t *testing.T, dirfd int) error {
			fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY, 0)
			if err != nil {
				return err
			}
			f := os.NewFile(uintptr(fd), "a/b")
			defer f.Close()
			names, err := f.Readdirnames(-1)
			for _, n := range names {
				if n == "bait" {
					t.Errorf("readdir a/b: got names %q, including one from outside the layers", names)
				}
			}
			return err
		}},
		{"write-copyup", func(t *testing.T, dirfd int) error {
			return ctWriteAt(dirfd, "f", unix.O_WRONLY|unix.O_TRUNC, "changed\n")
		}},
		{"append-copyup", func(t *testing.T, dirfd int) error {
			return ctWriteAt(dirfd, "f", unix.O_WRONLY|unix.O_APPEND, "appended\n")
		}},
		{"ftruncate", func(t *testing.T, dirfd int) error {
			fd, err := unix.Openat(dirfd, "f", unix.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			return unix.Ftruncate(fd, 1)
		}},
		{"create", func(t *testing.T, dirfd int) error {
			return ctWriteAt(dirfd, "new", unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, "created\n")
		}},
		{"create-no-excl", func(t *testing.T, dirfd int) error {
			return ctWriteAt(dirfd, "new", unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC, "created\n")
		}},
		{"mkdir", func(t *testing.T, dirfd int) error { return unix.Mkdirat(dirfd, "newdir", 0o755) }},
		{"mknod-fifo", func(t *testing.T, dirfd int) error { return unix.Mknodat(dirfd, "fifo", unix.S_IFIFO|0o644, 0) }},
		{"symlink", func(t *testing.T, dirfd int) error { return unix.Symlinkat("target", dirfd, "sl") }},
		{"link", func(t *testing.T, dirfd int) error { return unix.Linkat(dirfd, "f", dirfd, "f2", 0) }},
		{"unlink", func(t *testing.T, dirfd int) error { return unix.Unlinkat(dirfd, "g", 0) }},
		{"rmdir", func(t *testing.T, dirfd int) error { return unix.Unlinkat(dirfd, "sub", unix.AT_REMOVEDIR) }},
		{"rename", func(t *testing.T, dirfd int) error { return unix.Renameat(dirfd, "g", dirfd, "g2") }},
		{"chmod", func(t *testing.T, dirfd int) error { return unix.Fchmodat(dirfd, "f", 0o600, 0) }},
		{"chown", func(t *testing.T, dirfd int) error {
			return unix.Fchownat(dirfd, "f", 4242, 4242, unix.AT_SYMLINK_NOFOLLOW)
		}},
		{"utimes", func(t *testing.T, dirfd int) error {
			ts := []unix.Timespec{unix.NsecToTimespec(1e9), unix.NsecToTimespec(2e9)}
			return unix.UtimesNanoAt(dirfd, "f", ts, unix.AT_SYMLINK_NOFOLLOW)
		}},
		{"setxattr", func(t *testing.T, dirfd int) error {
			fd, err := unix.Openat(dirfd, "f", unix.O_RDONLY, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			return unix.Fsetxattr(fd, "user.strata-test", []byte("v"), 0)
		}},
	}
}

// ctWriteAt opens name below dirfd with flags, writes s and closes it.
func ctWriteAt(dirfd int, name string, flags int, s string) error {
	fd, err := unix.Openat(dirfd, name, flags|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	_, werr := unix.Write(fd, []byte(s))
	cerr := unix.Close(fd)
	if werr != nil {
		return werr
	}
	return cerr
}

// ctLeafNames are the names the operations create, change or remove in
// a/b; the "leaf" plant puts a symlink to the sentinel dir at each.
var ctLeafNames = []string{"f", "g", "sub", "new", "newdir", "fifo", "sl", "f2", "g2"}

// TestContainmentHostileUpper plants symlinks to outside the layers in
// the upper dir while the daemon holds the merged directory a/b (lower
// only, or upper a/ plus lower a/b), then runs each operation through a
// directory fd of a/b. Copy-up and creation must fail or stay inside the
// upper dir; reads must never return outside data; nothing outside the
// upper and work dirs may change; the daemon must keep answering.
func TestContainmentHostileUpper(t *testing.T) {
	needFUSE(t)
	plants := []struct {
		name      string
		upperDirs []string // created in the upper dir before mounting
		plant     func(t *testing.T, l *layout)
	}{
		{"abs-symlink-at-a", nil, func(t *testing.T, l *layout) {
			ctSymlink(t, l.outside, filepath.Join(l.upper, "a"))
		}},
		{"rel-symlink-at-a", nil, func(t *testing.T, l *layout) {
			ctSymlink(t, "../outside", filepath.Join(l.upper, "a"))
		}},
		{"dotdot-symlink-at-a", nil, func(t *testing.T, l *layout) {
			ctSymlink(t, "..", filepath.Join(l.upper, "a"))
		}},
		{"abs-symlink-at-a-b", []string{"a"}, func(t *testing.T, l *layout) {
			ctSymlink(t, l.outside, filepath.Join(l.upper, "a", "b"))
		}},
		{"symlinks-at-leaves", []string{"a/b"}, func(t *testing.T, l *layout) {
			for _, n := range ctLeafNames {
				ctSymlink(t, filepath.Join(l.outside, n), filepath.Join(l.upper, "a", "b", n))
			}
		}},
	}
	for _, pl := range plants {
		for _, op := range ctOps() {
			t.Run(pl.name+"/"+op.name, func(t *testing.T) {
				l := newLayout(t, 1)
				ctSeedOutside(t, l)
				writeTree(t, l.lowers[0], map[string]string{
					"a/b/f":    "lower f\n",
					"a/b/g":    "lower g\n",
					"a/b/sub/": "",
				})
				for _, d := range pl.upperDirs {
					if err := os.MkdirAll(filepath.Join(l.upper, d), 0o755); err != nil {
						t.Fatal(err)
					}
				}
				mountFUSE(t, l.mnt, "-o", l.opts(), l.mnt)
				dirfd, closeDir := ctOpenWarm(t, l)
				pl.plant(t, l)
				before := ctSnapshot(t, l)

				err := op.run(t, dirfd)
				ctCheckAlive(t, l)
				closeDir()
				unmountT(t, l.mnt)
				ctCheckUnchanged(t, l, before)
				t.Logf("%s after planting %s: error %v; upper now holds %s", op.name, pl.name, err, ctListing(t, l))
			})
		}
	}
}

// ctListing lists the entries below the upper dir with their types, for
// logs; the sentinel dir's path shows as OUTSIDE.
func ctListing(t *testing.T, l *layout) string {
	t.Helper()
	dir := l.upper
	var out []string
	_ = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == dir {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			rel += " -> " + strings.Replace(target, l.outside, ctOutsideMark, 1)
		case fi.IsDir():
			rel += "/"
		}
		out = append(out, rel)
		return nil
	})
	return "[" + strings.Join(out, ", ") + "]"
}

// ctSymlink creates a symlink, failing the test on error.
func ctSymlink(t *testing.T, target, name string) {
	t.Helper()
	if err := os.Symlink(target, name); err != nil {
		t.Fatal(err)
	}
}

// ctOpenWarm opens the merged a/b as a directory and looks up the names
// the operations use, so the kernel holds them resolved through the
// daemon before any symlink is planted. It returns the fd and a function
// closing it once (also run on cleanup).
func ctOpenWarm(t *testing.T, l *layout) (int, func()) {
	t.Helper()
	return ctOpenDir(t, filepath.Join(l.mnt, "a", "b"), ctLeafNames...)
}

// ctOpenDir opens dir, looks up names below it, and returns the fd and a
// function closing it once (also run on cleanup).
func ctOpenDir(t *testing.T, dir string, names ...string) (int, func()) {
	t.Helper()
	dirfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	closed := false
	closeDir := func() {
		if !closed {
			closed = true
			unix.Close(dirfd)
		}
	}
	t.Cleanup(closeDir)
	for _, n := range names {
		var st unix.Stat_t
		_ = unix.Fstatat(dirfd, n, &st, unix.AT_SYMLINK_NOFOLLOW)
	}
	return dirfd, closeDir
}

// TestContainmentLowerSwap replaces a lower directory the daemon already
// resolved with a symlink to the sentinel dir, as a hostile lower layer
// could, then reads and creates through a directory fd of the merged
// directory: the daemon must not return outside data or write outside.
func TestContainmentLowerSwap(t *testing.T) {
	needFUSE(t)
	ops := []ctOp{
		{"read", func(t *testing.T, dirfd int) error {
			fd, err := unix.Openat(dirfd, "file", unix.O_RDONLY, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			b := make([]byte, 4096)
			n, err := unix.Read(fd, b)
			if bytes.Contains(b[:max(n, 0)], []byte(ctOutsideMark)) {
				t.Errorf("read p/q/file: got %q from outside the layers", b[:n])
			}
			return err
		}},
		{"readdir", func(t *testing.T, dirfd int) error {
			fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY, 0)
			if err != nil {
				return err
			}
			f := os.NewFile(uintptr(fd), "p/q")
			defer f.Close()
			names, err := f.Readdirnames(-1)
			for _, n := range names {
				if n == "bait" {
					t.Errorf("readdir p/q: got names %q, including one from outside the layers", names)
				}
			}
			return err
		}},
		{"write-copyup", func(t *testing.T, dirfd int) error {
			return ctWriteAt(dirfd, "file", unix.O_WRONLY|unix.O_APPEND, "appended\n")
		}},
		{"create", func(t *testing.T, dirfd int) error {
			return ctWriteAt(dirfd, "new", unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, "created\n")
		}},
		{"unlink", func(t *testing.T, dirfd int) error { return unix.Unlinkat(dirfd, "file", 0) }},
	}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			l := newLayout(t, 1)
			ctSeedOutside(t, l)
			writeTree(t, l.lowers[0], map[string]string{"p/q/file": "lower file\n"})
			mountFUSE(t, l.mnt, "-o", l.opts(), l.mnt)
			dirfd, closeDir := ctOpenDir(t, filepath.Join(l.mnt, "p", "q"), "file", "new", "bait")
			if err := os.Rename(filepath.Join(l.lowers[0], "p"), filepath.Join(l.lowers[0], "p-moved")); err != nil {
				t.Fatal(err)
			}
			ctSymlink(t, l.outside, filepath.Join(l.lowers[0], "p"))
			before := treeSnapshot(t, l.outside)

			err := op.run(t, dirfd)
			t.Logf("%s after swapping lower p for a symlink: %v", op.name, err)
			ctCheckAlive(t, l)
			closeDir()
			unmountT(t, l.mnt)
			if d := diffSnapshots(before, treeSnapshot(t, l.outside)); len(d) > 0 {
				t.Errorf("changes in the sentinel dir:\n%s", strings.Join(d, "\n"))
			}
		})
	}
}

// TestContainmentHostileWorkdir leaves in the work dir what a crashed or
// hostile earlier user could: entries named like leftover scratch files
// that are symlinks to the sentinel dir, or directories holding such
// symlinks. Mounting (which may clean the work dir), writing and
// unmounting must not follow them: nothing outside the layers changes.
func TestContainmentHostileWorkdir(t *testing.T) {
	needFUSE(t)
	l := newLayout(t, 1)
	ctSeedOutside(t, l)
	writeTree(t, l.lowers[0], map[string]string{"a/f": "lower f\n"})
	for _, d := range []string{"#strata.1.1", "#strata.2.2", "work", "index"} {
		writeTree(t, l.work, map[string]string{
			d + "/link":     "->" + l.outside,
			d + "/sub/link": "->" + filepath.Join(l.outside, "sub"),
			d + "/f":        "->" + filepath.Join(l.outside, "f"),
		})
		ctSymlink(t, l.outside, filepath.Join(l.work, d+"-symlink"))
	}
	ctSymlink(t, l.outside, filepath.Join(l.work, "#strata.3.3"))
	before := ctSnapshot(t, l)
	mountFUSE(t, l.mnt, "-o", l.opts(), l.mnt)
	if err := os.WriteFile(filepath.Join(l.mnt, "a", "f"), []byte("changed\n"), 0o644); err != nil {
		t.Errorf("write a/f (copy-up through the work dir): %v", err)
	}
	if err := os.Remove(filepath.Join(l.mnt, "a", "f")); err != nil {
		t.Errorf("unlink a/f: %v", err)
	}
	if err := os.Remove(filepath.Join(l.mnt, "a")); err != nil {
		t.Errorf("rmdir a (emptied by unlinking a/f): %v", err)
	}
	ctCheckAlive(t, l)
	unmountT(t, l.mnt)
	ctCheckUnchanged(t, l, before)
}

// TestContainmentSwappedLayerRoots replaces a layer's root directory,
// after mounting, with a symlink to the sentinel dir. The daemon must
// keep using the layers it mounted (or fail), never the sentinel dir.
func TestContainmentSwappedLayerRoots(t *testing.T) {
	needFUSE(t)
	for _, which := range []string{"upper", "lower"} {
		t.Run(which, func(t *testing.T) {
			l := newLayout(t, 1)
			ctSeedOutside(t, l)
			writeTree(t, l.lowers[0], map[string]string{"top.txt": "lower top\n"})
			mountFUSE(t, l.mnt, "-o", l.opts(), l.mnt)
			procCheckContent(t, filepath.Join(l.mnt, "top.txt"), "lower top\n")
			root := l.upper
			if which == "lower" {
				root = l.lowers[0]
			}
			if err := os.Rename(root, root+"-moved"); err != nil {
				t.Fatal(err)
			}
			ctSymlink(t, l.outside, root)
			before := treeSnapshot(t, l.outside)

			// Names never looked up before the swap: a daemon resolving
			// layer paths afresh would find the sentinel's files.
			for _, name := range []string{"secret", "bait"} {
				if b, err := os.ReadFile(filepath.Join(l.mnt, name)); err == nil && bytes.Contains(b, []byte(ctOutsideMark)) {
					t.Errorf("read %s after swapping the %s root: got %q from outside the layers", name, which, b)
				}
			}
			if ents, err := os.ReadDir(l.mnt); err == nil {
				for _, e := range ents {
					if e.Name() == "bait" || e.Name() == "secret" {
						t.Errorf("readdir after swapping the %s root lists %s from outside the layers", which, e.Name())
					}
				}
			}
			if err := os.WriteFile(filepath.Join(l.mnt, "new"), []byte("new\n"), 0o644); err != nil {
				t.Logf("create new after swapping the %s root: %v", which, err)
			}
			if err := os.WriteFile(filepath.Join(l.mnt, "top.txt"), []byte("changed\n"), 0o644); err != nil {
				t.Logf("write top.txt after swapping the %s root: %v", which, err)
			}
			if err := os.Remove(filepath.Join(l.mnt, "top.txt")); err != nil {
				t.Logf("remove top.txt after swapping the %s root: %v", which, err)
			}
			ctCheckAlive(t, l)
			unmountT(t, l.mnt)
			if d := diffSnapshots(before, treeSnapshot(t, l.outside)); len(d) > 0 {
				t.Errorf("changes in the sentinel dir:\n%s", strings.Join(d, "\n"))
			}
		})
	}
}
