package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/ovl"
)

// redirectTestLowers are two lower layers (top first) in the kernel's
// format, as an upper committed as a lower would be: L1 renamed L2's
// olddir to c (a redirect) and chmodded c/m without copying its data (a
// metacopy file whose data is L2's olddir/m).
func redirectTestLowers(t *testing.T) (l1, l2 string) {
	t.Helper()
	l1, l2 = t.TempDir(), t.TempDir()
	writeTestBuild(t, l2, []writeTestNode{
		wtFile("a/f1", "one"),
		wtFile("a/gone", "gone in L1"),
		wtFile("a/sub/f2", "two"),
		wtSymlink("a/sub/link", "../f1"),
		wtFile("big", "lowerdata"),
		wtFile("olddir/m", "metadata in L1, data in L2"),
		wtFile("olddir/n", "n"),
		wtDir("c"), // hidden by L1's redirected c
		wtFile("c/hidden", "hidden"),
	})
	writeTestBuild(t, l1, []writeTestNode{
		wtFile("a/f3", "three"),
		wtWhiteout("a/gone"),
		wtWhiteout("olddir"),
		wtDir("c").withXattr(ovl.XattrRedirect, "/olddir"),
		wtFile("c/m", "").withMode(0o600).withXattr(ovl.XattrMetacopy, ""),
	})
	redirectTestSparse(t, filepath.Join(l1, "c/m"), int64(len("metadata in L1, data in L2")))
	return l1, l2
}

// redirectTestSparse gives the (metacopy) file p size bytes of holes, as
// the kernel's metacopy copy-up does, keeping its mtime.
func redirectTestSparse(t *testing.T, p string, size int64) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	if err := unix.UtimesNano(p, []unix.Timespec{st.Atim, st.Mtim}); err != nil {
		t.Fatal(err)
	}
}

// TestWriteRedirectMetacopy writes an upper that kernel overlayfs (with
// redirect_dir=on,metacopy=on) would have made by `mv a b`, `mv c d`,
// edits in b, and `chmod 600 big; chown 1:2 big`, built by hand.
func TestWriteRedirectMetacopy(t *testing.T) {
	l1, l2 := redirectTestLowers(t)
	upper := t.TempDir()
	writeTestBuild(t, upper, []writeTestNode{
		wtWhiteout("a"),
		wtDir("b").withXattr(ovl.XattrRedirect, "/a").withXattr(ovl.XattrOrigin, "12345678"),
		wtWhiteout("b/f1"),
		wtFile("b/new", "new"),
		wtWhiteout("c"),
		wtDir("d").withXattr(ovl.XattrRedirect, "/c"),
		wtFile("big", "").withMode(0o600).withOwner(1, 2).withXattr(ovl.XattrMetacopy, "").withXattr("user.kept", "k"),
	})
	redirectTestSparse(t, filepath.Join(upper, "big"), int64(len("lowerdata")))
	lowers := []string{l1, l2}

	_, _, tarball := writeTestWrite(t, upper, WriteOptions{Lowers: lowers})
	var got []string
	for _, e := range writeTestRead(t, tarball) {
		line := fmt.Sprintf("%s %o %d:%d", e.hdr.Name, e.hdr.Mode, e.hdr.Uid, e.hdr.Gid)
		switch e.hdr.Typeflag {
		case tar.TypeReg:
			line += fmt.Sprintf(" %q", e.data)
		case tar.TypeSymlink:
			line += " -> " + e.hdr.Linkname
		}
		for k := range e.hdr.PAXRecords {
			if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				if ovl.IsHiddenXattr(name) {
					t.Errorf("%s: overlay xattr %s in the layer", e.hdr.Name, name)
				}
				line += " " + name
			}
		}
		got = append(got, line)
	}
	want := []string{
		`./ 755 0:0`,
		`.wh.a 0 0:0 ""`,
		`.wh.c 0 0:0 ""`,
		`b/ 755 0:0`,
		`b/.wh..wh..opq 0 0:0 ""`,
		`b/f3 644 0:0 "three"`,
		`b/new 644 0:0 "new"`,
		`b/sub/ 755 0:0`,
		`b/sub/f2 644 0:0 "two"`,
		`b/sub/link 777 0:0 -> ../f1`,
		`big 600 1:2 "lowerdata" user.kept`,
		`d/ 755 0:0`,
		`d/.wh..wh..opq 0 0:0 ""`,
		`d/m 600 0:0 "metadata in L1, data in L2"`,
		`d/n 644 0:0 "n"`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("layer entries:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}

	changes, err := Changes(upper, lowers)
	if err != nil {
		t.Fatal(err)
	}
	var gotc []string
	for _, c := range changes {
		gotc = append(gotc, fmt.Sprintf("%c %s", c.Kind, c.Path))
	}
	wantc := []string{"D /a", "A /b", "A /b/f3", "A /b/new", "A /b/sub", "A /b/sub/f2", "A /b/sub/link",
		"C /big", "D /c", "A /d", "A /d/m", "A /d/n"}
	if !slices.Equal(gotc, wantc) {
		t.Errorf("changes:\n got %v\nwant %v", gotc, wantc)
	}

	// Without its lowers, the upper cannot be written.
	if _, err := Write(context.Background(), &bytes.Buffer{}, upper, WriteOptions{}); err == nil {
		t.Error("Write of a redirecting upper without lowers: no error")
	}
}

// TestWriteMetacopyNoData: a metacopy file whose data no lower holds is
// an error, not an empty file.
func TestWriteMetacopyNoData(t *testing.T) {
	lower, upper := t.TempDir(), t.TempDir()
	writeTestBuild(t, lower, []writeTestNode{wtFile("other", "x")})
	writeTestBuild(t, upper, []writeTestNode{wtFile("f", "").withXattr(ovl.XattrMetacopy, "")})
	redirectTestSparse(t, filepath.Join(upper, "f"), 10)
	_, err := Write(context.Background(), &bytes.Buffer{}, upper, WriteOptions{Lowers: []string{lower}})
	if err == nil || !strings.Contains(err.Error(), "no lower layer holds its data") {
		t.Errorf("Write: %v, want the missing data named", err)
	}
}

// redirectTestTree describes the tree under root, one line a path: type,
// mode, owner, and for non-directories size, mtime and contents; xattrs
// outside the overlay's. Directories' mtimes are left out: renames
// change them, as they change the parent's in any filesystem.
func redirectTestTree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		line := fmt.Sprintf("%s %o %d:%d", rel, st.Mode, st.Uid, st.Gid)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" %d %d.%09d %x", st.Size, st.Mtim.Sec, st.Mtim.Nsec, sha256.Sum256(b))
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" %d.%09d -> %s", st.Mtim.Sec, st.Mtim.Nsec, target)
		}
		buf := make([]byte, 4096)
		n, err := unix.Llistxattr(p, buf)
		if err == nil {
			names := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
			slices.Sort(names)
			for _, x := range names {
				if x != "" && !ovl.IsHiddenXattr(x) && !strings.HasPrefix(x, "security.") {
					line += " " + x
				}
			}
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// redirectTestMount mounts kernel overlayfs with opts on a new directory,
// unmounted when the test ends, even if it fails.
func redirectTestMount(t *testing.T, opts string) string {
	t.Helper()
	m := t.TempDir()
	if err := unix.Mount("overlay", m, "overlay", 0, opts); err != nil {
		t.Skipf("kernel overlayfs (%s): %v", opts, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(m, 0); err != nil && err != unix.EINVAL {
			t.Errorf("unmount %s: %v", m, err)
		}
	})
	return m
}

// TestWriteKernelRedirectMetacopy is the oracle test: kernel overlayfs
// (redirect_dir=on,metacopy=on) makes an upper by renaming lower
// directories and changing the metadata of lower files; the layer Write
// makes of it, applied over the same lowers, must show the tree the
// kernel showed.
func TestWriteKernelRedirectMetacopy(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts kernel overlayfs")
	}
	l1, l2 := redirectTestLowers(t)
	writeTestBuild(t, t.TempDir(), nil) // skips where it must
	upper, work := t.TempDir(), t.TempDir()
	m := redirectTestMount(t, fmt.Sprintf("lowerdir=%s:%s,upperdir=%s,workdir=%s,redirect_dir=on,metacopy=on,index=off", l1, l2, upper, work))
	sh := func(script string) {
		t.Helper()
		cmd := exec.Command("sh", "-ec", script)
		cmd.Dir = m
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", script, err, out)
		}
	}
	sh(`
		mv a newname                    # a lower directory, merged from both lowers
		mv newname/sub newname/sub2     # within the renamed one: a relative redirect
		echo added > newname/added
		rm newname/f1
		mkdir x
		mv c x/c2                       # L1's redirected directory, moved: absolute
		chmod 600 big                   # metadata only
		chown 1:2 x/c2/n
		touch -d @1234567890 x/c2/m     # a lower metacopy file, metadata again
	`)
	before := redirectTestTree(t, m)
	t.Logf("the kernel's tree:\n%s", strings.Join(before, "\n"))
	if err := unix.Unmount(m, 0); err != nil {
		t.Fatal(err)
	}

	// The kernel wrote what this test is about.
	for p, x := range map[string]string{"newname": ovl.XattrRedirect, "newname/sub2": ovl.XattrRedirect, "x/c2": ovl.XattrRedirect, "big": ovl.XattrMetacopy, "x/c2/n": ovl.XattrMetacopy} {
		if _, err := unix.Lgetxattr(filepath.Join(upper, p), x, nil); err != nil {
			t.Fatalf("the kernel's upper has no %s on %s: %v", x, p, err)
		}
	}

	lowers := []string{l1, l2}
	_, _, tarball := writeTestWrite(t, upper, WriteOptions{Lowers: lowers})
	for _, e := range writeTestRead(t, tarball) {
		for k := range e.hdr.PAXRecords {
			if ovl.IsHiddenXattr(strings.TrimPrefix(k, "SCHILY.xattr.")) {
				t.Errorf("%s: overlay record %s in the layer", e.hdr.Name, k)
			}
		}
	}
	applied := t.TempDir()
	if _, err := Apply(context.Background(), applied, bytes.NewReader(tarball), ApplyOptions{Lowers: lowers}); err != nil {
		t.Fatal(err)
	}
	// The applied layer holds no redirect or metacopy record, and hides
	// those of the lowers that it replaces: mounted neither following
	// redirects nor metacopy, the stack must show the same tree.
	m2 := redirectTestMount(t, fmt.Sprintf("lowerdir=%s:%s:%s,redirect_dir=nofollow,metacopy=off", applied, l1, l2))
	after := redirectTestTree(t, m2)
	if !slices.Equal(before, after) {
		t.Errorf("tree of the kernel mount, and of the layer applied over the lowers:\n%s", redirectTestDiff(before, after))
	}

	// diff agrees: the renamed directories are added with all they
	// hold, the metacopy file modified.
	changes, err := Changes(upper, lowers)
	if err != nil {
		t.Fatal(err)
	}
	var gotc []string
	for _, c := range changes {
		gotc = append(gotc, fmt.Sprintf("%c %s", c.Kind, c.Path))
	}
	wantc := []string{"D /a", "C /big", "D /c", "A /newname", "A /newname/added", "A /newname/f3",
		"A /newname/sub2", "A /newname/sub2/f2", "A /newname/sub2/link", "A /x", "A /x/c2", "A /x/c2/m", "A /x/c2/n"}
	if !slices.Equal(gotc, wantc) {
		t.Errorf("changes:\n got %v\nwant %v", gotc, wantc)
	}
}

func redirectTestDiff(a, b []string) string {
	var s strings.Builder
	for _, l := range a {
		if !slices.Contains(b, l) {
			fmt.Fprintf(&s, "- %s\n", l)
		}
	}
	for _, l := range b {
		if !slices.Contains(a, l) {
			fmt.Fprintf(&s, "+ %s\n", l)
		}
	}
	return s.String()
}
