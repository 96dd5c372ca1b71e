package integration

// Directory renames of what lower layers hold (issue 11 §2), side by side
// with kernel overlayfs mounted redirect_dir=on,metacopy=on. The cases
// follow unionmount-testsuite's rename-dir, rename-empty-dir,
// rename-pop-dir, rename-move-dir, hard-link-dir, rename-new-dir,
// rename-new-pop-dir and rename-mass-dir (github.com/amir73il/
// unionmount-testsuite, tests/*.py), plus cases of our own. Each case runs
// on a fresh pair of mounts; after it the trees are compared, both sides
// are remounted and compared again, and strata's upper is mounted under
// the kernel, which must show the tree strata showed.

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// rdNames are the names a case works on, below the test dir "t": pop is a
// populated lower dir (pop/a empty, pop/pop/b, pop/pop/c/), pop2 another,
// empty and empty2 empty lower dirs, file a lower file, none a name that
// does not exist. ring is the prefix of six populated lower dirs
// ring100..ring105 (a holds "ringN"). mid is a populated dir of the top
// lower layer alone (with three layers: made in an earlier upper, as
// unionmount-testsuite's --ov=3 rotates new dirs into the lowers), its a
// holding midA; merged is a dir that every lower layer holds.
type rdNames struct {
	pop, pop2, empty, empty2, file, none, ring string
	mid, midA, merged                          string
}

const (
	rdPopB    = ":aaa:bbb:ccc" // pop/pop/b
	rdFile    = ":xxx:yyy:zzz" // file
	rdRingLen = 7              // ring dirs plus the gap
)

// rdBottom fills the bottom lower layer.
func rdBottom(t testing.TB, dir string) {
	t.Helper()
	files := map[string]string{"t/foo100": rdFile, "t/empty100/": "", "t/empty101/": "", "t/empty102/": ""}
	for _, d := range []string{"dir100", "dir101", "dir102"} {
		files["t/"+d+"/a"] = ""
		files["t/"+d+"/pop/b"] = rdPopB
		files["t/"+d+"/pop/c/"] = ""
	}
	for i := 0; i < rdRingLen-1; i++ {
		files[fmt.Sprintf("t/ring%d/a", 100+i)] = fmt.Sprintf("ring%d", i)
	}
	writeTree(t, dir, files)
}

// rdTwoLayers is the unionmount-testsuite layout: one lower, the upper.
var rdTwoLayers = struct {
	n     int
	build ovLayers
	names rdNames
}{1, func(t testing.TB, dirs []string) { rdBottom(t, dirs[0]) },
	rdNames{pop: "t/dir100", pop2: "t/dir101", empty: "t/empty100", empty2: "t/empty101", file: "t/foo100", none: "t/no_dir100", ring: "t/ring",
		mid: "t/dir102", midA: "", merged: "t/dir102"}}

// rdThreeLayers puts the upper over two lowers; the middle one was made
// by kernel overlayfs renaming lower dirs, so it holds redirects (and the
// whiteouts at the old names) that lookups must follow.
var rdThreeLayers = struct {
	n     int
	build ovLayers
	names rdNames
}{2, func(t testing.TB, dirs []string) {
	rdBottom(t, dirs[0])
	kernelMutate(t, []string{dirs[0]}, dirs[1], kernelRedirectOpts, func(mnt string) error {
		for _, m := range [][2]string{
			{"t/dir100", "t/mdir100"},     // same dir: the kernel writes a relative redirect
			{"t/empty100", "t/mempty100"}, // an empty one
			{"t/dir101", "t/sub/mdir101"}, // another dir: absolute redirect
			{"t/ring101", "t/ring101x"},   // a ring dir, renamed and back below
			{"t/ring101x", "t/ring101"},
		} {
			if err := os.MkdirAll(filepath.Join(mnt, filepath.Dir(m[1])), 0o755); err != nil {
				return err
			}
			if err := unix.Rename(filepath.Join(mnt, m[0]), filepath.Join(mnt, m[1])); err != nil {
				return fmt.Errorf("rename %s %s: %w", m[0], m[1], err)
			}
		}
		// A dir of the middle layer alone, and middle entries in a dir
		// both layers hold.
		if err := os.MkdirAll(filepath.Join(mnt, "t/mnew100/sub"), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(mnt, "t/mnew100/a"), []byte("aaaa"), 0o644); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(mnt, "t/dir102/pop/mid"), []byte("middle"), 0o644)
	})
}, rdNames{pop: "t/mdir100", pop2: "t/sub/mdir101", empty: "t/mempty100", empty2: "t/empty101", file: "t/foo100", none: "t/no_dir100", ring: "t/ring",
	mid: "t/mnew100", midA: "aaaa", merged: "t/dir102"}}

// rdCase is one scenario.
type rdCase struct {
	name string
	run  func(p *ovPair, n rdNames)
}

func TestRedirectDir(t *testing.T) {
	rdRunCases(t, rdTwoLayers.n, rdTwoLayers.build, rdTwoLayers.names)
}

// TestRedirectDirOverRedirect runs the cases with a middle layer that
// holds kernel-written redirects (unionmount-testsuite's --ov=3).
func TestRedirectDirOverRedirect(t *testing.T) {
	rdRunCases(t, rdThreeLayers.n, rdThreeLayers.build, rdThreeLayers.names)
}

func rdRunCases(t *testing.T, nlower int, build ovLayers, n rdNames) {
	for _, c := range rdCases {
		t.Run(c.name, func(t *testing.T) {
			p := newOvPair(t, nlower, kernelRedirectOpts, "", build)
			p.sameTree("before the first step")
			c.run(p, n)
			p.sameTree("after the last step")
			p.remount()
			p.strataUnderKernel(kernelRedirectOpts)
		})
	}
}

var rdCases = []rdCase{
	// rename-dir
	{"rename-dir/1-populated-into-empty", func(p *ovPair, n rdNames) {
		d2 := n.empty + "/x"
		p.rename(n.pop, d2, 0)
		p.rename(n.pop, d2, unix.ENOENT)
		p.openDir(d2, 0)
		p.openDir(n.pop, unix.ENOENT)
		p.readFile(d2+"/a", 0, "")
	}},
	{"rename-dir/2-subdir-into-empty", func(p *ovPair, n rdNames) {
		d, d2 := n.pop+"/pop", n.empty+"/pop"
		p.rename(d, d2, 0)
		p.rename(d, d2, unix.ENOENT)
		p.openDir(d2, 0)
		p.openDir(d, unix.ENOENT)
		p.readFile(d2+"/b", 0, rdPopB)
	}},

	// rename-empty-dir
	{"rename-empty-dir/1-and-back", func(p *ovPair, n rdNames) {
		p.rename(n.empty, n.none, 0)
		p.rename(n.empty, n.none, unix.ENOENT)
		p.rename(n.none, n.empty, 0)
		p.rename(n.none, n.empty, unix.ENOENT)
		p.openDir(n.empty, 0)
		p.openDir(n.none, unix.ENOENT)
	}},
	{"rename-empty-dir/2-rmdir-old-name", func(p *ovPair, n rdNames) {
		p.rename(n.empty, n.none, 0)
		p.rmdir(n.empty, unix.ENOENT)
		p.rename(n.none, n.empty, 0)
		p.openDir(n.empty, 0)
		p.rmdir(n.empty, 0)
		p.rmdir(n.empty, unix.ENOENT)
		p.openDir(n.empty, unix.ENOENT)
		p.openDir(n.none, unix.ENOENT)
	}},
	{"rename-empty-dir/3-unlink-old-name", func(p *ovPair, n rdNames) {
		p.rename(n.empty, n.none, 0)
		p.unlink(n.empty, unix.ENOENT)
		p.rename(n.none, n.empty, 0)
		p.unlink(n.empty, unix.EISDIR)
		p.openDir(n.empty, 0)
		p.openDir(n.none, unix.ENOENT)
	}},
	{"rename-empty-dir/5-unlink-then-rename", func(p *ovPair, n rdNames) {
		p.unlink(n.empty, unix.EISDIR)
		p.rename(n.empty, n.none, 0)
		p.unlink(n.empty, unix.ENOENT)
		p.rmdir(n.none, 0)
	}},
	{"rename-empty-dir/6-twice", func(p *ovPair, n rdNames) {
		d3 := n.none + "x"
		p.rename(n.empty, n.none, 0)
		p.rename(n.none, d3, 0)
		p.rename(n.none, d3, unix.ENOENT)
		p.openDir(n.empty, unix.ENOENT)
		p.openDir(n.none, unix.ENOENT)
		p.openDir(d3, 0)
	}},
	{"rename-empty-dir/7-over-populated", func(p *ovPair, n rdNames) {
		p.rename(n.empty, n.pop, unix.ENOTEMPTY)
		p.openDir(n.empty, 0)
		p.openDir(n.pop, 0)
	}},
	{"rename-empty-dir/8-over-itself", func(p *ovPair, n rdNames) {
		p.rename(n.empty, n.empty, 0)
		p.openDir(n.empty, 0)
	}},
	{"rename-empty-dir/9-over-file", func(p *ovPair, n rdNames) {
		p.rename(n.empty, n.file, unix.ENOTDIR)
		p.rename(n.empty, n.pop+"/a", unix.ENOTDIR)
		p.openDir(n.empty, 0)
	}},
	{"rename-empty-dir/10-over-parent", func(p *ovPair, n rdNames) {
		p.rename(n.empty, filepath.Dir(n.empty), unix.ENOTEMPTY)
		p.openDir(n.empty, 0)
	}},

	// rename-pop-dir
	{"rename-pop-dir/1-and-back", func(p *ovPair, n rdNames) {
		p.rename(n.pop, n.none, 0)
		p.rename(n.pop, n.none, unix.ENOENT)
		p.rename(n.none, n.pop, 0)
		p.rename(n.none, n.pop, unix.ENOENT)
		p.openDir(n.pop, 0)
		p.openDir(n.none, unix.ENOENT)
		p.readFile(n.pop+"/a", 0, "")
		p.readFile(n.pop+"/pop/b", 0, rdPopB)
	}},
	{"rename-pop-dir/2-rmdir-old-name", func(p *ovPair, n rdNames) {
		p.rename(n.pop, n.none, 0)
		p.rmdir(n.pop, unix.ENOENT)
		p.rename(n.none, n.pop, 0)
		p.rmdir(n.pop, unix.ENOTEMPTY)
		p.openDir(n.pop, 0)
		p.readFile(n.pop+"/a", 0, "")
	}},
	{"rename-pop-dir/4-rmdir-then-rename", func(p *ovPair, n rdNames) {
		p.rmdir(n.pop, unix.ENOTEMPTY)
		p.rename(n.pop, n.none, 0)
		p.rmdir(n.pop, unix.ENOENT)
		p.rmdir(n.none, unix.ENOTEMPTY)
		p.readFile(n.none+"/a", 0, "")
	}},
	{"rename-pop-dir/6-twice", func(p *ovPair, n rdNames) {
		d3 := n.none + "x"
		p.rename(n.pop, n.none, 0)
		p.rename(n.none, d3, 0)
		p.openDir(n.pop, unix.ENOENT)
		p.openDir(n.none, unix.ENOENT)
		p.readFile(d3+"/a", 0, "")
		p.readFile(d3+"/pop/b", 0, rdPopB)
	}},
	{"rename-pop-dir/7-over-empty", func(p *ovPair, n rdNames) {
		p.rename(n.pop, n.empty, 0)
		p.openDir(n.pop, unix.ENOENT)
		p.readFile(n.empty+"/a", 0, "")
		p.readFile(n.empty+"/pop/b", 0, rdPopB)
	}},
	{"rename-pop-dir/8-over-itself", func(p *ovPair, n rdNames) {
		p.rename(n.pop, n.pop, 0)
		p.readFile(n.pop+"/a", 0, "")
	}},
	{"rename-pop-dir/9-over-file-and-child", func(p *ovPair, n rdNames) {
		p.rename(n.pop, n.file, unix.ENOTDIR)
		p.rename(n.pop, n.pop+"/a", unix.EINVAL)
		p.readFile(n.pop+"/a", 0, "")
	}},
	{"rename-pop-dir/10-subdir-over-file", func(p *ovPair, n rdNames) {
		p.rename(n.pop+"/pop", n.pop+"/a", unix.ENOTDIR)
		p.readFile(n.pop+"/pop/b", 0, rdPopB)
	}},
	{"rename-pop-dir/11-over-parent", func(p *ovPair, n rdNames) {
		p.rename(n.pop, filepath.Dir(n.pop), unix.ENOTEMPTY)
		p.readFile(n.pop+"/a", 0, "")
	}},

	// rename-move-dir
	{"rename-move-dir/1-empty-into-populated", func(p *ovPair, n rdNames) {
		d2 := n.pop + "/" + filepath.Base(n.empty)
		p.rename(n.empty, d2, 0)
		p.rename(n.empty, d2, unix.ENOENT)
		p.openDir(d2, 0)
		p.openDir(n.empty, unix.ENOENT)
	}},
	{"rename-move-dir/2-populated-into-empty", func(p *ovPair, n rdNames) {
		d2 := n.empty + "/" + filepath.Base(n.pop)
		p.rename(n.pop, d2, 0)
		p.openDir(n.pop, unix.ENOENT)
		p.readFile(d2+"/a", 0, "")
		p.readFile(d2+"/pop/b", 0, rdPopB)
	}},
	{"rename-move-dir/3-rename-then-move", func(p *ovPair, n rdNames) {
		d2, d3 := n.pop+"x", n.empty+"/"+filepath.Base(n.pop)
		p.rename(n.pop, d2, 0)
		p.rename(d2, d3, 0)
		p.rename(d2, d3, unix.ENOENT)
		p.openDir(n.pop, unix.ENOENT)
		p.openDir(d2, unix.ENOENT)
		p.readFile(d3+"/a", 0, "")
	}},
	{"rename-move-dir/4-move-then-rename", func(p *ovPair, n rdNames) {
		d2 := n.empty + "/" + filepath.Base(n.pop)
		d3 := d2 + "x"
		p.rename(n.pop, d2, 0)
		p.rename(d2, d3, 0)
		p.openDir(d2, unix.ENOENT)
		p.readFile(d3+"/pop/b", 0, rdPopB)
	}},
	{"rename-move-dir/5-move-then-move-subdir", func(p *ovPair, n rdNames) {
		d2 := n.empty + "/" + filepath.Base(n.pop)
		d3 := n.empty2 + "/pop"
		p.rename(n.pop, d2, 0)
		p.rename(d2+"/pop", d3, 0)
		p.rename(d2+"/pop", d3, unix.ENOENT)
		p.openDir(d2, 0)
		p.openDir(d2+"/pop", unix.ENOENT)
		p.readFile(d2+"/a", 0, "")
		p.readFile(d3+"/b", 0, rdPopB)
	}},
	{"rename-move-dir/6-rename-child-then-self-then-move", func(p *ovPair, n rdNames) {
		d2 := n.pop + "x"
		d3 := n.empty + "/" + filepath.Base(n.pop)
		p.rename(n.pop+"/pop", n.pop+"/popx", 0)
		p.rename(n.pop+"/pop", n.pop+"/popx", unix.ENOENT)
		p.rename(n.pop, d2, 0)
		p.rename(d2, d3, 0)
		p.openDir(d3+"/pop", unix.ENOENT)
		p.openDir(d3+"/popx", 0)
		p.readFile(d3+"/a", 0, "")
		p.readFile(d3+"/popx/b", 0, rdPopB)
	}},
	{"rename-move-dir/7-rename-child-and-parent-move-child", func(p *ovPair, n rdNames) {
		d2 := n.pop + "x"
		p.rename(n.pop+"/pop", n.pop+"/popx", 0)
		p.rename(n.pop, d2, 0)
		p.rename(d2+"/popx", n.empty+"/popx", 0)
		p.openDir(d2, 0)
		p.openDir(d2+"/pop", unix.ENOENT)
		p.openDir(d2+"/popx", unix.ENOENT)
		p.openDir(n.empty+"/pop", unix.ENOENT)
		p.readFile(d2+"/a", 0, "")
		p.readFile(n.empty+"/popx/b", 0, rdPopB)
	}},
	{"rename-move-dir/8-new-into-empty-lower", func(p *ovPair, n rdNames) {
		d := n.empty + "-new"
		p.mkdir(d, 0)
		p.rename(d, n.empty+"/new", 0)
		p.openDir(d, unix.ENOENT)
		p.openDir(n.empty+"/new", 0)
	}},
	{"rename-move-dir/11-new-branch-into-ancestor", func(p *ovPair, n rdNames) {
		d := n.empty + "/newp"
		p.mkdir(d, 0)
		p.mkdir(d+"/new", 0)
		p.rename(d, n.none, 0)
		p.openDir(d, unix.ENOENT)
		p.openDir(n.none+"/new", 0)
	}},
	{"rename-move-dir/12-populated-into-new", func(p *ovPair, n rdNames) {
		d := n.empty + "/new"
		d2 := d + "/" + filepath.Base(n.pop)
		p.mkdir(d, 0)
		p.rename(n.pop, d2, 0)
		p.rename(n.pop, d2, unix.ENOENT)
		p.openDir(n.pop, unix.ENOENT)
		p.readFile(d2+"/a", 0, "")
		p.readFile(d2+"/pop/b", 0, rdPopB)
	}},

	// hard-link-dir
	{"hard-link-dir/1-7", func(p *ovPair, n rdNames) {
		p.link(n.empty, n.none, unix.EPERM)
		p.link(n.file, n.empty, unix.EEXIST)
		p.link(n.pop, n.empty, unix.EEXIST)
		p.link(n.pop, n.file, unix.EEXIST)
		p.link(n.pop, n.pop, unix.EEXIST)
		p.link(n.pop+"/pop", n.pop, unix.EEXIST)
		p.readFile(n.file, 0, rdFile)
		p.rmdir(n.empty, 0)
		p.link(n.empty, n.none, unix.ENOENT)
		p.openDir(n.none, unix.ENOENT)
	}},
	{"hard-link-dir/8-renamed-dir", func(p *ovPair, n rdNames) {
		d := n.empty + "/new"
		p.mkdir(d, 0)
		p.rename(d, n.none, 0)
		p.link(d, n.none+"-a", unix.ENOENT)
		p.link(n.none, d, unix.EPERM)
		p.link(n.pop, n.none+"-b", unix.EPERM)
		p.openDir(d, unix.ENOENT)
		p.openDir(n.none, 0)
	}},

	// rename-new-dir
	{"rename-new-dir/1-and-back", func(p *ovPair, n rdNames) {
		d := n.empty + "-new"
		p.mkdir(d, 0)
		p.rename(d, n.none, 0)
		p.rename(n.none, d, 0)
		p.openDir(d, 0)
		p.openDir(n.none, unix.ENOENT)
	}},
	{"rename-new-dir/11-over-empty-lower", func(p *ovPair, n rdNames) {
		d := n.empty + "-new"
		p.mkdir(d, 0)
		p.rename(d, n.empty, 0)
		p.openDir(n.empty, 0)
		p.openDir(d, unix.ENOENT)
	}},
	{"rename-new-dir/12-over-populated-lower", func(p *ovPair, n rdNames) {
		d := n.empty + "-new"
		p.mkdir(d, 0)
		p.rename(d, n.pop, unix.ENOTEMPTY)
		p.openDir(d, 0)
		p.readFile(n.pop+"/a", 0, "")
	}},
	{"rename-new-dir/13-over-removed-empty-lower", func(p *ovPair, n rdNames) {
		d := n.empty + "-new"
		p.mkdir(d, 0)
		p.rmdir(n.empty, 0)
		p.rename(d, n.empty, 0)
		p.openDir(n.empty, 0)
	}},
	{"rename-new-dir/14-over-removed-populated-lower", func(p *ovPair, n rdNames) {
		d := n.empty + "-new"
		p.mkdir(d, 0)
		p.rmtree(n.pop)
		p.rename(d, n.pop, 0)
		p.readFile(n.pop+"/a", unix.ENOENT, "")
		p.openDir(n.pop+"/pop", unix.ENOENT)
		p.openDir(n.pop, 0)
	}},

	// rename-new-pop-dir
	{"rename-new-pop-dir/1-and-back", func(p *ovPair, n rdNames) {
		d := n.pop + "-new"
		p.mkdir(d, 0)
		p.writeFile(d+"/a", "aaaa", 0)
		p.rename(d, n.none, 0)
		p.rename(n.none, d, 0)
		p.rmdir(d, unix.ENOTEMPTY)
		p.readFile(d+"/a", 0, "aaaa")
	}},
	{"rename-new-pop-dir/7-over-empty-lower", func(p *ovPair, n rdNames) {
		d := n.pop + "-new"
		p.mkdir(d, 0)
		p.writeFile(d+"/a", "aaaa", 0)
		p.rename(d, n.empty, 0)
		p.openDir(d, unix.ENOENT)
		p.readFile(n.empty+"/a", 0, "aaaa")
	}},
	{"rename-new-pop-dir/12-over-unioned", func(p *ovPair, n rdNames) {
		d := n.pop + "-new"
		p.mkdir(d, 0)
		p.writeFile(d+"/a", "aaaa", 0)
		p.rename(d, n.pop, unix.ENOTEMPTY)
		p.readFile(d+"/a", 0, "aaaa")
		p.readFile(n.pop+"/a", 0, "")
	}},
	{"rename-new-pop-dir/13-over-removed-empty-subdir", func(p *ovPair, n rdNames) {
		d := n.pop + "-new"
		p.mkdir(d, 0)
		p.writeFile(d+"/a", "aaaa", 0)
		p.rmdir(n.pop+"/pop/c", 0)
		p.rename(d, n.pop+"/pop/c", 0)
		p.readFile(n.pop+"/pop/c/a", 0, "aaaa")
	}},
	{"rename-new-pop-dir/14-over-removed-populated-subdir", func(p *ovPair, n rdNames) {
		d := n.pop + "-new"
		p.mkdir(d, 0)
		p.writeFile(d+"/a", "aaaa", 0)
		p.rmtree(n.pop + "/pop")
		p.rename(d, n.pop+"/pop", 0)
		p.readFile(n.pop+"/pop/a", 0, "aaaa")
		p.readFile(n.pop+"/pop/b", unix.ENOENT, "")
	}},
	{"rename-new-pop-dir/16-over-removed-unioned-different-dirs", func(p *ovPair, n rdNames) {
		d := n.pop + "-new"
		p.mkdir(d, 0)
		p.mkdir(d+"/pop", 0)
		p.writeFile(d+"/pop/x", "aaaa", 0)
		p.rmtree(n.pop)
		p.rename(d, n.pop, 0)
		p.openDir(d, unix.ENOENT)
		p.readFile(n.pop+"/pop/x", 0, "aaaa")
		p.readFile(n.pop+"/pop/b", unix.ENOENT, "")
	}},
	{"rename-new-pop-dir/18-over-unlinked-unioned", func(p *ovPair, n rdNames) {
		d := n.pop + "-new"
		p.mkdir(d, 0)
		p.mkdir(d+"/pop", 0)
		p.writeFile(d+"/pop/b", "aaaa", 0)
		p.unlink(n.pop, unix.EISDIR)
		p.rename(d, n.pop, unix.ENOTEMPTY)
		p.readFile(d+"/pop/b", 0, "aaaa")
		p.readFile(n.pop+"/pop/b", 0, rdPopB)
	}},
	{"rename-new-pop-dir/19-over-emptied-lower", func(p *ovPair, n rdNames) {
		d := n.pop + "-new"
		p.mkdir(d, 0)
		p.writeFile(d+"/a", "aaaa", 0)
		p.rmdir(n.pop+"/pop/c", 0)
		p.unlink(n.pop+"/pop/b", 0)
		p.rename(d, n.pop+"/pop", 0)
		p.readFile(n.pop+"/pop/a", 0, "aaaa")
		p.readFile(n.pop+"/pop/b", unix.ENOENT, "")
	}},

	// rename-mass-dir, with new dirs as upstream does and with the
	// populated lower ring dirs.
	{"rename-mass-dir/new-populated", func(p *ovPair, n rdNames) {
		base := n.none + "-mass"
		for i := 0; i < rdRingLen-1; i++ {
			d := fmt.Sprintf("%s%d", base, 100+i)
			p.mkdir(d, 0)
			p.writeFile(d+"/a", fmt.Sprintf("ring%d", i), 0)
		}
		rdMassRename(p, base)
	}},
	{"rename-mass-dir/lower-populated", func(p *ovPair, n rdNames) {
		rdMassRename(p, n.ring)
	}},

	// Cases of our own.
	{"copy-up-beneath-renamed", func(p *ovPair, n rdNames) {
		p.rename(n.pop, n.none, 0)
		p.appendFile(n.none+"/pop/b", ":ddd", 0)
		p.readFile(n.none+"/pop/b", 0, rdPopB+":ddd")
		p.writeFile(n.none+"/a", "new a", 0)
		p.readFile(n.none+"/a", 0, "new a")
		p.writeFile(n.none+"/pop/c/new", "made here", 0)
		p.readFile(n.pop+"/pop/b", unix.ENOENT, "")
		p.sameTree("after the copy-ups")
		p.rename(n.none, n.pop, 0)
		p.readFile(n.pop+"/pop/b", 0, rdPopB+":ddd")
		p.readFile(n.pop+"/pop/c/new", 0, "made here")
	}},
	{"rename-copied-up-dir", func(p *ovPair, n rdNames) {
		p.appendFile(n.pop+"/pop/b", ":ddd", 0)
		p.rename(n.pop, n.none, 0)
		p.readFile(n.none+"/pop/b", 0, rdPopB+":ddd")
		p.readFile(n.none+"/a", 0, "")
	}},
	{"rename-parent-of-renamed", func(p *ovPair, n rdNames) {
		p.rename(n.pop+"/pop", n.pop+"/pop2", 0)
		p.rename(n.pop, n.none, 0)
		p.readFile(n.none+"/pop2/b", 0, rdPopB)
		p.openDir(n.none+"/pop", unix.ENOENT)
		p.rename(n.none+"/pop2", n.none+"/pop", 0)
		p.readFile(n.none+"/pop/b", 0, rdPopB)
	}},
	{"rename-over-whiteout", func(p *ovPair, n rdNames) {
		p.unlink(n.file, 0)
		p.rename(n.pop, n.file, 0) // a dir over the whiteout of a file
		p.readFile(n.file+"/pop/b", 0, rdPopB)
		p.rmtree(n.pop2)
		p.rename(n.file, n.pop2, 0) // over the whiteout of a populated dir
		p.readFile(n.pop2+"/a", 0, "")
		p.readFile(n.pop2+"/pop/b", 0, rdPopB)
		p.openDir(n.file, unix.ENOENT)
	}},
	{"rmdir-renamed", func(p *ovPair, n rdNames) {
		p.rename(n.empty, n.none, 0)
		p.rmdir(n.none, 0)
		p.openDir(n.none, unix.ENOENT)
		p.openDir(n.empty, unix.ENOENT)
		p.rename(n.pop, n.none+"2", 0)
		p.rmdir(n.none+"2", unix.ENOTEMPTY)
		p.rmtree(n.none + "2")
		p.openDir(n.none+"2", unix.ENOENT)
		p.openDir(n.pop, unix.ENOENT)
	}},
	{"new-dir-at-old-name", func(p *ovPair, n rdNames) {
		p.rename(n.pop, n.none, 0)
		p.mkdir(n.pop, 0)
		p.openDir(n.pop, 0)
		p.readFile(n.pop+"/a", unix.ENOENT, "")
		p.openDir(n.pop+"/pop", unix.ENOENT)
		p.readFile(n.none+"/pop/b", 0, rdPopB)
		p.writeFile(n.pop+"/a", "fresh", 0)
		p.rename(n.pop, n.none+"/pop/c/moved", 0)
		p.readFile(n.none+"/pop/c/moved/a", 0, "fresh")
	}},
	{"rename-top-lower-dir", func(p *ovPair, n rdNames) {
		p.rename(n.mid, n.none, 0)
		p.readFile(n.none+"/a", 0, n.midA)
		p.openDir(n.mid, unix.ENOENT)
		p.rename(n.none, n.empty+"/x", 0)
		p.rmdir(n.empty+"/x", unix.ENOTEMPTY)
		p.rmdir(n.empty, unix.ENOTEMPTY)
		p.appendFile(n.empty+"/x/a", "+", 0)
		p.rename(n.empty+"/x", n.mid, 0)
		p.readFile(n.mid+"/a", 0, n.midA+"+")
	}},
	{"rename-merged-subdir-across-parents", func(p *ovPair, n rdNames) {
		p.rename(n.merged+"/pop", n.pop+"/pop-from-merged", 0)
		p.readFile(n.pop+"/pop-from-merged/b", 0, rdPopB)
		p.openDir(n.merged+"/pop", unix.ENOENT)
		p.rename(n.merged, n.none, 0)
		p.readFile(n.none+"/a", 0, "")
		p.rename(n.pop+"/pop-from-merged", n.none+"/pop", 0)
	}},
	{"exchange-lower-dirs", func(p *ovPair, n rdNames) {
		p.appendFile(n.pop2+"/a", "two", 0)
		p.do(fmt.Sprintf("renameat2(%q, %q, RENAME_EXCHANGE)", n.pop, n.pop2), 0, func(r string) error {
			return unix.Renameat2(unix.AT_FDCWD, filepath.Join(r, n.pop), unix.AT_FDCWD, filepath.Join(r, n.pop2), unix.RENAME_EXCHANGE)
		})
		p.readFile(n.pop+"/a", 0, "two")
		p.readFile(n.pop2+"/a", 0, "")
		p.do(fmt.Sprintf("renameat2(%q, %q, RENAME_EXCHANGE) with a file", n.empty, n.file), 0, func(r string) error {
			return unix.Renameat2(unix.AT_FDCWD, filepath.Join(r, n.empty), unix.AT_FDCWD, filepath.Join(r, n.file), unix.RENAME_EXCHANGE)
		})
		p.readFile(n.empty, 0, rdFile)
		p.openDir(n.file, 0)
	}},
	{"rename-noreplace", func(p *ovPair, n rdNames) {
		p.do(fmt.Sprintf("renameat2(%q, %q, RENAME_NOREPLACE)", n.pop, n.empty), unix.EEXIST, func(r string) error {
			return unix.Renameat2(unix.AT_FDCWD, filepath.Join(r, n.pop), unix.AT_FDCWD, filepath.Join(r, n.empty), unix.RENAME_NOREPLACE)
		})
		p.do(fmt.Sprintf("renameat2(%q, %q, RENAME_NOREPLACE)", n.pop, n.none), 0, func(r string) error {
			return unix.Renameat2(unix.AT_FDCWD, filepath.Join(r, n.pop), unix.AT_FDCWD, filepath.Join(r, n.none), unix.RENAME_NOREPLACE)
		})
		p.readFile(n.none+"/pop/b", 0, rdPopB)
	}},
}

// rdMassRename renames base100..base105 round a ring of seven names, the
// gap moving backwards, 31 times (as rename-mass-dir does), then checks
// which content each name holds, and removes them. a in dir i holds
// "ringI" before the renames.
func rdMassRename(p *ovPair, base string) {
	p.t.Helper()
	name := func(i int) string { return fmt.Sprintf("%s%d", base, 100+i) }
	iters := rdRingLen*4 + rdRingLen/2
	content := map[int]int{} // slot -> original index
	for i := 0; i < rdRingLen-1; i++ {
		content[i] = i
	}
	gap := rdRingLen - 1
	for i := 0; i < iters; i++ {
		next := (gap - 1 + rdRingLen) % rdRingLen
		p.rename(name(next), name(gap), 0)
		content[gap] = content[next]
		delete(content, next)
		gap = next
	}
	p.sameTree("after the mass rename")
	for i := 0; i < rdRingLen; i++ {
		if i == gap {
			p.openDir(name(i), unix.ENOENT)
			continue
		}
		p.readFile(name(i)+"/a", 0, fmt.Sprintf("ring%d", content[i]))
	}
	p.remount()
	for i := 0; i < rdRingLen; i++ {
		if i == gap {
			p.rmdir(name(i), unix.ENOENT)
			continue
		}
		p.unlink(name(i)+"/a", 0)
		p.rmdir(name(i), 0)
	}
}

// TestStrataUpperMountsUnderKernel: an upper that strata wrote, with
// directory renames (over a middle layer holding kernel redirects),
// copy-ups beneath renamed dirs, metadata-only copy-ups, a renamed
// metacopy file, whiteouts and a new dir at an old name, mounted with its
// lowers under kernel overlayfs (redirect_dir=on,metacopy=on), shows the
// tree strata showed, and the tree the kernel made from the same steps.
func TestStrataUpperMountsUnderKernel(t *testing.T) {
	n := rdThreeLayers.names
	p := newOvPair(t, rdThreeLayers.n, kernelRedirectOpts, "", rdThreeLayers.build)
	p.rename(n.pop, n.none, 0)
	p.appendFile(n.none+"/pop/b", ":ddd", 0)
	p.writeFile(n.none+"/pop/c/new", "new", 0)
	p.do("chmod(renamed/a, 0600)", 0, func(r string) error { return unix.Chmod(filepath.Join(r, n.none, "a"), 0o600) })
	p.do("chmod(file, 0640)", 0, func(r string) error { return unix.Chmod(filepath.Join(r, n.file), 0o640) })
	p.rename(n.file, n.empty2+"/moved-file", 0)
	p.rename(n.none+"/pop", n.empty+"/pop", 0)
	p.mkdir(n.pop, 0)
	p.writeFile(n.pop+"/a", "fresh", 0)
	p.rmtree(n.pop2)
	p.rename(n.ring+"101", n.ring+"101y", 0)
	p.rename("t/dir102", "t/sub/dir102", 0)
	p.unlink("t/sub/dir102/a", 0)
	p.sameTree("after the steps")
	p.strataUnderKernel(kernelRedirectOpts)
	p.remount()
	p.strataUnderKernel(kernelRedirectOpts)
}
