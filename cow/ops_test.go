//go:build linux

package cow_test

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/cow"
	"github.com/strata-fs/strata/ovl"
)

// Operations on a fixture, resolving their arguments as the FUSE layer
// would: every path from the root, Entry.Lowers of the parent passed on.

func (f *fixture) remove(rel string) error {
	dir, de, name := f.parent(rel)
	e, err := f.s.Lookup(dir, &de, name)
	if err != nil {
		return err
	}
	return f.s.Remove(dir, &de, name, &e)
}

func (f *fixture) rename(oldRel, newRel string, flags uint) error {
	od, ode, on := f.parent(oldRel)
	oe, err := f.s.Lookup(od, &ode, on)
	if err != nil {
		return err
	}
	nd, nde, nn := f.parent(newRel)
	var newE *cow.Entry
	if ne, err := f.s.Lookup(nd, &nde, nn); err == nil {
		newE = &ne
	} else if !errors.Is(err, unix.ENOENT) {
		return err
	}
	return f.s.Rename(od, &ode, on, &oe, nd, &nde, nn, newE, flags)
}

func (f *fixture) create(rel, content string) error {
	dir, _, name := f.parent(rel)
	fd, _, err := f.s.Create(dir, name, unix.O_WRONLY, 0o644, cow.Owner{})
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	_, err = unix.Write(fd, []byte(content))
	return err
}

func (f *fixture) mkdir(rel string) error {
	dir, _, name := f.parent(rel)
	_, err := f.s.Mkdir(dir, name, 0o755, cow.Owner{})
	return err
}

func (f *fixture) copyUp(rel string) error {
	e, err := f.lookup(rel)
	if err != nil {
		return err
	}
	return f.s.CopyUp(rel, &e, -1)
}

// upperKind describes what the upper directory itself holds at rel:
// "absent", "whiteout", "oci whiteout" (a .wh. file beside it), "file",
// "dir", "opaque dir", "symlink", ...
func (f *fixture) upperKind(rel string) string {
	st, err := f.upperLstat(rel)
	if err != nil {
		d, n := path.Split(rel)
		if _, err := f.upperLstat(d + ovl.WhiteoutPrefix + n); err == nil {
			return "oci whiteout"
		}
		return "absent"
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		if st.Rdev == 0 {
			return "whiteout"
		}
		return "chr"
	case unix.S_IFDIR:
		if v, err := lgetxattr(filepath.Join(f.upper, rel), ovl.XattrOpaque); err == nil && v == "y" {
			return "opaque dir"
		}
		if v, err := lgetxattr(filepath.Join(f.upper, rel), ovl.XattrRedirect); err == nil {
			return "redirect " + v
		}
		return "dir"
	case unix.S_IFREG:
		return "file"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	}
	return "other"
}

// opCase is one operation test: build the layers, run the ops (all but
// the last must succeed), then check the last op's error, the merged
// tree, and what the upper holds at some paths.
type opCase struct {
	name    string
	upper   []fixtureEntry
	lowers  [][]fixtureEntry
	ops     []func(f *fixture) error
	wantErr error
	tree    []string
	gone    []string
	inUpper map[string]string // path -> upperKind
}

func runOpCases(t *testing.T, tests []opCase) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			needRoot(t, "kernel-format whiteouts (mknod 0/0, trusted.* xattrs)")
			f := newFixture(t, tc.upper, tc.lowers...)
			var err error
			for i, op := range tc.ops {
				err = op(f)
				if i < len(tc.ops)-1 && err != nil {
					t.Fatalf("op %d of %d: %v\nmerged tree:\n%s", i+1, len(tc.ops), err, f.dump())
				}
			}
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("got error %v, want %v\nmerged tree:\n%s", err, tc.wantErr, f.dump())
			}
			f.checkTree(tc.tree)
			f.checkGone(tc.gone...)
			for p, want := range tc.inUpper {
				if got := f.upperKind(p); got != want {
					t.Errorf("upper holds %s at %q, want %s", got, p, want)
				}
			}
			f.checkWorkEmpty()
			f.checkKernelAgrees()
		})
	}
}

func removeOp(rel string) func(*fixture) error {
	return func(f *fixture) error { return f.remove(rel) }
}
func mkdirOp(rel string) func(*fixture) error { return func(f *fixture) error { return f.mkdir(rel) } }
func copyUpOp(rel string) func(*fixture) error {
	return func(f *fixture) error { return f.copyUp(rel) }
}
func createOp(rel, content string) func(*fixture) error {
	return func(f *fixture) error { return f.create(rel, content) }
}
func renameOp(oldRel, newRel string, flags uint) func(*fixture) error {
	return func(f *fixture) error { return f.rename(oldRel, newRel, flags) }
}

func TestRemove(t *testing.T) {
	runOpCases(t, []opCase{
		{
			name:    "lower file leaves a char 0/0 whiteout",
			lowers:  [][]fixtureEntry{{file("a", "a"), file("b", "b")}},
			ops:     []func(*fixture) error{removeOp("a")},
			tree:    []string{`b "b"`},
			gone:    []string{"a"},
			inUpper: map[string]string{"a": "whiteout"},
		},
		{
			name:    "file of a lower subdir copies the dir up",
			lowers:  [][]fixtureEntry{{file("d/a", "a"), file("d/b", "b")}},
			ops:     []func(*fixture) error{removeOp("d/a")},
			tree:    []string{"d/", `d/b "b"`},
			inUpper: map[string]string{"d": "dir", "d/a": "whiteout", "d/b": "absent"},
		},
		{
			name:    "upper-only file leaves nothing",
			upper:   []fixtureEntry{file("u", "u")},
			lowers:  [][]fixtureEntry{{file("a", "a")}},
			ops:     []func(*fixture) error{removeOp("u")},
			tree:    []string{`a "a"`},
			inUpper: map[string]string{"u": "absent"},
		},
		{
			name:    "copied-up file leaves a whiteout",
			lowers:  [][]fixtureEntry{{file("a", "a")}},
			ops:     []func(*fixture) error{copyUpOp("a"), removeOp("a")},
			tree:    []string{},
			inUpper: map[string]string{"a": "whiteout"},
		},
		{
			name:    "upper file over a deeper lower leaves a whiteout",
			upper:   []fixtureEntry{file("a", "upper")},
			lowers:  [][]fixtureEntry{{file("x", "x")}, {file("a", "bottom")}},
			ops:     []func(*fixture) error{removeOp("a")},
			tree:    []string{`x "x"`},
			inUpper: map[string]string{"a": "whiteout"},
		},
		{
			name:    "non-empty lower dir",
			lowers:  [][]fixtureEntry{{file("d/x", "x")}},
			ops:     []func(*fixture) error{removeOp("d")},
			wantErr: unix.ENOTEMPTY,
			tree:    []string{"d/", `d/x "x"`},
			inUpper: map[string]string{"d": "absent"},
		},
		{
			name:    "merged dir with a lower child",
			upper:   []fixtureEntry{dir("d")},
			lowers:  [][]fixtureEntry{{file("d/x", "x")}},
			ops:     []func(*fixture) error{removeOp("d")},
			wantErr: unix.ENOTEMPTY,
			tree:    []string{"d/", `d/x "x"`},
		},
		{
			name:    "lower dir emptied in the merged view",
			lowers:  [][]fixtureEntry{{file("d/x", "x")}, {file("d/y", "y"), file("d/sub/z", "z")}},
			ops:     []func(*fixture) error{removeOp("d/x"), removeOp("d/sub/z"), removeOp("d/sub"), removeOp("d/y"), removeOp("d")},
			tree:    []string{},
			gone:    []string{"d", "d/x", "d/y"},
			inUpper: map[string]string{"d": "whiteout"},
		},
		{
			name:    "empty lower dir",
			lowers:  [][]fixtureEntry{{dir("e")}},
			ops:     []func(*fixture) error{removeOp("e")},
			tree:    []string{},
			inUpper: map[string]string{"e": "whiteout"},
		},
		{
			name:    "upper-only empty dir",
			upper:   []fixtureEntry{dir("e")},
			lowers:  [][]fixtureEntry{{file("a", "a")}},
			ops:     []func(*fixture) error{removeOp("e")},
			tree:    []string{`a "a"`},
			inUpper: map[string]string{"e": "absent"},
		},
		{
			name:    "upper-only dir emptied of its own files",
			lowers:  [][]fixtureEntry{{file("a", "a")}},
			ops:     []func(*fixture) error{mkdirOp("n"), createOp("n/f", "f"), removeOp("n/f"), removeOp("n")},
			tree:    []string{`a "a"`},
			inUpper: map[string]string{"n": "absent"},
		},
		{
			name:   "opaque dir made over a whiteout",
			lowers: [][]fixtureEntry{{file("d/x", "x")}},
			ops: []func(*fixture) error{removeOp("d/x"), removeOp("d"), mkdirOp("d"),
				createOp("d/n", "n"), removeOp("d/n"), removeOp("d")},
			tree:    []string{},
			inUpper: map[string]string{"d": "whiteout"},
		},
		{
			name:    "symlink and fifo leave whiteouts",
			lowers:  [][]fixtureEntry{{file("a", "a"), symlink("l", "a"), fifo("p")}},
			ops:     []func(*fixture) error{removeOp("l"), removeOp("p")},
			tree:    []string{`a "a"`},
			inUpper: map[string]string{"l": "whiteout", "p": "whiteout"},
		},
	})
}

func TestMkdirOverWhiteout(t *testing.T) {
	needRoot(t, "kernel-format whiteouts")
	f := newFixture(t, nil, []fixtureEntry{file("d/old1", "1"), file("d/sub/old2", "2"), file("keep", "k")})
	for _, rel := range []string{"d/old1", "d/sub/old2", "d/sub", "d"} {
		if err := f.remove(rel); err != nil {
			t.Fatalf("Remove(%s): %v", rel, err)
		}
	}
	if err := f.mkdir("d"); err != nil {
		t.Fatal(err)
	}
	if got := f.upperKind("d"); got != "opaque dir" {
		t.Errorf("upper d is a %s, want an opaque dir (%s=y)", got, ovl.XattrOpaque)
	}
	d := f.mustLookup("d")
	if !d.InUpper() || d.Lowers != nil {
		t.Errorf("Lookup(d): layer %d lowers %v, want the upper and no lowers", d.Layer, d.Lowers)
	}
	f.checkTree([]string{"d/", `keep "k"`})
	f.checkGone("d/old1", "d/sub")
	if err := f.create("d/new", "n"); err != nil {
		t.Fatal(err)
	}
	if err := f.mkdir("d/sub"); err != nil {
		t.Fatal(err)
	}
	if got := f.upperKind("d/sub"); got != "dir" {
		t.Errorf("upper d/sub is a %s, want a plain dir (no whiteout was there)", got)
	}
	f.checkTree([]string{"d/", `d/new "n"`, "d/sub/", `keep "k"`})
	f.checkWorkEmpty()
	f.checkKernelAgrees()
}

func TestCreateOverWhiteout(t *testing.T) {
	runOpCases(t, []opCase{
		{
			name:    "file over a whiteout",
			lowers:  [][]fixtureEntry{{file("a", "old")}},
			ops:     []func(*fixture) error{removeOp("a"), createOp("a", "new")},
			tree:    []string{`a "new"`},
			inUpper: map[string]string{"a": "file"},
		},
		{
			name:   "symlink over a whiteout",
			lowers: [][]fixtureEntry{{file("a", "old")}},
			ops: []func(*fixture) error{removeOp("a"), func(f *fixture) error {
				_, err := f.s.Symlink("", "a", "target", cow.Owner{})
				return err
			}},
			tree:    []string{"a -> target"},
			inUpper: map[string]string{"a": "symlink"},
		},
		{
			name:   "fifo over a whiteout",
			lowers: [][]fixtureEntry{{file("d/a", "old")}},
			ops: []func(*fixture) error{removeOp("d/a"), func(f *fixture) error {
				_, err := f.s.Mknod("d", "a", unix.S_IFIFO|0o644, 0, cow.Owner{})
				return err
			}},
			tree:    []string{"d/", "d/a fifo"},
			inUpper: map[string]string{"d/a": "fifo"},
		},
		{
			name:    "file in a lower dir",
			lowers:  [][]fixtureEntry{{file("d/x", "x")}},
			ops:     []func(*fixture) error{createOp("d/n", "n")},
			tree:    []string{"d/", `d/n "n"`, `d/x "x"`},
			inUpper: map[string]string{"d": "dir", "d/n": "file", "d/x": "absent"},
		},
	})
}

// TestReservedNames checks that no name with the OCI whiteout prefix can
// be made, and that a char 0/0 device cannot be made.
func TestReservedNames(t *testing.T) {
	needRoot(t, "mknod")
	f := newFixture(t, nil, []fixtureEntry{file("a", "a")})
	ops := []struct {
		name string
		op   func() error
		want error
	}{
		{"Create .wh.x", func() error {
			fd, _, err := f.s.Create("", ".wh.x", unix.O_RDWR, 0o644, cow.Owner{})
			if err == nil {
				unix.Close(fd)
			}
			return err
		}, cow.ErrReservedName},
		{"Create .wh..wh..opq", func() error {
			fd, _, err := f.s.Create("", ovl.OpaqueMarker, unix.O_RDWR, 0o644, cow.Owner{})
			if err == nil {
				unix.Close(fd)
			}
			return err
		}, cow.ErrReservedName},
		{"Mkdir .wh.x", func() error { _, err := f.s.Mkdir("", ".wh.x", 0o755, cow.Owner{}); return err }, cow.ErrReservedName},
		{"Symlink .wh.x", func() error { _, err := f.s.Symlink("", ".wh.x", "t", cow.Owner{}); return err }, cow.ErrReservedName},
		{"Mknod fifo .wh.x", func() error { _, err := f.s.Mknod("", ".wh.x", unix.S_IFIFO|0o644, 0, cow.Owner{}); return err }, cow.ErrReservedName},
		{"Rename to .wh.x", func() error { return f.rename("a", ".wh.x", 0) }, cow.ErrReservedName},
		{"Mknod char 0/0", func() error { _, err := f.s.Mknod("", "c", unix.S_IFCHR|0o644, 0, cow.Owner{}); return err }, unix.EPERM},
	}
	for _, tc := range ops {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.op(); !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
			f.checkTree([]string{`a "a"`})
			if ents, _ := os.ReadDir(f.upper); len(ents) != 0 {
				t.Errorf("upper holds %v after a refused op", ents)
			}
		})
	}
	if !strings.HasPrefix(ovl.OpaqueMarker, ovl.WhiteoutPrefix) {
		t.Errorf("OpaqueMarker %q lacks the whiteout prefix", ovl.OpaqueMarker)
	}
	e, err := f.s.Mknod("", "null", unix.S_IFCHR|0o644, unix.Mkdev(1, 3), cow.Owner{})
	if err != nil || e.Stat.Rdev != unix.Mkdev(1, 3) {
		t.Errorf("Mknod char 1/3: rdev %x, %v", e.Stat.Rdev, err)
	}
}

func TestRename(t *testing.T) {
	runOpCases(t, []opCase{
		{
			name:    "lower dir moves with a redirect",
			lowers:  [][]fixtureEntry{{file("d/x", "x")}},
			ops:     []func(*fixture) error{renameOp("d", "e", 0)},
			tree:    []string{"e/", `e/x "x"`},
			inUpper: map[string]string{"d": "whiteout", "e": "redirect /d", "e/x": "absent"},
		},
		{
			name:    "empty lower dir moves",
			lowers:  [][]fixtureEntry{{dir("d")}},
			ops:     []func(*fixture) error{renameOp("d", "e", 0)},
			tree:    []string{"e/"},
			inUpper: map[string]string{"d": "whiteout", "e": "redirect /d"},
		},
		{
			name:    "merged dir moves",
			upper:   []fixtureEntry{file("d/u", "u")},
			lowers:  [][]fixtureEntry{{file("d/x", "x")}},
			ops:     []func(*fixture) error{renameOp("d", "e", 0)},
			tree:    []string{"e/", `e/u "u"`, `e/x "x"`},
			inUpper: map[string]string{"d": "whiteout", "e": "redirect /d", "e/u": "file"},
		},
		{
			name:   "lower dir moved into another, its files copied up there",
			lowers: [][]fixtureEntry{{file("d/sub/x", "x"), file("o/y", "y")}},
			ops: []func(*fixture) error{renameOp("d", "o/d2", 0), copyUpOp("o/d2/sub/x"),
				createOp("o/d2/sub/n", "n"), removeOp("o/d2/sub/x")},
			tree:    []string{"o/", "o/d2/", "o/d2/sub/", `o/d2/sub/n "n"`, `o/y "y"`},
			inUpper: map[string]string{"d": "whiteout", "o/d2": "redirect /d", "o/d2/sub": "dir", "o/d2/sub/x": "whiteout"},
		},
		{
			name:    "moved twice and back",
			lowers:  [][]fixtureEntry{{file("d/x", "x")}},
			ops:     []func(*fixture) error{renameOp("d", "e", 0), renameOp("e", "f", 0), renameOp("f", "d", 0)},
			tree:    []string{"d/", `d/x "x"`},
			inUpper: map[string]string{"e": "absent", "f": "absent"},
		},
		{
			name:    "a new dir at the old name is empty",
			lowers:  [][]fixtureEntry{{file("d/x", "x")}},
			ops:     []func(*fixture) error{renameOp("d", "e", 0), mkdirOp("d"), createOp("d/n", "n")},
			tree:    []string{"d/", `d/n "n"`, "e/", `e/x "x"`},
			inUpper: map[string]string{"d": "opaque dir", "e": "redirect /d"},
		},
		{
			name:    "moved over an empty lower dir",
			lowers:  [][]fixtureEntry{{file("d/x", "x"), dir("e")}},
			ops:     []func(*fixture) error{renameOp("d", "e", 0)},
			tree:    []string{"e/", `e/x "x"`},
			inUpper: map[string]string{"d": "whiteout", "e": "redirect /d"},
		},
		{
			name:    "moved dir removed",
			lowers:  [][]fixtureEntry{{file("d/x", "x")}},
			ops:     []func(*fixture) error{renameOp("d", "e", 0), removeOp("e/x"), removeOp("e")},
			tree:    []string{},
			inUpper: map[string]string{"d": "whiteout", "e": "absent"},
		},
		{
			name:    "a non-empty moved dir is not removed",
			lowers:  [][]fixtureEntry{{file("d/x", "x")}},
			ops:     []func(*fixture) error{renameOp("d", "e", 0), removeOp("e")},
			wantErr: unix.ENOTEMPTY,
			tree:    []string{"e/", `e/x "x"`},
		},
		{
			name:    "RENAME_EXCHANGE of two lower dirs",
			lowers:  [][]fixtureEntry{{file("a/x", "x"), file("b/y", "y")}},
			ops:     []func(*fixture) error{renameOp("a", "b", unix.RENAME_EXCHANGE)},
			tree:    []string{"a/", `a/y "y"`, "b/", `b/x "x"`},
			inUpper: map[string]string{"a": "redirect /b", "b": "redirect /a"},
		},
		{
			name:    "into its own subdirectory",
			lowers:  [][]fixtureEntry{{file("d/sub/x", "x")}},
			ops:     []func(*fixture) error{renameOp("d", "d/sub/d", 0)},
			wantErr: unix.EINVAL,
			tree:    []string{"d/", "d/sub/", `d/sub/x "x"`},
			inUpper: map[string]string{"d": "absent"},
		},
		{
			name:    "upper-only dir moves",
			upper:   []fixtureEntry{file("d/u", "u")},
			lowers:  [][]fixtureEntry{{file("a", "a")}},
			ops:     []func(*fixture) error{renameOp("d", "e", 0)},
			tree:    []string{`a "a"`, "e/", `e/u "u"`},
			inUpper: map[string]string{"d": "absent", "e": "dir"},
		},
		{
			name:    "lower file leaves a whiteout",
			lowers:  [][]fixtureEntry{{file("a", "a")}},
			ops:     []func(*fixture) error{renameOp("a", "b", 0)},
			tree:    []string{`b "a"`},
			inUpper: map[string]string{"a": "whiteout", "b": "file"},
		},
		{
			name:    "copied-up file leaves a whiteout",
			lowers:  [][]fixtureEntry{{file("a", "a")}},
			ops:     []func(*fixture) error{copyUpOp("a"), renameOp("a", "b", 0)},
			tree:    []string{`b "a"`},
			inUpper: map[string]string{"a": "whiteout", "b": "file"},
		},
		{
			name:    "upper-only file leaves nothing",
			upper:   []fixtureEntry{file("u", "u")},
			lowers:  [][]fixtureEntry{{file("a", "a")}},
			ops:     []func(*fixture) error{renameOp("u", "v", 0)},
			tree:    []string{`a "a"`, `v "u"`},
			inUpper: map[string]string{"u": "absent", "v": "file"},
		},
		{
			name:    "onto a lower file",
			lowers:  [][]fixtureEntry{{file("a", "a"), file("b", "b")}},
			ops:     []func(*fixture) error{renameOp("a", "b", 0)},
			tree:    []string{`b "a"`},
			inUpper: map[string]string{"a": "whiteout", "b": "file"},
		},
		{
			name:    "onto a whiteout",
			lowers:  [][]fixtureEntry{{file("a", "a"), file("b", "b")}},
			ops:     []func(*fixture) error{removeOp("b"), renameOp("a", "b", 0)},
			tree:    []string{`b "a"`},
			inUpper: map[string]string{"a": "whiteout", "b": "file"},
		},
		{
			name:    "into a lower dir",
			lowers:  [][]fixtureEntry{{file("a", "a"), file("d/x", "x")}},
			ops:     []func(*fixture) error{renameOp("a", "d/a", 0)},
			tree:    []string{"d/", `d/a "a"`, `d/x "x"`},
			inUpper: map[string]string{"a": "whiteout", "d": "dir", "d/a": "file"},
		},
		{
			name:    "RENAME_NOREPLACE onto an existing name",
			lowers:  [][]fixtureEntry{{file("a", "a"), file("b", "b")}},
			ops:     []func(*fixture) error{renameOp("a", "b", unix.RENAME_NOREPLACE)},
			wantErr: unix.EEXIST,
			tree:    []string{`a "a"`, `b "b"`},
			inUpper: map[string]string{"a": "absent", "b": "absent"},
		},
		{
			name:    "RENAME_NOREPLACE onto a deleted name",
			lowers:  [][]fixtureEntry{{file("a", "a"), file("b", "b")}},
			ops:     []func(*fixture) error{removeOp("b"), renameOp("a", "b", unix.RENAME_NOREPLACE)},
			tree:    []string{`b "a"`},
			inUpper: map[string]string{"a": "whiteout", "b": "file"},
		},
		{
			name:    "RENAME_EXCHANGE swaps",
			upper:   []fixtureEntry{file("b", "B")},
			lowers:  [][]fixtureEntry{{file("a", "A"), file("d/c", "C")}},
			ops:     []func(*fixture) error{renameOp("a", "b", unix.RENAME_EXCHANGE), renameOp("b", "d/c", unix.RENAME_EXCHANGE)},
			tree:    []string{`a "B"`, `b "C"`, "d/", `d/c "A"`},
			inUpper: map[string]string{"a": "file", "b": "file", "d/c": "file"},
		},
		{
			name:    "RENAME_EXCHANGE with an upper-only dir",
			upper:   []fixtureEntry{file("n/u", "u")},
			lowers:  [][]fixtureEntry{{file("a", "A")}},
			ops:     []func(*fixture) error{renameOp("a", "n", unix.RENAME_EXCHANGE)},
			tree:    []string{"a/", `a/u "u"`, `n "A"`},
			inUpper: map[string]string{"a": "opaque dir", "n": "file"},
		},
		{
			name:    "RENAME_EXCHANGE with a missing name",
			lowers:  [][]fixtureEntry{{file("a", "a")}},
			ops:     []func(*fixture) error{renameOp("a", "b", unix.RENAME_EXCHANGE)},
			wantErr: unix.ENOENT,
			tree:    []string{`a "a"`},
		},
		{
			name:    "upper dir onto an empty lower dir becomes opaque",
			upper:   []fixtureEntry{file("n/u", "u")},
			lowers:  [][]fixtureEntry{{dir("m")}},
			ops:     []func(*fixture) error{renameOp("n", "m", 0)},
			tree:    []string{"m/", `m/u "u"`},
			inUpper: map[string]string{"m": "opaque dir", "n": "absent"},
		},
		{
			name:   "upper dir onto a lower dir emptied in the merged view",
			upper:  []fixtureEntry{file("n/u", "u")},
			lowers: [][]fixtureEntry{{file("m/x", "x")}},
			ops:    []func(*fixture) error{removeOp("m/x"), renameOp("n", "m", 0)},
			tree:   []string{"m/", `m/u "u"`},
			gone:   []string{"m/x"},
			inUpper: map[string]string{
				"m": "opaque dir", "n": "absent", "m/x": "absent",
			},
		},
		{
			name:    "upper dir onto a whiteout",
			upper:   []fixtureEntry{file("n/u", "u")},
			lowers:  [][]fixtureEntry{{file("m/x", "x")}},
			ops:     []func(*fixture) error{removeOp("m/x"), removeOp("m"), renameOp("n", "m", 0)},
			tree:    []string{"m/", `m/u "u"`},
			inUpper: map[string]string{"m": "opaque dir", "n": "absent"},
		},
		{
			name:   "opaque dir made over a whiteout moves, leaving a whiteout",
			lowers: [][]fixtureEntry{{file("d/x", "x")}},
			ops: []func(*fixture) error{removeOp("d/x"), removeOp("d"), mkdirOp("d"),
				createOp("d/n", "n"), renameOp("d", "e", 0)},
			tree:    []string{"e/", `e/n "n"`},
			gone:    []string{"d", "e/x"},
			inUpper: map[string]string{"d": "whiteout", "e": "opaque dir"},
		},
		{
			name:    "dir onto a file",
			upper:   []fixtureEntry{dir("n")},
			lowers:  [][]fixtureEntry{{file("a", "a")}},
			ops:     []func(*fixture) error{renameOp("n", "a", 0)},
			wantErr: unix.ENOTDIR,
			tree:    []string{`a "a"`, "n/"},
		},
		{
			name:    "file onto a dir",
			lowers:  [][]fixtureEntry{{file("a", "a"), dir("d")}},
			ops:     []func(*fixture) error{renameOp("a", "d", 0)},
			wantErr: unix.EISDIR,
			tree:    []string{`a "a"`, "d/"},
		},
		{
			name:    "dir onto a non-empty dir",
			upper:   []fixtureEntry{dir("n")},
			lowers:  [][]fixtureEntry{{file("d/x", "x")}},
			ops:     []func(*fixture) error{renameOp("n", "d", 0)},
			wantErr: unix.ENOTEMPTY,
			tree:    []string{"d/", `d/x "x"`, "n/"},
		},
	})
}

// TestRenameKeepsIno checks that a file keeps its merged inode number
// when it is copied up by a rename.
func TestRenameKeepsIno(t *testing.T) {
	needRoot(t, "kernel-format whiteouts")
	f := newFixture(t, nil, []fixtureEntry{file("a", "a")})
	ino := f.mustLookup("a").Ino
	if err := f.rename("a", "b", 0); err != nil {
		t.Fatal(err)
	}
	if got := f.mustLookup("b").Ino; got != ino {
		t.Errorf("renamed file ino %d, want %d", got, ino)
	}
}

// TestCreateOwnerAndMode checks the owner of new entries, the group and
// setgid bit inherited from a setgid directory, and that a set-user-ID
// mode asked for survives the chown to the caller.
func TestCreateOwnerAndMode(t *testing.T) {
	needRoot(t, "chown")
	f := newFixture(t, nil, []fixtureEntry{dir("sg").perm(0o2775)})
	if err := os.Chown(filepath.Join(f.lowers[0], "sg"), 0, 4321); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(filepath.Join(f.lowers[0], "sg"), 0o2775); err != nil {
		t.Fatal(err)
	}
	umask := unix.Umask(0o022)
	unix.Umask(umask)
	o := cow.Owner{Uid: 1234, Gid: 5678}

	fd, e, err := f.s.Create("", "suid", unix.O_RDWR, 0o4755, o)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	if e.Stat.Uid != 1234 || e.Stat.Gid != 5678 {
		t.Errorf("Create: owner %d:%d, want 1234:5678", e.Stat.Uid, e.Stat.Gid)
	}
	st, _ := f.upperLstat("suid")
	if want := uint32(0o4755) &^ uint32(umask); st.Mode&0o7777 != want {
		t.Errorf("Create(mode 04755): mode %o, want %o", st.Mode&0o7777, want)
	}

	d, err := f.s.Mkdir("sg", "sub", 0o755, o)
	if err != nil {
		t.Fatal(err)
	}
	if d.Stat.Uid != 1234 || d.Stat.Gid != 4321 || d.Stat.Mode&unix.S_ISGID == 0 {
		t.Errorf("Mkdir in a setgid dir: owner %d:%d mode %o, want 1234:4321 with setgid", d.Stat.Uid, d.Stat.Gid, d.Stat.Mode)
	}
	l, err := f.s.Symlink("sg", "link", "t", o)
	if err != nil {
		t.Fatal(err)
	}
	if l.Stat.Uid != 1234 || l.Stat.Gid != 4321 {
		t.Errorf("Symlink in a setgid dir: owner %d:%d, want 1234:4321", l.Stat.Uid, l.Stat.Gid)
	}
	f.checkWorkEmpty()
}

// TestLink checks hard links of lower and upper files: both names show
// one inode number, and the file keeps its owner and mode.
func TestLink(t *testing.T) {
	needRoot(t, "chown")
	f := newFixture(t, nil, []fixtureEntry{file("bin/tool", "tool").perm(0o4755), file("d/x", "x")})
	lp := filepath.Join(f.lowers[0], "bin/tool")
	if err := os.Lchown(lp, 1234, 5678); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(lp, 0o4755); err != nil {
		t.Fatal(err)
	}
	old := f.mustLookup("bin/tool")
	ino := old.Ino
	if _, err := f.s.Link("bin/tool", &old, "d", "tool2"); err != nil {
		t.Fatal(err)
	}
	f.checkTree([]string{"bin/", `bin/tool "tool"`, "d/", `d/tool2 "tool"`, `d/x "x"`})
	for _, p := range []string{"bin/tool", "d/tool2"} {
		e := f.mustLookup(p)
		if e.Ino != ino {
			t.Errorf("%s: ino %d, want %d", p, e.Ino, ino)
		}
		if n := e.Nlink(); n != 2 || !e.Linked {
			t.Errorf("%s: nlink %d (linked %v), want 2, reached by the links directory", p, n, e.Linked)
		}
		if e.Stat.Mode != unix.S_IFREG|0o4755 || e.Stat.Uid != 1234 || e.Stat.Gid != 5678 {
			t.Errorf("%s: mode %o owner %d:%d, want %o 1234:5678", p, e.Stat.Mode, e.Stat.Uid, e.Stat.Gid, unix.S_IFREG|0o4755)
		}
	}
	f.checkWorkEmpty()
}

// TestTmpfile checks an O_TMPFILE file made in a lower dir and named with
// LinkFd, there and over a whiteout.
func TestTmpfile(t *testing.T) {
	needRoot(t, "linkat(AT_EMPTY_PATH) and kernel-format whiteouts")
	f := newFixture(t, nil, []fixtureEntry{file("d/x", "x"), file("d/old", "old")})
	if err := f.remove("d/old"); err != nil {
		t.Fatal(err)
	}
	tree := []string{"d/", `d/x "x"`}
	for _, name := range []string{"t", "old"} {
		fd, e, err := f.s.Tmpfile("d", unix.O_RDWR, 0o640, cow.Owner{Uid: 1234, Gid: 5678})
		if err != nil {
			t.Fatal(err)
		}
		if e.Stat.Uid != 1234 || e.Stat.Gid != 5678 || e.Stat.Nlink != 0 {
			t.Errorf("Tmpfile: owner %d:%d nlink %d", e.Stat.Uid, e.Stat.Gid, e.Stat.Nlink)
		}
		f.checkTree(tree) // not visible until named
		if _, err := unix.Write(fd, []byte("tmp "+name)); err != nil {
			t.Fatal(err)
		}
		le, err := f.s.LinkFd(fd, "d", name)
		unix.Close(fd)
		if err != nil {
			t.Fatalf("LinkFd(%s): %v", name, err)
		}
		if le.Stat.Uid != 1234 || le.Stat.Gid != 5678 || le.Stat.Mode&0o7777 != 0o640&^umask() {
			t.Errorf("LinkFd(%s): owner %d:%d mode %o", name, le.Stat.Uid, le.Stat.Gid, le.Stat.Mode)
		}
		tree = append(tree, fmt.Sprintf("d/%s %q", name, "tmp "+name))
		slices.Sort(tree)
	}
	f.checkTree([]string{"d/", `d/old "tmp old"`, `d/t "tmp t"`, `d/x "x"`})
	f.checkWorkEmpty()
}

func umask() uint32 {
	m := unix.Umask(0o022)
	unix.Umask(m)
	return uint32(m)
}

// TestKernelAcceptsUpper runs a mix of operations through the engine,
// then mounts the same lowers and the resulting upper with kernel
// overlayfs: the kernel must show the very tree the engine shows, which
// proves that the upper is a valid kernel upper.
func TestKernelAcceptsUpper(t *testing.T) {
	needRoot(t, "kernel-format whiteouts and mount")
	f := newFixture(t, nil,
		[]fixtureEntry{
			file("etc/conf", "v1"),
			file("etc/old", "old"),
			file("var/cache/big", "big"),
			symlink("lib", "usr/lib"),
			file("usr/bin/tool", "tool").perm(0o755).with("user.mark", "m"),
			dir("opt").with(ovl.XattrOpaque, "y"),
		},
		[]fixtureEntry{
			file("etc/conf", "v0"),
			file("etc/base", "base"),
			file("usr/lib/libc.so", "libc"),
			file("usr/share/doc/a", "a"),
			file("usr/share/doc/b", "b"),
			file("home/user/.profile", "profile"),
			fifo("run/fifo"),
			file("opt/hidden", "h"),
		})
	type step struct {
		name string
		op   func() error
		want error
	}
	steps := []step{
		{"remove lower file", func() error { return f.remove("etc/old") }, nil},
		{"remove bottom file", func() error { return f.remove("etc/base") }, nil},
		{"create", func() error { return f.create("etc/new", "new") }, nil},
		{"empty a dir", func() error {
			return errors.Join(f.remove("usr/share/doc/a"), f.remove("usr/share/doc/b"))
		}, nil},
		{"remove emptied dir", func() error { return f.remove("usr/share/doc") }, nil},
		{"mkdir over whiteout", func() error { return f.mkdir("usr/share/doc") }, nil},
		{"create in opaque dir", func() error { return f.create("usr/share/doc/c", "c") }, nil},
		{"modify a lower file", func() error {
			if err := f.copyUp("etc/conf"); err != nil {
				return err
			}
			fd, err := f.s.Layer(cow.UpperIndex).Open("etc/conf", unix.O_WRONLY|unix.O_APPEND, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			_, err = unix.Write(fd, []byte("+local"))
			return err
		}, nil},
		{"rename lower file", func() error { return f.rename("home/user/.profile", "home/user/.profile.bak", 0) }, nil},
		{"rename lower dir, and back", func() error {
			return errors.Join(f.rename("var/cache", "var/cache2", 0), f.rename("var/cache2", "var/cache", 0))
		}, nil},
		{"move a lower dir elsewhere", func() error { return f.rename("usr/share/doc", "doc", 0) }, nil},
		{"symlink", func() error { _, err := f.s.Symlink("home/user", "link", "../../etc/conf", cow.Owner{}); return err }, nil},
		{"mknod fifo", func() error { _, err := f.s.Mknod("run", "fifo2", unix.S_IFIFO|0o600, 0, cow.Owner{}); return err }, nil},
		{"link", func() error {
			e := f.mustLookup("usr/bin/tool")
			_, err := f.s.Link("usr/bin/tool", &e, "usr/bin", "tool2")
			return err
		}, nil},
		{"exchange", func() error { return f.rename("etc/conf", "etc/new", unix.RENAME_EXCHANGE) }, nil},
		{"upper-only dir and file, then gone", func() error {
			return errors.Join(f.mkdir("tmp"), f.create("tmp/x", "x"), f.remove("tmp/x"), f.remove("tmp"))
		}, nil},
		{"tmpfile", func() error {
			fd, _, err := f.s.Tmpfile("var", unix.O_RDWR, 0o644, cow.Owner{})
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			if _, err := unix.Write(fd, []byte("tmp")); err != nil {
				return err
			}
			_, err = f.s.LinkFd(fd, "var", "tmpfile")
			return err
		}, nil},
		{"remove merged dir", func() error {
			return errors.Join(f.remove("var/cache/big"), f.remove("var/cache"))
		}, nil},
		{"mkdir over a symlink's whiteout", func() error { return errors.Join(f.remove("lib"), f.mkdir("lib")) }, nil},
		{"upper dir onto an emptied lower dir", func() error {
			return errors.Join(f.mkdir("home/new"), f.create("home/new/f", "f"),
				f.remove("home/user/.profile.bak"), f.remove("home/user/link"), f.rename("home/new", "home/user", 0))
		}, nil},
		{"copy up a dir", func() error { return f.copyUp("usr/lib") }, nil},
		{"create in a dir opaque in a lower", func() error { return f.create("opt/o", "o") }, nil},
	}
	for _, s := range steps {
		if err := s.op(); !errors.Is(err, s.want) {
			t.Fatalf("%s: %v, want %v\nmerged tree:\n%s", s.name, err, s.want, f.dump())
		}
	}
	f.checkTree([]string{
		"doc/", `doc/c "c"`,
		`etc/`, `etc/conf "new"`, `etc/new "v1+local"`,
		"home/", "home/user/", `home/user/f "f"`,
		"lib/",
		"opt/", `opt/o "o"`,
		"run/", "run/fifo fifo", "run/fifo2 fifo",
		"usr/", "usr/bin/", `usr/bin/tool "tool"`, `usr/bin/tool2 "tool"`,
		"usr/lib/", `usr/lib/libc.so "libc"`,
		"usr/share/",
		"var/", `var/tmpfile "tmp"`,
	})
	f.checkWorkEmpty()
	f.checkKernelAgrees()
}

// TestOpsThreeLayers runs ops in a directory merged from three lowers,
// one of which deletes a name of the one beneath.
func TestOpsThreeLayers(t *testing.T) {
	needRoot(t, "kernel-format whiteouts")
	f := newFixture(t, nil,
		[]fixtureEntry{file("d/a", "a1")},
		[]fixtureEntry{file("d/b", "b2"), whiteout("d/c")},
		[]fixtureEntry{file("d/c", "c3"), file("d/e", "e3")})
	f.checkTree([]string{"d/", `d/a "a1"`, `d/b "b2"`, `d/e "e3"`})
	for _, op := range []func() error{
		func() error { return f.remove("d/e") },
		func() error { return f.create("d/c", "new c") },
		func() error { return f.rename("d/b", "d/bb", 0) },
	} {
		if err := op(); err != nil {
			t.Fatalf("%v\nmerged tree:\n%s", err, f.dump())
		}
	}
	f.checkTree([]string{"d/", `d/a "a1"`, `d/bb "b2"`, `d/c "new c"`})
	for p, want := range map[string]string{"d/b": "whiteout", "d/bb": "file", "d/c": "file", "d/e": "whiteout"} {
		if got := f.upperKind(p); got != want {
			t.Errorf("upper holds %s at %q, want %s", got, p, want)
		}
	}
	f.checkKernelAgrees()
}
