package oci

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

func readIndex(t *testing.T, dir string) v1.Index {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var idx v1.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	return idx
}

// refNames lists the ref names of index.json's entries, "" for none.
func refNames(idx v1.Index) []string {
	var names []string
	for _, d := range idx.Manifests {
		names = append(names, d.Annotations[v1.AnnotationRefName])
	}
	return names
}

func TestLayoutWriter(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "layout")
	one := simpleImage(linuxAMD64).build(t)
	two := simpleImage(linuxARM64).build(t)
	writeLayout(t, dir, map[string]builtImage{"one": one})

	b, err := os.ReadFile(filepath.Join(dir, "oci-layout"))
	if err != nil || string(b) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout: %q, %v", b, err)
	}
	idx := readIndex(t, dir)
	if idx.SchemaVersion != 2 || idx.MediaType != v1.MediaTypeImageIndex || len(idx.Manifests) != 1 || idx.Manifests[0].Digest != one.manifest.Digest {
		t.Fatalf("index.json: %+v", idx)
	}

	// Reopen: add two, retag one as two's name, add one unnamed twice.
	w, err := NewLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	two.write(t, w)
	d := two.manifest
	d.Annotations = map[string]string{"org.example": "kept", v1.AnnotationRefName: "overridden"}
	if err := w.AddManifest(d, "two"); err != nil {
		t.Fatal(err)
	}
	if err := w.AddManifest(one.manifest, "two"); err != nil {
		t.Fatal(err)
	}
	if err := w.AddManifest(two.manifest, ""); err != nil {
		t.Fatal(err)
	}
	if err := w.AddManifest(two.manifest, ""); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := w.AddManifest(one.manifest, "late"); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("AddManifest after Close: %v", err)
	}
	if err := w.WriteBlob(one.manifest, bytes.NewReader(nil)); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("WriteBlob after Close: %v", err)
	}
	idx = readIndex(t, dir)
	if got, want := strings.Join(refNames(idx), ","), "one,two,"; got != want {
		t.Errorf("ref names %q, want %q", got, want)
	}
	if idx.Manifests[1].Digest != one.manifest.Digest || idx.Manifests[2].Digest != two.manifest.Digest {
		t.Errorf("index.json: %+v", idx.Manifests)
	}
	if d.Annotations[v1.AnnotationRefName] != "overridden" {
		t.Error("AddManifest changed the caller's annotations")
	}

	images, err := openSource(t, dir).Images(&linuxAMD64)
	if err != nil {
		t.Fatal(err)
	}
	if len(images) != 3 {
		t.Fatalf("%d images, want 3", len(images))
	}
	checkImage(t, images[1], one, "two")
	checkImage(t, images[2], two, "")
	assertNoTemp(t, dir)
}

// assertNoTemp checks that no temporary file is left in the layout.
func assertNoTemp(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), tempPrefix) {
			t.Errorf("temporary file %s left", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestWriteBlobVerifies(t *testing.T) {
	content := []byte("the content of a blob")
	good := descFor(v1.MediaTypeImageLayer, content)
	tests := []struct {
		name    string
		d       v1.Descriptor
		content []byte
		target  error
	}{
		{"short", good, content[:5], ErrSizeMismatch},
		{"long", good, append(append([]byte{}, content...), '!'), ErrSizeMismatch},
		{"digest", good, bytes.ToUpper(content), ErrDigestMismatch},
		{"size 0", v1.Descriptor{Digest: good.Digest}, content, ErrSizeMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			w, err := NewLayout(dir)
			if err != nil {
				t.Fatal(err)
			}
			err = w.WriteBlob(tc.d, bytes.NewReader(tc.content))
			if !errors.Is(err, tc.target) || !strings.Contains(err.Error(), "write blob "+string(tc.d.Digest)) {
				t.Errorf("got %v, want %v naming the blob", err, tc.target)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			assertEmptyDir(t, filepath.Join(dir, "blobs", "sha256"))
		})
	}
	t.Run("invalid digest", func(t *testing.T) {
		w, err := NewLayout(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		err = w.WriteBlob(v1.Descriptor{Digest: "sha256:../../../x", Size: 1}, bytes.NewReader([]byte("x")))
		if err == nil || !strings.Contains(err.Error(), `"sha256:../../../x"`) {
			t.Errorf("got %v", err)
		}
	})
	t.Run("sha512", func(t *testing.T) {
		dir := t.TempDir()
		w, err := NewLayout(dir)
		if err != nil {
			t.Fatal(err)
		}
		d := v1.Descriptor{Digest: digest.SHA512.FromBytes(content), Size: int64(len(content))}
		if err := w.WriteBlob(d, bytes.NewReader(content)); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "blobs", "sha512", d.Digest.Encoded())); err != nil || !bytes.Equal(b, content) {
			t.Errorf("blob: %q, %v", b, err)
		}
	})
}

// failReader fails the test if it is read.
type failReader struct{ t *testing.T }

func (r failReader) Read([]byte) (int, error) {
	r.t.Error("an existing blob was read again")
	return 0, io.ErrUnexpectedEOF
}

func TestWriteBlobExisting(t *testing.T) {
	dir := t.TempDir()
	w, err := NewLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	content := []byte("content")
	d := descFor(v1.MediaTypeImageLayer, content)
	if err := w.WriteBlob(d, bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteBlob(d, failReader{t}); err != nil {
		t.Fatal(err)
	}
	// A blob of the wrong size (a crash of another writer) is replaced.
	name := blobFile(dir, d.Digest)
	writeFile(t, name, content[:3])
	if err := w.WriteBlob(d, bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(name); err != nil || !bytes.Equal(b, content) {
		t.Errorf("blob: %q, %v", b, err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestAddManifestErrors(t *testing.T) {
	bi := simpleImage(linuxAMD64).build(t)
	dir := t.TempDir()
	w, err := NewLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	bi.write(t, w)
	absent := descFor(v1.MediaTypeImageManifest, []byte("{}"))
	wrongSize := bi.manifest
	wrongSize.Size++
	layer := bi.layers[0]
	tests := []struct {
		name string
		d    v1.Descriptor
		ref  string
		want string
	}{
		{"missing blob", absent, "x", string(absent.Digest)},
		{"size", wrongSize, "x", "size mismatch"},
		{"layer", layer, "x", "is not a manifest or an index"},
		{"invalid ref", bi.manifest, "a//b", `invalid ref name "a//b"`},
		{"invalid digest", v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: "sha256:../../x"}, "x", `"sha256:../../x"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := w.AddManifest(tc.d, tc.ref); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if idx := readIndex(t, dir); len(idx.Manifests) != 0 {
		t.Errorf("index.json: %+v", idx.Manifests)
	}
}

func TestValidRefName(t *testing.T) {
	valid := []string{"latest", "v1.0", "example.com/app:1.0", "a--b", "a-b_c.d:e@f+g", "localhost:5000/ns/app@sha256:abc", "A9"}
	invalid := []string{"", "/a", "a/", "a//b", "-a", "a-", "a---b", "a b", "a..b", "ä", "a:", ":a", "a/../b"}
	for _, s := range valid {
		if !validRefName(s) {
			t.Errorf("validRefName(%q) = false", s)
		}
	}
	for _, s := range invalid {
		if validRefName(s) {
			t.Errorf("validRefName(%q) = true", s)
		}
	}
}

func TestNewLayoutErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"version", map[string]string{"oci-layout": `{"imageLayoutVersion":"0.9"}`}, `imageLayoutVersion "0.9"`},
		{"oci-layout", map[string]string{"oci-layout": `[`}, "oci-layout"},
		{"index.json", map[string]string{"index.json": `{"schemaVersion":1}`}, "index.json: schemaVersion 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for n, b := range tc.files {
				writeFile(t, filepath.Join(dir, n), []byte(b))
			}
			if _, err := NewLayout(dir); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), dir) {
				t.Errorf("got %v, want an error naming %s and containing %q", err, dir, tc.want)
			}
		})
	}
}

func TestWriteArchive(t *testing.T) {
	one := simpleImage(linuxAMD64).build(t)
	two := simpleImage(linuxARM64).build(t)
	// The same layout written twice, with its blobs in different orders
	// and at different times, gives the same archive.
	var archives [2][]byte
	for i := range archives {
		dir := t.TempDir()
		w, err := NewLayout(dir)
		if err != nil {
			t.Fatal(err)
		}
		order := []builtImage{one, two}
		if i == 1 {
			order = []builtImage{two, one}
		}
		for _, bi := range order {
			bi.write(t, w)
		}
		for _, tag := range []string{"one", "two"} {
			bi := map[string]builtImage{"one": one, "two": two}[tag]
			if err := w.AddManifest(bi.manifest, tag); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			// A write in progress is left out.
			writeFile(t, filepath.Join(dir, "blobs", "sha256", tempPrefix+"partial"), []byte("half"))
			old := time.Now().Add(-time.Hour)
			if err := os.Chtimes(filepath.Join(dir, "index.json"), old, old); err != nil {
				t.Fatal(err)
			}
		}
		var buf bytes.Buffer
		if err := WriteArchive(dir, &buf); err != nil {
			t.Fatal(err)
		}
		archives[i] = buf.Bytes()
	}
	if !bytes.Equal(archives[0], archives[1]) {
		t.Error("archives of the same layout differ")
	}

	var names []string
	tr := tar.NewReader(bytes.NewReader(archives[0]))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
		if hdr.Uid != 0 || hdr.Gid != 0 || hdr.Uname != "" || hdr.Gname != "" || !hdr.ModTime.Equal(time.Unix(0, 0)) {
			t.Errorf("%s: owner %d:%d (%q:%q), mtime %v", hdr.Name, hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname, hdr.ModTime)
		}
		if want := int64(0o644); hdr.Typeflag == tar.TypeDir {
			if hdr.Mode != 0o755 {
				t.Errorf("%s: mode %o", hdr.Name, hdr.Mode)
			}
		} else if hdr.Mode != want {
			t.Errorf("%s: mode %o", hdr.Name, hdr.Mode)
		}
	}
	if len(names) != 2+len(one.blobs)+len(two.blobs)+2 {
		t.Errorf("%d entries: %q", len(names), names)
	}
	for i := 1; i < len(names); i++ {
		if names[i-1] >= names[i] {
			t.Errorf("entries not sorted: %q before %q", names[i-1], names[i])
		}
	}
	if names[0] != "blobs/" || names[1] != "blobs/sha256/" || names[len(names)-2] != "index.json" || names[len(names)-1] != "oci-layout" {
		t.Errorf("entries: %q", names)
	}
}

func TestWriteArchiveCorrupt(t *testing.T) {
	bi := simpleImage(linuxAMD64).build(t)
	tests := []struct {
		name   string
		mutate func(t *testing.T, dir string)
		want   string
	}{
		{"blob", func(t *testing.T, dir string) { flipBlob(layer0)(t, dir, bi) }, "blobs/sha256/" + bi.layers[0].Digest.Encoded() + ": digest mismatch"},
		{"stray file", func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, "blobs", "sha256", "README"), nil) }, "blobs/sha256/README: not a blob"},
		{"stray directory", func(t *testing.T, dir string) {
			if err := os.Mkdir(filepath.Join(dir, "blobs", "md5"), 0o755); err != nil {
				t.Fatal(err)
			}
		}, "blobs/md5: not a digest algorithm's directory"},
		{"no index.json", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "index.json")); err != nil {
				t.Fatal(err)
			}
		}, "not an OCI layout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeLayout(t, dir, map[string]builtImage{"latest": bi})
			tc.mutate(t, dir)
			err := WriteArchive(dir, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// lookTool returns the path of a tool the interoperability tests use,
// or skips the test.
func lookTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s is not installed (apt-get install %s): %v", name, name, err)
	}
	return p
}

func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

// TestSkopeo checks layouts and archives written here with skopeo, and
// reads back what skopeo writes.
func TestSkopeo(t *testing.T) {
	skopeo := lookTool(t, "skopeo")
	dir := t.TempDir()
	bi := simpleImage(linuxAMD64).build(t)
	writeLayout(t, dir, map[string]builtImage{"v1": bi})

	var inspect struct {
		Digest       digest.Digest
		Architecture string
		Layers       []digest.Digest
	}
	if err := json.Unmarshal(run(t, skopeo, "inspect", "oci:"+dir+":v1"), &inspect); err != nil {
		t.Fatal(err)
	}
	if inspect.Digest != bi.manifest.Digest || inspect.Architecture != "amd64" || len(inspect.Layers) != 2 || inspect.Layers[1] != bi.layers[1].Digest {
		t.Errorf("skopeo inspect: %+v", inspect)
	}
	if raw := run(t, skopeo, "inspect", "--raw", "oci:"+dir+":v1"); !bytes.Equal(raw, bi.blobs[bi.manifest.Digest]) {
		t.Errorf("skopeo inspect --raw: %s", raw)
	}

	// skopeo's OCI archive reads back, the same image.
	out := filepath.Join(t.TempDir(), "skopeo.tar")
	run(t, skopeo, "--insecure-policy", "copy", "-q", "--preserve-digests", "oci:"+dir+":v1", "oci-archive:"+out+":v1")
	images, err := openSource(t, out).Images(&linuxAMD64)
	if err != nil {
		t.Fatal(err)
	}
	if len(images) != 1 {
		t.Fatalf("%d images, want 1", len(images))
	}
	checkImage(t, images[0], bi, "v1")
	// By default skopeo compresses the uncompressed layer: another
	// manifest, the same diff IDs.
	out = filepath.Join(t.TempDir(), "skopeo-gz.tar")
	run(t, skopeo, "--insecure-policy", "copy", "-q", "oci:"+dir+":v1", "oci-archive:"+out+":v1")
	images, err = readSource(out, &linuxAMD64, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if len(images) != 1 || images[0].RefName != "v1" || !equalDigests(images[0].Config.RootFS.DiffIDs, bi.diffIDs) {
		t.Fatalf("images %+v", images)
	}
	if mt := images[0].Manifest.Layers[0].MediaType; mt != v1.MediaTypeImageLayerGzip {
		t.Errorf("layer 0: media type %q", mt)
	}

	// skopeo reads our archive.
	ours := archiveOf(t, dir, false)
	if err := json.Unmarshal(run(t, skopeo, "inspect", "oci-archive:"+ours+":v1"), &inspect); err != nil {
		t.Fatal(err)
	}
	if inspect.Digest != bi.manifest.Digest {
		t.Errorf("skopeo inspect of our archive: %+v", inspect)
	}

	// skopeo's docker save archive reads back: same config, and layers
	// with the same diff IDs (skopeo stores them as they are).
	out = filepath.Join(t.TempDir(), "docker.tar")
	run(t, skopeo, "--insecure-policy", "copy", "-q", "oci:"+dir+":v1", "docker-archive:"+out+":example.com/app:v1")
	images, err = readSource(out, nil, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if len(images) != 1 {
		t.Fatalf("%d images, want 1", len(images))
	}
	img := images[0]
	if img.RefName != "example.com/app:v1" || img.ConfigDigest != bi.config.Digest || !equalDigests(img.Config.RootFS.DiffIDs, bi.diffIDs) {
		t.Errorf("docker archive: %q, config %s, diff IDs %v", img.RefName, img.ConfigDigest, img.Config.RootFS.DiffIDs)
	}
}

// TestUmoci checks a layout written here with umoci, which unpacks it.
func TestUmoci(t *testing.T) {
	umoci := lookTool(t, "umoci")
	dir := t.TempDir()
	bi := simpleImage(linuxAMD64).build(t)
	writeLayout(t, dir, map[string]builtImage{"v1": bi})
	if out := run(t, umoci, "ls", "--layout", dir); strings.TrimSpace(string(out)) != "v1" {
		t.Errorf("umoci ls: %q", out)
	}
	bundle := filepath.Join(t.TempDir(), "bundle")
	run(t, umoci, "unpack", "--rootless", "--image", dir+":v1", bundle)
	if b, err := os.ReadFile(filepath.Join(bundle, "rootfs", "etc", "motd")); err != nil || string(b) != "hello amd64\n" {
		t.Errorf("unpacked etc/motd: %q, %v", b, err)
	}
}
