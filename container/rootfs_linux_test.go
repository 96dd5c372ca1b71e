package container

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// treeEntry is a file of a fixture root filesystem: a directory, a
// regular file with mode and content, or a symlink to target.
type treeEntry struct {
	kind   byte // 'd', 'f' or 'l'
	mode   os.FileMode
	target string // the content of a file, the target of a link
}

var lookTree = map[string]treeEntry{
	"bin":          {kind: 'd'},
	"bin/busybox":  {'f', 0o755, "#!"},
	"bin/sh":       {'l', 0, "/bin/busybox"}, // absolute: resolved in the root
	"bin/rel":      {'l', 0, "busybox"},
	"bin/escape":   {'l', 0, "../../../../../../bin/busybox"},
	"bin/dangling": {'l', 0, "/nowhere"},
	"etc":          {kind: 'd'},
	"etc/passwd":   {'f', 0o644, "root:x:0:0::/root:/bin/sh"},
	"etc/group":    {'l', 0, "../../../../../../../etc/group-outside"},
	"opt":          {kind: 'd'},
	"opt/tool":     {'f', 0o700, "#!"},
}

func makeTree(t *testing.T, tree map[string]treeEntry) string {
	t.Helper()
	root := t.TempDir()
	paths := make([]string, 0, len(tree))
	for p := range tree {
		paths = append(paths, p)
	}
	slices.Sort(paths) // parents before children
	for _, p := range paths {
		e, full := tree[p], filepath.Join(root, p)
		var err error
		switch e.kind {
		case 'd':
			err = os.Mkdir(full, 0o755)
		case 'l':
			err = os.Symlink(e.target, full)
		case 'f':
			if err = os.WriteFile(full, []byte(e.target), e.mode); err == nil {
				err = os.Chmod(full, e.mode) // past the umask
			}
		}
		if err != nil {
			t.Fatalf("%s: %v (tree: %v)", p, err, tree)
		}
	}
	return root
}

func TestLookPath(t *testing.T) {
	root := makeTree(t, lookTree)
	env := []string{"PATH=/opt:/bin"}
	for _, tc := range []struct {
		name, cwd, want string
		err             error
	}{
		{"sh", "/", "/bin/sh", nil},
		{"busybox", "/", "/bin/busybox", nil},
		{"rel", "/", "/bin/rel", nil},
		{"escape", "/", "/bin/escape", nil}, // ".." stops at the root
		{"tool", "/", "/opt/tool", nil},
		{"/bin/sh", "/", "/bin/sh", nil},
		{"./busybox", "/bin", "/bin/busybox", nil},
		{"passwd", "/", "", ErrCommandNotFound}, // not executable: skipped in $PATH
		{"dangling", "/", "", ErrCommandNotFound},
		{"nosuch", "/", "", ErrCommandNotFound},
		{"/etc/passwd", "/", "", ErrCommandNotExecutable},
		{"/etc", "/", "", ErrCommandNotExecutable},
		{"/bin/dangling", "/", "", ErrCommandNotFound},
		{"/etc/passwd/x", "/", "", ErrCommandNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := LookPath(root, tc.cwd, env, tc.name)
			if got != tc.want || !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
				t.Errorf("got %q, %v; want %q, %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestReadFile(t *testing.T) {
	root := makeTree(t, lookTree)
	outside := filepath.Join(filepath.Dir(filepath.Dir(root)), "group-outside")
	if err := os.WriteFile(outside, []byte("outside"), 0o644); err == nil {
		defer os.Remove(outside)
	}
	if b, err := ReadFile(root, "/etc/passwd"); err != nil || string(b) != "root:x:0:0::/root:/bin/sh" {
		t.Errorf("passwd: %q, %v", b, err)
	}
	// A symlink out of the root resolves inside it, where there is none.
	if b, err := ReadFile(root, "/etc/group"); err != nil || b != nil {
		t.Errorf("group through an escaping link: %q, %v; want nothing", b, err)
	}
	if b, err := ReadFile(root, "/nosuch"); err != nil || b != nil {
		t.Errorf("missing file: %q, %v", b, err)
	}
}

func TestMissingPathsRemoveEmpty(t *testing.T) {
	root := makeTree(t, lookTree)
	missing, err := MissingPaths(root, []string{"/proc", "/etc/hosts", "/etc/passwd", "/data/a/b", "/bin/sh"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/data/a/b", "/data/a", "/etc/hosts", "/data", "/proc"}; !slices.Equal(missing, want) {
		t.Fatalf("missing %q, want %q", missing, want)
	}
	// As runc would: make them; then something writes into one.
	for _, d := range []string{"proc", "data", "data/a", "data/a/b"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "etc/hosts"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "data/a/kept"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := RemoveEmpty(root, missing); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{"proc": false, "etc/hosts": false, "data/a/b": false, "data/a/kept": true, "data": true, "etc/passwd": true} {
		_, err := os.Lstat(filepath.Join(root, p))
		if got := err == nil; got != want {
			t.Errorf("%s exists: %v, want %v", p, got, want)
		}
	}
}
