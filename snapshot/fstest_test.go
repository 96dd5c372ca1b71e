package snapshot

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Fixture changes are data, as in containerd/continuity fs/fstest: a
// layer is a list of appliers, each one change made to a tree. The
// suite makes each change twice: through a mount of a snapshot, and to
// one plain directory that holds every layer's changes in turn (the flat
// copy). The merged view must then equal the flat copy.

// An applier is one change to the tree under a root.
type applier struct {
	desc  string
	apply func(root string) error
}

func (a applier) String() string { return a.desc }

// applyAll makes the changes as under root, in order.
func applyAll(root string, as []applier) error {
	for _, a := range as {
		if err := a.apply(root); err != nil {
			return fmt.Errorf("%s: %w", a, err)
		}
	}
	return nil
}

// createFile writes name with content, truncating an existing file,
// and gives it exactly perm (the umask does not apply).
func createFile(name, content string, perm os.FileMode) applier {
	return applier{
		desc: fmt.Sprintf("create file %s (%d bytes, %04o)", name, len(content), perm),
		apply: func(root string) error {
			p := filepath.Join(root, name)
			if err := os.WriteFile(p, []byte(content), perm); err != nil {
				return err
			}
			return os.Chmod(p, perm)
		},
	}
}

// createDir makes the directory name with exactly perm.
func createDir(name string, perm os.FileMode) applier {
	return applier{
		desc: fmt.Sprintf("create dir %s (%04o)", name, perm),
		apply: func(root string) error {
			p := filepath.Join(root, name)
			if err := os.Mkdir(p, perm); err != nil {
				return err
			}
			return os.Chmod(p, perm)
		},
	}
}

// symlink makes name a symlink to target.
func symlink(target, name string) applier {
	return applier{
		desc:  fmt.Sprintf("symlink %s -> %s", name, target),
		apply: func(root string) error { return os.Symlink(target, filepath.Join(root, name)) },
	}
}

// remove unlinks the file (or empty directory) name.
func remove(name string) applier {
	return applier{
		desc:  "remove " + name,
		apply: func(root string) error { return os.Remove(filepath.Join(root, name)) },
	}
}

// removeAll removes name and everything beneath it (rm -r).
func removeAll(name string) applier {
	return applier{
		desc: "rm -r " + name,
		apply: func(root string) error {
			p := filepath.Join(root, name)
			if _, err := os.Lstat(p); err != nil {
				return err // rm -r of nothing is a fixture mistake
			}
			return os.RemoveAll(p)
		},
	}
}

// rename moves oldname to newname, replacing it if it exists (mv a b).
func rename(oldname, newname string) applier {
	return applier{
		desc: fmt.Sprintf("mv %s %s", oldname, newname),
		apply: func(root string) error {
			return os.Rename(filepath.Join(root, oldname), filepath.Join(root, newname))
		},
	}
}

// chown sets the owner of name, not following a symlink.
func chown(name string, uid, gid int) applier {
	return applier{
		desc:  fmt.Sprintf("chown %d:%d %s", uid, gid, name),
		apply: func(root string) error { return os.Lchown(filepath.Join(root, name), uid, gid) },
	}
}

// chmod sets the mode of name.
func chmod(name string, perm os.FileMode) applier {
	return applier{
		desc:  fmt.Sprintf("chmod %04o %s", perm, name),
		apply: func(root string) error { return os.Chmod(filepath.Join(root, name), perm) },
	}
}

// describeTree lists the tree under root, one sorted line per entry:
// path, type, permission bits, owner, and for a regular file its size
// and content (quoted when short, else a digest), for a symlink its
// target, for a device its number. Directory sizes and times are left
// out: they differ between filesystems holding the same tree.
func describeTree(root string) ([]string, error) {
	var lines []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		head := fmt.Sprintf("%s %04o %d:%d", rel, st.Mode&0o7777, st.Uid, st.Gid)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			lines = append(lines, "dir "+head)
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			lines = append(lines, fmt.Sprintf("file %s size=%d %s", head, st.Size, contentSummary(b)))
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			lines = append(lines, fmt.Sprintf("symlink %s:%d:%d -> %s", rel, st.Uid, st.Gid, target))
		case unix.S_IFCHR, unix.S_IFBLK:
			lines = append(lines, fmt.Sprintf("dev %s type=%o rdev=%d:%d", head, st.Mode&unix.S_IFMT, unix.Major(st.Rdev), unix.Minor(st.Rdev)))
		default:
			lines = append(lines, fmt.Sprintf("other %s type=%o", head, st.Mode&unix.S_IFMT))
		}
		return nil
	})
	slices.Sort(lines)
	return lines, err
}

func contentSummary(b []byte) string {
	if len(b) <= 48 {
		return fmt.Sprintf("%q", b)
	}
	return fmt.Sprintf("sha256:%x", sha256.Sum256(b))[:19]
}

// checkTreeEqual fails t unless the trees under got and want are the
// same by describeTree; it prints the differences and both trees.
func checkTreeEqual(t testing.TB, got, want string) {
	t.Helper()
	g, err := describeTree(got)
	if err != nil {
		t.Fatalf("describe %s: %v", got, err)
	}
	w, err := describeTree(want)
	if err != nil {
		t.Fatalf("describe %s: %v", want, err)
	}
	if slices.Equal(g, w) {
		return
	}
	var diff []string
	for _, l := range g {
		if !slices.Contains(w, l) {
			diff = append(diff, "+ "+l)
		}
	}
	for _, l := range w {
		if !slices.Contains(g, l) {
			diff = append(diff, "- "+l)
		}
	}
	t.Errorf("tree %s differs from %s (+ got, - want):\n%s\ngot:\n%s\nwant:\n%s",
		got, want, strings.Join(diff, "\n"), strings.Join(g, "\n"), strings.Join(w, "\n"))
}

// diskUsageOf measures the space allocated under root, each inode
// counted once, as du does. It is the tests' own measure, independent of
// the store's.
func diskUsageOf(t testing.TB, root string) int64 {
	t.Helper()
	type inode struct{ dev, ino uint64 }
	seen := map[inode]bool{}
	var total int64
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if k := (inode{st.Dev, st.Ino}); !seen[k] {
			seen[k] = true
			total += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		t.Fatalf("du %s: %v", root, err)
	}
	return total
}

// dirNames returns the names in dir, sorted; none when dir is missing.
func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}
