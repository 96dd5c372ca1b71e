package oci

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Fixture images are data: a layer is the files it holds, an image is
// its layers and platform. build turns them into blobs.

// fixtureLayer is one layer: path -> content ("dir/" names a directory).
type fixtureLayer struct {
	files map[string]string
	gzip  bool
}

type fixtureImage struct {
	platform v1.Platform
	layers   []fixtureLayer
}

// builtImage is a fixture image as blobs.
type builtImage struct {
	manifest v1.Descriptor
	config   v1.Descriptor
	layers   []v1.Descriptor
	diffIDs  []digest.Digest
	tars     [][]byte // uncompressed layer tars, as the layers are
	blobs    map[digest.Digest][]byte
}

var (
	linuxAMD64 = v1.Platform{OS: "linux", Architecture: "amd64"}
	linuxARM64 = v1.Platform{OS: "linux", Architecture: "arm64"}
)

// simpleImage has two layers, the second gzipped.
func simpleImage(p v1.Platform) fixtureImage {
	return fixtureImage{
		platform: p,
		layers: []fixtureLayer{
			{files: map[string]string{"etc/": "", "etc/os-release": "ID=fixture\n", "bin/": "", "bin/sh": "#!" + p.Architecture}},
			{files: map[string]string{"etc/motd": "hello " + p.Architecture + "\n"}, gzip: true},
		},
	}
}

// layerTar makes a layer tar with files, in sorted order, reproducibly.
func layerTar(t testing.TB, files map[string]string) []byte {
	t.Helper()
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		hdr := &tar.Header{Name: n, Mode: 0o644, ModTime: time.Unix(1e9, 0), Format: tar.FormatPAX}
		if strings.HasSuffix(n, "/") {
			hdr.Typeflag, hdr.Mode = tar.TypeDir, 0o755
		} else {
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(files[n]))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, files[n]); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func descFor(mediaType string, b []byte) v1.Descriptor {
	return v1.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
}

// build makes the blobs of fi: layers, config (with diff IDs and
// history), manifest.
func (fi fixtureImage) build(t testing.TB) builtImage {
	t.Helper()
	bi := builtImage{blobs: map[digest.Digest][]byte{}}
	cfg := v1.Image{
		Platform: fi.platform,
		Config:   v1.ImageConfig{Env: []string{"PATH=/bin"}, Cmd: []string{"/bin/sh"}},
		RootFS:   v1.RootFS{Type: "layers"},
	}
	for i, l := range fi.layers {
		tb := layerTar(t, l.files)
		blob, mt := tb, v1.MediaTypeImageLayer
		if l.gzip {
			blob, mt = gzipBytes(t, tb), v1.MediaTypeImageLayerGzip
		}
		d := descFor(mt, blob)
		bi.layers = append(bi.layers, d)
		bi.tars = append(bi.tars, tb)
		bi.diffIDs = append(bi.diffIDs, digest.FromBytes(tb))
		bi.blobs[d.Digest] = blob
		cfg.History = append(cfg.History, v1.History{CreatedBy: fmt.Sprintf("fixture layer %d", i)})
	}
	cfg.RootFS.DiffIDs = bi.diffIDs
	cb := mustJSON(t, cfg)
	bi.config = descFor(v1.MediaTypeImageConfig, cb)
	bi.blobs[bi.config.Digest] = cb
	m := v1.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: v1.MediaTypeImageManifest,
		Config:    bi.config,
		Layers:    bi.layers,
	}
	mb := mustJSON(t, m)
	bi.manifest = descFor(v1.MediaTypeImageManifest, mb)
	bi.blobs[bi.manifest.Digest] = mb
	return bi
}

// write writes the blobs of bi to w.
func (bi builtImage) write(t testing.TB, w *LayoutWriter) {
	t.Helper()
	for d, b := range bi.blobs {
		mt := v1.MediaTypeImageLayer
		if err := w.WriteBlob(v1.Descriptor{MediaType: mt, Digest: d, Size: int64(len(b))}, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
}

// buildIndex makes a multi-platform index of images, as a blob added
// to blobs.
func buildIndex(t testing.TB, blobs map[digest.Digest][]byte, images ...builtImage) v1.Descriptor {
	t.Helper()
	idx := v1.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageIndex}
	for _, bi := range images {
		var cfg v1.Image
		if err := json.Unmarshal(bi.blobs[bi.config.Digest], &cfg); err != nil {
			t.Fatal(err)
		}
		d := bi.manifest
		p := cfg.Platform
		d.Platform = &p
		idx.Manifests = append(idx.Manifests, d)
	}
	b := mustJSON(t, idx)
	d := descFor(v1.MediaTypeImageIndex, b)
	blobs[d.Digest] = b
	return d
}

// writeLayout writes images to a new layout in dir, tagged as given.
func writeLayout(t testing.TB, dir string, tagged map[string]builtImage) {
	t.Helper()
	w, err := NewLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	tags := make([]string, 0, len(tagged))
	for tag := range tagged {
		tags = append(tags, tag)
	}
	sort.Strings(tags)
	for _, tag := range tags {
		bi := tagged[tag]
		bi.write(t, w)
		if err := w.AddManifest(bi.manifest, tag); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// tarEntry is an entry of a test tar: a file, a directory ("x/"), or a
// link.
type testEntry struct {
	name     string
	body     string
	typeflag byte // 0: regular file, or directory if name ends with "/"
	linkname string
}

func makeTar(t testing.TB, entries []testEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Mode: 0o644, Typeflag: e.typeflag, Linkname: e.linkname, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		switch {
		case e.typeflag != 0:
		case strings.HasSuffix(e.name, "/"):
			hdr.Typeflag = tar.TypeDir
		default:
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(e.body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// layoutEntries lists the files of the layout in dir as tar entries.
func layoutEntries(t testing.TB, dir string) []testEntry {
	t.Helper()
	var entries []testEntry
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			entries = append(entries, testEntry{name: rel + "/"})
			return nil
		}
		b, err := os.ReadFile(p)
		entries = append(entries, testEntry{name: rel, body: string(b)})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

func writeFile(t testing.TB, name string, b []byte) string {
	t.Helper()
	if err := os.WriteFile(name, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return name
}

// --- docker save archives ---

type dockerStyle int

const (
	dockerOld dockerStyle = iota // "<id>/layer.tar", "<hex>.json"
	dockerNew                    // "blobs/sha256/<hex>"
)

func (s dockerStyle) String() string { return [...]string{"old", "new"}[s] }

// dockerImage is an image of a docker save archive: built blobs and
// its tags.
type dockerImage struct {
	bi   builtImage
	tags []string
}

// dockerArchive makes a docker save archive of images in style. As
// docker save does, a layer whose content was already written (same
// diff ID) is written in the old style as a symlink
// "<id>/layer.tar" -> "../<first id>/layer.tar". Layers are written as
// their blobs are (gzip ones too: Docker's containerd store does that).
func dockerArchive(t testing.TB, style dockerStyle, images []dockerImage) []byte {
	t.Helper()
	var entries []testEntry
	var manifest []dockerManifest
	written := map[digest.Digest]string{} // blob -> path
	for n, img := range images {
		item := dockerManifest{RepoTags: img.tags}
		cb := img.bi.blobs[img.bi.config.Digest]
		switch style {
		case dockerOld:
			item.Config = img.bi.config.Digest.Encoded() + ".json"
		case dockerNew:
			item.Config = "blobs/sha256/" + img.bi.config.Digest.Encoded()
		}
		if _, ok := written[img.bi.config.Digest]; !ok {
			entries = append(entries, testEntry{name: item.Config, body: string(cb)})
			written[img.bi.config.Digest] = item.Config
		}
		for i, l := range img.bi.layers {
			blob := img.bi.blobs[l.Digest]
			var p string
			switch style {
			case dockerOld:
				// A v1 layer ID depends on the chain, not only the layer.
				id := digest.FromString(fmt.Sprintf("image %d layer %d", n, i)).Encoded()
				p = id + "/layer.tar"
				entries = append(entries, testEntry{name: id + "/"}, testEntry{name: id + "/VERSION", body: "1.0"})
				if first, ok := written[l.Digest]; ok {
					entries = append(entries, testEntry{name: p, typeflag: tar.TypeSymlink, linkname: "../" + first})
				} else {
					entries = append(entries, testEntry{name: p, body: string(blob)})
					written[l.Digest] = p
				}
			case dockerNew:
				p = "blobs/sha256/" + l.Digest.Encoded()
				if _, ok := written[l.Digest]; !ok {
					entries = append(entries, testEntry{name: p, body: string(blob)})
					written[l.Digest] = p
				}
			}
			item.Layers = append(item.Layers, p)
		}
		manifest = append(manifest, item)
	}
	entries = append(entries, testEntry{name: "manifest.json", body: string(mustJSON(t, manifest))})
	if style == dockerNew {
		// The new style puts blobs/ first, as a directory.
		entries = append([]testEntry{{name: "blobs/"}, {name: "blobs/sha256/"}}, entries...)
	}
	return makeTar(t, entries)
}
