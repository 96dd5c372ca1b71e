package oci

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// oneFileTar is a layer tar holding name with body.
func oneFileTar(t *testing.T, name, body string) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write([]byte(body))
	tw.Close()
	return b.Bytes()
}

func TestWriteDockerArchive(t *testing.T) {
	l1, l2 := oneFileTar(t, "a", "one"), oneFileTar(t, "b", "two")
	cfg := v1.Image{Platform: HostPlatform(), RootFS: v1.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromBytes(l1), digest.FromBytes(l2)}}}
	cb, _ := json.Marshal(cfg)
	layer := func(b []byte) DockerLayer {
		return DockerLayer{DiffID: digest.FromBytes(b), Size: int64(len(b)), Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }}
	}
	im := DockerImage{Config: cb, Name: "docker.io/library/app:v1", Layers: []DockerLayer{layer(l1), layer(l2)}}
	p := filepath.Join(t.TempDir(), "d.tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteDockerArchive(f, im, "app:v1"); err != nil {
		t.Fatal(err)
	}
	f.Close()

	// manifest.json, as docker load reads it.
	ix := readTarFiles(t, p)
	var items []dockerManifest
	if err := json.Unmarshal(ix["manifest.json"], &items); err != nil || len(items) != 1 {
		t.Fatalf("manifest.json: %v %s", err, ix["manifest.json"])
	}
	it := items[0]
	if it.Config != "blobs/sha256/"+digest.FromBytes(cb).Encoded() || len(it.RepoTags) != 1 || it.RepoTags[0] != "app:v1" || len(it.Layers) != 2 || it.Layers[1] != "blobs/sha256/"+digest.FromBytes(l2).Encoded() {
		t.Errorf("manifest.json: %+v", it)
	}
	for _, name := range append([]string{it.Config, "oci-layout", "index.json"}, it.Layers...) {
		if _, ok := ix[name]; !ok {
			t.Errorf("%s: not in the archive", name)
		}
	}
	// Read back: as an OCI layout (Docker 25's), with its name.
	src, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	images, err := src.Images(nil)
	if err != nil || len(images) != 1 {
		t.Fatalf("Images: %v, %d", err, len(images))
	}
	got := images[0]
	if got.RefName != "docker.io/library/app:v1" || got.Tag != "v1" || got.ConfigDigest != digest.FromBytes(cb) {
		t.Errorf("read back: ref %q tag %q config %s", got.RefName, got.Tag, got.ConfigDigest)
	}

	// A layer whose content is not its diff ID is an error.
	bad := im
	bad.Layers = []DockerLayer{layer(l1), {DiffID: digest.FromBytes(l2), Size: int64(len(l1)), Open: layer(l1).Open}}
	if err := WriteDockerArchive(io.Discard, bad, ""); err == nil {
		t.Error("a layer of the wrong content was written")
	}
}

func readTarFiles(t *testing.T, p string) map[string][]byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out[h.Name] = b
	}
}
