package buildctx

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/klauspost/compress/gzip"
)

// file describes a fixture entry: a file with Data, a directory when Dir,
// a symlink when Link is set.
type file struct {
	Data string
	Mode os.FileMode
	Dir  bool
	Link string
}

// writeTree makes the fixture tree under dir; names are slash paths,
// parents made as needed.
func writeTree(t *testing.T, dir string, tree map[string]file) {
	t.Helper()
	names := make([]string, 0, len(tree))
	for n := range tree {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		f := tree[n]
		p := filepath.Join(dir, filepath.FromSlash(n))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := f.Mode
		switch {
		case f.Dir:
			if mode == 0 {
				mode = 0o755
			}
			if err := os.Mkdir(p, mode); err != nil && !os.IsExist(err) {
				t.Fatal(err)
			}
			if err := os.Chmod(p, mode); err != nil {
				t.Fatal(err)
			}
		case f.Link != "":
			if err := os.Symlink(f.Link, p); err != nil {
				t.Fatal(err)
			}
		default:
			if mode == 0 {
				mode = 0o644
			}
			if err := os.WriteFile(p, []byte(f.Data), mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, mode); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// newCtx makes a context directory with tree and opens it.
func newCtx(t *testing.T, tree map[string]file) *Context {
	t.Helper()
	dir := t.TempDir()
	writeTree(t, dir, tree)
	c, err := FromDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// names lists the entry paths of srcs, each as "<source>/<rel>".
func names(srcs []Source) []string {
	var out []string
	for _, s := range srcs {
		for _, e := range s.Entries {
			n := s.Name
			if e.Rel != "" {
				n += "/" + e.Rel
			}
			out = append(out, n)
		}
	}
	return out
}

// tarEntry is one entry of a fixture tar.
type tarEntry struct {
	hdr  tar.Header
	data string
}

func makeTar(t testing.TB, gz bool, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	var zw *gzip.Writer
	var tw *tar.Writer
	if gz {
		zw = gzip.NewWriter(&buf)
		tw = tar.NewWriter(zw)
	} else {
		tw = tar.NewWriter(&buf)
	}
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if e.data != "" {
			if _, err := tw.Write([]byte(e.data)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func reg(name, data string) tarEntry {
	return tarEntry{hdr: tar.Header{Name: name}, data: data}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func owner(t *testing.T, p string) (int, int) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid)
}

func wantErr(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q, want it to contain %q", err, want)
	}
}

func mustNotExist(t *testing.T, p string) {
	t.Helper()
	if _, err := os.Lstat(p); !os.IsNotExist(err) {
		t.Fatalf("%s exists (err %v), want it absent", p, err)
	}
}
