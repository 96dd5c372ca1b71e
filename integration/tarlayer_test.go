package integration

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tlEntry is an entry of a hand-made layer tar.
type tlEntry struct {
	name string
	typ  byte
	body string
	link string
}

// tlTar writes entries as a layer tar, in order, duplicates and all.
func tlTar(t testing.TB, entries ...tlEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: 0o644, ModTime: imgEpoch, Format: tar.FormatPAX}
		switch e.typ {
		case tar.TypeDir:
			hdr.Mode = 0o755
		case tar.TypeReg:
			hdr.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func tlFile(name, body string) tlEntry { return tlEntry{name: name, typ: tar.TypeReg, body: body} }
func tlDir(name string) tlEntry        { return tlEntry{name: name, typ: tar.TypeDir} }

// TestTarLayerDuplicates imports an image whose layer gives names twice,
// as real images do, and reads the container through its mountpoint:
// the last entry of a name wins, as docker and containerd apply it.
func TestTarLayerDuplicates(t *testing.T) {
	s := newCLIStore(t)
	base := imgLayerSpec{files: map[string]string{"keep": "base\n", "d2/lower": "lower\n", "w/lower": "lower\n"}}
	layer := tlTar(t,
		tlFile("x", "first\n"), tlFile("./x", "second\n"), // file twice
		tlDir("d"), tlFile("d/child", "gone\n"), tlFile("d", "a file now\n"), // dir, then file
		tlFile("e", "a file\n"), tlDir("e"), tlFile("e/child", "child\n"), // file, then dir
		tlEntry{name: "l", typ: tar.TypeSymlink, link: "/nowhere"}, tlFile("l", "over the symlink\n"),
		tlFile("t", "old\n"), tlEntry{name: "h", typ: tar.TypeLink, link: "t"}, tlFile("t", "new\n"),
		tlFile("d2", "hides the lower dir\n"), tlDir("d2"), tlFile("d2/new", "new\n"), // opaque
		tlDir("w"), tlFile("w/mine", "mine\n"), tlDir("w/"), // dir twice: merged with the lower
	)
	img := buildImage(t, imgSpec{layers: []imgLayerSpec{base, {raw: layer}}})
	s.imgMust("import", writeLayout(t, filepath.Join(t.TempDir(), "dup"), img, "1"), "dup:1")
	s.mustLine("create", "--name", "c", "dup:1")
	mnt, w := s.mount("c")
	got := map[string]string{}
	for _, n := range []string{"keep", "x", "d", "e/child", "l", "t", "h", "d2/new", "w/lower", "w/mine"} {
		b, err := os.ReadFile(filepath.Join(mnt, n))
		if err != nil {
			t.Errorf("read %s: %v", n, err)
		}
		got[n] = string(b)
	}
	want := map[string]string{
		"keep": "base\n", "x": "second\n", "d": "a file now\n", "e/child": "child\n",
		"l": "over the symlink\n", "t": "new\n", "h": "old\n", "d2/new": "new\n",
		"w/lower": "lower\n", "w/mine": "mine\n",
	}
	for n, v := range want {
		if got[n] != v {
			t.Errorf("%s = %q, want %q", n, got[n], v)
		}
	}
	if fi, err := os.Lstat(filepath.Join(mnt, "l")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("l: %v, %v; want a regular file", fi, err)
	}
	for _, gone := range []string{"d/child", "d2/lower"} {
		if _, err := os.Lstat(filepath.Join(mnt, gone)); !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			t.Errorf("%s: %v; want it gone", gone, err)
		}
	}
	s.unmount("c", w)
	s.mustCheck()
}

// tlSparse makes sparse files names of size bytes in dir with data at
// offs and returns their layer tar as GNU tar writes it in format
// (tar's --format=gnu, or a --sparse-version of the PAX format).
func tlSparse(t *testing.T, dir string, names []string, size int64, offs []int64, format string) []byte {
	t.Helper()
	for _, name := range names {
		p := filepath.Join(dir, name)
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, off := range offs {
			if _, err := f.WriteAt([]byte(tlMark(off)), off); err != nil {
				t.Fatal(err)
			}
		}
		if err := errors.Join(f.Truncate(size), f.Close()); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(p)
	}
	args := []string{"--sparse", "--format=gnu"}
	if format != "gnu" {
		args = []string{"--sparse", "--format=posix", "--sparse-version=" + format}
	}
	out, err := exec.Command("tar", append(append(args, "--numeric-owner", "-cf", "-", "-C", dir), names...)...).Output()
	if err != nil {
		t.Fatalf("tar: %v", err)
	}
	if len(out) > 64<<10 {
		t.Fatalf("tar %s: %d bytes, not sparse", names, len(out))
	}
	return out
}

// tlMark is the data written at off.
func tlMark(off int64) string { return "data at " + strings.Repeat("*", int(off%7)) + "\n" }

// TestTarLayerSparse imports an image whose layers hold a GNU sparse
// file of 1 TiB (old GNU and PAX 1.0 formats, from GNU tar): it must
// take a few seconds of CPU (it took over a minute per file when holes
// were read as zeros), keep the holes, and read back as written through
// a container's mountpoint. A layer of two such files is over the
// default bound on apparent size and is refused, leaving nothing.
func TestTarLayerSparse(t *testing.T) {
	needTool(t, "tar")
	if out, err := exec.Command("tar", "--version").Output(); err != nil || !strings.Contains(string(out), "GNU tar") {
		missingTool(t, "needs GNU tar (apt-get install tar)")
	}
	const tib = int64(1) << 40
	offs := []int64{0, 1 << 30, 5 << 35, tib - 4096}
	src := t.TempDir()
	gnu := tlSparse(t, src, []string{"big"}, tib, offs, "gnu")
	pax := tlSparse(t, src, []string{"big2"}, tib, offs, "1.0")

	s := newCLIStore(t)
	img := buildImage(t, imgSpec{layers: []imgLayerSpec{{raw: gnu, comp: "gzip"}, {raw: pax}}})
	cmd, stdout, stderr, err := cliCommand("", cliOpts{}, s.imgArgs([]string{"import", writeLayout(t, filepath.Join(t.TempDir(), "sparse"), img, "1"), "sparse:1"})...)
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	defer stderr.Close()
	start := time.Now()
	if err := cmd.Run(); err != nil {
		errb, _ := os.ReadFile(stderr.Name())
		t.Fatalf("strata import: %v\n%s", err, errb)
	}
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	t.Logf("strata import of two 1 TiB sparse files: %v of CPU, %v", cpu, time.Since(start))
	if cpu > 5*time.Second {
		t.Errorf("strata import used %v of CPU; want a few seconds at most (holes not walked)", cpu)
	}

	s.mustLine("create", "--name", "c", "sparse:1")
	mnt, w := s.mount("c")
	for _, name := range []string{"big", "big2"} {
		f, err := os.Open(filepath.Join(mnt, name))
		if err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		if st.Size != tib || st.Blocks*512 > 1<<20 {
			t.Errorf("%s: size %d, %d bytes allocated; want %d, mostly holes", name, st.Size, st.Blocks*512, tib)
		}
		for _, off := range offs {
			want := tlMark(off)
			got := make([]byte, len(want))
			if _, err := f.ReadAt(got, off); err != nil || string(got) != want {
				t.Errorf("%s at %d: %q, %v; want %q", name, off, got, err, want)
			}
		}
		hole := make([]byte, 4096)
		if _, err := f.ReadAt(hole, 1<<33); err != nil || !bytes.Equal(hole, make([]byte, 4096)) {
			t.Errorf("%s: the hole at 8 GiB reads %.16q, %v; want zeros", name, hole, err)
		}
		f.Close()
	}
	s.unmount("c", w)

	// Two such files in one layer: over the default bound.
	two := tlSparse(t, src, []string{"a", "b"}, tib, offs, "gnu")
	s2 := newCLIStore(t)
	before := s2.imgState()
	bad := buildImage(t, imgSpec{layers: []imgLayerSpec{{raw: two}}})
	r := s2.imgRun("import", writeLayout(t, filepath.Join(t.TempDir(), "bad"), bad, "1"), "bad:1")
	if r.code == 0 || !strings.Contains(r.stderr, `entry "b": the layer's files add up to 2199023255552 bytes`) ||
		!strings.Contains(r.stderr, "more than the limit of 1099511627776") || !strings.Contains(r.stderr, "STRATA_MAX_LAYER_SIZE=BYTES") {
		t.Errorf("import of a layer of 2 TiB: %v\nwant a refusal naming the entry and the limit", r)
	}
	if after := s2.imgState(); after != before {
		t.Errorf("a refused import changed the store:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	s2.mustCheck()
	// Raised as the message says, the same layer is taken.
	layout := writeLayout(t, filepath.Join(t.TempDir(), "raised"), bad, "1")
	if r := s2.imgRunWith(cliOpts{env: []string{"STRATA_MAX_LAYER_SIZE=3298534883328"}}, "import", layout, "big:1"); r.code != 0 {
		t.Errorf("import with the limit raised to 3 TiB: %v", r)
	}
	s2.mustCheck()
}
