package integration

// Hard links inside a lower layer stay one inode through copy-up (issue 11
// §3), side by side with kernel overlayfs mounted with the inode index
// (index=on, with redirect_dir=on,metacopy=on as strata's defaults).

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func hlLayers(t testing.TB, dirs []string) {
	t.Helper()
	writeTree(t, dirs[0], map[string]string{"a/f": "one\n", "b/": "", "c/g": "single\n"})
	if err := os.Link(filepath.Join(dirs[0], "a/f"), filepath.Join(dirs[0], "b/f")); err != nil {
		t.Fatal(err)
	}
}

// hlLinked asserts that the names are one inode with nlink links on every
// side.
func hlLinked(p *ovPair, nlink uint64, names ...string) {
	p.t.Helper()
	for _, s := range p.sides {
		var first unix.Stat_t
		for i, n := range names {
			var st unix.Stat_t
			if err := unix.Lstat(s.path(n), &st); err != nil {
				p.t.Fatalf("%s: lstat %s: %v", s.name, n, err)
			}
			if st.Nlink != nlink {
				p.t.Errorf("%s: %s has nlink %d, want %d", s.name, n, st.Nlink, nlink)
			}
			if i == 0 {
				first = st
			} else if st.Ino != first.Ino || st.Dev != first.Dev {
				p.t.Errorf("%s: %s is inode %d, %s inode %d: want one inode (hard links)", s.name, names[0], first.Ino, n, st.Ino)
			}
		}
	}
}

// hlMode asserts the permission bits of rel on every side.
func hlMode(p *ovPair, rel string, mode uint32) {
	p.t.Helper()
	mcStat(p, rel, fmt.Sprintf("mode %04o", mode), func(st *unix.Stat_t) bool { return st.Mode&0o7777 == mode })
}

func TestHardlinkCopyUp(t *testing.T) {
	for _, via := range []struct{ write, other string }{{"a/f", "b/f"}, {"b/f", "a/f"}} {
		t.Run("write-via-"+via.write, func(t *testing.T) {
			p := newOvPair(t, 1, kernelIndexOpts, "", hlLayers)
			hlLinked(p, 2, "a/f", "b/f")
			p.sameTree("before a copy-up")
			p.appendFile(via.write, "two\n", 0)
			p.readFile(via.other, 0, "one\ntwo\n")
			hlLinked(p, 2, "a/f", "b/f")
			p.do("chmod("+via.other+", 0600)", 0, func(r string) error { return unix.Chmod(filepath.Join(r, via.other), 0o600) })
			hlMode(p, via.write, 0o600)
			p.sameTree("after the copy-up")
			p.remount()
			hlLinked(p, 2, "a/f", "b/f")
			p.readFile(via.write, 0, "one\ntwo\n")
			hlMode(p, via.write, 0o600)
			// A further name and a removal count in both.
			p.link(via.other, "c/f3", 0)
			hlLinked(p, 3, "a/f", "b/f", "c/f3")
			p.unlink(via.write, 0)
			hlLinked(p, 2, via.other, "c/f3")
			p.appendFile("c/f3", "three\n", 0)
			p.readFile(via.other, 0, "one\ntwo\nthree\n")
			p.remount()
			hlLinked(p, 2, via.other, "c/f3")
		})
	}
	t.Run("chmod-first", func(t *testing.T) {
		p := newOvPair(t, 1, kernelIndexOpts, "", hlLayers)
		p.do("chmod(a/f, 0640)", 0, func(r string) error { return unix.Chmod(filepath.Join(r, "a/f"), 0o640) })
		hlMode(p, "b/f", 0o640)
		hlLinked(p, 2, "a/f", "b/f")
		p.remount()
		hlMode(p, "b/f", 0o640)
		p.writeFile("b/f", "rewritten\n", 0)
		p.readFile("a/f", 0, "rewritten\n")
		hlLinked(p, 2, "a/f", "b/f")
		p.sameTree("after a write through the other name")
	})
}

// TestHardlinkTools: find -samefile, du and rsync -aH agree on the mount
// after a copy-up through one name.
func TestHardlinkTools(t *testing.T) {
	tools := needTool(t, "find", "du", "rsync")
	p := newOvPair(t, 1, kernelIndexOpts, "", hlLayers)
	p.appendFile("a/f", "two\n", 0)
	for _, s := range p.sides {
		out, err := exec.Command(tools[0], s.mnt, "-samefile", s.path("b/f")).Output()
		if err != nil {
			t.Fatalf("%s: find -samefile: %v", s.name, err)
		}
		var got []string
		for _, l := range strings.Fields(string(out)) {
			rel, _ := filepath.Rel(s.mnt, l)
			got = append(got, rel)
		}
		sort.Strings(got)
		if strings.Join(got, " ") != "a/f b/f" {
			t.Errorf("%s: find -samefile b/f: %q, want [a/f b/f]", s.name, got)
		}

		// du counts an inode once, whichever names it is given.
		out, err = exec.Command(tools[1], "-b", s.path("a/f"), s.path("b/f")).Output()
		if err != nil {
			t.Fatalf("%s: du: %v", s.name, err)
		}
		if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "8\t") {
			t.Errorf("%s: du -b a/f b/f:\n%s\nwant one line of 8 bytes: one inode", s.name, out)
		}

		dest := filepath.Join(filepath.Dir(s.mnt), "rsync-copy")
		if out, err := exec.Command(tools[2], "-aH", s.mnt+"/", dest+"/").CombinedOutput(); err != nil {
			t.Fatalf("%s: rsync -aH: %v\n%s", s.name, err, out)
		}
		var sa, sb unix.Stat_t
		if err := unix.Lstat(filepath.Join(dest, "a/f"), &sa); err != nil {
			t.Fatal(err)
		}
		if err := unix.Lstat(filepath.Join(dest, "b/f"), &sb); err != nil {
			t.Fatal(err)
		}
		if sa.Ino != sb.Ino || sa.Nlink != 2 {
			t.Errorf("%s: rsync -aH copy: a/f inode %d nlink %d, b/f inode %d: want one inode with 2 links", s.name, sa.Ino, sa.Nlink, sb.Ino)
		}
		if b, _ := os.ReadFile(filepath.Join(dest, "b/f")); string(b) != "one\ntwo\n" {
			t.Errorf("%s: rsync -aH copy: b/f holds %q, want %q", s.name, b, "one\ntwo\n")
		}
	}
}

// dpkgLayers: a package's files in a lower layer, two of them hard links
// (Debian's perl ships usr/bin/perl and usr/bin/perl5.36.0 as one inode),
// and a library installed under two names.
func dpkgLayers(t testing.TB, dirs []string) {
	t.Helper()
	writeTree(t, dirs[0], map[string]string{
		"usr/bin/perl":                       "perl 5.36.0-7\n",
		"usr/lib/x86_64-linux-gnu/libx.so.1": "libx 1\n",
		"usr/share/doc/perl/changelog":       "old\n",
		"var/lib/dpkg/info/perl.list":        "/usr/bin/perl\n/usr/bin/perl5.36.0\n",
		"opt/compat/":                        "",
	})
	for _, l := range [][2]string{
		{"usr/bin/perl", "usr/bin/perl5.36.0"},
		{"usr/lib/x86_64-linux-gnu/libx.so.1", "opt/compat/libx.so.1"},
	} {
		if err := os.Link(filepath.Join(dirs[0], l[0]), filepath.Join(dirs[0], l[1])); err != nil {
			t.Fatal(err)
		}
	}
}

// dpkgReplace does what dpkg does to install a new version of path: the new
// file is written and fsynced next to it as PATH.dpkg-new (a hard link in
// the package becomes a link to another .dpkg-new), the old one is kept as
// PATH.dpkg-tmp by a hard link, the new one renamed over, the backup
// removed.
func dpkgReplace(p *ovPair, path, content, linkTo string) {
	p.t.Helper()
	p.do(fmt.Sprintf("dpkg: unpack %s.dpkg-new", path), 0, func(r string) error {
		newp := filepath.Join(r, path+".dpkg-new")
		if linkTo != "" {
			return os.Link(filepath.Join(r, linkTo+".dpkg-new"), newp)
		}
		fh, err := os.OpenFile(newp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
		if err != nil {
			return err
		}
		_, err = fh.WriteString(content)
		if err == nil {
			err = fh.Sync()
		}
		return errors.Join(err, fh.Close())
	})
}

// dpkgCommit renames path.dpkg-new over path, keeping a backup link meanwhile.
func dpkgCommit(p *ovPair, path string) {
	p.t.Helper()
	p.link(path, path+".dpkg-tmp", 0)
	p.rename(path+".dpkg-new", path, 0)
	p.unlink(path+".dpkg-tmp", 0)
}

func TestHardlinkDpkgUpgrade(t *testing.T) {
	t.Run("both-names-replaced", func(t *testing.T) {
		p := newOvPair(t, 1, kernelIndexOpts, "", dpkgLayers)
		hlLinked(p, 2, "usr/bin/perl", "usr/bin/perl5.36.0")
		dpkgReplace(p, "usr/bin/perl", "perl 5.36.0-8\n", "")
		dpkgReplace(p, "usr/bin/perl5.36.0", "", "usr/bin/perl")
		p.link("usr/bin/perl", "usr/bin/perl.dpkg-tmp", 0)
		hlLinked(p, 3, "usr/bin/perl", "usr/bin/perl5.36.0", "usr/bin/perl.dpkg-tmp")
		p.rename("usr/bin/perl.dpkg-new", "usr/bin/perl", 0)
		p.unlink("usr/bin/perl.dpkg-tmp", 0)
		p.readFile("usr/bin/perl", 0, "perl 5.36.0-8\n")
		p.readFile("usr/bin/perl5.36.0", 0, "perl 5.36.0-7\n")
		hlLinked(p, 1, "usr/bin/perl5.36.0")
		dpkgCommit(p, "usr/bin/perl5.36.0")
		hlLinked(p, 2, "usr/bin/perl", "usr/bin/perl5.36.0")
		p.readFile("usr/bin/perl5.36.0", 0, "perl 5.36.0-8\n")
		p.sameTree("after the upgrade")
		p.remount()
		hlLinked(p, 2, "usr/bin/perl", "usr/bin/perl5.36.0")
	})
	t.Run("one-name-replaced", func(t *testing.T) {
		p := newOvPair(t, 1, kernelIndexOpts, "", dpkgLayers)
		const lib, compat = "usr/lib/x86_64-linux-gnu/libx.so.1", "opt/compat/libx.so.1"
		dpkgReplace(p, lib, "libx 2\n", "")
		p.link(lib, lib+".dpkg-tmp", 0)
		hlLinked(p, 3, lib, compat, lib+".dpkg-tmp")
		p.rename(lib+".dpkg-new", lib, 0)
		hlLinked(p, 2, compat, lib+".dpkg-tmp")
		p.unlink(lib+".dpkg-tmp", 0)
		p.readFile(lib, 0, "libx 2\n")
		p.readFile(compat, 0, "libx 1\n")
		hlLinked(p, 1, lib)
		hlLinked(p, 1, compat)
		p.appendFile(compat, "patched\n", 0)
		p.readFile(lib, 0, "libx 2\n")
		p.sameTree("after the upgrade")
		p.remount()
		p.readFile(compat, 0, "libx 1\npatched\n")
	})
}

// hlLinkLayer is a layer tar (uncompressed) in which usr/lib/pkg/libx.so
// is hard linked at usr/share/pkg/libx.so and usr/bin/x, as dpkg or a
// Dockerfile's RUN leaves a package's files.
func hlLinkLayer(t testing.TB) string {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	mtime := time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC)
	for _, h := range []tar.Header{
		{Name: "usr/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "usr/bin/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "usr/lib/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "usr/lib/pkg/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "usr/lib/pkg/libx.so", Typeflag: tar.TypeReg, Mode: 0o755, Size: 4},
		{Name: "usr/lib/pkg/other", Typeflag: tar.TypeReg, Mode: 0o644, Size: 4},
		{Name: "usr/share/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "usr/share/pkg/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "usr/share/pkg/libx.so", Typeflag: tar.TypeLink, Linkname: "usr/lib/pkg/libx.so"},
		{Name: "usr/bin/x", Typeflag: tar.TypeLink, Linkname: "usr/lib/pkg/libx.so"},
	} {
		h.ModTime, h.Format = mtime, tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			if _, err := io.WriteString(tw, "lib\n"[:h.Size]); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "pkg.tar")
	if err := os.WriteFile(file, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestHardlinkCommitRenamedDir: a directory holding one name of a lower
// hard link is renamed with mv (a redirect, no copy-up of the file), and
// the stack committed. OCI layers have no redirect, so the layer holds the
// directory whole; a stack on it must still show every name as one inode,
// and a write through one name must read through the others.
func TestHardlinkCommitRenamedDir(t *testing.T) {
	s := newCLIStore(t)
	base := s.mustLine("layer", "apply", hlLinkLayer(t))
	s.mustLine("create", "--name", "c1", base)
	mnt, w := s.mount("c1")
	if out, err := exec.Command("mv", filepath.Join(mnt, "usr/lib/pkg"), filepath.Join(mnt, "usr/lib/pkg2")).CombinedOutput(); err != nil {
		t.Fatalf("mv usr/lib/pkg usr/lib/pkg2: %v\n%s", err, out)
	}
	names := []string{"usr/lib/pkg2/libx.so", "usr/share/pkg/libx.so", "usr/bin/x"}
	hlSameInode := func(root, what string) {
		t.Helper()
		var first unix.Stat_t
		for i, n := range names {
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(root, n), &st); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if st.Nlink != 3 {
				t.Errorf("%s: %s has nlink %d, want 3", what, n, st.Nlink)
			}
			if i == 0 {
				first = st
			} else if st.Ino != first.Ino {
				t.Errorf("%s: %s is inode %d, %s inode %d: want one inode", what, names[0], first.Ino, n, st.Ino)
			}
		}
	}
	hlSameInode(mnt, "the stack renamed")
	s.unmount("c1", w)
	m := commitOutRE.FindStringSubmatch(s.must("commit", "c1"))
	if m == nil {
		t.Fatal("strata commit c1: no layer in its output")
	}
	s.mustLine("create", "--name", "c2", m[1])
	mnt2, _ := s.mount("c2")
	hlSameInode(mnt2, "a stack on the committed layer")
	if _, err := os.Lstat(filepath.Join(mnt2, "usr/lib/pkg")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("usr/lib/pkg after the rename was committed: %v, want it gone", err)
	}
	if out, err := exec.Command("find", mnt2, "-samefile", filepath.Join(mnt2, "usr/bin/x")).Output(); err != nil {
		t.Fatalf("find -samefile: %v", err)
	} else if got := strings.Count(string(out), "\n"); got != 3 {
		t.Errorf("find -samefile usr/bin/x: %d names, want 3:\n%s", got, out)
	}
	if out, err := exec.Command("sh", "-c", `echo v2 >> "$1"/usr/share/pkg/libx.so && cat "$1"/usr/lib/pkg2/libx.so "$1"/usr/bin/x`, "sh", mnt2).CombinedOutput(); err != nil {
		t.Fatalf("write through one name: %v\n%s", err, out)
	} else if want := "lib\nv2\nlib\nv2\n"; string(out) != want {
		t.Errorf("after a write through usr/share/pkg/libx.so, the other names read %q, want %q", out, want)
	}
}
