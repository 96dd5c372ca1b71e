//go:build linux

package layer

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

func TestChanges(t *testing.T) {
	for _, tc := range []struct {
		name   string
		lowers [][]writeTestNode // top first
		upper  []writeTestNode
		want   []string // "K /path"
	}{{
		name:  "no lowers",
		upper: []writeTestNode{wtFile("a/b/c", "c"), wtSymlink("l", "a"), wtWhiteout("w")},
		want:  []string{"A /a", "A /a/b", "A /a/b/c", "A /l", "D /w"},
	}, {
		name:   "empty upper",
		lowers: [][]writeTestNode{{wtFile("etc/passwd", "root")}},
		want:   nil,
	}, {
		name:   "modified file, parent copied up",
		lowers: [][]writeTestNode{{wtFile("etc/passwd", "root"), wtFile("etc/group", "root")}},
		upper:  []writeTestNode{wtFile("etc/passwd", "root\nuser")},
		want:   []string{"C /etc", "C /etc/passwd"},
	}, {
		name:   "added in an added directory",
		lowers: [][]writeTestNode{{wtDir("etc")}},
		upper:  []writeTestNode{wtFile("etc/app/conf.d/x.conf", "x"), wtLink("etc/app/y.conf", "etc/app/conf.d/x.conf")},
		want:   []string{"C /etc", "A /etc/app", "A /etc/app/conf.d", "A /etc/app/conf.d/x.conf", "A /etc/app/y.conf"},
	}, {
		name:   "deleted in every dialect",
		lowers: [][]writeTestNode{{wtFile("etc/a", ""), wtFile("etc/b", ""), wtFile("etc/c", ""), wtFile("etc/d", ""), wtDir("etc/e/f")}},
		upper: []writeTestNode{
			wtWhiteout("etc/a"),
			wtFile("etc/.wh.b", ""),
			wtXattrWhiteout("etc/c", ovl.XattrWhiteout),
			wtXattrWhiteout("etc/d", ovl.XattrUserWhiteout),
			wtWhiteout("etc/e"),
		},
		want: []string{"C /etc", "D /etc/a", "D /etc/b", "D /etc/c", "D /etc/d", "D /etc/e"},
	}, {
		name:   "two dialects delete one name",
		lowers: [][]writeTestNode{{wtFile("x", "")}},
		upper:  []writeTestNode{wtWhiteout("x"), wtFile(".wh.x", "")},
		want:   []string{"D /x"},
	}, {
		name:   "OCI whiteout beside a new entry of the same name",
		lowers: [][]writeTestNode{{wtDir("x/old")}},
		upper:  []writeTestNode{wtFile(".wh.x", ""), wtFile("x", "now a file")},
		want:   []string{"C /x"},
	}, {
		name:   "opaque directory, each dialect",
		lowers: [][]writeTestNode{{wtFile("var/keep", "k"), wtFile("var/log/a", ""), wtDir("var/lib"), wtWhiteout("var/gone")}, {wtFile("var/gone", ""), wtFile("var/old", "")}},
		upper:  []writeTestNode{wtDir("var").withXattr(ovl.XattrOpaque, "y"), wtFile("var/keep", "k2"), wtFile("var/new", "")},
		want:   []string{"C /var", "C /var/keep", "D /var/lib", "D /var/log", "A /var/new", "D /var/old"},
	}, {
		name:   "opaque by marker, with whiteouts in it",
		lowers: [][]writeTestNode{{wtFile("d/a", ""), wtFile("d/b", "")}},
		upper:  []writeTestNode{wtFile("d/"+ovl.OpaqueMarker, ""), wtWhiteout("d/a")},
		want:   []string{"C /d", "D /d/a", "D /d/b"},
	}, {
		name:   "opaque xattr x is not opaque",
		lowers: [][]writeTestNode{{wtFile("d/a", ""), wtFile("d/b", "")}},
		upper:  []writeTestNode{wtDir("d").withXattr(ovl.XattrOpaque, "x"), wtXattrWhiteout("d/a", ovl.XattrWhiteout)},
		want:   []string{"C /d", "D /d/a"},
	}, {
		name:  "opaque new directory",
		upper: []writeTestNode{wtDir("d").withXattr(ovl.XattrUserOpaque, "y"), wtFile("d/a", "")},
		want:  []string{"A /d", "A /d/a"},
	}, {
		name:   "opaque root",
		lowers: [][]writeTestNode{{wtFile("a", ""), wtFile("b", ""), wtDir("c")}},
		upper:  []writeTestNode{wtFile("a", "new"), wtFile(ovl.OpaqueMarker, "")},
		want:   []string{"C /a", "D /b", "D /c"},
	}, {
		name: "lower whiteouts and opaque directories hide lower layers",
		lowers: [][]writeTestNode{
			{wtWhiteout("x"), wtFile(".wh.y", ""), wtDir("d").withXattr(ovl.XattrOpaque, "y"), wtFile("d/a", ""), wtFile("m/top", "")},
			{wtFile("x", ""), wtFile("y", ""), wtFile("d/b", ""), wtFile("m/bottom", "")},
		},
		upper: []writeTestNode{wtFile("x", ""), wtFile("y", ""), wtFile("d/a", ""), wtFile("d/b", ""), wtFile("m/top", ""), wtFile("m/bottom", "")},
		want:  []string{"C /d", "C /d/a", "A /d/b", "C /m", "C /m/bottom", "C /m/top", "A /x", "A /y"},
	}, {
		name: "a non-directory ends the merge beneath a directory",
		lowers: [][]writeTestNode{
			{wtDir("a")},
			{wtFile("a", "file")},
			{wtFile("a/b", "hidden")},
		},
		upper: []writeTestNode{wtFile("a/b", "")},
		want:  []string{"C /a", "A /a/b"},
	}, {
		name:   "type changes",
		lowers: [][]writeTestNode{{wtFile("f", ""), wtFile("d/x", ""), wtSymlink("l", "d")}},
		upper:  []writeTestNode{wtFile("f/inner", ""), wtWhiteout("d"), wtFile("l/y", "")},
		want:   []string{"D /d", "C /f", "A /f/inner", "C /l", "A /l/y"},
	}, {
		name:   "lower symlinks are not followed",
		lowers: [][]writeTestNode{{wtSymlink("etc", "/etc")}},
		upper:  []writeTestNode{wtFile("etc/passwd", "")},
		want:   []string{"C /etc", "A /etc/passwd"},
	}, {
		name:   "opaque lower root hides the lowers beneath",
		lowers: [][]writeTestNode{{wtFile(ovl.OpaqueMarker, ""), wtFile("a", "")}, {wtFile("b", "")}},
		upper:  []writeTestNode{wtFile("b", "")},
		want:   []string{"A /b"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			var lowers []string
			var tree strings.Builder
			for i, nodes := range tc.lowers {
				dir := t.TempDir()
				writeTestBuild(t, dir, nodes)
				lowers = append(lowers, dir)
				fmt.Fprintf(&tree, "lower %d:\n%s", i, changesTestTree(dir))
			}
			upper := t.TempDir()
			writeTestBuild(t, upper, tc.upper)
			fmt.Fprintf(&tree, "upper:\n%s", changesTestTree(upper))

			changes, err := Changes(upper, lowers)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range changes {
				got = append(got, fmt.Sprintf("%c %s", c.Kind, c.Path))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("changes\n got %q\nwant %q\n%s", got, tc.want, tree.String())
			}
			// Modified or added is what cow's own merge of the lowers
			// says: the path resolves there or not.
			for _, c := range changes {
				if c.Kind == Deleted {
					continue
				}
				if in := changesTestInLowers(t, lowers, c.Path); in != (c.Kind == Modified) {
					t.Errorf("%c %s, but cow resolves it in the lowers: %v", c.Kind, c.Path, in)
				}
			}
		})
	}
}

// changesTestInLowers reports whether cow resolves p in the stack of
// lowers alone.
func changesTestInLowers(t *testing.T, lowers []string, p string) bool {
	t.Helper()
	if len(lowers) == 0 {
		return false
	}
	s, err := cow.New(cow.Options{Lower: lowers})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e, err := s.Root()
	if err != nil {
		t.Fatal(err)
	}
	dir := ""
	for name := range strings.SplitSeq(strings.TrimPrefix(p, "/"), "/") {
		if !e.IsDir() {
			return false
		}
		e, err = s.Lookup(dir, &e, name)
		if errors.Is(err, unix.ENOENT) {
			return false
		}
		if err != nil {
			t.Fatalf("cow lookup %s in %s: %v", name, dir, err)
		}
		dir = path.Join(dir, name)
	}
	return true
}

// changesTestTree lists the tree under root, for failure messages.
func changesTestTree(root string) string {
	var b strings.Builder
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fmt.Fprintf(&b, "\t%s %s\n", fi.Mode(), rel)
		return nil
	})
	return b.String()
}

func TestChangesErrors(t *testing.T) {
	upper := t.TempDir()
	if _, err := Changes(filepath.Join(upper, "missing"), nil); err == nil {
		t.Errorf("Changes of a missing upper: no error")
	}
	if _, err := Changes(upper, []string{filepath.Join(upper, "missing")}); err == nil {
		t.Errorf("Changes with a missing lower: no error")
	}
}
