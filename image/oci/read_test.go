package oci

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// sourceForm is one of the ways a layout can be given to Open.
type sourceForm struct {
	name string
	// make returns a path Open reads the layout in dir from.
	make func(t *testing.T, dir string) string
}

// layoutForms are a layout directory, an OCI archive written by
// WriteArchive, and the same archive gzipped.
var layoutForms = []sourceForm{
	{"dir", func(t *testing.T, dir string) string { return dir }},
	{"archive", func(t *testing.T, dir string) string { return archiveOf(t, dir, false) }},
	{"gzip archive", func(t *testing.T, dir string) string { return archiveOf(t, dir, true) }},
}

// rawForms are a layout directory and archives of it made with
// archive/tar, not WriteArchive (which refuses corrupt blobs).
var rawForms = []sourceForm{
	{"dir", func(t *testing.T, dir string) string { return dir }},
	{"archive", func(t *testing.T, dir string) string {
		return writeFile(t, filepath.Join(t.TempDir(), "raw.tar"), makeTar(t, layoutEntries(t, dir)))
	}},
	{"gzip archive", func(t *testing.T, dir string) string {
		return writeFile(t, filepath.Join(t.TempDir(), "raw.tar.gz"), gzipBytes(t, makeTar(t, layoutEntries(t, dir))))
	}},
}

func archiveOf(t *testing.T, dir string, gz bool) string {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteArchive(dir, &buf); err != nil {
		t.Fatal(err)
	}
	if gz {
		return writeFile(t, filepath.Join(t.TempDir(), "image.tar.gz"), gzipBytes(t, buf.Bytes()))
	}
	return writeFile(t, filepath.Join(t.TempDir(), "image.tar"), buf.Bytes())
}

// openSource opens path, closing the source at the end of the test.
func openSource(t *testing.T, path string) Source {
	t.Helper()
	src, err := OpenWith(path, OpenOptions{TempDir: t.TempDir()})
	if err != nil {
		t.Fatalf("Open(%q): %v", path, err)
	}
	t.Cleanup(func() {
		if err := src.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return src
}

// readBlob reads the blob d of img to its end.
func readBlob(img Image, d v1.Descriptor) ([]byte, error) {
	rc, err := img.Open(d)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(rc)
	return b, errors.Join(err, rc.Close())
}

// readSource opens path, lists its images for platform, and reads each
// image's manifest, config and layers to their ends: the first error is
// returned.
func readSource(path string, platform *v1.Platform, tempDir string) ([]Image, error) {
	src, err := OpenWith(path, OpenOptions{TempDir: tempDir})
	if err != nil {
		return nil, err
	}
	images, err := src.Images(platform)
	for _, img := range images {
		if err != nil {
			break
		}
		ds := append([]v1.Descriptor{
			{MediaType: v1.MediaTypeImageManifest, Digest: img.ManifestDigest, Size: int64(len(img.ManifestBytes))},
			img.Manifest.Config,
		}, img.Manifest.Layers...)
		for _, d := range ds {
			if _, err = readBlob(img, d); err != nil {
				break
			}
		}
	}
	return images, errors.Join(err, src.Close())
}

// checkImage compares img, read from a source, with the fixture bi.
func checkImage(t *testing.T, img Image, bi builtImage, refName string) {
	t.Helper()
	if img.RefName != refName {
		t.Errorf("RefName = %q, want %q", img.RefName, refName)
	}
	if img.ManifestDigest != bi.manifest.Digest || !bytes.Equal(img.ManifestBytes, bi.blobs[bi.manifest.Digest]) {
		t.Errorf("manifest %s, want %s", img.ManifestDigest, bi.manifest.Digest)
	}
	if img.ConfigDigest != bi.config.Digest || !bytes.Equal(img.ConfigBytes, bi.blobs[bi.config.Digest]) {
		t.Errorf("config %s, want %s", img.ConfigDigest, bi.config.Digest)
	}
	if got, want := img.Config.RootFS.DiffIDs, bi.diffIDs; !equalDigests(got, want) {
		t.Errorf("diff IDs %v, want %v", got, want)
	}
	if len(img.Manifest.Layers) != len(bi.layers) {
		t.Fatalf("%d layers, want %d", len(img.Manifest.Layers), len(bi.layers))
	}
	for i, l := range img.Manifest.Layers {
		if l.Digest != bi.layers[i].Digest || l.MediaType != bi.layers[i].MediaType {
			t.Errorf("layer %d: %s %s, want %s %s", i, l.MediaType, l.Digest, bi.layers[i].MediaType, bi.layers[i].Digest)
		}
		b, err := readBlob(img, l)
		if err != nil {
			t.Errorf("layer %d: %v", i, err)
		} else if !bytes.Equal(b, bi.blobs[l.Digest]) {
			t.Errorf("layer %d: content differs", i)
		}
	}
}

func equalDigests(a, b []digest.Digest) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestOpenLayout(t *testing.T) {
	dir := t.TempDir()
	amd := simpleImage(linuxAMD64).build(t)
	arm := simpleImage(linuxARM64).build(t)
	writeLayout(t, dir, map[string]builtImage{"latest": amd, "example.com/app:2": arm})
	for _, form := range layoutForms {
		t.Run(form.name, func(t *testing.T) {
			src := openSource(t, form.make(t, dir))
			images, err := src.Images(&linuxAMD64)
			if err != nil {
				t.Fatal(err)
			}
			if len(images) != 2 {
				t.Fatalf("%d images, want 2", len(images))
			}
			// Manifests named directly are images whatever their
			// platform: the caller sees Config.
			checkImage(t, images[0], arm, "example.com/app:2")
			checkImage(t, images[1], amd, "latest")
			if got := images[1].Config.Architecture; got != "amd64" {
				t.Errorf("config architecture %q", got)
			}
		})
	}
}

// multiLayout writes a layout holding a multi-platform index, tagged
// "multi", of amd64 and arm64 images, with an attestation manifest as
// buildx writes one (platform unknown/unknown).
func multiLayout(t *testing.T) (dir string, amd, arm builtImage) {
	dir = t.TempDir()
	amd = simpleImage(linuxAMD64).build(t)
	arm = simpleImage(linuxARM64).build(t)
	att := fixtureImage{platform: v1.Platform{OS: "unknown", Architecture: "unknown"}}.build(t)
	blobs := map[digest.Digest][]byte{}
	idx := buildIndex(t, blobs, amd, arm, att)
	w, err := NewLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, bi := range []builtImage{amd, arm, att} {
		bi.write(t, w)
	}
	for d, b := range blobs {
		if err := w.WriteBlob(v1.Descriptor{Digest: d, Size: int64(len(b))}, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.AddManifest(idx, "multi"); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, amd, arm
}

func TestPlatformSelection(t *testing.T) {
	dir, amd, arm := multiLayout(t)
	byArch := map[string]builtImage{"amd64": amd, "arm64": arm}
	tests := []struct {
		name     string
		platform *v1.Platform
		want     string // architecture of the image, or "" for an error
		wantErr  string
	}{
		{name: "amd64", platform: &linuxAMD64, want: "amd64"},
		{name: "arm64", platform: &linuxARM64, want: "arm64"},
		{name: "aarch64 v8", platform: &v1.Platform{OS: "linux", Architecture: "aarch64", Variant: "v8"}, want: "arm64"},
		{name: "x86_64", platform: &v1.Platform{OS: "Linux", Architecture: "x86_64"}, want: "amd64"},
		{name: "arm v7", platform: &v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, wantErr: "no image manifest for linux/arm/v7: the index has linux/amd64, linux/arm64, unknown/unknown"},
		{name: "windows", platform: &v1.Platform{OS: "windows", Architecture: "amd64"}, wantErr: "no image manifest for windows/amd64"},
	}
	if _, ok := byArch[runtime.GOARCH]; ok && runtime.GOOS == "linux" {
		tests = append(tests, struct {
			name     string
			platform *v1.Platform
			want     string
			wantErr  string
		}{name: "host", want: runtime.GOARCH})
	}
	for _, form := range layoutForms {
		path := form.make(t, dir)
		for _, tc := range tests {
			t.Run(form.name+"/"+tc.name, func(t *testing.T) {
				images, err := openSource(t, path).Images(tc.platform)
				if tc.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
						t.Fatalf("got error %v, want one containing %q", err, tc.wantErr)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if len(images) != 1 {
					t.Fatalf("%d images, want 1", len(images))
				}
				checkImage(t, images[0], byArch[tc.want], "multi")
			})
		}
	}
}

// TestTopLevelPlatforms reads a layout whose index.json is itself the
// multi-platform index, as go-containerregistry writes one.
func TestTopLevelPlatforms(t *testing.T) {
	dir := t.TempDir()
	amd := simpleImage(linuxAMD64).build(t)
	arm := simpleImage(linuxARM64).build(t)
	w, err := NewLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, bi := range []builtImage{amd, arm} {
		bi.write(t, w)
		d := bi.manifest
		p := linuxAMD64
		if bi.manifest.Digest == arm.manifest.Digest {
			p = linuxARM64
		}
		d.Platform = &p
		if err := w.AddManifest(d, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []builtImage{amd, arm} {
		var cfg v1.Image
		if err := json.Unmarshal(want.blobs[want.config.Digest], &cfg); err != nil {
			t.Fatal(err)
		}
		images, err := openSource(t, dir).Images(&cfg.Platform)
		if err != nil {
			t.Fatal(err)
		}
		if len(images) != 1 {
			t.Fatalf("%s: %d images, want 1", cfg.Architecture, len(images))
		}
		checkImage(t, images[0], want, "")
	}
}

func TestNormalizePlatform(t *testing.T) {
	tests := []struct{ in, want v1.Platform }{
		{v1.Platform{OS: "linux", Architecture: "x86_64"}, v1.Platform{OS: "linux", Architecture: "amd64"}},
		{v1.Platform{OS: "linux", Architecture: "amd64", Variant: "v1"}, v1.Platform{OS: "linux", Architecture: "amd64"}},
		{v1.Platform{OS: "linux", Architecture: "aarch64", Variant: "8"}, v1.Platform{OS: "linux", Architecture: "arm64"}},
		{v1.Platform{OS: "linux", Architecture: "arm"}, v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}},
		{v1.Platform{OS: "linux", Architecture: "armel"}, v1.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}},
		{v1.Platform{OS: "linux", Architecture: "arm", Variant: "6"}, v1.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}},
		{v1.Platform{OS: "Linux", Architecture: "i386"}, v1.Platform{OS: "linux", Architecture: "386"}},
	}
	for _, tc := range tests {
		if got := normalizePlatform(tc.in); platformString(got) != platformString(tc.want) {
			t.Errorf("normalizePlatform(%s) = %s, want %s", platformString(tc.in), platformString(got), platformString(tc.want))
		}
	}
}

func TestSelectPlatformARMFallback(t *testing.T) {
	descs := []v1.Descriptor{
		{Platform: &v1.Platform{OS: "linux", Architecture: "arm", Variant: "v5"}},
		{Platform: &v1.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}},
		{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}},
	}
	tests := []struct {
		variant string
		want    int // -1: error
	}{{"v7", 1}, {"v6", 1}, {"v5", 0}}
	for _, tc := range tests {
		got, err := selectPlatform(descs, v1.Platform{OS: "linux", Architecture: "arm", Variant: tc.variant})
		if err != nil || got != tc.want {
			t.Errorf("arm/%s: got %d, %v; want %d", tc.variant, got, err, tc.want)
		}
	}
}

func TestDockerArchive(t *testing.T) {
	a := fixtureLayer{files: map[string]string{"a/": "", "a/file": "A"}}
	b := fixtureLayer{files: map[string]string{"b": "B"}}
	// The third layer has the first's content: docker save writes it as
	// a symlink to the first in the old style.
	repeated := fixtureImage{platform: linuxAMD64, layers: []fixtureLayer{a, b, a}}.build(t)
	plain := simpleImage(linuxAMD64)
	plain.layers[1].gzip = false
	uncompressed := plain.build(t)
	gzipped := simpleImage(linuxARM64).build(t)
	images := []dockerImage{
		{bi: repeated, tags: []string{"repeated:1", "example.com/repeated:latest"}},
		{bi: uncompressed},
		{bi: gzipped, tags: []string{"gz:1"}},
	}
	type want struct {
		bi      builtImage
		refName string
	}
	wants := []want{{repeated, "repeated:1"}, {repeated, "example.com/repeated:latest"}, {uncompressed, ""}, {gzipped, "gz:1"}}
	for _, style := range []dockerStyle{dockerOld, dockerNew} {
		archive := dockerArchive(t, style, images)
		for _, gz := range []bool{false, true} {
			name := style.String()
			b := archive
			if gz {
				name += "/gzip"
				b = gzipBytes(t, archive)
			}
			t.Run(name, func(t *testing.T) {
				path := writeFile(t, filepath.Join(t.TempDir(), "docker.tar"), b)
				got, err := openSource(t, path).Images(nil)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != len(wants) {
					t.Fatalf("%d images, want %d", len(got), len(wants))
				}
				for i, w := range wants {
					checkDockerImage(t, got[i], w.bi, w.refName)
				}
			})
		}
	}
}

// checkDockerImage compares img, read from a docker save archive, with
// the fixture bi: the manifest is synthesized, the rest is as built.
func checkDockerImage(t *testing.T, img Image, bi builtImage, refName string) {
	t.Helper()
	if img.RefName != refName {
		t.Errorf("RefName = %q, want %q", img.RefName, refName)
	}
	if img.ManifestDigest != digest.FromBytes(img.ManifestBytes) {
		t.Errorf("manifest digest %s is not that of ManifestBytes", img.ManifestDigest)
	}
	var m v1.Manifest
	if err := json.Unmarshal(img.ManifestBytes, &m); err != nil {
		t.Fatal(err)
	}
	if m.MediaType != v1.MediaTypeImageManifest || m.SchemaVersion != 2 || m.Config.MediaType != v1.MediaTypeImageConfig {
		t.Errorf("synthesized manifest: %s", img.ManifestBytes)
	}
	if m.Config.Digest != bi.config.Digest || img.ConfigDigest != bi.config.Digest || !bytes.Equal(img.ConfigBytes, bi.blobs[bi.config.Digest]) {
		t.Errorf("config %s, want %s", img.ConfigDigest, bi.config.Digest)
	}
	if len(m.Layers) != len(bi.layers) || len(img.Manifest.Layers) != len(bi.layers) {
		t.Fatalf("%d layers, want %d", len(m.Layers), len(bi.layers))
	}
	for i, l := range m.Layers {
		if l.Digest != bi.layers[i].Digest || l.Size != bi.layers[i].Size || l.MediaType != bi.layers[i].MediaType {
			t.Errorf("layer %d: %+v, want %+v", i, l, bi.layers[i])
		}
		got, err := readBlob(img, l)
		if err != nil {
			t.Errorf("layer %d: %v", i, err)
		} else if !bytes.Equal(got, bi.blobs[l.Digest]) {
			t.Errorf("layer %d: content differs", i)
		}
	}
	for _, d := range []v1.Descriptor{
		{Digest: img.ManifestDigest, Size: int64(len(img.ManifestBytes))},
		m.Config,
	} {
		if _, err := readBlob(img, d); err != nil {
			t.Errorf("blob %s: %v", d.Digest, err)
		}
	}
}

// TestDockerArchiveWithLayout reads an archive with both an OCI layout
// and manifest.json, as Docker 25 writes: the layout is read, and the
// image gets its full name from io.containerd.image.name.
func TestDockerArchiveWithLayout(t *testing.T) {
	dir := t.TempDir()
	bi := simpleImage(linuxAMD64).build(t)
	w, err := NewLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	bi.write(t, w)
	d := bi.manifest
	d.Annotations = map[string]string{AnnotationContainerdImageName: "docker.io/library/app:1.0"}
	if err := w.AddManifest(d, "1.0"); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	entries := layoutEntries(t, dir)
	manifest := []dockerManifest{{Config: "blobs/sha256/" + bi.config.Digest.Encoded(), RepoTags: []string{"app:1.0"}}}
	for _, l := range bi.layers {
		manifest[0].Layers = append(manifest[0].Layers, "blobs/sha256/"+l.Digest.Encoded())
	}
	entries = append(entries, testEntry{name: "manifest.json", body: string(mustJSON(t, manifest))})
	path := writeFile(t, filepath.Join(t.TempDir(), "docker25.tar"), makeTar(t, entries))
	images, err := openSource(t, path).Images(&linuxAMD64)
	if err != nil {
		t.Fatal(err)
	}
	if len(images) != 1 {
		t.Fatalf("%d images, want 1", len(images))
	}
	checkImage(t, images[0], bi, "docker.io/library/app:1.0")
}

// mutation changes a written layout to make it corrupt.
type mutation func(t *testing.T, dir string, bi builtImage)

func blobFile(dir string, d digest.Digest) string {
	return filepath.Join(dir, "blobs", string(d.Algorithm()), d.Encoded())
}

func truncateBlob(which func(builtImage) v1.Descriptor) mutation {
	return func(t *testing.T, dir string, bi builtImage) {
		d := which(bi)
		if err := os.Truncate(blobFile(dir, d.Digest), d.Size-1); err != nil {
			t.Fatal(err)
		}
	}
}

func flipBlob(which func(builtImage) v1.Descriptor) mutation {
	return func(t *testing.T, dir string, bi builtImage) {
		name := blobFile(dir, which(bi).Digest)
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 1
		writeFile(t, name, b)
	}
}

func removeBlob(which func(builtImage) v1.Descriptor) mutation {
	return func(t *testing.T, dir string, bi builtImage) {
		if err := os.Remove(blobFile(dir, which(bi).Digest)); err != nil {
			t.Fatal(err)
		}
	}
}

// rewriteIndex replaces index.json with one entry, d, tagged "latest".
func rewriteIndex(t *testing.T, dir string, d v1.Descriptor) {
	d.Annotations = map[string]string{v1.AnnotationRefName: "latest"}
	idx := v1.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageIndex, Manifests: []v1.Descriptor{d}}
	writeFile(t, filepath.Join(dir, "index.json"), mustJSON(t, idx))
}

// replaceManifest writes a new manifest, changed by edit, and points
// index.json at it.
func replaceManifest(edit func(m *v1.Manifest)) mutation {
	return func(t *testing.T, dir string, bi builtImage) {
		var m v1.Manifest
		if err := json.Unmarshal(bi.blobs[bi.manifest.Digest], &m); err != nil {
			t.Fatal(err)
		}
		edit(&m)
		b := mustJSON(t, m)
		d := descFor(v1.MediaTypeImageManifest, b)
		writeFile(t, blobFile(dir, d.Digest), b)
		rewriteIndex(t, dir, d)
	}
}

// replaceConfig writes a new config, changed by edit, and a manifest
// for it.
func replaceConfig(edit func(c *v1.Image)) mutation {
	return func(t *testing.T, dir string, bi builtImage) {
		var c v1.Image
		if err := json.Unmarshal(bi.blobs[bi.config.Digest], &c); err != nil {
			t.Fatal(err)
		}
		edit(&c)
		b := mustJSON(t, c)
		d := descFor(v1.MediaTypeImageConfig, b)
		writeFile(t, blobFile(dir, d.Digest), b)
		replaceManifest(func(m *v1.Manifest) { m.Config = d })(t, dir, bi)
	}
}

func layer0(bi builtImage) v1.Descriptor   { return bi.layers[0] }
func layer1(bi builtImage) v1.Descriptor   { return bi.layers[1] }
func config(bi builtImage) v1.Descriptor   { return bi.config }
func manifest(bi builtImage) v1.Descriptor { return bi.manifest }

func TestCorruptLayout(t *testing.T) {
	bi := simpleImage(linuxAMD64).build(t)
	tests := []struct {
		name   string
		mutate mutation
		// want are substrings of the error: the blob or file at fault,
		// and what is wrong with it.
		want   []string
		target error // errors.Is, if set
	}{
		{"truncated layer", truncateBlob(layer1), []string{string(bi.layers[1].Digest), "size mismatch"}, ErrSizeMismatch},
		{"truncated config", truncateBlob(config), []string{string(bi.config.Digest), "truncated"}, ErrSizeMismatch},
		{"truncated manifest", truncateBlob(manifest), []string{string(bi.manifest.Digest), "truncated"}, ErrSizeMismatch},
		{"layer digest mismatch", flipBlob(layer0), []string{string(bi.layers[0].Digest), "digest mismatch"}, ErrDigestMismatch},
		{"gzip layer digest mismatch", flipBlob(layer1), []string{string(bi.layers[1].Digest), "digest mismatch"}, ErrDigestMismatch},
		{"config digest mismatch", flipBlob(config), []string{string(bi.config.Digest), "digest mismatch"}, ErrDigestMismatch},
		{"manifest digest mismatch", flipBlob(manifest), []string{string(bi.manifest.Digest), "digest mismatch"}, ErrDigestMismatch},
		{"missing layer", removeBlob(layer0), []string{string(bi.layers[0].Digest)}, fs.ErrNotExist},
		{"missing config", removeBlob(config), []string{"config", string(bi.config.Digest)}, fs.ErrNotExist},
		{"missing manifest", removeBlob(manifest), []string{string(bi.manifest.Digest)}, fs.ErrNotExist},
		{"diff_ids count", replaceConfig(func(c *v1.Image) { c.RootFS.DiffIDs = c.RootFS.DiffIDs[:1] }), []string{"1 rootfs.diff_ids for 2 layers"}, nil},
		{"rootfs type", replaceConfig(func(c *v1.Image) { c.RootFS.Type = "tar" }), []string{`rootfs.type "tar"`}, nil},
		{"traversal in index.json", func(t *testing.T, dir string, bi builtImage) {
			rewriteIndex(t, dir, v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: "sha256:../../../../etc/passwd", Size: 10})
		}, []string{"index.json: manifests[0]", `"sha256:../../../../etc/passwd"`, "invalid"}, nil},
		{"traversal in a layer", replaceManifest(func(m *v1.Manifest) { m.Layers[0].Digest = "sha256:../oci-layout" }), []string{"layers[0]", `"sha256:../oci-layout"`}, nil},
		{"unsupported digest", replaceManifest(func(m *v1.Manifest) { m.Layers[0].Digest = "md5:d41d8cd98f00b204e9800998ecf8427e" }), []string{"layers[0]", "md5:"}, nil},
		{"foreign layer", replaceManifest(func(m *v1.Manifest) {
			m.Layers[0].MediaType = MediaTypeDockerForeignLayer
			m.Layers[0].URLs = []string{"https://example.com/layer"}
		}), []string{"layers[0]", "non-distributable (foreign)", "https://example.com/layer"}, nil},
		{"unknown layer media type", replaceManifest(func(m *v1.Manifest) { m.Layers[0].MediaType = "application/x-rar" }), []string{"layers[0]", `unsupported layer media type "application/x-rar"`}, nil},
		{"config media type", replaceManifest(func(m *v1.Manifest) { m.Config.MediaType = v1.MediaTypeImageLayer }), []string{"is not an image config"}, nil},
		{"manifest media type", replaceManifest(func(m *v1.Manifest) { m.MediaType = MediaTypeDockerManifest }), []string{"but the descriptor says"}, nil},
		{"schema version", replaceManifest(func(m *v1.Manifest) { m.SchemaVersion = 1 }), []string{"schemaVersion 1"}, nil},
		{"index.json entry media type", func(t *testing.T, dir string, bi builtImage) {
			d := bi.manifest
			d.MediaType = "application/vnd.docker.distribution.manifest.v1+prettyjws"
			rewriteIndex(t, dir, d)
		}, []string{"index.json: manifests[0]", "unsupported media type"}, nil},
		{"index.json not JSON", func(t *testing.T, dir string, bi builtImage) {
			writeFile(t, filepath.Join(dir, "index.json"), []byte("{"))
		}, []string{"index.json"}, nil},
		{"index.json missing", func(t *testing.T, dir string, bi builtImage) {
			if err := os.Remove(filepath.Join(dir, "index.json")); err != nil {
				t.Fatal(err)
			}
		}, []string{"index.json"}, fs.ErrNotExist},
		{"imageLayoutVersion", func(t *testing.T, dir string, bi builtImage) {
			writeFile(t, filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"2.0.0"}`))
		}, []string{`oci-layout: imageLayoutVersion "2.0.0", want "1.0.0"`}, nil},
	}
	for _, tc := range tests {
		for _, form := range rawForms {
			t.Run(tc.name+"/"+form.name, func(t *testing.T) {
				dir := t.TempDir()
				writeLayout(t, dir, map[string]builtImage{"latest": bi})
				tc.mutate(t, dir, bi)
				_, err := readSource(form.make(t, dir), &linuxAMD64, t.TempDir())
				if err == nil {
					t.Fatal("no error")
				}
				t.Log(err)
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				if tc.target != nil && !errors.Is(err, tc.target) {
					t.Errorf("error %q is not %v", err, tc.target)
				}
			})
		}
	}
}

// TestCorruptLayoutIndex corrupts the nested index of a multi-platform
// image.
func TestCorruptLayoutIndex(t *testing.T) {
	dir, _, _ := multiLayout(t)
	idx, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var top v1.Index
	if err := json.Unmarshal(idx, &top); err != nil {
		t.Fatal(err)
	}
	flipBlob(func(builtImage) v1.Descriptor { return top.Manifests[0] })(t, dir, builtImage{})
	_, err = readSource(dir, &linuxAMD64, t.TempDir())
	if err == nil || !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), string(top.Manifests[0].Digest)) {
		t.Fatalf("got %v, want a digest mismatch of index %s", err, top.Manifests[0].Digest)
	}
}

func TestCorruptDocker(t *testing.T) {
	bi := simpleImage(linuxAMD64).build(t)
	good := func(t *testing.T, style dockerStyle) []testEntry {
		return tarEntries(t, dockerArchive(t, style, []dockerImage{{bi: bi, tags: []string{"app:1"}}}))
	}
	// editManifest changes manifest.json.
	editManifest := func(entries []testEntry, t *testing.T, edit func(m *dockerManifest)) []testEntry {
		for i, e := range entries {
			if e.name == "manifest.json" {
				var ms []dockerManifest
				if err := json.Unmarshal([]byte(e.body), &ms); err != nil {
					t.Fatal(err)
				}
				edit(&ms[0])
				entries[i].body = string(mustJSON(t, ms))
			}
		}
		return entries
	}
	tests := []struct {
		name  string
		style dockerStyle
		edit  func(t *testing.T, entries []testEntry) []testEntry
		want  []string
	}{
		{"diff ID mismatch", dockerOld, func(t *testing.T, entries []testEntry) []testEntry {
			// Swap the layers: each then has the other's diff ID.
			return editManifest(entries, t, func(m *dockerManifest) { m.Layers[0], m.Layers[1] = m.Layers[1], m.Layers[0] })
		}, []string{"diff ID " + string(bi.diffIDs[1]), "rootfs.diff_ids[0] is " + string(bi.diffIDs[0])}},
		{"diff_ids count", dockerNew, func(t *testing.T, entries []testEntry) []testEntry {
			return editManifest(entries, t, func(m *dockerManifest) { m.Layers = m.Layers[:1] })
		}, []string{"2 rootfs.diff_ids for 1 layers"}},
		{"config name", dockerOld, func(t *testing.T, entries []testEntry) []testEntry {
			for i := range entries {
				if strings.HasSuffix(entries[i].name, ".json") && entries[i].name != "manifest.json" {
					entries[i].body = strings.Replace(entries[i].body, "/bin/sh", "/bin/xx", 1)
				}
			}
			return entries
		}, []string{"config \"" + bi.config.Digest.Encoded() + ".json\"", "digest mismatch"}},
		{"blob name", dockerNew, func(t *testing.T, entries []testEntry) []testEntry {
			for i := range entries {
				if entries[i].name == "blobs/sha256/"+bi.layers[0].Digest.Encoded() {
					entries[i].body = strings.Replace(entries[i].body, "ID=fixture", "ID=fixturf", 1)
				}
			}
			return entries
		}, []string{"layer \"blobs/sha256/" + bi.layers[0].Digest.Encoded() + "\"", "digest mismatch"}},
		{"missing layer", dockerNew, func(t *testing.T, entries []testEntry) []testEntry {
			return editManifest(entries, t, func(m *dockerManifest) { m.Layers[1] = "blobs/sha256/" + strings.Repeat("0", 64) })
		}, []string{"layer \"blobs/sha256/" + strings.Repeat("0", 64) + "\": not in the archive"}},
		{"missing config", dockerOld, func(t *testing.T, entries []testEntry) []testEntry {
			return editManifest(entries, t, func(m *dockerManifest) { m.Config = "nope.json" })
		}, []string{`config "nope.json": not in the archive`}},
		{"layer path traversal", dockerOld, func(t *testing.T, entries []testEntry) []testEntry {
			return editManifest(entries, t, func(m *dockerManifest) { m.Layers[0] = "../../etc/passwd" })
		}, []string{`layer "../../etc/passwd": a ".." in the name`}},
		{"link out of the archive", dockerOld, func(t *testing.T, entries []testEntry) []testEntry {
			entries = append(entries, testEntry{name: "evil/layer.tar", typeflag: tar.TypeSymlink, linkname: "../../etc/passwd"})
			return editManifest(entries, t, func(m *dockerManifest) { m.Layers[0] = "evil/layer.tar" })
		}, []string{`"evil/layer.tar": links to "../../etc/passwd", outside the archive`}},
		{"absolute link", dockerOld, func(t *testing.T, entries []testEntry) []testEntry {
			entries = append(entries, testEntry{name: "evil/layer.tar", typeflag: tar.TypeSymlink, linkname: "/etc/passwd"})
			return editManifest(entries, t, func(m *dockerManifest) { m.Layers[0] = "evil/layer.tar" })
		}, []string{`"evil/layer.tar": links to "/etc/passwd", outside the archive`}},
		{"link loop", dockerOld, func(t *testing.T, entries []testEntry) []testEntry {
			entries = append(entries, testEntry{name: "x/layer.tar", typeflag: tar.TypeSymlink, linkname: "../y/layer.tar"},
				testEntry{name: "y/layer.tar", typeflag: tar.TypeSymlink, linkname: "../x/layer.tar"})
			return editManifest(entries, t, func(m *dockerManifest) { m.Layers[0] = "x/layer.tar" })
		}, []string{`"x/layer.tar": more than 16 links`}},
		{"foreign layer", dockerNew, func(t *testing.T, entries []testEntry) []testEntry {
			return editManifest(entries, t, func(m *dockerManifest) {
				m.LayerSources = map[digest.Digest]v1.Descriptor{bi.diffIDs[0]: {MediaType: MediaTypeDockerForeignLayer, URLs: []string{"https://example.com/l"}}}
			})
		}, []string{"non-distributable (foreign) layer"}},
		{"hard link entry", dockerOld, func(t *testing.T, entries []testEntry) []testEntry {
			return append(entries, testEntry{name: "x", typeflag: tar.TypeLink, linkname: "manifest.json"})
		}, []string{`entry "x": type '1'`}},
		{"manifest.json not JSON", dockerOld, func(t *testing.T, entries []testEntry) []testEntry {
			for i := range entries {
				if entries[i].name == "manifest.json" {
					entries[i].body = "[{"
				}
			}
			return entries
		}, []string{"manifest.json"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, filepath.Join(t.TempDir(), "docker.tar"), makeTar(t, tc.edit(t, good(t, tc.style))))
			_, err := readSource(path, nil, t.TempDir())
			if err == nil {
				t.Fatal("no error")
			}
			t.Log(err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// tarEntries lists the entries of a tar made by makeTar.
func tarEntries(t *testing.T, b []byte) []testEntry {
	t.Helper()
	var entries []testEntry
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return entries
		}
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		e := testEntry{name: hdr.Name, body: string(body), linkname: hdr.Linkname}
		if hdr.Typeflag == tar.TypeSymlink || hdr.Typeflag == tar.TypeLink {
			e.typeflag = hdr.Typeflag
		}
		entries = append(entries, e)
	}
}

// TestArchiveEntries checks that an OCI archive with an entry no image
// archive should hold is refused, naming the entry.
func TestArchiveEntries(t *testing.T) {
	dir := t.TempDir()
	writeLayout(t, dir, map[string]builtImage{"latest": simpleImage(linuxAMD64).build(t)})
	good := layoutEntries(t, dir)
	tests := []struct {
		name  string
		extra testEntry
		want  string
	}{
		{"dot dot", testEntry{name: "blobs/../../evil", body: "x"}, `entry "blobs/../../evil": a ".." in the name`},
		{"dot dot at the start", testEntry{name: "../evil", body: "x"}, `entry "../evil": a ".." in the name`},
		{"absolute", testEntry{name: "/etc/evil", body: "x"}, `entry "/etc/evil": an absolute name`},
		{"symlink", testEntry{name: "blobs/sha256/link", typeflag: tar.TypeSymlink, linkname: "/etc/passwd"}, `entry "blobs/sha256/link": a link (to "/etc/passwd")`},
		{"hard link", testEntry{name: "blobs/sha256/hard", typeflag: tar.TypeLink, linkname: "index.json"}, `entry "blobs/sha256/hard": type '1'`},
		{"device", testEntry{name: "dev", typeflag: tar.TypeChar}, `entry "dev": type '3'`},
		{"duplicate", testEntry{name: "./index.json", body: "{}"}, `entry "./index.json": a duplicate`},
	}
	for _, tc := range tests {
		for _, gz := range []bool{false, true} {
			name := tc.name
			if gz {
				name += "/gzip"
			}
			t.Run(name, func(t *testing.T) {
				b := makeTar(t, append(append([]testEntry{}, good...), tc.extra))
				if gz {
					b = gzipBytes(t, b)
				}
				path := writeFile(t, filepath.Join(t.TempDir(), "bad.tar"), b)
				_, err := OpenWith(path, OpenOptions{TempDir: t.TempDir()})
				if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
					t.Fatalf("got %v, want an error naming %q and containing %q", err, path, tc.want)
				}
			})
		}
	}
}

func TestUnknownFormat(t *testing.T) {
	// A root filesystem tarball may hold anything an image archive must
	// not: it is still only of an unknown format.
	rootfs := makeTar(t, []testEntry{
		{name: "./"}, {name: "./etc/"}, {name: "./etc/passwd", body: "root:x:0:0::/root:/bin/sh\n"},
		{name: "./etc/mtab", typeflag: tar.TypeSymlink, linkname: "/proc/self/mounts"},
		{name: "./bin/sh", typeflag: tar.TypeLink, linkname: "./bin/busybox"},
		{name: "../escape", body: "x"},
		{name: "./etc/passwd", body: "again"},
	})
	tests := []struct {
		name string
		make func(t *testing.T) string
	}{
		{"rootfs tar", func(t *testing.T) string { return writeFile(t, filepath.Join(t.TempDir(), "rootfs.tar"), rootfs) }},
		{"rootfs tar.gz", func(t *testing.T) string {
			return writeFile(t, filepath.Join(t.TempDir(), "rootfs.tar.gz"), gzipBytes(t, rootfs))
		}},
		{"empty tar", func(t *testing.T) string { return writeFile(t, filepath.Join(t.TempDir(), "e.tar"), makeTar(t, nil)) }},
		{"empty file", func(t *testing.T) string { return writeFile(t, filepath.Join(t.TempDir(), "e"), nil) }},
		{"text", func(t *testing.T) string {
			return writeFile(t, filepath.Join(t.TempDir(), "t"), bytes.Repeat([]byte("not a tar\n"), 100))
		}},
		{"zstd", func(t *testing.T) string {
			return writeFile(t, filepath.Join(t.TempDir(), "z"), []byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0})
		}},
		{"directory", func(t *testing.T) string { return t.TempDir() }},
		{"only blobs", func(t *testing.T) string {
			return writeFile(t, filepath.Join(t.TempDir(), "b.tar"), makeTar(t, []testEntry{{name: "blobs/"}, {name: "index.json", body: "{}"}}))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.make(t)
			tmp := t.TempDir()
			_, err := OpenWith(path, OpenOptions{TempDir: tmp})
			if !errors.Is(err, ErrUnknownFormat) {
				t.Fatalf("got %v, want ErrUnknownFormat", err)
			}
			if want := `"` + path + `" is not an OCI layout, OCI archive or docker save archive`; err.Error() != want {
				t.Errorf("error %q, want %q", err, want)
			}
			assertEmptyDir(t, tmp)
		})
	}
	if _, err := Open(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrUnknownFormat) {
		t.Errorf("missing path: got %v, want fs.ErrNotExist", err)
	}
}

// TestTruncatedArchive checks that a truncated image archive is an
// error about the archive, and a truncated root filesystem tarball is of
// an unknown format (its importer says what is wrong with it).
func TestTruncatedArchive(t *testing.T) {
	dir := t.TempDir()
	bi := simpleImage(linuxAMD64).build(t)
	writeLayout(t, dir, map[string]builtImage{"latest": bi})
	var oci bytes.Buffer
	if err := WriteArchive(dir, &oci); err != nil {
		t.Fatal(err)
	}
	docker := dockerArchive(t, dockerOld, []dockerImage{{bi: bi}})
	rootfs := makeTar(t, []testEntry{{name: "etc/"}, {name: "etc/a", body: strings.Repeat("a", 2000)}, {name: "etc/b", body: "b"}})
	tests := []struct {
		name    string
		b       []byte
		unknown bool
	}{
		{"OCI archive", oci.Bytes()[:oci.Len()/2], false},
		{"OCI archive gzip", gzipBytes(t, oci.Bytes()[:oci.Len()/2]), false},
		{"docker archive", docker[:len(docker)-1536], false},
		{"rootfs", rootfs[:1000], true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, filepath.Join(t.TempDir(), "t.tar"), tc.b)
			_, err := readSource(path, nil, t.TempDir())
			t.Log(err)
			if err == nil || errors.Is(err, ErrUnknownFormat) != tc.unknown || !strings.Contains(err.Error(), path) {
				t.Fatalf("got %v, want an error naming %s (unknown format: %v)", err, path, tc.unknown)
			}
		})
	}
}

func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("%s: %s left behind", dir, e.Name())
	}
}

func TestVerifiedOpen(t *testing.T) {
	dir := t.TempDir()
	bi := simpleImage(linuxAMD64).build(t)
	writeLayout(t, dir, map[string]builtImage{"latest": bi})
	l := bi.layers[0]
	other := bi.layers[1]
	tests := []struct {
		name   string
		d      v1.Descriptor
		want   string
		target error
	}{
		{"size too small", v1.Descriptor{Digest: l.Digest, Size: l.Size - 10}, "more than the descriptor's", ErrSizeMismatch},
		{"size too large", v1.Descriptor{Digest: l.Digest, Size: l.Size + 10}, "truncated", ErrSizeMismatch},
		{"exact", v1.Descriptor{Digest: l.Digest, Size: l.Size}, "", nil},
		{"another blob", v1.Descriptor{Digest: other.Digest, Size: other.Size}, "", nil},
	}
	for _, form := range layoutForms {
		src := openSource(t, form.make(t, dir))
		images, err := src.Images(&linuxAMD64)
		if err != nil {
			t.Fatal(err)
		}
		img := images[0]
		for _, tc := range tests {
			t.Run(form.name+"/"+tc.name, func(t *testing.T) {
				_, err := readBlob(img, tc.d)
				if tc.target == nil {
					if err != nil {
						t.Fatal(err)
					}
					return
				}
				if !errors.Is(err, tc.target) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "blob "+string(tc.d.Digest)) {
					t.Fatalf("got %v, want %v naming blob %s", err, tc.target, tc.d.Digest)
				}
			})
		}
		t.Run(form.name+"/missing", func(t *testing.T) {
			d := descFor(v1.MediaTypeImageLayer, []byte("absent"))
			if _, err := img.Open(d); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), string(d.Digest)) {
				t.Fatalf("got %v, want fs.ErrNotExist naming %s", err, d.Digest)
			}
		})
		t.Run(form.name+"/invalid digest", func(t *testing.T) {
			if _, err := img.Open(v1.Descriptor{Digest: "sha256:../../index.json", Size: 1}); err == nil || !strings.Contains(err.Error(), "sha256:../../index.json") {
				t.Fatalf("got %v", err)
			}
		})
	}
}

// TestVerifiedReaderDigest checks a digest mismatch found at the end of
// content of the right size.
func TestVerifiedReaderDigest(t *testing.T) {
	content := []byte("some content")
	d := descFor(v1.MediaTypeImageLayer, []byte("other things"))
	r := newVerifiedReader(io.NopCloser(bytes.NewReader(content)), d, "blob "+string(d.Digest))
	got, err := io.ReadAll(r)
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), "content is "+string(digest.FromBytes(content))) {
		t.Fatalf("got %v, want a digest mismatch", err)
	}
	if !bytes.Equal(got, content) {
		t.Errorf("read %q", got)
	}
	// The error sticks.
	if _, err2 := r.Read(make([]byte, 1)); err2 != err {
		t.Errorf("second read: %v", err2)
	}
}

func TestGzipTempRemoved(t *testing.T) {
	dir := t.TempDir()
	writeLayout(t, dir, map[string]builtImage{"latest": simpleImage(linuxAMD64).build(t)})
	path := archiveOf(t, dir, true)
	tmp := t.TempDir()
	src, err := OpenWith(path, OpenOptions{TempDir: tmp})
	if err != nil {
		t.Fatal(err)
	}
	// Unlinked while open: nothing is left if the process dies.
	assertEmptyDir(t, tmp)
	images, err := src.Images(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	assertEmptyDir(t, tmp)
	if _, err := readBlob(images[0], images[0].Manifest.Layers[0]); err == nil {
		t.Error("reading a blob after Close: no error")
	}
	if err := src.Close(); !errors.Is(err, fs.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
}
