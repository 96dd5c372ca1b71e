package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

// Black-box tests of strata's images through the built binary: import
// (OCI image layout, OCI archive, docker save archive, root filesystem
// tarball), export, and the docker-like image commands (images,
// history, inspect, tag, rmi, image prune, system prune, system df, ps,
// create, commit), with Debian's skopeo and umoci as the reference
// tools for the formats.
//
// Fixture images are built here, in Go, with image-spec types: their
// layers are tarballs made by cliLayer (fixed times), their configs have
// fixed created times, so their digests (image IDs) are fixed and the
// golden files under testdata/images/ show real IDs. What depends on
// the filesystem (sizes, which count allocated blocks) or on the clock
// (relative ages) is normalized before comparing; the sizes are checked
// against `strata ls --format json` instead.

// imgEpoch is the created time of the fixture images.
var imgEpoch = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// imgLayerSpec describes a fixture layer: files as cliLayer takes them
// (".wh.NAME" is a whiteout, "DIR/.wh..wh..opq" an opaque marker), or a
// prepared tar (hostile layers), compressed with comp: "gzip", "zstd" or
// "" (plain tar).
type imgLayerSpec struct {
	files map[string]string
	raw   []byte
	comp  string
}

// imgSpec describes a fixture image.
type imgSpec struct {
	layers   []imgLayerSpec
	history  []v1.History // nil: one "ADD layerN /" entry per layer
	config   v1.ImageConfig
	platform v1.Platform // zero: linux and this machine's architecture
	created  time.Time   // zero: imgEpoch
	author   string
}

// imgLayer is a built fixture layer.
type imgLayer struct {
	desc   v1.Descriptor
	diffID digest.Digest
	blob   []byte
	tar    []byte // uncompressed
	files  map[string]string
}

// imgFixture is a built fixture image: its blobs and their descriptors.
type imgFixture struct {
	layers        []imgLayer
	config        v1.Image
	configBytes   []byte
	configDesc    v1.Descriptor
	manifest      v1.Manifest
	manifestBytes []byte
	manifestDesc  v1.Descriptor
}

func (f *imgFixture) id() string      { return f.configDesc.Digest.String() }
func (f *imgFixture) shortID() string { return f.configDesc.Digest.Encoded()[:12] }

// chainIDs returns the chain IDs of the image's layers, bottom first:
// their names in strata's store.
func (f *imgFixture) chainIDs() []string {
	var diffIDs []digest.Digest
	for _, l := range f.layers {
		diffIDs = append(diffIDs, l.diffID)
	}
	var out []string
	for _, c := range identity.ChainIDs(diffIDs) {
		out = append(out, c.String())
	}
	return out
}

// tree is what a container on the image holds, as cliTree describes it.
func (f *imgFixture) tree() map[string]string {
	var layers []map[string]string
	for _, l := range f.layers {
		layers = append(layers, l.files)
	}
	return imgMergedTree(layers...)
}

// imgMergedTree describes the union of layers (bottom first) as cliTree
// describes a directory: each layer's whiteouts remove entries of the
// layers below it, then its own entries are added.
func imgMergedTree(layers ...map[string]string) map[string]string {
	tree := map[string]string{}
	for _, files := range layers {
		lt := cliTreeOf(files)
		for p := range lt {
			dir, base := path.Split(p)
			switch {
			case base == ".wh..wh..opq":
				for q := range tree {
					if strings.HasPrefix(q, dir) && q != strings.TrimSuffix(dir, "/") {
						delete(tree, q)
					}
				}
			case strings.HasPrefix(base, ".wh."):
				victim := dir + strings.TrimPrefix(base, ".wh.")
				for q := range tree {
					if q == victim || strings.HasPrefix(q, victim+"/") {
						delete(tree, q)
					}
				}
			}
		}
		for p, d := range lt {
			if !strings.HasPrefix(path.Base(p), ".wh.") {
				tree[p] = d
			}
		}
	}
	return tree
}

// imgCompress compresses a layer tar and returns the blob and its media
// type.
func imgCompress(t testing.TB, tarb []byte, comp string) ([]byte, string) {
	t.Helper()
	switch comp {
	case "gzip":
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		if _, err := zw.Write(tarb); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		return b.Bytes(), v1.MediaTypeImageLayerGzip
	case "zstd":
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
		if err != nil {
			t.Fatal(err)
		}
		defer enc.Close()
		return enc.EncodeAll(tarb, nil), v1.MediaTypeImageLayerZstd
	case "":
		return tarb, v1.MediaTypeImageLayer
	}
	t.Fatalf("unknown compression %q", comp)
	return nil, ""
}

func imgDescriptor(mediaType string, b []byte) v1.Descriptor {
	return v1.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
}

// buildImage builds the fixture spec describes.
func buildImage(t testing.TB, spec imgSpec) *imgFixture {
	t.Helper()
	f := &imgFixture{}
	created := spec.created
	if created.IsZero() {
		created = imgEpoch
	}
	p := spec.platform
	if p.OS == "" {
		p = v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	}
	f.config = v1.Image{
		Created:  &created,
		Author:   spec.author,
		Platform: p,
		Config:   spec.config,
		RootFS:   v1.RootFS{Type: "layers"},
		History:  spec.history,
	}
	for i, ls := range spec.layers {
		tarb := ls.raw
		if tarb == nil {
			tarb, _ = cliLayer(t, ls.files, "")
		}
		blob, mt := imgCompress(t, tarb, ls.comp)
		l := imgLayer{desc: imgDescriptor(mt, blob), diffID: digest.FromBytes(tarb), blob: blob, tar: tarb, files: ls.files}
		f.layers = append(f.layers, l)
		f.config.RootFS.DiffIDs = append(f.config.RootFS.DiffIDs, l.diffID)
		if spec.history == nil {
			f.config.History = append(f.config.History, v1.History{Created: &created, CreatedBy: fmt.Sprintf("ADD layer%d /", i)})
		}
	}
	f.rebuild(t)
	return f
}

// rebuild writes f's config and manifest again from f.config and the
// descriptors of f.layers.
func (f *imgFixture) rebuild(t testing.TB) {
	t.Helper()
	var err error
	if f.configBytes, err = json.Marshal(f.config); err != nil {
		t.Fatal(err)
	}
	f.configDesc = imgDescriptor(v1.MediaTypeImageConfig, f.configBytes)
	f.manifest = v1.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: v1.MediaTypeImageManifest,
		Config:    f.configDesc,
		Layers:    []v1.Descriptor{},
	}
	for _, l := range f.layers {
		f.manifest.Layers = append(f.manifest.Layers, l.desc)
	}
	if f.manifestBytes, err = json.Marshal(f.manifest); err != nil {
		t.Fatal(err)
	}
	f.manifestDesc = imgDescriptor(v1.MediaTypeImageManifest, f.manifestBytes)
	p := f.config.Platform
	f.manifestDesc.Platform = &p
}

// imgData returns n bytes of deterministic, incompressible content.
func imgData(seed uint64, n int) string {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return string(b)
}

// --- writing fixtures in the formats strata imports ---

// imgLayout writes an OCI image layout directory (image-spec
// image-layout.md).
type imgLayout struct {
	t     testing.TB
	dir   string
	index v1.Index
}

func newImgLayout(t testing.TB, dir string) *imgLayout {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(v1.ImageLayout{Version: v1.ImageLayoutVersion})
	if err := os.WriteFile(filepath.Join(dir, v1.ImageLayoutFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return &imgLayout{t: t, dir: dir, index: v1.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageIndex}}
}

// blobFile is where the layout keeps the blob d.
func (l *imgLayout) blobFile(d digest.Digest) string {
	return filepath.Join(l.dir, "blobs", d.Algorithm().String(), d.Encoded())
}

func (l *imgLayout) blob(b []byte) {
	l.t.Helper()
	if err := os.WriteFile(l.blobFile(digest.FromBytes(b)), b, 0o644); err != nil {
		l.t.Fatal(err)
	}
}

// image writes the blobs of f and returns its manifest's descriptor.
func (l *imgLayout) image(f *imgFixture) v1.Descriptor {
	for _, ly := range f.layers {
		l.blob(ly.blob)
	}
	l.blob(f.configBytes)
	l.blob(f.manifestBytes)
	return f.manifestDesc
}

// indexBlob writes an image index of descs and returns its descriptor.
func (l *imgLayout) indexBlob(descs ...v1.Descriptor) v1.Descriptor {
	l.t.Helper()
	ix := v1.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageIndex, Manifests: descs}
	b, err := json.Marshal(ix)
	if err != nil {
		l.t.Fatal(err)
	}
	l.blob(b)
	return imgDescriptor(v1.MediaTypeImageIndex, b)
}

// add lists d in index.json, named ref (the OCI ref name; "" for none).
func (l *imgLayout) add(d v1.Descriptor, ref string) {
	if ref != "" {
		d.Annotations = map[string]string{v1.AnnotationRefName: ref}
	}
	l.index.Manifests = append(l.index.Manifests, d)
}

// close writes index.json.
func (l *imgLayout) close() {
	l.t.Helper()
	b, err := json.Marshal(l.index)
	if err != nil {
		l.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(l.dir, v1.ImageIndexFile), b, 0o644); err != nil {
		l.t.Fatal(err)
	}
}

// writeLayout writes f as the only image of a new layout dir, named
// ref.
func writeLayout(t testing.TB, dir string, f *imgFixture, ref string) string {
	t.Helper()
	l := newImgLayout(t, dir)
	d := l.image(f)
	d.Platform = nil
	l.add(d, ref)
	l.close()
	return dir
}

// imgTarEntry is one entry of a tar written by writeTar.
type imgTarEntry struct {
	name string
	typ  byte
	body []byte
	link string
}

// writeTar writes entries to a new tar file out (PAX format).
func writeTar(t testing.TB, out string, entries []imgTarEntry) {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	mtime := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, ModTime: mtime, Linkname: e.link, Format: tar.FormatPAX}
		switch e.typ {
		case tar.TypeDir:
			hdr.Mode = 0o755
		case tar.TypeReg:
			hdr.Size = int64(len(e.body))
		case tar.TypeSymlink:
			hdr.Mode = 0o777
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write(e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// tarDir writes the tree under dir as the tar out: an OCI archive of a
// layout, as `skopeo copy ... oci-archive:` writes it.
func tarDir(t testing.TB, dir, out string) string {
	t.Helper()
	var entries []imgTarEntry
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			entries = append(entries, imgTarEntry{name: rel + "/", typ: tar.TypeDir})
			return nil
		}
		b, err := os.ReadFile(p)
		entries = append(entries, imgTarEntry{name: rel, typ: tar.TypeReg, body: b})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	writeTar(t, out, entries)
	return out
}

// imgDockerItem is one image of a docker save archive.
type imgDockerItem struct {
	f        *imgFixture
	repoTags []string
}

// writeDockerSave writes items as `docker save` does: style "legacy"
// as Docker before 25 (<v1 id>/layer.tar, <config hex>.json,
// manifest.json, repositories; layers uncompressed), "docker25" as
// Docker 25 and later (an OCI layout beside manifest.json, whose paths
// name blobs/sha256/<hex>).
func writeDockerSave(t testing.TB, out, style string, items ...imgDockerItem) string {
	t.Helper()
	type manifestItem struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	var (
		entries []imgTarEntry
		seen    = map[string]bool{}
		items2  []manifestItem
		repos   = map[string]map[string]string{}
	)
	add := func(e imgTarEntry) {
		if !seen[e.name] {
			seen[e.name] = true
			entries = append(entries, e)
		}
	}
	var index v1.Index
	index.SchemaVersion = 2
	index.MediaType = v1.MediaTypeImageIndex
	if style == "docker25" {
		add(imgTarEntry{name: "blobs/", typ: tar.TypeDir})
		add(imgTarEntry{name: "blobs/sha256/", typ: tar.TypeDir})
	}
	for _, it := range items {
		mi := manifestItem{RepoTags: it.repoTags}
		switch style {
		case "legacy":
			parent := ""
			for _, l := range it.f.layers {
				id := digest.FromString(parent + " " + l.diffID.String()).Encoded()
				v1json, _ := json.Marshal(map[string]string{"id": id, "parent": parent})
				add(imgTarEntry{name: id + "/", typ: tar.TypeDir})
				add(imgTarEntry{name: id + "/VERSION", typ: tar.TypeReg, body: []byte("1.0")})
				add(imgTarEntry{name: id + "/json", typ: tar.TypeReg, body: v1json})
				add(imgTarEntry{name: id + "/layer.tar", typ: tar.TypeReg, body: l.tar})
				mi.Layers = append(mi.Layers, id+"/layer.tar")
				parent = id
			}
			mi.Config = it.f.configDesc.Digest.Encoded() + ".json"
			add(imgTarEntry{name: mi.Config, typ: tar.TypeReg, body: it.f.configBytes})
			for _, rt := range it.repoTags {
				repo, tag, _ := strings.Cut(rt, ":")
				if repos[repo] == nil {
					repos[repo] = map[string]string{}
				}
				repos[repo][tag] = parent
			}
		case "docker25":
			for _, l := range it.f.layers {
				name := "blobs/sha256/" + l.desc.Digest.Encoded()
				add(imgTarEntry{name: name, typ: tar.TypeReg, body: l.blob})
				mi.Layers = append(mi.Layers, name)
			}
			mi.Config = "blobs/sha256/" + it.f.configDesc.Digest.Encoded()
			add(imgTarEntry{name: mi.Config, typ: tar.TypeReg, body: it.f.configBytes})
			add(imgTarEntry{name: "blobs/sha256/" + it.f.manifestDesc.Digest.Encoded(), typ: tar.TypeReg, body: it.f.manifestBytes})
			for _, rt := range it.repoTags {
				d := it.f.manifestDesc
				d.Platform = nil
				_, tag, _ := strings.Cut(rt, ":")
				d.Annotations = map[string]string{
					"io.containerd.image.name": "docker.io/library/" + rt,
					v1.AnnotationRefName:       tag,
				}
				index.Manifests = append(index.Manifests, d)
			}
		default:
			t.Fatalf("unknown docker save style %q", style)
		}
		items2 = append(items2, mi)
	}
	mj, _ := json.Marshal(items2)
	add(imgTarEntry{name: "manifest.json", typ: tar.TypeReg, body: mj})
	switch style {
	case "legacy":
		rj, _ := json.Marshal(repos)
		add(imgTarEntry{name: "repositories", typ: tar.TypeReg, body: rj})
	case "docker25":
		ij, _ := json.Marshal(index)
		lj, _ := json.Marshal(v1.ImageLayout{Version: v1.ImageLayoutVersion})
		add(imgTarEntry{name: "index.json", typ: tar.TypeReg, body: ij})
		add(imgTarEntry{name: "oci-layout", typ: tar.TypeReg, body: lj})
	}
	writeTar(t, out, entries)
	return out
}

// --- running strata on images ---

// imgArgs puts --root after the command's name, both words of the
// two-word commands ("image prune", "system df") included.
func (s *cliStore) imgArgs(args []string) []string {
	if len(args) >= 2 && (args[0] == "image" || args[0] == "system" || args[0] == "builder") {
		return append([]string{args[0], args[1], "--root", s.root}, args[2:]...)
	}
	return s.args(args)
}

func (s *cliStore) imgRun(args ...string) cliResult {
	s.t.Helper()
	return cliRun(s.t, cliOpts{}, s.imgArgs(args)...)
}

func (s *cliStore) imgRunWith(o cliOpts, args ...string) cliResult {
	s.t.Helper()
	return cliRun(s.t, o, s.imgArgs(args)...)
}

// imgMust runs strata, which must succeed, and returns its stdout.
func (s *cliStore) imgMust(args ...string) string {
	s.t.Helper()
	r := s.imgRun(args...)
	if r.code != 0 || r.err != nil {
		s.t.Fatalf("%v", r)
	}
	return r.stdout
}

// imgInspect is an image as `strata inspect` shows it.
type imgInspect struct {
	Id           string
	RepoTags     []string
	RepoDigests  []string
	Created      *time.Time
	Author       string
	Comment      string
	Config       v1.ImageConfig
	Architecture string
	Variant      string
	Os           string
	Size         int64
	RootFS       struct {
		Type   string
		Layers []string
	}
	History     []v1.History
	GraphDriver struct {
		Name string
		Data struct {
			Layers   []string
			LowerDir string
		}
	}
	Manifest struct {
		Digest    string
		MediaType string
		Layers    []v1.Descriptor
	}
}

func (s *cliStore) inspectImage(ref string) imgInspect {
	s.t.Helper()
	out := s.imgMust("inspect", ref)
	var in []imgInspect
	if err := json.Unmarshal([]byte(out), &in); err != nil || len(in) != 1 {
		s.t.Fatalf("strata inspect %s: %v; output:\n%s", ref, err, out)
	}
	return in[0]
}

// imgRow is a row of `strata images --format json`.
type imgRow struct {
	Repository string
	Tag        string
	ID         string
	Created    time.Time
	Size       int64
}

func (s *cliStore) imagesJSON() []imgRow {
	s.t.Helper()
	out := s.imgMust("images", "--format", "json")
	var rows []imgRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		s.t.Fatalf("strata images --format json: %v; output:\n%s", err, out)
	}
	return rows
}

// layerSizes returns the size of each committed layer, by name (chain
// ID), as `strata ls --format json` gives it.
func (s *cliStore) layerSizes() map[string]int64 {
	s.t.Helper()
	out := map[string]int64{}
	for _, l := range s.list() {
		if l.Kind == "committed" {
			out[l.Name] = l.Size
		}
	}
	return out
}

var imgTreeSeq atomic.Int64

// imageTree creates a container on the image ref, mounts it, and
// returns its tree; the container is removed after.
func (s *cliStore) imageTree(ref string) map[string]string {
	s.t.Helper()
	name := fmt.Sprintf("tree-%d", imgTreeSeq.Add(1))
	s.mustLine("create", "--name", name, ref)
	mnt, w := s.mount(name)
	tree := cliTree(s.t, mnt)
	s.unmount(name, w)
	s.must("rm", name)
	return tree
}

// imgState describes what a store holds, to show that a failed command
// changed nothing: images, snapshots, and the files of blobs/,
// snapshots/ and tmp/.
func (s *cliStore) imgState() string {
	s.t.Helper()
	var b strings.Builder
	b.WriteString("images:\n")
	for _, r := range s.imagesJSON() {
		fmt.Fprintf(&b, "%s:%s %s\n", r.Repository, r.Tag, r.ID)
	}
	b.WriteString("snapshots:\n" + s.imgMust("ls", "-q", "--no-trunc"))
	for _, d := range []string{"blobs/sha256", "snapshots", "tmp"} {
		ents, _ := os.ReadDir(filepath.Join(s.root, d))
		fmt.Fprintf(&b, "%s:", d)
		for _, e := range ents {
			b.WriteString(" " + e.Name())
		}
		b.WriteString("\n")
	}
	return b.String()
}

// mustCheck runs strata check, which must find the store consistent.
func (s *cliStore) mustCheck() {
	s.t.Helper()
	if r := s.imgRun("check"); r.code != 0 || r.stdout != "the store is consistent\n" {
		s.t.Errorf("strata check: %v", r)
	}
}

// loadedRE matches the line strata import prints per image.
var loadedRE = regexp.MustCompile(`(?m)^Loaded image: (\S+) \((\d+) layers? unpacked, (\d+) already stored\)$`)

// imported parses the output of strata import: names, layers unpacked
// and reused.
func imported(t testing.TB, out string) (names []string, unpacked, reused int) {
	t.Helper()
	ms := loadedRE.FindAllStringSubmatch(out, -1)
	if len(ms) == 0 {
		t.Fatalf("strata import printed no \"Loaded image: NAME (N layers unpacked, M already stored)\" line:\n%s", out)
	}
	for _, m := range ms {
		names = append(names, m[1])
		u, _ := strconv.Atoi(m[2])
		r, _ := strconv.Atoi(m[3])
		unpacked += u
		reused += r
	}
	return names, unpacked, reused
}

// needTools skips a test when a reference tool is missing (CI installs
// them: apt-get install skopeo umoci).
func needTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (apt-get install %s)", tool, tool)
		}
	}
}

// runTool runs a reference tool, which must succeed, and returns its
// stdout.
func runTool(t testing.TB, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = cliEnv()
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// dockerSize prints a size as docker does (go-units
// HumanSizeWithPrecision(size, 3): decimal units, 3 significant digits).
func dockerSize(n int64) string {
	units := []string{"B", "kB", "MB", "GB", "TB", "PB"}
	f := float64(n)
	i := 0
	for f >= 1000 && i < len(units)-1 {
		f /= 1000
		i++
	}
	return fmt.Sprintf("%.3g%s", f, units[i])
}

// --- golden transcripts ---

var (
	// imgAgoRE matches docker's relative times ("3 years ago").
	imgAgoRE = regexp.MustCompile(`^(\d+|About an?|Less than a) (second|minute|hour|day|week|month|year)s? ago$`)
	// imgSizeRE matches docker's sizes ("12.3kB") and plain byte counts.
	imgSizeRE = regexp.MustCompile(`^(\d+(\.\d+)?[kMGTP]?B|\d+)$`)
	// imgHeaderRE matches a table's header: capitalized words, columns
	// apart by two spaces or more.
	imgHeaderRE = regexp.MustCompile(`^[A-Z]+( [A-Z]+)*(  +[A-Z]+( [A-Z]+)*)+ *$`)
	// imgTotalRE matches the last line of the prune commands.
	imgTotalRE = regexp.MustCompile(`^Total reclaimed space: (.*)$`)
	// imgJSONSizeRE matches the Size fields of inspect and images JSON.
	imgJSONSizeRE = regexp.MustCompile(`("Size": )[1-9][0-9]*`)
	imgPctRE      = regexp.MustCompile(`^(\S+) \((\d+)%\)$`)
)

// imgNormCell normalizes a table cell of the column col: ages and sizes
// that depend on the clock or the filesystem. Zero sizes stay: that a
// size is zero is fixed.
func imgNormCell(col, v string) string {
	switch col {
	case "CREATED":
		if m := imgAgoRE.FindStringSubmatch(v); m != nil {
			if m[2] == "year" {
				return "N years ago"
			}
			return "recently"
		}
	case "SIZE", "SHARED SIZE", "UNIQUE SIZE":
		if v != "0B" && v != "0" && imgSizeRE.MatchString(v) {
			return "<size>"
		}
	case "RECLAIMABLE":
		if m := imgPctRE.FindStringSubmatch(v); m != nil && m[1] != "0B" {
			pct := m[2] + "%"
			if pct != "100%" {
				pct = "<pct>"
			}
			return "<size> (" + pct + ")"
		}
	}
	return v
}

// imgParseTable parses a table as strata prints it, docker's way: the
// header's column names (which may hold single spaces: "IMAGE ID") are
// apart by two spaces or more, and each row's cells start where the
// header's names do (widths count runes, as text/tabwriter does).
func imgParseTable(lines []string) (names []string, rows [][]string) {
	header := []rune(lines[0])
	var starts []int
	for i := 0; i < len(header); {
		if header[i] == ' ' {
			i++
			continue
		}
		j := i
		for j < len(header) && !(header[j] == ' ' && (j+1 >= len(header) || header[j+1] == ' ')) {
			j++
		}
		starts = append(starts, i)
		names = append(names, string(header[i:j]))
		i = j
	}
	for _, l := range lines[1:] {
		r := []rune(l)
		cells := make([]string, len(names))
		for i := range names {
			end := len(r)
			if i+1 < len(starts) && starts[i+1] < end {
				end = starts[i+1]
			}
			if starts[i] < end {
				cells[i] = strings.TrimSpace(string(r[starts[i]:end]))
			}
		}
		rows = append(rows, cells)
	}
	return names, rows
}

// imgTableRows parses the table out into rows by column name.
func imgTableRows(t testing.TB, out string) []map[string]string {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if !imgHeaderRE.MatchString(lines[0]) {
		t.Fatalf("not a table (header %q):\n%s", lines[0], out)
	}
	names, rows := imgParseTable(lines)
	var res []map[string]string
	for _, r := range rows {
		m := map[string]string{}
		for i, n := range names {
			m[n] = r[i]
		}
		res = append(res, m)
	}
	return res
}

// imgNormTable parses a table (imgParseTable), applies imgNormCell, and
// prints it again as strata does.
func imgNormTable(lines []string) []string {
	names, rows := imgParseTable(lines)
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, strings.Join(names, "\t"))
	containers := slices.Contains(names, "MOUNTED")
	for _, cells := range rows {
		for i := range cells {
			cells[i] = imgNormCell(names[i], cells[i])
			// A container's size may be zero or not, by filesystem:
			// an unchanged upper holds only directories.
			switch {
			case containers && names[i] == "SIZE":
				cells[i] = "<size>"
			case names[0] == "TYPE" && cells[0] == "Containers" && names[i] == "SIZE":
				cells[i] = "<size>"
			case names[0] == "TYPE" && cells[0] == "Containers" && names[i] == "RECLAIMABLE":
				cells[i] = "<size> (<pct>)"
			}
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	tw.Flush()
	return strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
}

// imgNormalize normalizes a command's output for a golden file: the
// store's root becomes $ROOT; tables, JSON sizes and the reclaimed space
// are normalized; the lines of "Deleted Images:" are sorted (the order
// layers are collected in is not part of the output's meaning).
func imgNormalize(root, out string) string {
	out = strings.ReplaceAll(out, root, "$ROOT")
	if strings.HasPrefix(out, "[") || strings.HasPrefix(out, "{") {
		return imgJSONSizeRE.ReplaceAllString(out, "${1}<size>")
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	var res []string
	for i := 0; i < len(lines); {
		j := i
		for j < len(lines) && lines[j] != "" {
			j++
		}
		block := lines[i:j]
		switch {
		case len(block) > 0 && imgHeaderRE.MatchString(block[0]):
			block = imgNormTable(block)
		case len(block) > 0 && block[0] == "Deleted Images:":
			block = append([]string{block[0]}, block[1:]...)
			sort.Strings(block[1:])
		}
		for _, l := range block {
			if m := imgTotalRE.FindStringSubmatch(l); m != nil && m[1] != "0B" {
				l = "Total reclaimed space: <size>"
			}
			res = append(res, l)
		}
		if j < len(lines) {
			res = append(res, "")
		}
		i = j + 1
	}
	if out == "" {
		return ""
	}
	return strings.Join(res, "\n") + "\n"
}

// imgTranscript records commands and their normalized output, to be
// compared with a golden file.
type imgTranscript struct {
	s    *cliStore
	work string // a directory of the test's files, shown as $WORK
	b    strings.Builder
}

// run runs strata ARGS and records it; it returns the raw result.
func (tr *imgTranscript) run(args ...string) cliResult {
	return tr.runWith(cliOpts{}, args...)
}

func (tr *imgTranscript) runWith(o cliOpts, args ...string) cliResult {
	tr.s.t.Helper()
	r := tr.s.imgRunWith(o, args...)
	if r.err != nil {
		tr.s.t.Fatalf("%v", r)
	}
	line := strings.Join(args, " ")
	if tr.work != "" {
		line = strings.ReplaceAll(line, tr.work, "$WORK")
	}
	fmt.Fprintf(&tr.b, "$ strata %s\n", line)
	tr.b.WriteString(imgNormalize(tr.s.root, r.stdout))
	if r.code != 0 {
		fmt.Fprintf(&tr.b, "[exit %d] %s", r.code, imgNormalize(tr.s.root, r.stderr))
	}
	tr.b.WriteString("\n")
	return r
}

// must is run, which must succeed.
func (tr *imgTranscript) must(args ...string) string {
	tr.s.t.Helper()
	r := tr.run(args...)
	if r.code != 0 {
		tr.s.t.Fatalf("%v", r)
	}
	return r.stdout
}

// check compares the transcript with testdata/images/NAME.golden, or
// writes it there with -update.
func (tr *imgTranscript) check(name string) {
	t := tr.s.t
	t.Helper()
	golden := filepath.Join("testdata", "images", name+".golden")
	got := tr.b.String()
	if *cliUpdate {
		if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (go test -run %s -update writes it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -run %s -update rewrites it):\n%s", golden, t.Name(), lineDiff(string(want), got))
	}
}

// lineDiff shows where got first differs from want, with context.
func lineDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	i := 0
	for i < len(wl) && i < len(gl) && wl[i] == gl[i] {
		i++
	}
	from := max(0, i-6)
	var b strings.Builder
	fmt.Fprintf(&b, "first difference at line %d:\n", i+1)
	for k := from; k < i; k++ {
		fmt.Fprintf(&b, "  %s\n", wl[k])
	}
	for k := i; k < min(len(wl), i+6); k++ {
		fmt.Fprintf(&b, "- %s\n", wl[k])
	}
	for k := i; k < min(len(gl), i+6); k++ {
		fmt.Fprintf(&b, "+ %s\n", gl[k])
	}
	return b.String()
}

// checkSameTree compares two trees as cliTree describes them.
func checkSameTree(t testing.TB, what string, want, got map[string]string) {
	t.Helper()
	if d := treeDiff(want, got); d != "" {
		t.Errorf("%s:\n%s\nwant tree:\n%s\ngot tree:\n%s", what, d, imgDumpTree(want), imgDumpTree(got))
	}
}

func imgDumpTree(tree map[string]string) string {
	var b strings.Builder
	for _, k := range sortedKeys(tree) {
		fmt.Fprintf(&b, "  %s: %s\n", k, tree[k])
	}
	return b.String()
}

// imgDuBytes is the space allocated under dir, each inode once.
func imgDuBytes(t testing.TB, dir string) int64 {
	t.Helper()
	seen := map[[2]uint64]bool{}
	var n int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		k := [2]uint64{st.Dev, st.Ino}
		if !seen[k] {
			seen[k] = true
			n += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// imgDirNames lists the names in dir.
func imgDirNames(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// --- the fixture images ---

// imgBaseFiles is the base image's layer; imgAppFiles the app image's,
// on it: a changed file, a whiteout, an opaque directory, new files.
var (
	imgBaseFiles = map[string]string{
		"bin/sh":         "#!/fixture/sh\n",
		"bin/ash":        "->sh",
		"etc/hostname":   "base\n",
		"etc/os-release": "NAME=\"Fixture Linux\"\nVERSION_ID=1.0\n",
		"data/base.bin":  imgData(1, 16<<10),
		"var/cache/old":  "stale\n",
		"opt/dir/a":      "a\n",
		"opt/dir/b":      "b\n",
		"empty/":         "",
	}
	imgAppFiles = map[string]string{
		"app/run.sh":           "#!/bin/sh\nexec app\n",
		"app/data.bin":         imgData(2, 8<<10),
		"etc/hostname":         "app\n",
		"var/cache/.wh.old":    "",
		"opt/dir/.wh..wh..opq": "",
		"opt/dir/c":            "c\n",
	}
)

// imgFixtures builds the base image (one layer) and the app image (the
// base's layer and one more, and the base's history and more), their
// layers compressed with baseComp and appComp. The config does not
// depend on the compression: the image IDs are the same for any.
func imgFixtures(t testing.TB, baseComp, appComp string) (base, app *imgFixture) {
	t.Helper()
	day := imgEpoch.Add(24 * time.Hour)
	baseHistory := []v1.History{
		{Created: &imgEpoch, CreatedBy: "/bin/sh -c #(nop) ADD file:5a1d1c3b9e3f6e2f0a4b8c7d in / "},
		{Created: &imgEpoch, CreatedBy: `/bin/sh -c #(nop)  CMD ["sh"]`, EmptyLayer: true},
	}
	path := "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	// A fixed platform: the IDs are the same on every machine.
	amd64 := v1.Platform{OS: "linux", Architecture: "amd64"}
	base = buildImage(t, imgSpec{
		layers:   []imgLayerSpec{{files: imgBaseFiles, comp: baseComp}},
		history:  baseHistory,
		config:   v1.ImageConfig{Env: []string{path}, Cmd: []string{"sh"}},
		platform: amd64,
	})
	app = buildImage(t, imgSpec{
		layers: []imgLayerSpec{{files: imgBaseFiles, comp: baseComp}, {files: imgAppFiles, comp: appComp}},
		history: append(append([]v1.History(nil), baseHistory...),
			v1.History{Created: &day, CreatedBy: "COPY app/ /app/ # buildkit", Comment: "buildkit.dockerfile.v0"},
			v1.History{Created: &day, CreatedBy: `ENTRYPOINT ["/app/run.sh"]`, Comment: "buildkit.dockerfile.v0", EmptyLayer: true}),
		config: v1.ImageConfig{
			Env:          []string{path, "APP_ENV=prod"},
			Entrypoint:   []string{"/app/run.sh"},
			Cmd:          []string{"--serve"},
			WorkingDir:   "/app",
			User:         "1000",
			ExposedPorts: map[string]struct{}{"8080/tcp": {}},
			Labels:       map[string]string{"org.opencontainers.image.title": "app"},
		},
		created:  day,
		author:   "Strata Tests <tests@example.com>",
		platform: amd64,
	})
	return base, app
}

// --- import ---

// TestImageImportFormats imports one image from each format strata
// reads (OCI layout, OCI archive plain and gzipped, docker save old and
// new, a root filesystem tarball) into a fresh store each, and checks
// its name, ID, layers and the tree of a container on it; importing it
// again unpacks nothing. Then, in one store: an image imported from one
// format and again from another (other compression, same diff IDs)
// shares its layers, and a source of two images is imported whole.
func TestImageImportFormats(t *testing.T) {
	needFUSE(t)
	dir := t.TempDir()
	base, app := imgFixtures(t, "gzip", "zstd")
	_, appPlain := imgFixtures(t, "", "")
	layoutDir := writeLayout(t, filepath.Join(dir, "layout"), app, "1.0")
	archive := tarDir(t, layoutDir, filepath.Join(dir, "app-oci.tar"))
	gzArchive := filepath.Join(dir, "app-oci.tar.gz")
	ab, _ := os.ReadFile(archive)
	gzb, _ := imgCompress(t, ab, "gzip")
	if err := os.WriteFile(gzArchive, gzb, 0o644); err != nil {
		t.Fatal(err)
	}
	legacy := writeDockerSave(t, filepath.Join(dir, "legacy.tar"), "legacy", imgDockerItem{app, []string{"app:1.0"}})
	d25 := writeDockerSave(t, filepath.Join(dir, "docker25.tar"), "docker25", imgDockerItem{app, []string{"app:1.0"}})
	rootfsBlob, rootfsDiffID := cliLayer(t, imgBaseFiles, "gzip")
	rootfs := filepath.Join(dir, "rootfs.tar.gz")
	if err := os.WriteFile(rootfs, rootfsBlob, 0o644); err != nil {
		t.Fatal(err)
	}
	digestsOf := func(f *imgFixture) []string {
		var out []string
		for _, l := range f.layers {
			out = append(out, l.desc.Digest.String())
		}
		return out
	}

	cases := []struct {
		name     string
		src      string
		args     []string // after SRC
		wantName string   // as strata prints it
		want     *imgFixture
		digests  []string // the layer digests kept (nil: not checked)
	}{
		{"OCI layout", layoutDir, nil, "layout:1.0", app, digestsOf(app)},
		{"OCI layout, named", layoutDir, []string{"example.com/team/app:v1"}, "example.com/team/app:v1", app, digestsOf(app)},
		{"OCI archive", archive, nil, "app-oci:1.0", app, digestsOf(app)},
		{"OCI archive, gzipped", gzArchive, []string{"app:gz"}, "app:gz", app, digestsOf(app)},
		{"docker save", legacy, nil, "app:1.0", app, digestsOf(appPlain)},
		{"docker save, Docker 25", d25, nil, "app:1.0", app, digestsOf(app)},
		{"root filesystem tarball", rootfs, []string{"rootfs:1"}, "rootfs:1", nil, []string{blobDigest(rootfsBlob)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newCLIStore(t)
			out := s.imgMust(append([]string{"import", tc.src}, tc.args...)...)
			names, unpacked, reused := imported(t, out)
			wantLayers := 1
			if tc.want != nil {
				wantLayers = len(tc.want.layers)
			}
			if len(names) != 1 || names[0] != tc.wantName || unpacked != wantLayers || reused != 0 {
				t.Errorf("strata import: got %v, %d unpacked, %d reused; want [%s], %d, 0:\n%s", names, unpacked, reused, tc.wantName, wantLayers, out)
			}
			in := s.inspectImage(tc.wantName)
			if tc.want != nil {
				if in.Id != tc.want.id() {
					t.Errorf("image ID: got %s, want the config's digest %s", in.Id, tc.want.id())
				}
				if got, want := strings.Join(in.GraphDriver.Data.Layers, " "), strings.Join(tc.want.chainIDs(), " "); got != want {
					t.Errorf("layers (chain IDs): got %s, want %s", got, want)
				}
			} else if len(in.RootFS.Layers) != 1 || in.RootFS.Layers[0] != rootfsDiffID || in.GraphDriver.Data.Layers[0] != rootfsDiffID {
				t.Errorf("root filesystem tarball: got diff IDs %v, layers %v; want one layer %s", in.RootFS.Layers, in.GraphDriver.Data.Layers, rootfsDiffID)
			}
			var gotDigests []string
			for _, l := range in.Manifest.Layers {
				gotDigests = append(gotDigests, l.Digest.String())
			}
			if strings.Join(gotDigests, " ") != strings.Join(tc.digests, " ") {
				t.Errorf("manifest layer digests: got %v, want the source's %v", gotDigests, tc.digests)
			}
			if got := s.imgMust("images", "-q", "--no-trunc"); got != in.Id+"\n" {
				t.Errorf("strata images -q --no-trunc: got %q, want %q", got, in.Id+"\n")
			}
			wantTree := base.tree()
			if tc.want != nil {
				wantTree = tc.want.tree()
			}
			checkSameTree(t, "container on the imported image", wantTree, s.imageTree(tc.wantName))

			// Again: found by chain ID, nothing unpacked or stored.
			before := s.list()
			out = s.imgMust(append([]string{"import", tc.src}, tc.args...)...)
			if _, unpacked, reused := imported(t, out); unpacked != 0 || reused != wantLayers {
				t.Errorf("strata import again: %d unpacked, %d reused; want 0, %d:\n%s", unpacked, reused, wantLayers, out)
			}
			after := s.list()
			if len(after) != len(before) {
				t.Errorf("strata import again: %d snapshots, was %d", len(after), len(before))
			}
			for i := range min(len(before), len(after)) {
				if before[i].Name != after[i].Name || before[i].ID != after[i].ID || !before[i].Created.Equal(after[i].Created) {
					t.Errorf("strata import again changed layer %s (dir %s, created %v): now %s (dir %s, created %v)",
						before[i].Name, before[i].ID, before[i].Created, after[i].Name, after[i].ID, after[i].Created)
				}
			}
			s.mustCheck()
		})
	}

	t.Run("layers shared across formats", func(t *testing.T) {
		s := newCLIStore(t)
		s.imgMust("import", layoutDir, "app:oci")
		n := len(s.list())
		out := s.imgMust("import", legacy, "other:docker")
		if _, unpacked, reused := imported(t, out); unpacked != 0 || reused != 2 {
			t.Errorf("import of the same image from docker save (other compression, same diff IDs): %d unpacked, %d reused; want 0, 2:\n%s", unpacked, reused, out)
		}
		if names, _, _ := imported(t, out); len(names) != 1 || names[0] != "other:docker" {
			t.Errorf("import ... other:docker of an image already tagged app:oci: printed \"Loaded image: %s\", want the name it loaded, other:docker (as docker load prints it)", strings.Join(names, ", "))
		}
		if got := len(s.list()); got != n {
			t.Errorf("snapshots: %d, want still %d", got, n)
		}
		rows := s.imagesJSON()
		if len(rows) != 2 || rows[0].ID != app.id() || rows[1].ID != app.id() {
			t.Errorf("strata images: got %+v, want app:oci and other:docker, both %s", rows, app.id())
		}
		if r := s.imgRun("check"); r.code != 0 {
			t.Errorf("after importing an image already stored from another source (same ID, other manifest and layer blobs), strata check finds the store inconsistent: the import stored blobs no image or layer owns:\n%v", r)
		}
	})

	t.Run("two images in one source", func(t *testing.T) {
		s := newCLIStore(t)
		two := filepath.Join(t.TempDir(), "two")
		l := newImgLayout(t, two)
		for _, it := range []struct {
			f   *imgFixture
			ref string
		}{{base, "base"}, {app, "app"}} {
			d := l.image(it.f)
			d.Platform = nil
			l.add(d, it.ref)
		}
		l.close()
		before := s.imgState()
		r := s.imgRun("import", two, "one:name")
		if r.code != 1 || !strings.Contains(r.stderr, "2 images") {
			t.Errorf("import of a two-image source under one name: want exit 1 saying it holds 2 images; got %v", r)
		}
		if after := s.imgState(); after != before {
			t.Errorf("the refused import changed the store:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		out := s.imgMust("import", two)
		names, unpacked, reused := imported(t, out)
		sort.Strings(names)
		if strings.Join(names, " ") != "two:app two:base" || unpacked != 2 || reused != 1 {
			t.Errorf("import of a two-image source: got %v, %d unpacked, %d reused; want [two:app two:base], 2, 1 (the base layer once):\n%s", names, unpacked, reused, out)
		}
		checkSameTree(t, "two:base", base.tree(), s.imageTree("two:base"))
		checkSameTree(t, "two:app", app.tree(), s.imageTree("two:app"))
		s.mustCheck()
	})
}

// openPTY opens a pseudo-terminal pair.
func openPTY() (master, slave *os.File, err error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, err
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		return nil, nil, errors.Join(err, m.Close())
	}
	n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		return nil, nil, errors.Join(err, m.Close())
	}
	sl, err := os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, errors.Join(err, m.Close())
	}
	return m, sl, nil
}

// runOnTTY runs strata with its stderr on a terminal and returns what
// it wrote there, and its stdout.
func runOnTTY(t *testing.T, args ...string) (tty, stdout string) {
	t.Helper()
	master, slave, err := openPTY()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer master.Close()
	cmd := exec.Command(strataBin, args...)
	cmd.Env = cliEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, slave
	if err := cmd.Start(); err != nil {
		slave.Close()
		t.Fatal(err)
	}
	slave.Close()
	read := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(master) // EIO once the last slave fd closes
		read <- string(b)
	}()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(cliTimeout):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("strata %s did not exit within %v", strings.Join(args, " "), cliTimeout)
	}
	tty = <-read
	if err != nil {
		t.Fatalf("strata %s: %v\nstdout:\n%s\nterminal:\n%s", strings.Join(args, " "), err, out.String(), tty)
	}
	return tty, out.String()
}

// TestImageImportProgress checks that a quick strata import draws no
// progress on a terminal (the board is for imports over a second: see
// TestProgressImport), and is quiet when stderr is not one or with -q
// (then printing the image ID only).
func TestImageImportProgress(t *testing.T) {
	needFUSE(t)
	_, app := imgFixtures(t, "gzip", "gzip")
	src := writeLayout(t, filepath.Join(t.TempDir(), "app"), app, "1.0")

	s := newCLIStore(t)
	tty, stdout := runOnTTY(t, s.args([]string{"import", src, "app:1.0"})...)
	if tty != "" {
		t.Errorf("a quick strata import on a terminal drew progress:\n%q", tty)
	}
	imported(t, stdout)

	s2 := newCLIStore(t)
	r := s2.imgRun("import", src, "app:1.0")
	if r.code != 0 || r.stderr != "" {
		t.Errorf("strata import, stderr not a terminal: want exit 0 and nothing on stderr; got %v", r)
	}
	imported(t, r.stdout)

	s3 := newCLIStore(t)
	tty, stdout = runOnTTY(t, s3.args([]string{"import", "-q", src, "app:1.0"})...)
	if tty != "" || stdout != app.id()+"\n" {
		t.Errorf("strata import -q on a terminal: got terminal %q, stdout %q; want nothing, and the image ID %s", tty, stdout, app.id())
	}
}

// TestImageImportPlatform imports a multi-platform image (an index in a
// layout, as `docker buildx` and `skopeo copy --all` write them, with an
// attestation manifest beside the images): by default the host's
// platform is picked, --platform picks another, and a platform the index
// lacks or a malformed --platform is refused with the platforms there
// are, changing nothing.
func TestImageImportPlatform(t *testing.T) {
	s := newCLIStore(t)
	platforms := []v1.Platform{
		{OS: "linux", Architecture: "amd64"},
		{OS: "linux", Architecture: "arm64", Variant: "v8"},
		{OS: "linux", Architecture: "arm", Variant: "v7"},
		{OS: "linux", Architecture: "riscv64"},
	}
	if h := runtime.GOARCH; h != "amd64" && h != "arm64" && h != "arm" && h != "riscv64" {
		platforms = append(platforms, v1.Platform{OS: "linux", Architecture: h})
	}
	dir := filepath.Join(t.TempDir(), "multi")
	l := newImgLayout(t, dir)
	byArch := map[string]*imgFixture{}
	nameOf := map[string]string{}
	var descs []v1.Descriptor
	for i, p := range platforms {
		name := p.OS + "/" + p.Architecture
		if p.Variant != "" {
			name += "/" + p.Variant
		}
		f := buildImage(t, imgSpec{
			layers:   []imgLayerSpec{{files: map[string]string{"etc/platform": name + "\n", "data": imgData(uint64(10+i), 4096)}, comp: "gzip"}},
			platform: p,
		})
		byArch[p.Architecture] = f
		nameOf[p.Architecture] = name
		descs = append(descs, l.image(f))
	}
	// A buildx attestation: an image manifest for no platform one runs.
	att := []byte(`{"_type":"https://in-toto.io/Statement/v0.1"}`)
	l.blob(att)
	attCfg := []byte(`{"architecture":"unknown","os":"unknown","rootfs":{"type":"layers","diff_ids":[]}}`)
	l.blob(attCfg)
	attMan, _ := json.Marshal(v1.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageManifest,
		Config: imgDescriptor(v1.MediaTypeImageConfig, attCfg),
		Layers: []v1.Descriptor{imgDescriptor("application/vnd.in-toto+json", att)},
	})
	l.blob(attMan)
	ad := imgDescriptor(v1.MediaTypeImageManifest, attMan)
	ad.Platform = &v1.Platform{OS: "unknown", Architecture: "unknown"}
	ad.Annotations = map[string]string{"vnd.docker.reference.type": "attestation-manifest"}
	descs = append(descs, ad)
	l.add(l.indexBlob(descs...), "multi")
	l.close()

	host := byArch[runtime.GOARCH]
	out := s.imgMust("import", dir, "multi:host")
	if names, _, _ := imported(t, out); len(names) != 1 {
		t.Errorf("import of a multi-platform image: got %v, want one image", names)
	}
	if in := s.inspectImage("multi:host"); in.Id != host.id() || in.Architecture != runtime.GOARCH || in.Os != "linux" {
		t.Errorf("import without --platform: got %s (%s/%s), want this machine's, %s (linux/%s)", in.Id, in.Os, in.Architecture, host.id(), runtime.GOARCH)
	}
	for _, tc := range []struct{ flag, arch, variant string }{
		{"linux/arm64", "arm64", "v8"},
		{"linux/arm/v7", "arm", "v7"},
		{"linux/riscv64", "riscv64", ""},
	} {
		tag := "multi:" + tc.arch
		s.imgMust("import", "--platform", tc.flag, dir, tag)
		in := s.inspectImage(tag)
		if want := byArch[tc.arch]; in.Id != want.id() || in.Architecture != tc.arch || in.Variant != tc.variant {
			t.Errorf("import --platform %s: got %s (%s %s), want %s (%s %s)", tc.flag, in.Id, in.Architecture, in.Variant, want.id(), tc.arch, tc.variant)
		}
		if tree := s.imageTree(tag); tree["etc/platform"] != cliTreeOf(map[string]string{"etc/platform": nameOf[tc.arch] + "\n"})["etc/platform"] {
			t.Errorf("import --platform %s: etc/platform is %q, not that platform's file", tc.flag, tree["etc/platform"])
		}
	}
	before := s.imgState()
	r := s.imgRun("import", "--platform", "linux/s390x", dir, "multi:s390x")
	if r.code != 1 || !strings.Contains(r.stderr, "linux/s390x") || !strings.Contains(r.stderr, "linux/arm64") || !strings.Contains(r.stderr, "linux/riscv64") {
		t.Errorf("import --platform linux/s390x, which the index lacks: want exit 1 naming it and the platforms there are; got %v", r)
	}
	r = s.imgRun("import", "--platform", "linux", dir, "multi:bad")
	if r.code != 2 || !strings.Contains(r.stderr, `--platform "linux"`) || !strings.Contains(r.stderr, "OS/ARCH") {
		t.Errorf("import --platform linux: want a usage error (exit 2) saying OS/ARCH; got %v", r)
	}
	if after := s.imgState(); after != before {
		t.Errorf("refused imports changed the store:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	s.mustCheck()
}

// imgEscapeMarker is the name hostile layers try to write outside the
// layer.
const imgEscapeMarker = "strata-escape-marker"

// imgFlipByte changes the byte at off of the file p.
func imgFlipByte(t testing.TB, p string, off int) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if off < 0 {
		off += len(b)
	}
	b[off] ^= 0x20
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestImageImportBadInput imports sources that are corrupt, truncated,
// inconsistent or hostile, into a store holding an image whose base
// layer they share. Each must fail with exit status 1 and a message
// naming the problem, leave the store as it was (no image, no layer
// unpacked before the failure, no blob, no scratch; strata check finds
// it consistent), and write nothing outside the store.
func TestImageImportBadInput(t *testing.T) {
	s := newCLIStore(t)
	work := t.TempDir()
	base, _ := imgFixtures(t, "gzip", "gzip")
	s.imgMust("import", writeLayout(t, filepath.Join(work, "base"), base, "1"), "base:1")

	midFiles := map[string]string{"mid/big": imgData(3, 64<<10), "mid/small": "mid\n"}
	topFiles := map[string]string{"top/file": "top file content\n", "top/more": imgData(4, 4096)}
	good := func() *imgFixture {
		return buildImage(t, imgSpec{layers: []imgLayerSpec{
			{files: imgBaseFiles, comp: "gzip"}, {files: midFiles, comp: "gzip"}, {files: topFiles, comp: ""},
		}})
	}
	hostile := func(entries ...imgTarEntry) *imgFixture {
		p := filepath.Join(work, fmt.Sprintf("hostile-%d.tar", imgTreeSeq.Add(1)))
		writeTar(t, p, entries)
		raw, _ := os.ReadFile(p)
		return buildImage(t, imgSpec{layers: []imgLayerSpec{
			{files: imgBaseFiles, comp: "gzip"}, {files: midFiles, comp: "gzip"}, {raw: raw},
		}})
	}
	seq := 0
	layout := func(f *imgFixture) (string, *imgLayout) {
		seq++
		dir := filepath.Join(work, fmt.Sprintf("src%d", seq))
		writeLayout(t, dir, f, "bad")
		return dir, &imgLayout{t: t, dir: dir}
	}
	ref := good()
	mid, top := ref.layers[1].desc.Digest.String(), ref.layers[2].desc.Digest.String()

	cases := []struct {
		name     string
		src      func() string
		contains []string // in stderr
	}{
		{"truncated layer blob", func() string {
			dir, l := layout(good())
			if err := os.Truncate(l.blobFile(ref.layers[1].desc.Digest), ref.layers[1].desc.Size/2); err != nil {
				t.Fatal(err)
			}
			return dir
		}, []string{mid, "size mismatch"}},
		{"truncated layer blob, descriptor made to match", func() string {
			f := good()
			b := f.layers[1].blob[:len(f.layers[1].blob)/2]
			f.layers[1].blob, f.layers[1].desc = b, imgDescriptor(v1.MediaTypeImageLayerGzip, b)
			f.rebuild(t)
			dir, _ := layout(f)
			return dir
		}, []string{"layer 2 of 3", "unexpected EOF"}},
		{"digest mismatch in a layer", func() string {
			dir, l := layout(good())
			imgFlipByte(t, l.blobFile(ref.layers[2].desc.Digest), bytes.Index(ref.layers[2].blob, []byte("top file content")))
			return dir
		}, []string{top, "digest mismatch"}},
		{"digest mismatch in the config", func() string {
			dir, l := layout(good())
			imgFlipByte(t, l.blobFile(ref.configDesc.Digest), bytes.Index(ref.configBytes, []byte("ADD layer"))+1)
			return dir
		}, []string{ref.configDesc.Digest.String(), "digest mismatch"}},
		{"digest mismatch in the manifest", func() string {
			dir, l := layout(good())
			imgFlipByte(t, l.blobFile(ref.manifestDesc.Digest), bytes.Index(ref.manifestBytes, []byte("schemaVersion")))
			return dir
		}, []string{ref.manifestDesc.Digest.String(), "digest mismatch"}},
		{"missing layer blob", func() string {
			dir, l := layout(good())
			if err := os.Remove(l.blobFile(ref.layers[1].desc.Digest)); err != nil {
				t.Fatal(err)
			}
			return dir
		}, []string{mid, "no such file"}},
		{"missing config blob", func() string {
			dir, l := layout(good())
			if err := os.Remove(l.blobFile(ref.configDesc.Digest)); err != nil {
				t.Fatal(err)
			}
			return dir
		}, []string{ref.configDesc.Digest.String(), "no such file"}},
		{"layer not the config's diff ID", func() string {
			f := good()
			f.config.RootFS.DiffIDs[2] = digest.FromString("another layer")
			f.rebuild(t)
			dir, _ := layout(f)
			return dir
		}, []string{"layer 3 of 3", "diff ID", digest.FromString("another layer").String()}},
		{"path traversal with ..", func() string {
			dir, _ := layout(hostile(
				imgTarEntry{name: "ok", typ: tar.TypeReg, body: []byte("fine\n")},
				imgTarEntry{name: "../../../../" + imgEscapeMarker, typ: tar.TypeReg, body: []byte("escaped\n")}))
			return dir
		}, []string{"layer 3 of 3", "../../../../" + imgEscapeMarker, "escapes"}},
		{"path traversal through a symlink", func() string {
			dir, _ := layout(hostile(
				imgTarEntry{name: "evil", typ: tar.TypeSymlink, link: "../../../.."},
				imgTarEntry{name: "evil/" + imgEscapeMarker, typ: tar.TypeReg, body: []byte("escaped\n")}))
			return dir
		}, []string{"layer 3 of 3", "evil/" + imgEscapeMarker, "not a directory"}},
		{"hard link out of the layer", func() string {
			dir, _ := layout(hostile(
				imgTarEntry{name: imgEscapeMarker, typ: tar.TypeLink, link: "../../../../../../../../etc/passwd"}))
			return dir
		}, []string{"layer 3 of 3", imgEscapeMarker, "escapes"}},
		{"docker save naming a layer outside the archive", func() string {
			p := writeDockerSave(t, filepath.Join(work, "outside.tar"), "legacy", imgDockerItem{good(), []string{"bad:1"}})
			b, _ := os.ReadFile(p)
			// Same length: the tar stays valid.
			i := bytes.Index(b, []byte(`"Layers":["`)) + len(`"Layers":["`)
			copy(b[i:], "../")
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		}, []string{"manifest.json", `".."`}},
		{"docker save whose layer is not the config's", func() string {
			f := good()
			f.layers[2].tar, _ = cliLayer(t, map[string]string{"other": "x"}, "")
			return writeDockerSave(t, filepath.Join(work, "otherlayer.tar"), "legacy", imgDockerItem{f, []string{"bad:1"}})
		}, []string{"diff ID", ref.config.RootFS.DiffIDs[2].String()}},
		{"truncated OCI archive", func() string {
			dir, _ := layout(good())
			p := tarDir(t, dir, filepath.Join(work, "truncated.tar"))
			fi, _ := os.Stat(p)
			if err := os.Truncate(p, fi.Size()*2/3); err != nil {
				t.Fatal(err)
			}
			return p
		}, []string{"truncated"}},
		{"index naming a blob by a path", func() string {
			dir, _ := layout(good())
			ix := fmt.Sprintf(`{"schemaVersion":2,"manifests":[{"mediaType":%q,"digest":"sha256:../../../../etc/passwd","size":10}]}`, v1.MediaTypeImageManifest)
			if err := os.WriteFile(filepath.Join(dir, "index.json"), []byte(ix), 0o644); err != nil {
				t.Fatal(err)
			}
			return dir
		}, []string{"sha256:../../../../etc/passwd"}},
		{"truncated root filesystem tarball", func() string {
			blob, _ := cliLayer(t, midFiles, "gzip")
			p := filepath.Join(work, "rootfs.tar.gz")
			if err := os.WriteFile(p, blob[:len(blob)/2], 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		}, []string{"rootfs.tar.gz", "unexpected EOF"}},
		{"garbage", func() string {
			p := filepath.Join(work, "garbage.bin")
			if err := os.WriteFile(p, []byte(imgData(5, 10000)), 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		}, []string{"garbage.bin", "not an OCI layout"}},
		{"missing source", func() string { return filepath.Join(work, "nonexistent") }, []string{"nonexistent", "no such file"}},
	}
	before := s.imgState()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.src()
			r := s.imgRun("import", src, "bad:1")
			if r.err != nil || r.code != 1 {
				t.Errorf("got exit %d, want 1: %v", r.code, r)
			}
			if !strings.HasPrefix(r.stderr, "strata import: ") {
				t.Errorf("stderr does not start with \"strata import: \": %q", r.stderr)
			}
			for _, c := range tc.contains {
				if !strings.Contains(r.stderr, c) {
					t.Errorf("stderr does not mention %q: %q", c, r.stderr)
				}
			}
			if r.stdout != "" {
				t.Errorf("stdout: got %q, want nothing", r.stdout)
			}
			if after := s.imgState(); after != before {
				t.Errorf("the failed import changed the store:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			s.mustCheck()
		})
	}
	_ = filepath.WalkDir(filepath.Dir(s.root), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == imgEscapeMarker {
			t.Errorf("a hostile layer wrote %s", p)
		}
		return nil
	})
	for _, p := range []string{"/etc/" + imgEscapeMarker, "/" + imgEscapeMarker, filepath.Join(os.TempDir(), imgEscapeMarker)} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("a hostile layer wrote %s", p)
		}
	}
	checkSameTree(t, "the image sharing the base layer, after the failed imports", base.tree(), s.imageTree("base:1"))
}

// --- export ---

// imgLayoutContent reads an OCI layout directory as an export writes
// it, checks it (oci-layout, every blob's digest recomputed, every blob
// index.json reaches present), and returns its index.json and its blobs
// by digest.
func imgLayoutContent(t testing.TB, dir string) (v1.Index, map[string][]byte) {
	t.Helper()
	lb, err := os.ReadFile(filepath.Join(dir, v1.ImageLayoutFile))
	if err != nil {
		t.Fatal(err)
	}
	var lay v1.ImageLayout
	if err := json.Unmarshal(lb, &lay); err != nil || lay.Version != v1.ImageLayoutVersion {
		t.Errorf("%s/oci-layout: %q (%v), want version %s", dir, lb, err, v1.ImageLayoutVersion)
	}
	ib, err := os.ReadFile(filepath.Join(dir, v1.ImageIndexFile))
	if err != nil {
		t.Fatal(err)
	}
	var ix v1.Index
	if err := json.Unmarshal(ib, &ix); err != nil || ix.SchemaVersion != 2 {
		t.Fatalf("%s/index.json: %v (schemaVersion %d):\n%s", dir, err, ix.SchemaVersion, ib)
	}
	blobs := map[string][]byte{}
	for _, name := range imgDirNames(t, filepath.Join(dir, "blobs", "sha256")) {
		b, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", name))
		if err != nil {
			t.Fatal(err)
		}
		if got := sha256Hex(b); got != name {
			t.Errorf("%s: blob %s has digest sha256:%s", dir, name, got)
		}
		blobs["sha256:"+name] = b
	}
	need := func(d v1.Descriptor, what string) []byte {
		b, ok := blobs[d.Digest.String()]
		if !ok {
			t.Errorf("%s: %s %s is not in blobs/", dir, what, d.Digest)
		} else if int64(len(b)) != d.Size {
			t.Errorf("%s: %s %s: %d bytes, descriptor says %d", dir, what, d.Digest, len(b), d.Size)
		}
		return b
	}
	for _, md := range ix.Manifests {
		var m v1.Manifest
		if err := json.Unmarshal(need(md, "manifest"), &m); err != nil {
			t.Errorf("%s: manifest %s: %v", dir, md.Digest, err)
			continue
		}
		need(m.Config, "config")
		for _, l := range m.Layers {
			need(l, "layer")
		}
	}
	return ix, blobs
}

// TestImageExportRoundTrip exports images imported from an OCI layout
// and from a docker save archive, as a layout and as an OCI archive,
// re-imports each export into a fresh store and exports it again: every
// digest (manifest, config, layers) is kept, and the blobs are the
// same bytes.
func TestImageExportRoundTrip(t *testing.T) {
	needFUSE(t)
	needTools(t, "tar")
	work := t.TempDir()
	_, app := imgFixtures(t, "gzip", "zstd")
	sources := []struct{ name, src string }{
		{"OCI layout", writeLayout(t, filepath.Join(work, "app"), app, "1.0")},
		{"docker save", writeDockerSave(t, filepath.Join(work, "app.tar"), "legacy", imgDockerItem{app, []string{"app:1.0"}})},
	}
	for _, src := range sources {
		for _, dest := range []string{"layout", "archive"} {
			t.Run(src.name+" to "+dest, func(t *testing.T) {
				s := newCLIStore(t)
				s.imgMust("import", src.src, "app:1.0")
				in := s.inspectImage("app:1.0")
				out := filepath.Join(t.TempDir(), "export")
				if dest == "archive" {
					out += ".tar"
				}
				if got := s.imgMust("export", "app:1.0", out); got != "" {
					t.Errorf("strata export: printed %q", got)
				}
				dir := out
				if dest == "archive" {
					dir = filepath.Join(t.TempDir(), "unpacked")
					if err := os.Mkdir(dir, 0o755); err != nil {
						t.Fatal(err)
					}
					runTool(t, "tar", "-xf", out, "-C", dir)
				}
				ix, blobs := imgLayoutContent(t, dir)
				if len(ix.Manifests) != 1 || ix.Manifests[0].Digest.String() != in.Manifest.Digest || ix.Manifests[0].Annotations[v1.AnnotationRefName] != "1.0" {
					t.Fatalf("exported index.json: got %+v, want one manifest %s named 1.0", ix.Manifests, in.Manifest.Digest)
				}
				if src.name == "OCI layout" {
					want := map[string]bool{app.manifestDesc.Digest.String(): true, app.id(): true}
					for _, l := range app.layers {
						want[l.desc.Digest.String()] = true
					}
					if len(blobs) != len(want) {
						t.Errorf("exported blobs: got %d, want the source's %d", len(blobs), len(want))
					}
					for d := range want {
						if _, ok := blobs[d]; !ok {
							t.Errorf("exported layout lacks the source's blob %s", d)
						}
					}
				}

				// Imported without a name, the export gives its own
				// (containerd's annotation beside the OCI ref name).
				s2 := newCLIStore(t)
				if names, _, _ := imported(t, s2.imgMust("import", out)); len(names) != 1 || names[0] != "app:1.0" {
					t.Errorf("import of the export without a name: loaded %v, want [app:1.0]", names)
				}
				if in2 := s2.inspectImage("app:1.0"); in2.Id != in.Id || in2.Manifest.Digest != in.Manifest.Digest {
					t.Errorf("re-imported: ID %s, manifest %s; want %s, %s", in2.Id, in2.Manifest.Digest, in.Id, in.Manifest.Digest)
				}
				checkSameTree(t, "re-imported image", app.tree(), s2.imageTree("app:1.0"))
				out2 := filepath.Join(t.TempDir(), "again")
				s2.imgMust("export", "app:1.0", out2)
				ix2, blobs2 := imgLayoutContent(t, out2)
				if len(ix2.Manifests) != 1 || ix2.Manifests[0].Digest != ix.Manifests[0].Digest {
					t.Errorf("export, import, export: manifest %v, want %s", ix2.Manifests, ix.Manifests[0].Digest)
				}
				if len(blobs2) != len(blobs) {
					t.Errorf("export, import, export: %d blobs, want %d", len(blobs2), len(blobs))
				}
				for d, b := range blobs {
					if !bytes.Equal(blobs2[d], b) {
						t.Errorf("export, import, export: blob %s not kept", d)
					}
				}
			})
		}
	}
	t.Run("export errors", func(t *testing.T) {
		s := newCLIStore(t)
		s.imgMust("import", sources[0].src, "app:1.0")
		r := s.imgRun("export", "nosuch:1", filepath.Join(work, "x"))
		if r.code != 1 || !strings.Contains(r.stderr, `"nosuch:1"`) || !strings.Contains(r.stderr, "strata images") {
			t.Errorf("export of a missing image: want exit 1 naming it and 'strata images'; got %v", r)
		}
		r = s.imgRun("export", "app:1.0", filepath.Join(work, "no", "such", "dir", "x.tar"))
		if r.code != 1 {
			t.Errorf("export into a missing directory: want exit 1; got %v", r)
		}
		if names := imgDirNames(t, work); len(names) != 2 {
			t.Errorf("failed exports left files: %v", names)
		}
	})
}

// TestImageSkopeoUmoci checks strata's export with Debian's skopeo and
// umoci, and strata's import of what they write: skopeo inspects the
// exported layout and archive; umoci unpacks the export into the same
// tree as strata's own mount; skopeo's copies of the export (OCI
// archive, docker archive, OCI layout) import as the same image, its
// layers found in the store.
func TestImageSkopeoUmoci(t *testing.T) {
	needTools(t, "skopeo", "umoci")
	s := newCLIStore(t)
	work := t.TempDir()
	_, app := imgFixtures(t, "gzip", "gzip")
	s.imgMust("import", writeLayout(t, filepath.Join(work, "src"), app, "1.0"), "app:1.0")
	mounted := s.imageTree("app:1.0")
	checkSameTree(t, "strata's mount of the image", app.tree(), mounted)

	dir := filepath.Join(work, "export")
	s.imgMust("export", "app:1.0", dir)
	var si struct {
		Digest       string
		Architecture string
		Os           string
		Layers       []string
	}
	out := runTool(t, "skopeo", "inspect", "oci:"+dir+":1.0")
	if err := json.Unmarshal([]byte(out), &si); err != nil {
		t.Fatalf("skopeo inspect: %v:\n%s", err, out)
	}
	var wantLayers []string
	for _, l := range app.layers {
		wantLayers = append(wantLayers, l.desc.Digest.String())
	}
	if si.Digest != app.manifestDesc.Digest.String() || si.Architecture != app.config.Architecture || si.Os != "linux" || strings.Join(si.Layers, " ") != strings.Join(wantLayers, " ") {
		t.Errorf("skopeo inspect oci:%s:1.0: got %+v; want digest %s, linux/%s, layers %v", dir, si, app.manifestDesc.Digest, app.config.Architecture, wantLayers)
	}
	if raw := runTool(t, "skopeo", "inspect", "--raw", "oci:"+dir+":1.0"); digest.FromString(raw) != app.manifestDesc.Digest {
		t.Errorf("skopeo inspect --raw: the manifest's digest is %s, want %s", digest.FromString(raw), app.manifestDesc.Digest)
	}
	if cfg := runTool(t, "skopeo", "inspect", "--config", "--raw", "oci:"+dir+":1.0"); digest.FromString(cfg) != app.configDesc.Digest {
		t.Errorf("skopeo inspect --config --raw: the config's digest is %s, want %s", digest.FromString(cfg), app.configDesc.Digest)
	}

	// Exported into the same layout under another tag: both there.
	s.imgMust("tag", "app:1.0", "app:2.0")
	s.imgMust("export", "app:2.0", dir)
	for _, tag := range []string{"1.0", "2.0"} {
		if d := digest.FromString(runTool(t, "skopeo", "inspect", "--raw", "oci:"+dir+":"+tag)); d != app.manifestDesc.Digest {
			t.Errorf("skopeo inspect --raw oci:%s:%s: manifest %s, want %s", dir, tag, d, app.manifestDesc.Digest)
		}
	}

	bundle := filepath.Join(work, "bundle")
	runTool(t, "umoci", "unpack", "--image", dir+":1.0", bundle)
	checkSameTree(t, "umoci unpack of strata's export, against strata's mount", mounted, cliTree(t, filepath.Join(bundle, "rootfs")))

	archive := filepath.Join(work, "export.tar")
	s.imgMust("export", "app:1.0", archive)
	if out := runTool(t, "skopeo", "inspect", "oci-archive:"+archive+":1.0"); !strings.Contains(out, app.manifestDesc.Digest.String()) {
		t.Errorf("skopeo inspect oci-archive:%s:1.0 does not show the manifest digest %s:\n%s", archive, app.manifestDesc.Digest, out)
	}

	// skopeo's copies, imported back: the same image, nothing unpacked.
	copies := []struct{ dest, src, name string }{
		{"oci-archive:" + filepath.Join(work, "sk-oci.tar") + ":1.0", filepath.Join(work, "sk-oci.tar"), "sk-oci:1.0"},
		{"docker-archive:" + filepath.Join(work, "sk-docker.tar") + ":example.com/app:docker", filepath.Join(work, "sk-docker.tar"), "example.com/app:docker"},
		{"oci:" + filepath.Join(work, "sk-dir") + ":latest", filepath.Join(work, "sk-dir"), "sk-dir:latest"},
	}
	for _, c := range copies {
		runTool(t, "skopeo", "copy", "-q", "oci:"+dir+":1.0", c.dest)
		out := s.imgMust("import", c.src)
		names, unpacked, reused := imported(t, out)
		if len(names) != 1 || names[0] != c.name || unpacked != 0 || reused != len(app.layers) {
			t.Errorf("strata import of skopeo's %s: got %v, %d unpacked, %d reused; want [%s], 0, %d:\n%s", c.dest, names, unpacked, reused, c.name, len(app.layers), out)
		}
		if in := s.inspectImage(c.name); in.Id != app.id() {
			t.Errorf("strata import of skopeo's %s: image %s, want %s", c.dest, in.Id, app.id())
		}
	}
	s.mustCheck()
}

// TestImageUmociImage imports an image umoci built (init, new, unpack,
// repack twice with a file deleted between, config): a container on it
// holds the tree umoci unpacks, its config and history are umoci's, and
// strata's export of it keeps umoci's digests and unpacks with umoci to
// the same tree.
func TestImageUmociImage(t *testing.T) {
	needTools(t, "umoci", "skopeo")
	s := newCLIStore(t)
	work := t.TempDir()
	lay := filepath.Join(work, "umoci")
	bundle := filepath.Join(work, "bundle")
	runTool(t, "umoci", "init", "--layout", lay)
	runTool(t, "umoci", "new", "--image", lay+":t")
	runTool(t, "umoci", "unpack", "--image", lay+":t", bundle)
	rootfs := filepath.Join(bundle, "rootfs")
	writeTree(t, rootfs, map[string]string{
		"etc/hostname":   "umoci\n",
		"etc/motd":       "hello\n",
		"usr/bin/tool":   imgData(6, 20000),
		"usr/bin/link":   "->tool",
		"var/lib/doomed": "doomed\n",
	})
	runTool(t, "umoci", "repack", "--image", lay+":t", bundle)
	// umoci repacks a bundle against the image it was unpacked from: a
	// second layer needs a second unpack.
	bundle = filepath.Join(work, "bundle2")
	runTool(t, "umoci", "unpack", "--image", lay+":t", bundle)
	rootfs = filepath.Join(bundle, "rootfs")
	if err := os.Remove(filepath.Join(rootfs, "var/lib/doomed")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "etc/motd"), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	runTool(t, "umoci", "repack", "--image", lay+":t", bundle)
	runTool(t, "umoci", "config", "--image", lay+":t", "--config.cmd", "sh", "--config.env", "FOO=bar", "--author", "umoci test")
	var cfg v1.Image
	if err := json.Unmarshal([]byte(runTool(t, "skopeo", "inspect", "--config", "--raw", "oci:"+lay+":t")), &cfg); err != nil {
		t.Fatal(err)
	}
	manifest := runTool(t, "skopeo", "inspect", "--raw", "oci:"+lay+":t")
	var m v1.Manifest
	if err := json.Unmarshal([]byte(manifest), &m); err != nil {
		t.Fatal(err)
	}
	ref := filepath.Join(work, "ref")
	runTool(t, "umoci", "unpack", "--image", lay+":t", ref)
	want := cliTree(t, filepath.Join(ref, "rootfs"))
	if _, ok := want["var/lib/doomed"]; ok || want["etc/motd"] != cliTreeOf(map[string]string{"etc/motd": "changed\n"})["etc/motd"] {
		t.Fatalf("umoci's own unpack is not what was built: %s", imgDumpTree(want))
	}

	out := s.imgMust("import", lay)
	if names, unpacked, _ := imported(t, out); len(names) != 1 || names[0] != "umoci:t" || unpacked != 2 {
		t.Errorf("strata import of umoci's layout: got %v, %d unpacked; want [umoci:t], 2:\n%s", names, unpacked, out)
	}
	checkSameTree(t, "strata's mount of umoci's image, against umoci unpack", want, s.imageTree("umoci:t"))
	in := s.inspectImage("umoci:t")
	if in.Id != m.Config.Digest.String() || in.Manifest.Digest != digest.FromString(manifest).String() {
		t.Errorf("inspect: ID %s, manifest %s; want umoci's config %s and manifest %s", in.Id, in.Manifest.Digest, m.Config.Digest, digest.FromString(manifest))
	}
	if strings.Join(in.Config.Cmd, " ") != "sh" || !strings.Contains(strings.Join(in.Config.Env, " "), "FOO=bar") || in.Author != "umoci test" {
		t.Errorf("inspect: Cmd %q, Env %q, Author %q; want umoci's sh, FOO=bar, umoci test", in.Config.Cmd, in.Config.Env, in.Author)
	}
	hj, _ := json.Marshal(in.History)
	wj, _ := json.Marshal(cfg.History)
	if string(hj) != string(wj) || len(cfg.History) != 3 {
		t.Errorf("inspect History:\n%s\nwant umoci's config's (2 repacks, 1 config):\n%s", hj, wj)
	}
	hist := s.imgMust("history", "umoci:t")
	if strings.Count(hist, "umoci repack") != 2 || strings.Count(hist, "umoci config") != 1 {
		t.Errorf("strata history umoci:t: want 2 umoci repack rows and 1 umoci config row:\n%s", hist)
	}

	dir := filepath.Join(work, "export")
	s.imgMust("export", "umoci:t", dir)
	if got := runTool(t, "skopeo", "inspect", "--raw", "oci:"+dir+":t"); got != manifest {
		t.Errorf("strata's export changed umoci's manifest:\n%s\nwant:\n%s", got, manifest)
	}
	back := filepath.Join(work, "back")
	runTool(t, "umoci", "unpack", "--image", dir+":t", back)
	checkSameTree(t, "umoci unpack of strata's export of umoci's image", want, cliTree(t, filepath.Join(back, "rootfs")))
	s.mustCheck()
}

// --- the image commands ---

// imgSum adds up the sizes of the layers named.
func imgSum(sizes map[string]int64, layers []string) int64 {
	var n int64
	for _, l := range layers {
		n += sizes[l]
	}
	return n
}

// checkHistory checks `strata history` of ref against the image's
// config: one row per history entry, newest first; CREATED BY and
// COMMENT as recorded (truncated to 45 characters unless --no-trunc);
// SIZE the size of the entry's layer, 0 for an empty_layer entry; IMAGE
// wantIDs (12 hex digits or <missing>), newest first.
func checkHistory(t testing.TB, s *cliStore, ref string, cfg v1.Image, wantIDs []string) {
	t.Helper()
	var diffIDs []digest.Digest
	diffIDs = append(diffIDs, cfg.RootFS.DiffIDs...)
	chain := identity.ChainIDs(diffIDs)
	sizes := s.layerSizes()
	type want struct{ created, by, size, comment string }
	var wants []want
	li := 0
	for _, h := range cfg.History {
		var size int64
		if !h.EmptyLayer {
			size = sizes[chain[li].String()]
			li++
		}
		wants = append([]want{{h.Created.UTC().Format(time.RFC3339), strings.Join(strings.Fields(h.CreatedBy), " "), fmt.Sprint(size), h.Comment}}, wants...)
	}
	full := imgTableRows(t, s.imgMust("history", "--no-trunc", "-H=false", ref))
	short := imgTableRows(t, s.imgMust("history", ref))
	if len(full) != len(wants) || len(short) != len(wants) {
		t.Fatalf("strata history %s: %d rows (%d with --no-trunc), want one per history entry, %d", ref, len(short), len(full), len(wants))
	}
	for i, w := range wants {
		f, sh := full[i], short[i]
		wantID := wantIDs[i]
		if (wantID == "<missing>" && f["IMAGE"] != wantID) || !strings.HasPrefix(strings.TrimPrefix(f["IMAGE"], "sha256:"), wantID) || sh["IMAGE"] != wantID {
			t.Errorf("history %s row %d: IMAGE %q (--no-trunc %q), want %s", ref, i, sh["IMAGE"], f["IMAGE"], wantID)
		}
		if wantID != "<missing>" && !chainIDRE.MatchString(f["IMAGE"]) {
			t.Errorf("history --no-trunc %s row %d: IMAGE %q, want the full sha256:<64 hex>", ref, i, f["IMAGE"])
		}
		if f["CREATED"] != w.created || f["CREATED BY"] != w.by || f["SIZE"] != w.size || f["COMMENT"] != w.comment {
			t.Errorf("history --no-trunc -H=false %s row %d: got %q; want CREATED %s, CREATED BY %q, SIZE %s, COMMENT %q", ref, i, f, w.created, w.by, w.size, w.comment)
		}
		by := w.by
		if r := []rune(by); len(r) > 45 {
			by = string(r[:44]) + "…"
		}
		n, _ := strconv.ParseInt(w.size, 10, 64)
		if sh["CREATED BY"] != by || sh["SIZE"] != dockerSize(n) || !imgAgoRE.MatchString(sh["CREATED"]) {
			t.Errorf("history %s row %d: got %q; want CREATED BY %q (45 characters at most), SIZE %s, CREATED \"N units ago\"", ref, i, sh, by, dockerSize(n))
		}
	}
	if got, want := s.imgMust("history", "-q", ref), strings.Join(wantIDs, "\n")+"\n"; got != want {
		t.Errorf("strata history -q %s: got %q, want %q", ref, got, want)
	}
}

// checkInspect checks `strata inspect` of ref against the fixture f: ID,
// tags, digests, config fields, history, and where its layers live.
func checkInspect(t testing.TB, s *cliStore, ref string, f *imgFixture, tags, repoDigests []string) {
	t.Helper()
	in := s.inspectImage(ref)
	c := f.config
	if in.Id != f.id() || strings.Join(in.RepoTags, " ") != strings.Join(tags, " ") || strings.Join(in.RepoDigests, " ") != strings.Join(repoDigests, " ") {
		t.Errorf("inspect %s: Id %s, RepoTags %q, RepoDigests %q; want %s, %q, %q", ref, in.Id, in.RepoTags, in.RepoDigests, f.id(), tags, repoDigests)
	}
	if in.Created == nil || !in.Created.Equal(*c.Created) || in.Author != c.Author || in.Architecture != c.Architecture || in.Os != c.OS {
		t.Errorf("inspect %s: Created %v, Author %q, %s/%s; want the config's %v, %q, %s/%s", ref, in.Created, in.Author, in.Os, in.Architecture, c.Created, c.Author, c.OS, c.Architecture)
	}
	gc, _ := json.Marshal(in.Config)
	wc, _ := json.Marshal(c.Config)
	gh, _ := json.Marshal(in.History)
	wh, _ := json.Marshal(c.History)
	if string(gc) != string(wc) || string(gh) != string(wh) {
		t.Errorf("inspect %s: Config %s History %s;\nwant the config's %s and %s", ref, gc, gh, wc, wh)
	}
	var diffIDs []string
	for _, d := range c.RootFS.DiffIDs {
		diffIDs = append(diffIDs, d.String())
	}
	if in.RootFS.Type != "layers" || strings.Join(in.RootFS.Layers, " ") != strings.Join(diffIDs, " ") {
		t.Errorf("inspect %s: RootFS %+v, want layers %v", ref, in.RootFS, diffIDs)
	}
	if in.Manifest.Digest != f.manifestDesc.Digest.String() {
		t.Errorf("inspect %s: manifest %s, want %s", ref, in.Manifest.Digest, f.manifestDesc.Digest)
	}
	sizes := s.layerSizes()
	if in.GraphDriver.Name != "strata" || strings.Join(in.GraphDriver.Data.Layers, " ") != strings.Join(f.chainIDs(), " ") || in.Size != imgSum(sizes, f.chainIDs()) {
		t.Errorf("inspect %s: GraphDriver %+v, Size %d; want strata, layers %v, size %d", ref, in.GraphDriver, in.Size, f.chainIDs(), imgSum(sizes, f.chainIDs()))
	}
	// LowerDir: the layers' directories, top first, each holding its
	// layer's own files.
	dirs := strings.Split(in.GraphDriver.Data.LowerDir, ":")
	if len(dirs) != len(f.layers) {
		t.Fatalf("inspect %s: LowerDir %q, want %d directories", ref, in.GraphDriver.Data.LowerDir, len(f.layers))
	}
	for i, l := range f.layers {
		dir := dirs[len(dirs)-1-i]
		for name, content := range l.files {
			if strings.HasSuffix(name, "/") || strings.HasPrefix(path.Base(name), ".wh.") || strings.HasPrefix(content, "->") {
				continue
			}
			if b, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(b) != content {
				t.Errorf("inspect %s: LowerDir %s, layer %d: %s: %v (content %d bytes, want %d)", ref, dir, i, name, err, len(b), len(content))
			}
		}
	}
}

// imgCommandFixtures imports the fixtures of the command tests into s:
// base:3.19, app:1.0 (plus app:latest and localhost:5000/team/app:v2),
// and example.com/tools:1 twice, the first image left dangling. Layers
// are plain tars, so that every digest is fixed.
func imgCommandFixtures(t *testing.T, tr *imgTranscript) (base, app, toolsOld, tools *imgFixture) {
	base, app = imgFixtures(t, "", "")
	amd64 := v1.Platform{OS: "linux", Architecture: "amd64"}
	toolsOld = buildImage(t, imgSpec{
		layers:   []imgLayerSpec{{files: map[string]string{"usr/bin/tool": imgData(7, 12000)}}},
		created:  imgEpoch.Add(48 * time.Hour),
		config:   v1.ImageConfig{Cmd: []string{"tool"}},
		platform: amd64,
	})
	tools = buildImage(t, imgSpec{
		layers:   []imgLayerSpec{{files: map[string]string{"usr/bin/tool": imgData(8, 12000)}}},
		created:  imgEpoch.Add(72 * time.Hour),
		config:   v1.ImageConfig{Cmd: []string{"tool", "--v2"}},
		platform: amd64,
	})
	tr.must("import", writeLayout(t, filepath.Join(tr.work, "base"), base, "3.19"), "base:3.19")
	tr.must("import", writeLayout(t, filepath.Join(tr.work, "app"), app, "1.0"), "app:1.0")
	tr.must("import", writeDockerSave(t, filepath.Join(tr.work, "tools-old.tar"), "legacy", imgDockerItem{toolsOld, []string{"example.com/tools:1"}}))
	tr.must("import", writeDockerSave(t, filepath.Join(tr.work, "tools.tar"), "legacy", imgDockerItem{tools, []string{"example.com/tools:1"}}))
	tr.must("tag", "app:1.0", "localhost:5000/team/app:v2")
	tr.must("tag", "app:1.0", "app")
	return base, app, toolsOld, tools
}

// TestImageCommands runs the image commands on fixture images and
// compares their output with testdata/images/commands.golden (go test
// -run TestImageCommands -update rewrites it), then checks what the
// golden file cannot: sizes against the layers', history and inspect
// against the images' configs.
func TestImageCommands(t *testing.T) {
	s := newCLIStore(t)
	tr := &imgTranscript{s: s, work: t.TempDir()}
	base, app, toolsOld, tools := imgCommandFixtures(t, tr)
	for _, args := range [][]string{
		{"images"},
		{"images", "--no-trunc"},
		{"images", "-q"},
		{"images", "--format", "json"},
		{"image", "ls"},
		{"history", "app:1.0"},
		{"history", "--no-trunc", "app:1.0"},
		{"history", "-H=false", "app:1.0"},
		{"history", "-q", "app:1.0"},
		{"history", "base:3.19"},
		{"image", "history", toolsOld.shortID()},
		{"inspect", "app:1.0"},
		{"create", "--name", "web", "app:1.0"},
		{"create", "--name", "idle", "base:3.19"},
		{"ps"},
		{"ps", "-a"},
		{"ps", "-q", "-a"},
		{"system", "df"},
		{"system", "df", "-v"},
	} {
		tr.must(args...)
	}
	// A commit made reproducible (SOURCE_DATE_EPOCH, no compression),
	// so that its IDs are fixed too.
	mnt, w := s.mount("web")
	if err := writeFile(filepath.Join(mnt, "app/config.yml"), []byte("listen: 8080\n")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(mnt, "app/config.yml"), 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}
	s.unmount("web", w)
	epoch := cliOpts{env: []string{"SOURCE_DATE_EPOCH=" + strconv.FormatInt(imgEpoch.Add(96*time.Hour).Unix(), 10)}}
	tr.runWith(epoch, "commit", "--compression", "none", "-m", "add config", "--author", "Ops <ops@example.com>", "web", "app:configured")
	tr.runWith(epoch, "commit", "-c", `CMD ["sh"]`, "idle", "base:sh")
	for _, args := range [][]string{
		{"images"},
		{"history", "app:configured"},
		{"history", "base:sh"},
		{"system", "df", "-v"},
	} {
		tr.must(args...)
	}
	tr.check("commands")

	// Sizes: an image's is that of its layers.
	sizes := s.layerSizes()
	wantRows := map[string]*imgFixture{
		"app latest": app, "app 1.0": app, "localhost:5000/team/app v2": app,
		"base 3.19": base, "example.com/tools 1": tools, "<none> <none>": toolsOld,
	}
	table := imgTableRows(t, s.imgMust("images"))
	rows := s.imagesJSON()
	seen := 0
	for i, r := range rows {
		f, ok := wantRows[r.Repository+" "+r.Tag]
		if !ok {
			continue
		}
		seen++
		want := imgSum(sizes, f.chainIDs())
		if r.ID != f.id() || r.Size != want || !r.Created.Equal(*f.config.Created) {
			t.Errorf("images --format json: %s:%s: got %+v; want ID %s, size %d, created %v", r.Repository, r.Tag, r, f.id(), want, f.config.Created)
		}
		if tr := table[i]; tr["REPOSITORY"] != r.Repository || tr["TAG"] != r.Tag || tr["IMAGE ID"] != f.shortID() || tr["SIZE"] != dockerSize(want) {
			t.Errorf("images: row %d: got %q; want %s %s %s %s", i, tr, r.Repository, r.Tag, f.shortID(), dockerSize(want))
		}
	}
	if seen != len(wantRows) {
		t.Errorf("images --format json: found %d of the %d rows wanted: %+v", seen, len(wantRows), rows)
	}

	// history and inspect against the configs.
	checkHistory(t, s, "app:1.0", app.config, []string{app.shortID(), "<missing>", base.shortID(), "<missing>"})
	checkHistory(t, s, "base:3.19", base.config, []string{base.shortID(), "<missing>"})
	checkInspect(t, s, "app:1.0", app, []string{"app:1.0", "app:latest", "localhost:5000/team/app:v2"}, []string{"docker.io/library/app@" + app.manifestDesc.Digest.String()})
	checkInspect(t, s, "base:3.19", base, []string{"base:3.19"}, []string{"docker.io/library/base@" + base.manifestDesc.Digest.String()})
	checkInspect(t, s, toolsOld.id(), toolsOld, nil, []string{"example.com/tools@" + digest.FromBytes(toolsOld.manifestBytes).String()})
}

// TestImageRemoveAndPrune follows images to their end: rmi of one of
// several tags only untags; rmi of an image a container uses is refused
// unless -f; image prune removes dangling images, -a every image no
// container uses, and then the layers nothing needs, never those under a
// container; system prune spares a mounted container; at the end the
// store's layers and blobs are all gone. Output is compared with
// testdata/images/remove-prune.golden.
func TestImageRemoveAndPrune(t *testing.T) {
	s := newCLIStore(t)
	tr := &imgTranscript{s: s, work: t.TempDir()}
	base, app, toolsOld, tools := imgCommandFixtures(t, tr)
	tr.must("create", "--name", "web", "app:1.0")

	tr.must("rmi", "app:latest", "localhost:5000/team/app:v2")
	r := tr.run("rmi", "app:1.0")
	if r.code != 1 || !strings.Contains(r.stderr, `"web"`) || !strings.Contains(r.stderr, "-f") || !strings.Contains(r.stderr, "strata rm web") {
		t.Errorf("rmi of an image a container uses: want exit 1 naming the container, 'strata rm web' and -f; got %v", r)
	}
	r = tr.run("rmi", "nosuch:1", "base:3.19")
	if r.code != 1 || !strings.Contains(r.stderr, `"nosuch:1"`) || !strings.Contains(r.stderr, "strata images") || !strings.Contains(r.stdout, "Deleted: "+base.id()) {
		t.Errorf("rmi of a missing and an existing image: want exit 1 naming the missing one, the other deleted; got %v", r)
	}
	tr.must("images")

	// image prune: without a terminal to ask on, it needs -f (the
	// question on a terminal: TestCLIIOPruneConfirm); only the dangling
	// image goes, with its layer.
	r = tr.runWith(cliOpts{stdin: strings.NewReader("y\n")}, "image", "prune")
	if r.code != 1 || !strings.Contains(r.stderr, "-f") {
		t.Errorf("image prune without -f nor a terminal: want exit 1 saying -f; got %v", r)
	}
	if rows := s.imagesJSON(); len(rows) != 3 {
		t.Errorf("image prune refused: %d image rows, want still 3", len(rows))
	}
	sizes := s.layerSizes()
	r = tr.run("image", "prune", "-f")
	if !strings.Contains(r.stdout, "deleted: "+toolsOld.id()) || !strings.Contains(r.stdout, "deleted: "+toolsOld.chainIDs()[0]) ||
		!strings.HasSuffix(r.stdout, "Total reclaimed space: "+dockerSize(sizes[toolsOld.chainIDs()[0]])+"\n") {
		t.Errorf("image prune: want the dangling image %s and its layer deleted, and its layer's size reclaimed (%s); got %v", toolsOld.shortID(), dockerSize(sizes[toolsOld.chainIDs()[0]]), r)
	}
	if _, ok := s.layerSizes()[toolsOld.chainIDs()[0]]; ok {
		t.Errorf("image prune left the dangling image's layer")
	}

	tr.must("rmi", "-f", "app:1.0")
	tr.must("ps", "-a")
	tr.must("image", "prune", "-a", "-f")
	left := s.layerSizes()
	for _, l := range app.chainIDs() {
		if _, ok := left[l]; !ok {
			t.Errorf("image prune -a removed layer %s, which the container web is on", l)
		}
	}
	if _, ok := left[tools.chainIDs()[0]]; ok || len(left) != 2 {
		t.Errorf("image prune -a: layers left %v, want only web's two", left)
	}
	mnt, w := s.mount("web")
	checkSameTree(t, "container web after its image was removed and pruned", app.tree(), cliTree(t, mnt))
	tr.must("system", "prune", "-f")
	if ps := s.imgMust("ps", "-q"); ps != "web\n" {
		t.Errorf("system prune removed the mounted container web: ps -q %q", ps)
	}
	s.unmount("web", w)
	out := tr.must("system", "prune", "-a", "-f")
	if !strings.Contains(out, "Deleted Containers:\nweb\n") || !strings.HasSuffix(out, "Total reclaimed space: "+dockerSize(imgSum(left, app.chainIDs()))+"\n") {
		t.Errorf("system prune -a: want web deleted and its layers' size (%s) reclaimed; got:\n%s", dockerSize(imgSum(left, app.chainIDs())), out)
	}
	tr.must("images")
	tr.must("system", "df")
	tr.check("remove-prune")
	for _, d := range []string{"blobs/sha256", "snapshots"} {
		if names := imgDirNames(t, filepath.Join(s.root, d)); len(names) != 0 {
			t.Errorf("%s after pruning everything: %v, want nothing", d, names)
		}
	}
	if ls := s.imgMust("ls", "-q"); ls != "" {
		t.Errorf("ls -q after pruning everything: %q", ls)
	}
	s.mustCheck()
}

// TestImageSharedBase imports two images on the same 4 MiB base layer:
// the base is stored once (the store grows by the second image's own
// layer only), system df -v counts it as SHARED SIZE of both and each
// top layer as UNIQUE SIZE; removing one image frees its own layer at
// prune and keeps the base; the last reference gone, everything is
// freed.
func TestImageSharedBase(t *testing.T) {
	s := newCLIStore(t)
	work := t.TempDir()
	baseLayer := map[string]string{"data/big.bin": imgData(9, 4<<20), "etc/hostname": "base\n"}
	a := buildImage(t, imgSpec{layers: []imgLayerSpec{{files: baseLayer}, {files: map[string]string{"a/file": imgData(10, 20000)}}}})
	b := buildImage(t, imgSpec{layers: []imgLayerSpec{{files: baseLayer}, {files: map[string]string{"b/file": imgData(11, 40000)}}}, created: imgEpoch.Add(time.Hour)})
	stored := func() int64 {
		return imgDuBytes(t, filepath.Join(s.root, "blobs")) + imgDuBytes(t, filepath.Join(s.root, "snapshots"))
	}
	s.imgMust("ls") // creates the store
	d0 := stored()
	s.imgMust("import", writeLayout(t, filepath.Join(work, "a"), a, "1"), "a:1")
	d1 := stored()
	out := s.imgMust("import", writeLayout(t, filepath.Join(work, "b"), b, "1"), "b:1")
	d2 := stored()
	if _, unpacked, reused := imported(t, out); unpacked != 1 || reused != 1 {
		t.Errorf("import of the second image: %d unpacked, %d reused; want 1, 1:\n%s", unpacked, reused, out)
	}
	const base = 4 << 20
	if d1-d0 < 2*base {
		t.Fatalf("the first image grew the store by %d bytes, less than its base blob and files (%d): is the measure right?", d1-d0, 2*base)
	}
	if d2-d1 > base/4 {
		t.Errorf("the second image grew the store by %d bytes: its 4 MiB base layer, already stored, was stored again", d2-d1)
	}
	if n := len(imgDirNames(t, filepath.Join(s.root, "blobs", "sha256"))); n != 7 {
		t.Errorf("blobs: %d, want 7 (the shared base layer once, two top layers, two configs, two manifests)", n)
	}

	sizes := s.layerSizes()
	baseSize, aSize, bSize := sizes[a.chainIDs()[0]], sizes[a.chainIDs()[1]], sizes[b.chainIDs()[1]]
	if len(sizes) != 3 || baseSize < base {
		t.Fatalf("layers: %v, want three, the base %s over 4 MiB", sizes, a.chainIDs()[0])
	}
	df := imgTableRows(t, strings.SplitN(strings.SplitN(s.imgMust("system", "df", "-v"), "\n\n", 3)[1], "\n\nContainers", 2)[0])
	want := map[string][3]int64{"a": {baseSize + aSize, baseSize, aSize}, "b": {baseSize + bSize, baseSize, bSize}}
	for _, row := range df {
		w, ok := want[row["REPOSITORY"]]
		if !ok {
			t.Errorf("system df -v: unexpected row %q", row)
			continue
		}
		delete(want, row["REPOSITORY"])
		if row["SIZE"] != dockerSize(w[0]) || row["SHARED SIZE"] != dockerSize(w[1]) || row["UNIQUE SIZE"] != dockerSize(w[2]) {
			t.Errorf("system df -v, %s: SIZE %s SHARED SIZE %s UNIQUE SIZE %s; want %s %s %s", row["REPOSITORY"], row["SIZE"], row["SHARED SIZE"], row["UNIQUE SIZE"], dockerSize(w[0]), dockerSize(w[1]), dockerSize(w[2]))
		}
	}
	if len(want) != 0 {
		t.Errorf("system df -v: no rows for %v", want)
	}
	total := baseSize + aSize + bSize
	if row := imgTableRows(t, s.imgMust("system", "df"))[0]; row["TOTAL"] != "2" || row["SIZE"] != dockerSize(total) || row["RECLAIMABLE"] != dockerSize(total)+" (100%)" {
		t.Errorf("system df, Images: %q; want TOTAL 2, SIZE %s (the base counted once), RECLAIMABLE all of it", row, dockerSize(total))
	}

	// Removing a: its own layer is freed at prune, the base stays.
	s.mustLine("create", "--name", "onb", "b:1")
	s.imgMust("rmi", "a:1")
	if len(s.layerSizes()) != 3 {
		t.Errorf("rmi removed layers: they go at prune")
	}
	d3 := stored()
	out = s.imgMust("image", "prune", "-f")
	d4 := stored()
	if left := s.layerSizes(); len(left) != 2 || left[b.chainIDs()[0]] == 0 || left[b.chainIDs()[1]] == 0 {
		t.Errorf("prune after rmi a:1: layers left %v, want b's two", left)
	}
	if !strings.HasSuffix(out, "Total reclaimed space: "+dockerSize(aSize)+"\n") || d3-d4 < aSize {
		t.Errorf("prune after rmi a:1: the store shrank by %d bytes, want a's own layer's %d; output:\n%s", d3-d4, aSize, out)
	}
	// The last image gone, a container still holds the layers.
	s.imgMust("rmi", "-f", "b:1")
	s.imgMust("image", "prune", "-a", "-f")
	checkSameTree(t, "container on b:1 after rmi -f and prune -a", b.tree(), s.imageTreeOf("onb"))
	s.must("rm", "onb")
	out = s.imgMust("image", "prune", "-f")
	if !strings.HasSuffix(out, "Total reclaimed space: "+dockerSize(baseSize+bSize)+"\n") {
		t.Errorf("last prune: want the base and b's layer reclaimed (%s):\n%s", dockerSize(baseSize+bSize), out)
	}
	if d5 := stored(); d5-d0 > 64<<10 {
		t.Errorf("after removing everything the store holds %d bytes more than when empty", d5-d0)
	}
	s.mustCheck()
}

// imageTreeOf mounts the container name and returns its tree.
func (s *cliStore) imageTreeOf(name string) map[string]string {
	s.t.Helper()
	mnt, w := s.mount(name)
	tree := cliTree(s.t, mnt)
	s.unmount(name, w)
	return tree
}

// TestImageCommit commits containers as images: with a change, -m and
// --author, a new image whose config is the parent's, whose history is
// the parent's and one entry recording the message, and whose layers
// are the parent's (the very same, by chain ID) and one; with -c only,
// an image with the config changed and an empty_layer entry, and no new
// layer. Bad instructions and names are refused, changing nothing.
func TestImageCommit(t *testing.T) {
	s := newCLIStore(t)
	_, app := imgFixtures(t, "gzip", "gzip")
	s.imgMust("import", writeLayout(t, filepath.Join(t.TempDir(), "app"), app, "1.0"), "app:1.0")
	layers := func() int {
		n := 0
		for _, l := range s.list() {
			if l.Kind == "committed" {
				n++
			}
		}
		return n
	}
	n0 := layers()

	s.mustLine("create", "--name", "c1", "app:1.0")
	mnt, w := s.mount("c1")
	if err := writeFile(filepath.Join(mnt, "etc/motd"), []byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(mnt, "app/run.sh")); err != nil {
		t.Fatal(err)
	}
	s.unmount("c1", w)
	if got, want := s.imgMust("diff", "c1"), "C /app\nD /app/run.sh\nC /etc\nA /etc/motd\n"; got != want {
		t.Errorf("strata diff c1: got\n%swant\n%s", got, want)
	}
	start := time.Now().Add(-time.Second)
	id := s.mustLine("commit", "-m", "add motd", "--author", "Ann <ann@example.com>", "c1", "app:motd")
	if !chainIDRE.MatchString(id) {
		t.Fatalf("strata commit printed %q, want the image ID", id)
	}
	in := s.inspectImage("app:motd")
	if in.Id != id || strings.Join(in.RepoTags, " ") != "app:motd" || in.Author != "Ann <ann@example.com>" || in.Architecture != app.config.Architecture || in.Os != app.config.OS {
		t.Errorf("inspect app:motd: Id %s RepoTags %v Author %q %s/%s; want %s, [app:motd], the author given, the parent's platform", in.Id, in.RepoTags, in.Author, in.Os, in.Architecture, id)
	}
	gc, _ := json.Marshal(in.Config)
	wc, _ := json.Marshal(app.config.Config)
	if string(gc) != string(wc) {
		t.Errorf("commit changed the config:\n%s\nwant the parent's:\n%s", gc, wc)
	}
	if len(in.History) != len(app.config.History)+1 {
		t.Fatalf("history: %d entries, want the parent's %d and one", len(in.History), len(app.config.History))
	}
	gh, _ := json.Marshal(in.History[:len(app.config.History)])
	wh, _ := json.Marshal(app.config.History)
	if string(gh) != string(wh) {
		t.Errorf("history does not extend the parent's:\n%s\nwant it to start with:\n%s", gh, wh)
	}
	if h := in.History[len(in.History)-1]; h.CreatedBy != "add motd" || h.Comment != "add motd" || h.Author != "Ann <ann@example.com>" || h.EmptyLayer || h.Created == nil || h.Created.Before(start) || in.Created == nil || !in.Created.Equal(*h.Created) {
		t.Errorf("new history entry %+v (image created %v): want created_by and comment \"add motd\", the author, a layer, created now", h, in.Created)
	}
	if len(in.GraphDriver.Data.Layers) != 3 || strings.Join(in.GraphDriver.Data.Layers[:2], " ") != strings.Join(app.chainIDs(), " ") ||
		len(in.RootFS.Layers) != 3 || in.RootFS.Layers[0] != app.config.RootFS.DiffIDs[0].String() || in.RootFS.Layers[1] != app.config.RootFS.DiffIDs[1].String() {
		t.Errorf("layers %v (diff IDs %v): want the parent's %v and one", in.GraphDriver.Data.Layers, in.RootFS.Layers, app.chainIDs())
	}
	if in.Manifest.Layers[0].Digest != app.layers[0].desc.Digest || in.Manifest.Layers[1].Digest != app.layers[1].desc.Digest {
		t.Errorf("manifest layers %v: want the parent's blobs first", in.Manifest.Layers)
	}
	if got := layers(); got != n0+1 {
		t.Errorf("committed layers: %d, want %d (the parent's shared, one new)", got, n0+1)
	}
	want := app.tree()
	delete(want, "app/run.sh")
	want["etc/motd"] = cliFileDesc(cliFileMode, []byte("hello\n"))
	checkSameTree(t, "container on the committed image", want, s.imageTree("app:motd"))
	if rows := imgTableRows(t, s.imgMust("history", "app:motd")); len(rows) != 5 || rows[0]["IMAGE"] != strings.TrimPrefix(id, "sha256:")[:12] || rows[0]["CREATED BY"] != "add motd" || rows[1]["IMAGE"] != app.shortID() {
		t.Errorf("history app:motd: %q; want the new image's row, then the parent's ID on the parent's last entry", rows)
	}

	// -c only: the config changes, no layer.
	s.mustLine("create", "--name", "c2", "app:1.0")
	id2 := s.mustLine("commit", "-c", `CMD ["sh"]`, "-c", "ENV DEBUG=1", "c2", "app:cmd")
	in2 := s.inspectImage("app:cmd")
	wantEnv := append(append([]string(nil), app.config.Config.Env...), "DEBUG=1")
	if in2.Id != id2 || strings.Join(in2.Config.Cmd, " ") != "sh" || strings.Join(in2.Config.Entrypoint, " ") != "/app/run.sh" || strings.Join(in2.Config.Env, " ") != strings.Join(wantEnv, " ") || in2.Config.WorkingDir != "/app" {
		t.Errorf("commit -c: Cmd %q Entrypoint %q Env %q WorkingDir %q; want [sh], the parent's entrypoint, env and DEBUG=1, the parent's dir", in2.Config.Cmd, in2.Config.Entrypoint, in2.Config.Env, in2.Config.WorkingDir)
	}
	if h := in2.History[len(in2.History)-1]; len(in2.History) != len(app.config.History)+1 || !h.EmptyLayer || !strings.Contains(h.CreatedBy, `CMD ["sh"]`) || !strings.Contains(h.CreatedBy, "ENV DEBUG=1") {
		t.Errorf("commit -c: last history entry %+v: want an empty_layer entry recording the instructions", h)
	}
	if strings.Join(in2.GraphDriver.Data.Layers, " ") != strings.Join(app.chainIDs(), " ") || len(in2.RootFS.Layers) != 2 {
		t.Errorf("commit -c: layers %v, want exactly the parent's %v", in2.GraphDriver.Data.Layers, app.chainIDs())
	}
	if got := layers(); got != n0+1 {
		t.Errorf("commit -c made a layer: %d committed layers, want still %d", got, n0+1)
	}
	if rows := imgTableRows(t, s.imgMust("history", "app:cmd")); rows[0]["SIZE"] != "0B" {
		t.Errorf("history app:cmd: the -c entry's SIZE is %q, want 0B", rows[0]["SIZE"])
	}
	// No tag: an untagged image.
	id3 := s.mustLine("commit", "-m", "just a note", "c2")
	if rows := s.imagesJSON(); rows[0].ID != id3 || rows[0].Repository != "<none>" || rows[0].Tag != "<none>" {
		t.Errorf("commit without a name: newest image row %+v, want %s untagged", rows[0], id3)
	}

	before := s.imgState()
	for _, tc := range []struct {
		args     []string
		contains []string
	}{
		{[]string{"commit", "-c", "FROB x", "c2", "app:frob"}, []string{`"FROB x"`, "unknown instruction"}},
		{[]string{"commit", "-c", "CMD", "c2", "app:frob"}, []string{`"CMD"`, "missing argument"}},
		{[]string{"commit", "c2", "App:Bad"}, []string{`"App:Bad"`, "lowercase"}},
		{[]string{"commit", "c2", "app:1@" + app.id()}, []string{"digest"}},
		{[]string{"commit", "nosuch", "app:x"}, []string{`"nosuch"`, "strata ls"}},
	} {
		r := s.imgRun(tc.args...)
		if r.code != 1 {
			t.Errorf("strata %s: want exit 1; got %v", strings.Join(tc.args, " "), r)
		}
		for _, c := range tc.contains {
			if !strings.Contains(r.stderr, c) {
				t.Errorf("strata %s: stderr does not mention %q: %v", strings.Join(tc.args, " "), c, r)
			}
		}
	}
	if after := s.imgState(); after != before {
		t.Errorf("refused commits changed the store:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	s.mustCheck()
}

// TestImageReferences tags an image with references in the forms docker
// accepts and checks how each is shown and found, then gives malformed
// ones to tag, import and rmi: each is refused with a message naming the
// reference and what is wrong, changing nothing.
func TestImageReferences(t *testing.T) {
	s := newCLIStore(t)
	_, app := imgFixtures(t, "gzip", "gzip")
	src := writeLayout(t, filepath.Join(t.TempDir(), "app"), app, "1.0")
	s.imgMust("import", src, "app:1.0")
	for _, tc := range []struct{ ref, repo, tag string }{
		{"app", "app", "latest"},
		{"docker.io/library/app:v1", "app", "v1"},
		{"index.docker.io/library/app:v2", "app", "v2"},
		{"docker.io/user/repo:1", "user/repo", "1"},
		{"user/repo:2", "user/repo", "2"},
		{"localhost/app:3", "localhost/app", "3"},
		{"localhost:5000/team/app:4", "localhost:5000/team/app", "4"},
		{"registry.example.com/a/b/c:v_1.0-rc", "registry.example.com/a/b/c", "v_1.0-rc"},
		{"[::1]:5000/app:6", "[::1]:5000/app", "6"},
		{"localhost:5000", "localhost", "5000"}, // a name without "/" has no domain
		{"a.b-c__d:X_y", "a.b-c__d", "X_y"},
	} {
		s.imgMust("tag", "app:1.0", tc.ref)
		found := false
		for _, r := range s.imagesJSON() {
			found = found || (r.Repository == tc.repo && r.Tag == tc.tag && r.ID == app.id())
		}
		if !found {
			t.Errorf("tag %s: no images row %s %s", tc.ref, tc.repo, tc.tag)
		}
		if in := s.inspectImage(tc.ref); in.Id != app.id() {
			t.Errorf("inspect %s: %s, want %s", tc.ref, in.Id, app.id())
		}
	}
	n := len(s.imagesJSON())
	s.imgMust("tag", "app:1.0", "docker.io/library/app:latest")
	if got := len(s.imagesJSON()); got != n {
		t.Errorf("tag docker.io/library/app:latest after tag app: %d rows, want still %d (the same tag)", got, n)
	}
	// Found by ID, ID prefix, digest reference.
	for _, ref := range []string{app.id(), app.shortID(), app.configDesc.Digest.Encoded()[:6], "sha256:" + app.shortID(), "app@" + app.manifestDesc.Digest.String(), "docker.io/library/app@" + app.manifestDesc.Digest.String()} {
		if r := s.imgRun("inspect", ref); r.code != 0 || !strings.Contains(r.stdout, app.id()) {
			t.Errorf("inspect %s: want the image %s; got %v", ref, app.id(), r)
		}
	}

	before := s.imgState()
	long := strings.Repeat("t", 129)
	for _, tc := range []struct {
		ref      string
		contains []string
	}{
		{"App:1", []string{"lowercase"}},
		{"app:", []string{"empty tag"}},
		{"app:-x", []string{"invalid tag"}},
		{"app:" + long, []string{"129", "128"}},
		{"app@sha256:abc", []string{"invalid digest"}},
		{"app:1@" + app.id(), []string{"a tag cannot hold a digest"}},
		{app.configDesc.Digest.Encoded(), []string{"64-byte hexadecimal"}},
		{"a//b", []string{"empty path component"}},
		{"team/-app", []string{"invalid repository name"}},
		{"app_:1", []string{"invalid repository name"}},
		{"foo_bar.com/x:1", []string{"invalid domain"}},
		{"example.com:port/x", []string{"port"}},
		{strings.Repeat("a", 256), []string{"255"}},
		{"", []string{"empty"}},
	} {
		t.Run(tc.ref, func(t *testing.T) {
			cmds := [][]string{{"tag", "app:1.0", tc.ref}, {"import", src, tc.ref}}
			if tc.ref == "" {
				cmds = cmds[:1] // strata import SRC "" is strata import SRC
			}
			for _, args := range cmds {
				r := s.imgRun(args...)
				if r.code == 0 || r.err != nil || r.stdout != "" {
					t.Errorf("strata %s %q: want a failure and nothing on stdout; got %v", args[0], tc.ref, r)
				}
				want := append([]string{fmt.Sprintf("%q", tc.ref)}, tc.contains...)
				if tc.ref == "app:1@"+app.id() {
					want = tc.contains // names the tag only
				}
				for _, c := range want {
					if !strings.Contains(r.stderr, c) {
						t.Errorf("strata %s %q: stderr does not mention %q: %q", args[0], tc.ref, c, r.stderr)
					}
				}
			}
		})
	}
	r := s.imgRun("rmi", "Nope")
	if r.code != 1 || !strings.Contains(r.stderr, `"Nope"`) {
		t.Errorf("rmi Nope: want exit 1 naming it; got %v", r)
	}
	if after := s.imgState(); after != before {
		t.Errorf("refused references changed the store:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	s.mustCheck()
}

// --- import beside prune ---

// imgMountNoFatal is cliStore.mount for goroutines: it returns errors
// instead of failing the test, and registers the daemon for cleanup.
func (s *cliStore) imgMountNoFatal(name string) (string, *daemonWatch, error) {
	r := cliRun(s.t, cliOpts{}, s.args([]string{"mount", name})...)
	if r.code != 0 || r.err != nil {
		return "", nil, fmt.Errorf("%v", r)
	}
	mnt := strings.TrimSuffix(r.stdout, "\n")
	r = cliRun(s.t, cliOpts{}, s.args([]string{"inspect", name})...)
	var in []cliInspect
	if err := json.Unmarshal([]byte(r.stdout), &in); err != nil || len(in) != 1 || in[0].DaemonPid <= 0 {
		return "", nil, fmt.Errorf("inspect %s after mount: %v: %v", name, err, r)
	}
	w := watchDaemon(in[0].DaemonPid, name, mnt)
	s.mu.Lock()
	s.daemons = append(s.daemons, w)
	s.mu.Unlock()
	return mnt, w, nil
}

func (s *cliStore) imgUnmountNoFatal(name string, w *daemonWatch) error {
	if r := cliRun(s.t, cliOpts{}, s.args([]string{"unmount", name})...); r.code != 0 {
		return fmt.Errorf("%v", r)
	}
	if !w.wait(daemonExitTimeout) {
		return fmt.Errorf("daemon of %s (pid %d) still runs %v after unmount", name, w.pid, daemonExitTimeout)
	}
	return nil
}

// TestImageImportBesidePrune runs imports of three-layer images that
// share layers in two loops beside a loop of `strata image prune -a -f`
// for a few seconds. An import must never fail for what the prune
// removes; an image it recorded is either intact (a container on it
// mounts with every file, and it exports: every blob is there) or
// wholly removed by a later prune (it had no container yet); the store
// stays consistent, and a last prune frees everything.
func TestImageImportBesidePrune(t *testing.T) {
	s := newCLIStore(t)
	work := t.TempDir()
	base := imgLayerSpec{files: map[string]string{"base/data": imgData(20, 64<<10), "etc/hostname": "stress\n"}, comp: "gzip"}
	mid := imgLayerSpec{files: map[string]string{"mid/data": imgData(21, 32<<10)}, comp: "gzip"}
	type variant struct {
		f   *imgFixture
		src string
	}
	var variants []variant
	for i, layers := range [][]imgLayerSpec{
		{base, mid, {files: map[string]string{"top/a": imgData(22, 8<<10)}, comp: "gzip"}},
		{base, mid, {files: map[string]string{"top/b": imgData(23, 8<<10)}, comp: "gzip"}},
		{base, {files: map[string]string{"top/c": imgData(24, 8<<10)}, comp: "gzip"}, {files: map[string]string{"top/.wh.c": "", "top/d": "d\n"}}},
	} {
		f := buildImage(t, imgSpec{layers: layers, created: imgEpoch.Add(time.Duration(i) * time.Hour)})
		variants = append(variants, variant{f, writeLayout(t, filepath.Join(work, fmt.Sprintf("v%d", i)), f, "x")})
	}
	s.imgMust("images") // the store exists before the loops start

	const duration = 4 * time.Second
	deadline := time.Now().Add(duration)
	var (
		wg                          sync.WaitGroup
		imports, verified, vanished atomic.Int64
		prunes, inUseRemoved        atomic.Int64
	)
	run := func(args ...string) cliResult { return cliRun(t, cliOpts{}, s.imgArgs(args)...) }
	importer := func(w int) {
		defer wg.Done()
		for i := 0; time.Now().Before(deadline); i++ {
			v := variants[(w+i)%len(variants)]
			tag := fmt.Sprintf("stress:w%d-%d", w, i)
			if r := run("import", "-q", v.src, tag); r.code != 0 {
				if strings.Contains(r.stderr, "no image") {
					// It recorded the image; a prune that had listed
					// that ID before deleted it before import read it
					// back.
					t.Errorf("import beside prune reported failure after recording the image (a prune deleted it before the import read it back): %v", r)
				} else {
					t.Errorf("import beside prune failed: %v", r)
				}
				continue
			}
			imports.Add(1)
			name := fmt.Sprintf("v%d-%d", w, i)
			if r := run("create", "--name", name, tag); r.code != 0 {
				// Pruned before the container held it: then the image
				// is gone, whole. If it is still there, create failed
				// on a layer lost under it.
				if ri := run("inspect", tag); ri.code == 0 {
					t.Errorf("create on %s failed while the image exists (a layer lost?): %v", tag, r)
				} else {
					vanished.Add(1)
				}
				continue
			}
			func() {
				defer run("rm", "-f", name)
				mnt, dw, err := s.imgMountNoFatal(name)
				if err != nil {
					t.Errorf("mount a container on %s: %v", tag, err)
					return
				}
				tree, err := hashTree(mnt)
				if err != nil {
					t.Errorf("read the container on %s: %v", tag, err)
				} else if d := treeDiff(v.f.tree(), tree); d != "" {
					t.Errorf("container on %s, imported beside prune:\n%s", tag, d)
				}
				if err := s.imgUnmountNoFatal(name, dw); err != nil {
					t.Errorf("unmount: %v", err)
				}
				out := filepath.Join(work, "export-"+name)
				if r := run("export", tag, out); r.code != 0 {
					if strings.Contains(r.stderr, "no image") {
						// TestImagePruneSparesNewContainer shows this
						// race for sure; here it only comes by chance.
						inUseRemoved.Add(1)
						t.Logf("image prune -a removed %s while the container %s used it (see TestImagePruneSparesNewContainer)", tag, name)
					} else {
						t.Errorf("export of %s, which a container uses (a blob lost?): %v", tag, r)
					}
				}
				_ = os.RemoveAll(out)
				verified.Add(1)
			}()
		}
	}
	pruner := func() {
		defer wg.Done()
		for time.Now().Before(deadline) {
			if r := run("image", "prune", "-a", "-f"); r.code != 0 {
				t.Errorf("image prune -a -f beside imports: %v", r)
			}
			prunes.Add(1)
		}
	}
	wg.Add(3)
	go importer(0)
	go importer(1)
	go pruner()
	wg.Wait()
	t.Logf("%d imports (%d verified through a container, %d pruned before, %d removed while in use), %d prunes", imports.Load(), verified.Load(), vanished.Load(), inUseRemoved.Load(), prunes.Load())
	if imports.Load() < 4 || verified.Load() < 2 || prunes.Load() < 3 {
		t.Errorf("too little ran to show anything: %d imports, %d verified, %d prunes", imports.Load(), verified.Load(), prunes.Load())
	}

	s.mustCheck()
	for _, r := range s.imagesJSON() {
		if res := run("export", r.ID, filepath.Join(work, "final-"+strings.TrimPrefix(r.ID, "sha256:"))); res.code != 0 {
			t.Errorf("export of %s:%s left after the loops: %v", r.Repository, r.Tag, res)
		}
	}
	s.imgMust("image", "prune", "-a", "-f")
	if ls := s.imgMust("ls", "-q"); ls != "" {
		t.Errorf("after the last prune, layers are left:\n%s", ls)
	}
	for _, d := range []string{"blobs/sha256", "snapshots"} {
		if names := imgDirNames(t, filepath.Join(s.root, d)); len(names) != 0 {
			t.Errorf("%s after the last prune: %v, want nothing", d, names)
		}
	}
	s.mustCheck()
}

// TestImagePruneSparesNewContainer creates a container on an image while
// `strata image prune -a` is removing images: a prune with many images
// to remove takes a while, and the image it removes last is the oldest.
// Once the container is created, the image is in use and the prune must
// keep it: docker's rule ("remove all images without at least one
// container associated to them"), which rmi keeps too. A prune that
// decided from the containers it listed before starting removes it.
func TestImagePruneSparesNewContainer(t *testing.T) {
	s := newCLIStore(t)
	const n = 150
	dir := filepath.Join(t.TempDir(), "many")
	l := newImgLayout(t, dir)
	layer := imgLayerSpec{files: map[string]string{"f": "x\n"}}
	for i := range n {
		f := buildImage(t, imgSpec{layers: []imgLayerSpec{layer}, created: imgEpoch.Add(time.Duration(i) * time.Minute),
			config: v1.ImageConfig{Labels: map[string]string{"n": strconv.Itoa(i)}}})
		d := l.image(f)
		d.Platform = nil
		l.add(d, fmt.Sprintf("img-%d", i))
	}
	l.close()
	s.imgMust("import", "-q", dir)

	cmd, stdout, stderr, err := cliCommand(t.TempDir(), cliOpts{}, s.imgArgs([]string{"image", "prune", "-a", "-f"})...)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Wait for the prune to have started removing (and so to have
	// listed the containers: none), then take the oldest image.
	for {
		out := s.imgRun("images", "-q")
		c := strings.Count(out.stdout, "\n")
		if c < n && c > 0 {
			break
		}
		if c == 0 && out.code == 0 {
			// The prune removed everything between two listings: too
			// fast to show anything this time.
			<-done
			t.Skipf("image prune -a removed all %d images before a listing saw it at work", n)
		}
		if time.Since(start) > cliTimeout {
			t.Fatalf("image prune -a removed nothing in %v", cliTimeout)
		}
	}
	r := s.imgRun("create", "--name", "late", "many:img-0")
	select {
	case err = <-done:
	case <-time.After(cliTimeout):
		_ = cmd.Process.Kill()
		err = <-done
	}
	t.Logf("prune of %d images took %v", n, time.Since(start))
	if err != nil {
		o, _ := os.ReadFile(stdout.Name())
		e, _ := os.ReadFile(stderr.Name())
		t.Fatalf("image prune -a: %v\nstdout:\n%s\nstderr:\n%s", err, o, e)
	}
	if r.code != 0 {
		t.Skipf("the prune removed many:img-0 before the container could be created; nothing shown: %v", r)
	}
	if ri := s.imgRun("inspect", "many:img-0"); ri.code != 0 {
		t.Errorf("image prune -a removed many:img-0 after the container late was created on it (it checked the containers it listed when it started): %v", ri)
	}
	if ps := s.imgMust("ps", "-a", "--format", "json"); !strings.Contains(ps, `"late"`) {
		t.Errorf("ps: the container late is gone:\n%s", ps)
	}
	s.mustCheck()
}
