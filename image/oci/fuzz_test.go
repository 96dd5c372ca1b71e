package oci

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// FuzzOpenArchive opens arbitrary bytes as an archive. Invariants:
// nothing panics or hangs; every blob read to its end without error has
// exactly the size and digest of its descriptor (recomputed here, not
// trusting the verifying reader); no temporary file is left after Close.
func FuzzOpenArchive(f *testing.F) {
	dir := f.TempDir()
	bi := fixtureImage{platform: linuxAMD64, layers: []fixtureLayer{
		{files: map[string]string{"a": "A"}},
		{files: map[string]string{"b": "B"}, gzip: true},
	}}.build(f)
	writeLayout(f, dir, map[string]builtImage{"latest": bi})
	var oci bytes.Buffer
	if err := WriteArchive(dir, &oci); err != nil {
		f.Fatal(err)
	}
	f.Add(oci.Bytes())
	f.Add(gzipBytes(f, oci.Bytes()))
	f.Add(dockerArchive(f, dockerOld, []dockerImage{{bi: bi, tags: []string{"a:1"}}}))
	f.Add(dockerArchive(f, dockerNew, []dockerImage{{bi: bi}}))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, b []byte) {
		work := t.TempDir()
		tmp := filepath.Join(work, "tmp")
		if err := os.Mkdir(tmp, 0o755); err != nil {
			t.Fatal(err)
		}
		path := writeFile(t, filepath.Join(work, "archive"), b)
		src, err := OpenWith(path, OpenOptions{TempDir: tmp})
		if err != nil {
			assertEmptyDir(t, tmp)
			return
		}
		images, _ := src.Images(&linuxAMD64)
		for _, img := range images {
			ds := append([]v1.Descriptor{img.Manifest.Config}, img.Manifest.Layers...)
			for _, d := range ds {
				b, err := readBlob(img, d)
				if err != nil {
					continue
				}
				if got := d.Digest.Algorithm().FromBytes(b); int64(len(b)) != d.Size || got != d.Digest {
					t.Fatalf("blob %s (%d bytes) read without error: %d bytes, %s", d.Digest, d.Size, len(b), got)
				}
			}
			if img.ConfigDigest.Algorithm().FromBytes(img.ConfigBytes) != img.ConfigDigest ||
				img.ManifestDigest.Algorithm().FromBytes(img.ManifestBytes) != img.ManifestDigest {
				t.Fatal("config or manifest bytes do not match their digests")
			}
		}
		if err := src.Close(); err != nil && !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
		assertEmptyDir(t, tmp)
	})
}
