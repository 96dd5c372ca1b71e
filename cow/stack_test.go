//go:build linux

package cow_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/cow"
	"github.com/strata-fs/strata/ovl"
)

// TestResolution checks how names resolve across layers: what hides
// what, which directories merge, and the layer each entry comes from.
func TestResolution(t *testing.T) {
	type wantEntry struct {
		path   string
		layer  int
		lowers []int
	}
	tests := []struct {
		name   string
		upper  []fixtureEntry
		lowers [][]fixtureEntry // top first
		tree   []string
		gone   []string
		want   []wantEntry
	}{
		{
			name:   "upper hides lowers",
			upper:  []fixtureEntry{file("f", "upper")},
			lowers: [][]fixtureEntry{{file("f", "lower1")}, {file("f", "lower2")}},
			tree:   []string{`f "upper"`},
			want:   []wantEntry{{path: "f", layer: 0}},
		},
		{
			name:   "higher lower hides lower",
			lowers: [][]fixtureEntry{{file("f", "lower1")}, {file("f", "lower2"), file("g", "g2")}},
			tree:   []string{`f "lower1"`, `g "g2"`},
			want:   []wantEntry{{path: "f", layer: 1}, {path: "g", layer: 2}},
		},
		{
			name:   "file in upper hides a lower directory",
			upper:  []fixtureEntry{file("d", "file")},
			lowers: [][]fixtureEntry{{file("d/x", "x")}},
			tree:   []string{`d "file"`},
			gone:   []string{"d/x"},
			want:   []wantEntry{{path: "d", layer: 0}},
		},
		{
			name:  "directories merge across three layers",
			upper: []fixtureEntry{file("d/u", "u")},
			lowers: [][]fixtureEntry{
				{file("d/a", "a1"), file("d/shared", "1")},
				{file("d/b", "b2"), file("d/shared", "2"), file("d/sub/deep", "deep2")},
				{file("d/c", "c3"), file("d/shared", "3"), file("d/sub/deeper", "deeper3")},
			},
			tree: []string{"d/", `d/a "a1"`, `d/b "b2"`, `d/c "c3"`, `d/shared "1"`,
				"d/sub/", `d/sub/deep "deep2"`, `d/sub/deeper "deeper3"`, `d/u "u"`},
			want: []wantEntry{
				{path: "d", layer: 0, lowers: []int{1, 2, 3}},
				{path: "d/u", layer: 0},
				{path: "d/a", layer: 1},
				{path: "d/b", layer: 2},
				{path: "d/c", layer: 3},
				{path: "d/shared", layer: 1},
				{path: "d/sub", layer: 2, lowers: []int{2, 3}},
				{path: "d/sub/deeper", layer: 3},
			},
		},
		{
			name: "non-directory in a higher lower ends the merge beneath",
			lowers: [][]fixtureEntry{
				{file("d/a", "a1")},
				{file("d", "a file")},
				{file("d/c", "c3")},
			},
			tree: []string{"d/", `d/a "a1"`},
			gone: []string{"d/c"},
			want: []wantEntry{{path: "d", layer: 1, lowers: []int{1}}},
		},
		{
			name:  "directory in upper over a lower file does not merge",
			upper: []fixtureEntry{file("d/u", "u")},
			lowers: [][]fixtureEntry{
				{file("d", "a file")},
				{file("d/c", "c2")},
			},
			tree: []string{"d/", `d/u "u"`},
			gone: []string{"d/c"},
			want: []wantEntry{{path: "d", layer: 0, lowers: nil}},
		},
		{
			name:   "file in a lower hides a directory beneath",
			lowers: [][]fixtureEntry{{file("d", "file")}, {file("d/x", "x")}},
			tree:   []string{`d "file"`},
			gone:   []string{"d/x"},
			want:   []wantEntry{{path: "d", layer: 1}},
		},
		{
			name: "lowers cut at an opaque directory",
			lowers: [][]fixtureEntry{
				{file("d/a", "a1")},
				{dir("d").with(ovl.XattrUserOpaque, "y"), file("d/b", "b2")},
				{file("d/c", "c3")},
			},
			tree: []string{"d/", `d/a "a1"`, `d/b "b2"`},
			gone: []string{"d/c"},
			want: []wantEntry{{path: "d", layer: 1, lowers: []int{1, 2}}},
		},
		{
			name:   "root merges every lower",
			lowers: [][]fixtureEntry{{file("a", "a")}, {file("b", "b")}, {file("c", "c")}},
			tree:   []string{`a "a"`, `b "b"`, `c "c"`},
			want:   []wantEntry{{path: "", layer: 0, lowers: []int{1, 2, 3}}},
		},
		{
			name:   "opaque root in a lower cuts the root's lowers",
			lowers: [][]fixtureEntry{{file("a", "a")}, {file(ovl.OpaqueMarker, ""), file("b", "b")}, {file("c", "c")}},
			tree:   []string{`a "a"`, `b "b"`},
			gone:   []string{"c"},
			want:   []wantEntry{{path: "", layer: 0, lowers: []int{1, 2}}},
		},
		{
			name:   "opaque upper root hides every lower",
			upper:  []fixtureEntry{dir("").with(ovl.XattrUserOpaque, "y"), file("u", "u")},
			lowers: [][]fixtureEntry{{file("a", "a")}},
			tree:   []string{`u "u"`},
			gone:   []string{"a"},
			want:   []wantEntry{{path: "", layer: 0, lowers: nil}},
		},
		{
			name:   "every file type resolves",
			lowers: [][]fixtureEntry{{symlink("l", "../nowhere"), fifo("p"), {path: "s", kind: kSock}, file("f", "data").perm(0o4755)}},
			tree:   []string{`f "data"`, "l -> ../nowhere", "p fifo", "s sock"},
		},
		{
			name:   "symlink to a directory is not descended",
			lowers: [][]fixtureEntry{{file("real/x", "x"), symlink("link", "real")}},
			tree:   []string{"link -> real", "real/", `real/x "x"`},
			gone:   []string{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.upper, tc.lowers...)
			f.checkTree(tc.tree)
			f.checkGone(tc.gone...)
			for _, w := range tc.want {
				e, err := f.lookup(w.path)
				if err != nil {
					t.Errorf("Lookup(%q): %v", w.path, err)
					continue
				}
				if e.Layer != w.layer || !slices.Equal(lowerLayers(e), w.lowers) {
					t.Errorf("Lookup(%q) = layer %d lowers %v, want layer %d lowers %v\nmerged tree:\n%s",
						w.path, e.Layer, lowerLayers(e), w.layer, w.lowers, f.dump())
				}
			}
		})
	}
}

// TestLookupThroughSymlink checks that a path never resolves through a
// symlink in a layer: the symlink is not a directory for the overlay.
func TestLookupThroughSymlink(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, nil, []fixtureEntry{symlink("esc", outside)})
	root := f.mustLookup("")
	if _, err := f.s.Lookup("esc", &root, "secret"); err == nil {
		t.Errorf("Lookup(esc, secret) resolved through a symlink out of the layer")
	}
}

// whiteoutDialects are the ways a layer says "name x is deleted" and
// "directory d hides what is beneath". Each is applied in turn in the
// upper and in the middle of three lowers.
var whiteoutDialects = []struct {
	name    string
	kernel  bool // kernel overlayfs reads it in a lower layer
	upperOK bool // ... and in the upper layer
	// hide are the entries that delete the file "f", the file "d/x" and
	// the directory "gone" of the layers beneath.
	hide []fixtureEntry
	// opaque are the entries that make "d" opaque.
	opaque []fixtureEntry
}{
	{
		name:    "char 0/0 (kernel, fuse-overlayfs)",
		kernel:  true,
		upperOK: true,
		hide:    []fixtureEntry{whiteout("f"), whiteout("d/x"), whiteout("gone")},
	},
	{
		name: "OCI .wh.NAME files",
		hide: []fixtureEntry{ociWhiteout("f"), ociWhiteout("d/x"), ociWhiteout("gone")},
	},
	{
		name: "xattr whiteout, parent trusted.overlay.whiteouts (kernel 6.7)",
		hide: []fixtureEntry{
			dir("").with("trusted.overlay.whiteouts", ""),
			dir("d").with("trusted.overlay.whiteouts", ""),
			file("f", "").with(ovl.XattrWhiteout, ""),
			file("d/x", "").with(ovl.XattrWhiteout, ""),
			file("gone", "").with(ovl.XattrWhiteout, ""),
		},
	},
	{
		name:   "xattr whiteout, parent trusted.overlay.opaque=x (kernel 6.8+)",
		kernel: true, // in a lower that is not the last one
		hide: []fixtureEntry{
			dir("").with(ovl.XattrOpaque, "x"),
			dir("d").with(ovl.XattrOpaque, "x"),
			file("f", "").with(ovl.XattrWhiteout, ""),
			file("d/x", "").with(ovl.XattrWhiteout, ""),
			file("gone", "").with(ovl.XattrWhiteout, ""),
		},
	},
	{
		name: "xattr whiteout, user.overlay.* (userxattr)",
		hide: []fixtureEntry{
			dir("").with("user.overlay.whiteouts", ""),
			dir("d").with("user.overlay.whiteouts", ""),
			file("f", "").with(ovl.XattrUserWhiteout, ""),
			file("d/x", "").with(ovl.XattrUserWhiteout, ""),
			file("gone", "").with(ovl.XattrUserWhiteout, ""),
		},
	},
	{
		name:    "opaque trusted.overlay.opaque=y",
		kernel:  true,
		upperOK: true,
		opaque:  []fixtureEntry{dir("d").with(ovl.XattrOpaque, "y")},
	},
	{
		name:   "opaque user.overlay.opaque=y",
		opaque: []fixtureEntry{dir("d").with(ovl.XattrUserOpaque, "y")},
	},
	{
		name:   "opaque user.fuseoverlayfs.opaque=y",
		opaque: []fixtureEntry{dir("d").with(ovl.XattrFuseOverlayfsOpaque, "y")},
	},
	{
		name:   "opaque .wh..wh..opq",
		opaque: []fixtureEntry{file("d/"+ovl.OpaqueMarker, "")},
	},
}

// TestWhiteoutDialects reads every whiteout and opaque format: the names
// they hide give ENOENT, ReadDir does not list them, and the markers
// themselves never show. Where kernel overlayfs reads the dialect too, it
// must show the same tree.
func TestWhiteoutDialects(t *testing.T) {
	bottom := []fixtureEntry{
		file("f", "bottom f"),
		file("keep", "k"),
		file("d/x", "bottom x"),
		file("d/y", "bottom y"),
		file("gone/z", "z"),
	}
	for _, dl := range whiteoutDialects {
		for _, where := range []string{"upper", "lower"} {
			t.Run(dl.name+"/in "+where, func(t *testing.T) {
				layer := append(append([]fixtureEntry{}, dl.hide...), dl.opaque...)
				if dl.opaque != nil {
					layer = append(layer, file("d/new", "new"))
				}
				var f *fixture
				if where == "upper" {
					f = newFixture(t, layer, bottom)
				} else {
					f = newFixture(t, nil, []fixtureEntry{file("top", "t")}, layer, bottom)
				}
				var tree []string
				if dl.opaque != nil {
					tree = []string{"d/", `d/new "new"`, `f "bottom f"`, "gone/", `gone/z "z"`, `keep "k"`}
					f.checkGone("d/x", "d/y")
				} else {
					tree = []string{"d/", `d/y "bottom y"`, `keep "k"`}
					f.checkGone("f", "d/x", "gone", "gone/z")
				}
				if where == "lower" {
					tree = append(tree, `top "t"`)
					slices.Sort(tree)
				}
				f.checkTree(tree)

				// Entry.Lowers of d: cut at the opaque layer.
				d := f.mustLookup("d")
				wantLowers := []int{1, 2, 3}
				switch {
				case dl.opaque != nil && where == "upper":
					wantLowers = nil
				case dl.opaque != nil:
					wantLowers = []int{2}
				case where == "upper":
					wantLowers = []int{1}
				default:
					wantLowers = []int{2, 3}
				}
				if !slices.Equal(lowerLayers(d), wantLowers) {
					t.Errorf("Lookup(d).Lowers = %v, want %v", lowerLayers(d), wantLowers)
				}

				if dl.kernel && (where == "lower" || dl.upperOK) {
					f.checkKernelAgrees()
				}
			})
		}
	}
}

// TestWhiteoutFileOfSameLayer checks that an OCI whiteout only hides
// names of the layers beneath it (image-spec: "Files that are present in
// the same layer as a whiteout file can only be hidden by whiteout files
// in subsequent layers"). strata itself leaves such a pair for a moment
// when it creates a name over an OCI whiteout in the upper.
func TestWhiteoutFileOfSameLayer(t *testing.T) {
	for _, where := range []string{"upper", "lower"} {
		t.Run(where, func(t *testing.T) {
			layer := []fixtureEntry{file("f", "same layer"), ociWhiteout("f")}
			bottom := []fixtureEntry{file("f", "bottom")}
			var f *fixture
			if where == "upper" {
				f = newFixture(t, layer, bottom)
			} else {
				f = newFixture(t, nil, layer, bottom)
			}
			f.checkTree([]string{`f "same layer"`})
		})
	}
}

// TestOpaqueXIsNotOpaque checks that overlay.opaque=x (a directory with
// xattr whiteouts) does not hide the layers beneath.
func TestOpaqueXIsNotOpaque(t *testing.T) {
	f := newFixture(t, nil,
		[]fixtureEntry{dir("d").with(ovl.XattrOpaque, "x"), file("d/a", "a")},
		[]fixtureEntry{file("d/b", "b")})
	f.checkTree([]string{"d/", `d/a "a"`, `d/b "b"`})
	if d := f.mustLookup("d"); !slices.Equal(lowerLayers(d), []int{1, 2}) {
		t.Errorf("Lookup(d).Lowers = %v, want [1 2]", lowerLayers(d))
	}
}

// TestWhiteoutLookalikes checks entries that look like whiteouts but are
// not: a char device other than 0/0, a non-empty file with the whiteout
// xattr, and an opaque xattr with another value.
func TestWhiteoutLookalikes(t *testing.T) {
	f := newFixture(t, []fixtureEntry{
		{path: "null", kind: kChar, dev: unix.Mkdev(1, 3)},
		file("big", "data").with(ovl.XattrWhiteout, ""),
		dir("d").with(ovl.XattrOpaque, "n"),
	}, []fixtureEntry{
		file("null", "lower null"),
		file("big", "lower big"),
		file("d/lower", "l"),
	})
	f.checkTree([]string{`big "data"`, "d/", `d/lower "l"`, "null chr 1/3"})
}

// TestInodeNumbers checks that merged inode numbers are the same in
// ReadDir and Lookup, that a merged directory takes its topmost lower's
// number, and that they are stable across a reopen of the stack.
func TestInodeNumbers(t *testing.T) {
	f := newFixture(t,
		[]fixtureEntry{file("d/u", "u"), file("top", "t")},
		[]fixtureEntry{file("d/a", "a"), file("e/x", "x")},
		[]fixtureEntry{file("d/b", "b")})
	engineTree(t, f.s) // reports ReadDir/Lookup disagreements
	var lst unix.Stat_t
	if err := unix.Lstat(filepath.Join(f.lowers[0], "d"), &lst); err != nil {
		t.Fatal(err)
	}
	if d := f.mustLookup("d"); d.Ino != lst.Ino {
		t.Errorf("merged dir d: ino %d, want its topmost lower's %d", d.Ino, lst.Ino)
	}
	before := map[string]uint64{}
	for _, p := range []string{"", "d", "d/u", "d/a", "d/b", "e", "e/x", "top"} {
		before[p] = f.mustLookup(p).Ino
	}
	s2, err := cow.New(cow.Options{Lower: f.lowers, Upper: f.upper, Work: f.work})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	for p, ino := range before {
		e, err := lookupPath(s2, p)
		if err != nil {
			t.Fatalf("reopened stack: Lookup(%q): %v", p, err)
		}
		if e.Ino != ino {
			t.Errorf("%q: ino %d after reopen, %d before", p, e.Ino, ino)
		}
	}
}

// TestInodeNumbersOfBlockedDirs checks ReadDir against Lookup for an
// upper directory whose name also names a lower directory that it does
// not merge with: opaque, or cut off by a whiteout or a file between.
func TestInodeNumbersOfBlockedDirs(t *testing.T) {
	tests := []struct {
		name   string
		upper  []fixtureEntry
		lowers [][]fixtureEntry
	}{
		{
			name:   "opaque upper dir",
			upper:  []fixtureEntry{dir("d").with(ovl.XattrOpaque, "y")},
			lowers: [][]fixtureEntry{{file("d/a", "a")}},
		},
		{
			name:   "whiteout between",
			upper:  []fixtureEntry{dir("d")},
			lowers: [][]fixtureEntry{{whiteout("d")}, {file("d/a", "a")}},
		},
		{
			name:   "file between",
			upper:  []fixtureEntry{dir("d")},
			lowers: [][]fixtureEntry{{file("d", "f")}, {file("d/a", "a")}},
		},
		{
			name:   "opaque lower dir, merged upper",
			upper:  []fixtureEntry{dir("d")},
			lowers: [][]fixtureEntry{{dir("d").with(ovl.XattrUserOpaque, "y")}, {file("d/a", "a")}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.upper, tc.lowers...)
			engineTree(t, f.s)
		})
	}
}

// TestNewErrors checks the layer combinations New refuses.
func TestNewErrors(t *testing.T) {
	root := t.TempDir()
	mk := func(p string) string {
		p = filepath.Join(root, p)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	lower, upper, work := mk("lower"), mk("upper"), mk("work")
	inLower, inUpper := mk("lower/nested"), mk("upper/nested")
	notDir := filepath.Join(root, "file")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts cow.Options
	}{
		{"no lower", cow.Options{Upper: upper, Work: work}},
		{"upper without work", cow.Options{Lower: []string{lower}, Upper: upper}},
		{"work without upper", cow.Options{Lower: []string{lower}, Work: work}},
		{"missing lower", cow.Options{Lower: []string{filepath.Join(root, "missing")}}},
		{"lower not a directory", cow.Options{Lower: []string{notDir}}},
		{"upper inside lower", cow.Options{Lower: []string{lower}, Upper: inLower, Work: work}},
		{"work inside upper", cow.Options{Lower: []string{lower}, Upper: upper, Work: inUpper}},
		{"lower inside upper", cow.Options{Lower: []string{inUpper}, Upper: upper, Work: work}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := cow.New(tc.opts)
			if err == nil {
				s.Close()
				t.Fatalf("New(%+v) succeeded, want an error", tc.opts)
			}
		})
	}
}

// TestReadOnlyStack checks that a stack without upper resolves and lists
// but refuses every change with EROFS.
func TestReadOnlyStack(t *testing.T) {
	lower := t.TempDir()
	buildLayer(t, lower, []fixtureEntry{file("f", "x"), file("d/a", "a")})
	s, err := cow.New(cow.Options{Lower: []string{lower}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Writable() {
		t.Errorf("Writable() = true without an upper")
	}
	if got, want := short(engineTree(t, s)), []string{"d/", `d/a "a"`, `f "x"`}; !slices.Equal(got, want) {
		t.Errorf("tree %q, want %q", got, want)
	}
	root, _ := s.Root()
	e, err := lookupPath(s, "f")
	if err != nil {
		t.Fatal(err)
	}
	ops := map[string]error{}
	ops["CopyUp"] = s.CopyUp("f", &e, -1)
	_, ops["Mkdir"] = s.Mkdir("", "n", 0o755, cow.Owner{})
	_, _, ops["Create"] = s.Create("", "n", unix.O_RDWR, 0o644, cow.Owner{})
	ops["Remove"] = s.Remove("", &root, "f", &e)
	ops["Rename"] = s.Rename("", &root, "f", &e, "", &root, "g", nil, 0)
	for op, err := range ops {
		if !errors.Is(err, unix.EROFS) {
			t.Errorf("%s on a read-only stack: %v, want EROFS", op, err)
		}
	}
}
