//go:build linux

package cow_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/cow"
	"github.com/strata-fs/strata/ovl"
)

// Owner and times given to every copy-up source (and its parents) before
// the copy, so that a copy that loses them is caught.
const (
	srcUid, srcGid = 1234, 5678
)

var (
	srcAtime = time.Date(2011, 1, 2, 3, 4, 5, 600700800, time.UTC)
	srcMtime = time.Date(2012, 2, 3, 4, 5, 6, 700800900, time.UTC)
)

// TestCopyUp copies up every file type from the bottom of two lowers and
// checks that the copy keeps what it must and drops what it must.
func TestCopyUp(t *testing.T) {
	needRoot(t, "chown, mknod and trusted.* xattrs of copy-up sources")
	const rel = "p/q/obj"
	tests := []struct {
		name    string
		src     fixtureEntry
		dataLen int64
		// userXattrs: the type can carry user.* xattrs (files, dirs).
		userXattrs bool
		wantData   string // for regular files
	}{
		{name: "regular", src: file(rel, "hello\x00world").perm(0o4755), dataLen: -1, userXattrs: true, wantData: "hello\x00world"},
		{name: "regular setgid", src: file(rel, "g").perm(0o2750), dataLen: -1, userXattrs: true, wantData: "g"},
		{name: "regular dataLen 0", src: file(rel, "dropped").perm(0o640), dataLen: 0, userXattrs: true, wantData: ""},
		{name: "empty regular", src: file(rel, "").perm(0o600), dataLen: -1, userXattrs: true, wantData: ""},
		{name: "symlink", src: symlink(rel, "../some/target")},
		{name: "fifo", src: fifo(rel).perm(0o620)},
		{name: "socket", src: fixtureEntry{path: rel, kind: kSock, mode: 0o755}},
		{name: "char device", src: fixtureEntry{path: rel, kind: kChar, dev: unix.Mkdev(1, 3), mode: 0o666}},
		{name: "block device", src: fixtureEntry{path: rel, kind: kBlock, dev: unix.Mkdev(7, 200), mode: 0o660}},
		{name: "directory", src: dir(rel).perm(0o1777), userXattrs: true},
		{name: "setgid directory", src: dir(rel).perm(0o2755), userXattrs: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.src.with("trusted.test", "t-value").
				with("trusted.overlay.test", "not copied").
				with(ovl.XattrOrigin, "12345678")
			if tc.userXattrs {
				src = src.with("user.test", "u-value").
					with("user.overlay.test", "not copied").
					with(ovl.XattrFuseOverlayfsOpaque, "n")
			}
			lower := []fixtureEntry{dir("p").perm(0o750), dir("p/q").perm(0o2775), src}
			if tc.src.kind == kDir {
				lower = append(lower, file(rel+"/child", "c"), file(rel+"/sub/grandchild", "g"))
			}
			f := newFixture(t, nil, []fixtureEntry{file("p/other", "o")}, lower)
			// Owner and times, parents included, set after the build.
			for _, p := range []string{"p", "p/q", rel} {
				lp := filepath.Join(f.lowers[1], p)
				if err := unix.Lchown(lp, srcUid, srcGid); err != nil {
					t.Fatal(err)
				}
			}
			if tc.src.kind != kSymlink {
				// chown cleared setuid/setgid: give the mode back.
				if err := unix.Chmod(filepath.Join(f.lowers[1], rel), tc.src.mode); err != nil {
					t.Fatal(err)
				}
			}
			setTreeTimes(t, f.lowers[1], srcAtime, srcMtime)

			e := f.mustLookup(rel)
			before := e
			if e.Layer != 2 {
				t.Fatalf("Lookup(%q).Layer = %d, want 2", rel, e.Layer)
			}
			if err := f.s.CopyUp(rel, &e, tc.dataLen); err != nil {
				t.Fatalf("CopyUp: %v", err)
			}
			if !e.InUpper() {
				t.Errorf("after CopyUp entry layer is %d, want the upper", e.Layer)
			}
			if e.Ino != before.Ino {
				t.Errorf("CopyUp changed Entry.Ino from %d to %d", before.Ino, e.Ino)
			}
			st, err := f.upperLstat(rel)
			if err != nil {
				t.Fatalf("no copy in the upper: %v", err)
			}
			if e.Stat != st {
				t.Errorf("Entry.Stat after CopyUp is not the upper's stat")
			}
			checkSameMeta(t, rel, &st, &before.Stat, tc.src.kind != kSymlink)
			if st.Rdev != before.Stat.Rdev {
				t.Errorf("%s: rdev %d, want %d", rel, st.Rdev, before.Stat.Rdev)
			}
			up := filepath.Join(f.upper, rel)
			switch tc.src.kind {
			case kFile:
				b, err := os.ReadFile(up)
				if err != nil {
					t.Fatal(err)
				}
				if string(b) != tc.wantData {
					t.Errorf("copied data %q, want %q", b, tc.wantData)
				}
			case kSymlink:
				if target, err := os.Readlink(up); err != nil || target != tc.src.content {
					t.Errorf("copied symlink: %q, %v; want %q", target, err, tc.src.content)
				}
			case kDir:
				ents, err := os.ReadDir(up)
				if err != nil || len(ents) != 0 {
					t.Errorf("copied dir holds %v (%v); want it empty: contents are not copied", ents, err)
				}
			}

			wantX := map[string]string{"trusted.test": "t-value"}
			if tc.userXattrs {
				wantX["user.test"] = "u-value"
			}
			for _, x := range []string{"trusted.test", "user.test", "trusted.overlay.test", "user.overlay.test", ovl.XattrFuseOverlayfsOpaque} {
				v, err := lgetxattr(up, x)
				want, ok := wantX[x]
				switch {
				case ok && (err != nil || v != want):
					t.Errorf("xattr %s of the copy: %q, %v; want %q", x, v, err, want)
				case !ok && err == nil:
					t.Errorf("xattr %s copied up (%q); overlay xattrs must not be", x, v)
				}
			}
			if v, err := lgetxattr(up, ovl.XattrOrigin); err == nil && v == "12345678" {
				t.Errorf("%s copied from the lower", ovl.XattrOrigin)
			}

			// Parents were copied first from the topmost lower holding
			// them (p from lower 1, p/q from lower 2), keeping their
			// metadata, and their times survive the copy-ups made inside
			// them.
			for i, p := range []string{"p", "p/q"} {
				pst, err := f.upperLstat(p)
				if err != nil {
					t.Fatalf("parent %s not copied up: %v", p, err)
				}
				var lst unix.Stat_t
				if err := unix.Lstat(filepath.Join(f.lowers[i], p), &lst); err != nil {
					t.Fatal(err)
				}
				checkSameMeta(t, p, &pst, &lst, true)
				if pst.Mtim != lst.Mtim {
					t.Errorf("parent %s: upper mtime %v, lower mtime %v", p, pst.Mtim, lst.Mtim)
				}
			}
			if ents, _ := os.ReadDir(filepath.Join(f.upper, "p")); len(ents) != 1 {
				t.Errorf("upper p holds %d entries, want only q: siblings are not copied", len(ents))
			}
			if tc.src.kind == kDir {
				// The copy still merges with the lower's contents.
				f.checkTree([]string{"p/", `p/other "o"`, "p/q/", "p/q/obj/", `p/q/obj/child "c"`,
					"p/q/obj/sub/", `p/q/obj/sub/grandchild "g"`})
			}

			// The merged view is unchanged, down to the inode number.
			after := f.mustLookup(rel)
			if !after.InUpper() || after.Ino != before.Ino {
				t.Errorf("Lookup after CopyUp: layer %d ino %d, want upper and ino %d", after.Layer, after.Ino, before.Ino)
			}
			engineTree(t, f.s)
			f.checkWorkEmpty()

			// A second copy-up is a no-op.
			if err := f.s.CopyUp(rel, &after, -1); err != nil {
				t.Errorf("second CopyUp: %v", err)
			}
		})
	}
}

// checkSameMeta compares the metadata copy-up must keep.
func checkSameMeta(t *testing.T, rel string, got, want *unix.Stat_t, withAtime bool) {
	t.Helper()
	if got.Mode != want.Mode {
		t.Errorf("%s: mode %o, want %o", rel, got.Mode, want.Mode)
	}
	if got.Uid != want.Uid || got.Gid != want.Gid {
		t.Errorf("%s: owner %d:%d, want %d:%d", rel, got.Uid, got.Gid, want.Uid, want.Gid)
	}
	if got.Mtim != want.Mtim {
		t.Errorf("%s: mtime %v, want %v", rel, got.Mtim, want.Mtim)
	}
	if withAtime && got.Atim != want.Atim {
		t.Errorf("%s: atime %v, want %v", rel, got.Atim, want.Atim)
	}
}

func lgetxattr(p, name string) (string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Lgetxattr(p, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// TestCopyUpSparse checks that holes stay holes: a 64 MiB file with two
// small data extents stays a few blocks after copy-up.
func TestCopyUpSparse(t *testing.T) {
	const size = 64 << 20
	f := newFixture(t, nil, []fixtureEntry{dir("d")})
	lp := filepath.Join(f.lowers[0], "d/sparse")
	lf, err := os.Create(lp)
	if err != nil {
		t.Fatal(err)
	}
	head, tail := bytes.Repeat([]byte("h"), 4096), bytes.Repeat([]byte("t"), 100)
	if _, err := lf.WriteAt(head, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := lf.WriteAt(tail, 32<<20); err != nil {
		t.Fatal(err)
	}
	if err := lf.Truncate(size); err != nil {
		t.Fatal(err)
	}
	lf.Close()
	var lst unix.Stat_t
	if err := unix.Stat(lp, &lst); err != nil {
		t.Fatal(err)
	}
	if lst.Blocks*512 >= 1<<20 {
		t.Skipf("the lower filesystem did not keep the file sparse (%d blocks)", lst.Blocks)
	}

	e := f.mustLookup("d/sparse")
	if err := f.s.CopyUp("d/sparse", &e, -1); err != nil {
		t.Fatal(err)
	}
	st, err := f.upperLstat("d/sparse")
	if err != nil {
		t.Fatal(err)
	}
	if st.Size != size {
		t.Errorf("copy size %d, want %d", st.Size, size)
	}
	if st.Blocks > 4*lst.Blocks+64 {
		t.Errorf("copy has %d blocks (%d KiB) for a lower of %d blocks: holes were filled", st.Blocks, st.Blocks/2, lst.Blocks)
	}
	b, err := os.ReadFile(filepath.Join(f.upper, "d/sparse"))
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	copy(want, head)
	copy(want[32<<20:], tail)
	if !bytes.Equal(b, want) {
		t.Errorf("copied sparse file content differs from the lower's")
	}
	f.checkWorkEmpty()
}

// TestCopyUpHardLink checks that a lower file with two names is copied up
// on its own (copy-up breaks the link, as overlayfs without index does)
// and the other name still shows the lower data.
func TestCopyUpHardLink(t *testing.T) {
	f := newFixture(t, nil, []fixtureEntry{file("a", "data"), dir("d"), dir("gone")})
	for _, n := range []string{"b", "d/c", "gone/x"} {
		if err := os.Link(filepath.Join(f.lowers[0], "a"), filepath.Join(f.lowers[0], n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.remove("gone/x"); err != nil {
		t.Fatal(err)
	}
	e := f.mustLookup("a")
	if err := f.s.CopyUp("a", &e, -1); err != nil {
		t.Fatal(err)
	}
	f.checkTree([]string{`a "data"`, `b "data"`, "d/", `d/c "data"`, "gone/"})
	// Every name the merged view showed is now one upper inode, with
	// the merged inode number the lower one had.
	var first unix.Stat_t
	for i, n := range []string{"a", "b", "d/c"} {
		ne := f.mustLookup(n)
		if !ne.InUpper() || ne.Ino != e.Ino {
			t.Errorf("%s: layer %d ino %d, want the upper and ino %d", n, ne.Layer, ne.Ino, e.Ino)
		}
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(f.upper, n), &st); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = st
		} else if st.Ino != first.Ino {
			t.Errorf("upper %s is inode %d, upper a is %d: the link broke", n, st.Ino, first.Ino)
		}
	}
	// The copy has the three names the merged view shows and the links
	// directory's; st_nlink counts the names, the removed gone/x no
	// more, as kernel overlayfs with index=on does.
	if first.Nlink != 4 {
		t.Errorf("upper nlink %d, want 4", first.Nlink)
	}
	nlink := func(e cow.Entry) int64 { return e.Nlink() }
	if n := nlink(f.mustLookup("a")); n != 3 {
		t.Errorf("nlink %d, want 3", n)
	}
	if err := f.remove("b"); err != nil {
		t.Fatal(err)
	}
	if n := nlink(f.mustLookup("a")); n != 2 {
		t.Errorf("after removing b: nlink %d, want 2", n)
	}
	f.checkWorkEmpty()
	f.checkKernelAgrees()
}

// TestRemoveHardLink checks that removing one name of a lower hard link
// leaves the others one inode, with the link count down by one.
func TestRemoveHardLink(t *testing.T) {
	f := newFixture(t, nil, []fixtureEntry{file("a", "data")})
	if err := os.Link(filepath.Join(f.lowers[0], "a"), filepath.Join(f.lowers[0], "b")); err != nil {
		t.Fatal(err)
	}
	if err := f.remove("a"); err != nil {
		t.Fatal(err)
	}
	f.checkTree([]string{`b "data"`})
	if b := f.mustLookup("b"); !b.InUpper() || b.Nlink() != 1 {
		t.Errorf("b: layer %d nlink %d%+d, want the upper and 1", b.Layer, b.Stat.Nlink, b.NlinkAdjust)
	}
	f.checkWorkEmpty()
	f.checkKernelAgrees()
}

// TestCopyUpMerged checks a copy-up from a middle layer, under a
// directory merged from several layers, and that the copy of the
// directory still merges with the lowers.
func TestCopyUpMerged(t *testing.T) {
	f := newFixture(t, nil,
		[]fixtureEntry{file("d/a", "a1")},
		[]fixtureEntry{file("d/b", "b2"), file("d/sub/s", "s2")},
		[]fixtureEntry{file("d/c", "c3"), file("d/sub/t", "t3")})
	for _, rel := range []string{"d/b", "d/sub/t"} {
		e := f.mustLookup(rel)
		if err := f.s.CopyUp(rel, &e, -1); err != nil {
			t.Fatalf("CopyUp(%s): %v", rel, err)
		}
	}
	f.checkTree([]string{"d/", `d/a "a1"`, `d/b "b2"`, `d/c "c3"`, "d/sub/", `d/sub/s "s2"`, `d/sub/t "t3"`})
	for _, c := range []struct {
		rel    string
		layer  int
		lowers []int
	}{{"d", 0, []int{1, 2, 3}}, {"d/sub", 0, []int{2, 3}}, {"d/b", 0, nil}, {"d/sub/t", 0, nil}, {"d/a", 1, nil}} {
		e := f.mustLookup(c.rel)
		if e.Layer != c.layer || !slices.Equal(lowerLayers(e), c.lowers) {
			t.Errorf("%s: layer %d lowers %v, want %d %v", c.rel, e.Layer, lowerLayers(e), c.layer, c.lowers)
		}
	}
	// The upper sub came from layer 2, the topmost holding it.
	var st2 unix.Stat_t
	if err := unix.Lstat(filepath.Join(f.lowers[1], "d/sub"), &st2); err != nil {
		t.Fatal(err)
	}
	if e := f.mustLookup("d/sub"); e.Ino != st2.Ino {
		t.Errorf("d/sub ino %d, want layer 2's %d", e.Ino, st2.Ino)
	}
	f.checkWorkEmpty()
}

// TestCopyUpCleansWork checks that New clears what a crashed copy-up
// left in the work dir, and leaves other names alone.
func TestCopyUpCleansWork(t *testing.T) {
	f := newFixture(t, nil, []fixtureEntry{file("a", "a")})
	left := filepath.Join(f.work, "#strata.1.1")
	if err := os.MkdirAll(filepath.Join(left, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(f.work, "keep")
	if err := os.WriteFile(other, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := cow.New(cow.Options{Lower: f.lowers, Upper: f.upper, Work: f.work})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := os.Lstat(left); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("New left %s in place: %v", left, err)
	}
	if _, err := os.Lstat(other); err != nil {
		t.Errorf("New removed %s: %v", other, err)
	}
}

// TestCopyUpConcurrent copies up many files of one lower directory tree
// at once, as the FUSE layer may (it serialises copy-ups of one node, not
// of its parents): every copy-up must succeed, the parents be made once,
// and nothing be left in the work dir by the copy-ups that lost a race.
func TestCopyUpConcurrent(t *testing.T) {
	const n = 16
	var lower []fixtureEntry
	for i := range n {
		lower = append(lower, file(fmt.Sprintf("a/b/c/f%02d", i), fmt.Sprint(i)))
	}
	for round := range 5 {
		f := newFixture(t, nil, lower)
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rel := fmt.Sprintf("a/b/c/f%02d", i)
				e, err := f.lookup(rel)
				if err == nil {
					err = f.s.CopyUp(rel, &e, -1)
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("round %d: CopyUp f%02d: %v", round, i, err)
			}
		}
		for i := range n {
			if e := f.mustLookup(fmt.Sprintf("a/b/c/f%02d", i)); !e.InUpper() {
				t.Errorf("round %d: f%02d not in the upper after CopyUp", round, i)
			}
		}
		f.checkWorkEmpty()
		if t.Failed() {
			return
		}
	}
}

// TestUpperHardLinkJoined checks that an upper file given a second name
// is reached by the links directory, and that its entry there goes with
// its last name, or at the next mount where a rename over it took that.
func TestUpperHardLinkJoined(t *testing.T) {
	f := newFixture(t, []fixtureEntry{file("a", "data"), file("c", "other"), file("d", "d")}, []fixtureEntry{dir("x")})
	for _, p := range [][2]string{{"a", "b"}, {"c", "c2"}} {
		old := f.mustLookup(p[0])
		e, err := f.s.Link(p[0], &old, "", p[1])
		if err != nil {
			t.Fatal(err)
		}
		if !e.Linked || e.Nlink() != 2 {
			t.Errorf("%s after link: linked %v nlink %d, want the links directory and 2", p[1], e.Linked, e.Nlink())
		}
	}
	links := func() []string {
		ents, _ := os.ReadDir(filepath.Join(f.work, "strata.links"))
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return names
	}
	if n := len(links()); n != 2 {
		t.Fatalf("links directory holds %v, want 2 entries", links())
	}
	if err := errors.Join(f.remove("a"), f.remove("b")); err != nil {
		t.Fatal(err)
	}
	if n := len(links()); n != 1 {
		t.Errorf("after removing both names of a: links directory holds %v, want 1 entry", links())
	}
	// c's names go by renames over them, which leave the entry until the
	// next mount.
	if err := errors.Join(f.rename("d", "c", 0), f.remove("c2")); err != nil {
		t.Fatal(err)
	}
	s, err := cow.New(cow.Options{Lower: f.lowers, Upper: f.upper, Work: f.work})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if n := len(links()); n != 0 {
		t.Errorf("after a remount: links directory holds %v, want none", links())
	}
	f.checkTree([]string{`c "d"`, "x/"})
}

// TestMetacopyInKernelUpper checks that a lower layer that was an upper
// of kernel overlayfs (its root carries the overlay's uuid) has its
// metacopy files followed even when they are not sparse (a small one
// whose xattrs took a block of their own), and that one in a layer
// without the mark, sparse, is followed too.
func TestMetacopyInKernelUpper(t *testing.T) {
	needRoot(t, "trusted.* xattrs")
	f := newFixture(t, nil, []fixtureEntry{file("f", "XXXX"), file("g", "")}, []fixtureEntry{file("f", "data"), file("g", "gggg")})
	if err := os.Truncate(filepath.Join(f.lowers[0], "g"), 4); err != nil { // sparse
		t.Fatal(err)
	}
	f.markTop([][2]string{{"", ovl.XattrUUID}, {"f", ovl.XattrMetacopy}, {"g", ovl.XattrMetacopy}})
	f.checkData("f", "data")
	f.checkData("g", "gggg")
	if e := f.mustLookup("f"); !e.Metacopy() || e.Data.Layer != 2 {
		t.Errorf("f: data %+v, want layer 2's", e.Data)
	}
}

// TestMetacopyInImpureDir checks that a metacopy file that is not sparse,
// in a layer without the uuid (an upper of a kernel before 6.6), is
// followed in a directory the kernel marked impure, and not elsewhere.
func TestMetacopyInImpureDir(t *testing.T) {
	needRoot(t, "trusted.* xattrs")
	f := newFixture(t, nil,
		[]fixtureEntry{file("d/h", "XXXX"), file("e/h", "YYYY")},
		[]fixtureEntry{file("d/h", "dddd"), file("e/h", "eeee")})
	f.markTop([][2]string{{"d", ovl.XattrImpure}, {"d/h", ovl.XattrMetacopy}, {"e/h", ovl.XattrMetacopy}})
	f.checkData("d/h", "dddd")
	f.checkData("e/h", "YYYY") // no mark says e holds copy-ups: a plain file
}

// markTop sets the empty xattrs marks (path, name) on entries of the top
// lower layer, as kernel overlayfs writes them in an upper, and opens the
// fixture's stack anew, which reads the layers' marks when it opens them.
func (f *fixture) markTop(marks [][2]string) {
	f.t.Helper()
	for _, m := range marks {
		if err := unix.Lsetxattr(filepath.Join(f.lowers[0], m[0]), m[1], nil, 0); err != nil {
			f.t.Fatal(err)
		}
	}
	f.reopen()
}

// reopen closes the fixture's stack and opens its layers anew, as a
// remount does.
func (f *fixture) reopen() {
	f.t.Helper()
	if err := f.s.Close(); err != nil {
		f.t.Fatal(err)
	}
	s, err := cow.New(cow.Options{Lower: f.lowers, Upper: f.upper, Work: f.work})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { s.Close() })
	f.s = s
}

// TestCopyUpHardLinkInRenamedDir checks that a copy-up of one name of a
// lower hard link beneath a renamed directory links the other name beneath
// it too, though neither is at its lower path.
func TestCopyUpHardLinkInRenamedDir(t *testing.T) {
	needRoot(t, "kernel-format whiteouts")
	f := newFixture(t, nil, []fixtureEntry{file("e/a", "data")})
	if err := os.Link(filepath.Join(f.lowers[0], "e/a"), filepath.Join(f.lowers[0], "e/e")); err != nil {
		t.Fatal(err)
	}
	if err := f.rename("e", "y", 0); err != nil {
		t.Fatal(err)
	}
	e := f.mustLookup("y/a")
	if err := f.s.CopyUp("y/a", &e, -1); err != nil {
		t.Fatal(err)
	}
	var a, b unix.Stat_t
	if err := errors.Join(unix.Lstat(filepath.Join(f.upper, "y/a"), &a), unix.Lstat(filepath.Join(f.upper, "y/e"), &b)); err != nil {
		t.Fatalf("upper: %v (both names must be linked)", err)
	}
	if a.Ino != b.Ino {
		t.Errorf("upper y/a is inode %d, y/e %d: want one", a.Ino, b.Ino)
	}
	f.checkTree([]string{"y/", `y/a "data"`, `y/e "data"`})
	f.checkKernelAgrees()
}

// TestCopyUpHardLinkInRenamedDirAfterRemount: a directory renamed before
// a remount holds one name of a lower hard link; a copy-up through the
// other name, before any lookup beneath the renamed directory, must link
// the name there into the upper too, or a commit of the upper (which does
// not look names up) would write it with the old data.
func TestCopyUpHardLinkInRenamedDirAfterRemount(t *testing.T) {
	needRoot(t, "kernel-format whiteouts")
	f := newFixture(t, nil, []fixtureEntry{file("e/a", "data")})
	for _, n := range []string{"e/h", "b"} {
		if err := os.Link(filepath.Join(f.lowers[0], "e/a"), filepath.Join(f.lowers[0], n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.mkdir("d"); err != nil {
		t.Fatal(err)
	}
	if err := f.rename("e", "d/y", 0); err != nil {
		t.Fatal(err)
	}
	f.reopen()
	if err := f.copyUp("b"); err != nil {
		t.Fatal(err)
	}
	var b unix.Stat_t
	if err := unix.Lstat(filepath.Join(f.upper, "b"), &b); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"d/y/a", "d/y/h"} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(f.upper, n), &st); err != nil {
			t.Errorf("upper %s after a copy-up through b: %v (every name must be linked)", n, err)
		} else if st.Ino != b.Ino {
			t.Errorf("upper %s is inode %d, b %d: want one", n, st.Ino, b.Ino)
		}
	}
	f.checkKernelAgrees()
}
