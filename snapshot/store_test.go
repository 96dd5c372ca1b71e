package snapshot

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/snapshot/layer"
)

// Store-level tests: the layer store without mounts. Changes to an
// active snapshot are made in its upper directory directly, in the
// format the union filesystem writes.

// A tarEntry is one entry of a layer tarball made by makeTar.
type tarEntry struct {
	name    string
	typ     byte
	content string
	mode    int64
}

func tarDir(name string) tarEntry { return tarEntry{name: name, typ: tar.TypeDir, mode: 0o755} }
func tarFile(name, content string) tarEntry {
	return tarEntry{name: name, typ: tar.TypeReg, content: content, mode: 0o644}
}

// makeTar returns an uncompressed OCI layer holding entries.
func makeTar(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, e := range entries {
		hdr := &tar.Header{
			Name: e.name, Typeflag: e.typ, Mode: e.mode, ModTime: mtime,
			Size: int64(len(e.content)), Format: tar.FormatPAX,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, e.content); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func newStore(t testing.TB) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func applyBlob(t testing.TB, s *Store, blob []byte, parent string) Info {
	t.Helper()
	info, err := s.Apply(context.Background(), bytes.NewReader(blob), parent, ApplyOptions{})
	if err != nil {
		t.Fatalf("apply onto %q: %v", parent, err)
	}
	return info
}

// failReader fails the test if it is read.
type failReader struct{ t testing.TB }

func (r failReader) Read([]byte) (int, error) {
	r.t.Errorf("the layer was read, though its diff ID names a stored layer")
	return 0, errors.New("read of a layer that should not be read")
}

// checkStoreDirs fails t unless snapshots/ holds exactly the snapshot
// directories ids and tmp/ is empty.
func checkStoreDirs(t testing.TB, s *Store, ids ...string) {
	t.Helper()
	slices.Sort(ids)
	if got := dirNames(t, filepath.Join(s.Root(), snapshotsDir)); fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Errorf("snapshots/: got %v, want %v", got, ids)
	}
	if got := dirNames(t, filepath.Join(s.Root(), tmpDir)); len(got) != 0 {
		t.Errorf("tmp/: got %v, want nothing", got)
	}
}

func listNames(t testing.TB, s *Store) []string {
	t.Helper()
	ls, err := s.List(context.Background())
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	var names []string
	for _, l := range ls {
		names = append(names, l.Name)
	}
	return names
}

var baseLayer = []tarEntry{
	tarDir("etc/"), tarFile("etc/hosts", "127.0.0.1 localhost\n"),
	tarDir("bin/"), tarFile("bin/sh", "#!shell"), tarFile("bin/ls", "ls"),
}

// TestApplyTwice: a layer applied twice is stored once, under its chain
// ID; given the diff ID, the second Apply does not read the layer.
func TestApplyTwice(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	blob := makeTar(t, baseLayer...)
	diffID := digest.FromBytes(blob) // uncompressed: the blob is the tar

	first := applyBlob(t, s, blob, "")
	want := layer.Descriptor{
		MediaType: layer.MediaTypeTar, Digest: diffID, Size: int64(len(blob)),
		DiffID: diffID, UncompressedSize: int64(len(blob)),
	}
	if first.Name != diffID.String() || first.Kind != KindCommitted || first.Parent != "" {
		t.Errorf("apply: got name %q kind %v parent %q, want the committed base layer %s", first.Name, first.Kind, first.Parent, diffID)
	}
	if first.Layer == nil || *first.Layer != want {
		t.Errorf("apply: layer %+v, want %+v", first.Layer, want)
	}
	if b, err := os.ReadFile(filepath.Join(s.snapshotDir(first.ID), fsDir, "etc/hosts")); err != nil || string(b) != "127.0.0.1 localhost\n" {
		t.Errorf("etc/hosts in the layer: got %q, %v", b, err)
	}

	second, err := s.Apply(ctx, failReader{t}, "", ApplyOptions{DiffID: diffID})
	if err != nil {
		t.Fatalf("apply with the diff ID: %v", err)
	}
	third, err := s.Apply(ctx, bytes.NewReader(blob), "", ApplyOptions{})
	if err != nil {
		t.Fatalf("apply again, reading it: %v", err)
	}
	for _, again := range []Info{second, third} {
		if again.Name != first.Name || again.ID != first.ID {
			t.Errorf("apply again: got %q in %s, want %q in %s", again.Name, again.ID, first.Name, first.ID)
		}
	}
	checkStoreDirs(t, s, first.ID)
	if got := dirNames(t, filepath.Join(s.Root(), blobsDir)); fmt.Sprint(got) != fmt.Sprint([]string{diffID.Encoded()}) {
		t.Errorf("blobs: got %v, want the one blob %s", got, diffID.Encoded())
	}
	if got := listNames(t, s); len(got) != 1 {
		t.Errorf("list: got %v, want the one layer", got)
	}
}

// TestApplyRefused: a layer whose diff ID is not the one given, or
// which is cut short, is refused and leaves nothing behind.
func TestApplyRefused(t *testing.T) {
	ctx := context.Background()
	blob := makeTar(t, tarFile("new", "new file"), tarDir("etc/"), tarFile("etc/passwd", "root"))
	tests := []struct {
		name   string
		blob   []byte
		diffID digest.Digest
		onBase bool
	}{
		{"wrong diff ID", blob, digest.FromString("another layer"), false},
		{"wrong diff ID, on a parent", blob, digest.FromString("another layer"), true},
		{"truncated", blob[:len(blob)-1024-100], "", false},
		{"truncated, on a parent", blob[:len(blob)-1024-100], "", true},
		{"not a layer", []byte("plain text, not a tar"), "", true},
		{"canceled", blob, "", true},
		{"onto a parent made by Commit", blob, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			parent, keep := "", []string{}
			if tc.onBase {
				base := applyBlob(t, s, makeTar(t, baseLayer...), "")
				parent, keep = base.Name, []string{base.ID}
			}
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			var r io.Reader = bytes.NewReader(tc.blob)
			switch tc.name {
			case "canceled":
				r = cancelReader{r, cancel}
			case "onto a parent made by Commit": // it has no diff ID, so no chain ID
				if _, err := s.Prepare(ctx, "active", parent, nil); err != nil {
					t.Fatal(err)
				}
				if err := s.Commit(ctx, "committed", "active", nil); err != nil {
					t.Fatal(err)
				}
				if err := s.Remove(ctx, parent); !errors.Is(err, ErrPrecondition) {
					t.Fatalf("remove the base under committed: %v", err)
				}
				info := statOK(t, s, "committed")
				parent, keep = info.Name, append(keep, info.ID)
			}
			blobsBefore := dirNames(t, filepath.Join(s.Root(), blobsDir))
			info, err := s.Apply(ctx, r, parent, ApplyOptions{DiffID: tc.diffID})
			if err == nil {
				t.Fatalf("apply: got %+v, want an error", info)
			}
			t.Logf("apply: %v", err)
			checkStoreDirs(t, s, keep...)
			if got := dirNames(t, filepath.Join(s.Root(), blobsDir)); fmt.Sprint(got) != fmt.Sprint(blobsBefore) {
				t.Errorf("blobs: got %v, want %v", got, blobsBefore)
			}
			if got, want := listNames(t, s), len(keep); len(got) != want {
				t.Errorf("list: got %v, want %d snapshots", got, want)
			}
			if parent != "" {
				if err := s.Remove(context.Background(), parent); err != nil {
					t.Errorf("remove the parent, which must have no child left: %v", err)
				}
			}
			if rep, err := s.Check(context.Background()); err != nil || len(rep.Problems) != 0 {
				t.Errorf("check: %v, %v", rep.Problems, err)
			}
		})
	}
}

// cancelReader cancels its context when it is first read.
type cancelReader struct {
	r      io.Reader
	cancel func()
}

func (r cancelReader) Read(p []byte) (int, error) {
	r.cancel()
	return r.r.Read(p)
}

// TestCommitLayer: the changes of an active snapshot become a layer on
// its parent, named by the chain ID of the parent's diff IDs and its
// own; the blob is kept as described and exported as kept; applied to
// another store on the same parent it gives the same chain ID.
func TestCommitLayer(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	baseBlob := makeTar(t, baseLayer...)
	base := applyBlob(t, s, baseBlob, "")

	m, err := s.Prepare(ctx, "work", base.Name, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"etc", "bin"} {
		if err := os.Mkdir(filepath.Join(m.Upper, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range map[string]string{"etc/hosts": "10.0.0.1 changed\n", "new": "a new file"} {
		if err := os.WriteFile(filepath.Join(m.Upper, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mknod(filepath.Join(m.Upper, "bin/sh"), unix.S_IFCHR, 0); err != nil { // whiteout
		t.Fatal(err)
	}

	info, err := s.CommitLayer(ctx, "work", LayerOptions{Compression: layer.Gzip})
	if err != nil {
		t.Fatalf("commit layer: %v", err)
	}
	if info.Kind != KindCommitted || info.Parent != base.Name || info.Layer == nil {
		t.Fatalf("commit layer: got %+v, want a committed layer on %s", info, base.Name)
	}
	if info.Layer.MediaType != layer.MediaTypeGzip {
		t.Errorf("media type: got %s, want %s", info.Layer.MediaType, layer.MediaTypeGzip)
	}
	chain := identity.ChainID([]digest.Digest{digest.FromBytes(baseBlob), info.Layer.DiffID})
	if info.Name != chain.String() {
		t.Errorf("name: got %s, want the chain ID %s", info.Name, chain)
	}
	if got, err := s.ChainID(ctx, info.Name); err != nil || got != chain {
		t.Errorf("chain ID: got %s, %v; want %s", got, err, chain)
	}
	if st := statOK(t, s, "work"); st.Kind != KindActive {
		t.Errorf("work after commit layer: %v, want it active still", st.Kind)
	}
	checkTreeEqual(t, filepath.Join(s.snapshotDir(info.ID), fsDir), m.Upper)

	p, err := s.BlobPath(info.Layer.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if p != filepath.Join(s.Root(), "blobs/sha256", info.Layer.Digest.Encoded()) {
		t.Errorf("blob path: %s", p)
	}
	blob, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("the blob: %v", err)
	}
	if got := digest.FromBytes(blob); got != info.Layer.Digest || int64(len(blob)) != info.Layer.Size {
		t.Errorf("blob: %s, %d bytes; described as %s, %d bytes", got, len(blob), info.Layer.Digest, info.Layer.Size)
	}
	if diffID, size, err := layer.DiffID(bytes.NewReader(blob)); err != nil || diffID != info.Layer.DiffID || size != info.Layer.UncompressedSize {
		t.Errorf("blob's diff ID: %s, %d bytes, %v; described as %s, %d bytes", diffID, size, err, info.Layer.DiffID, info.Layer.UncompressedSize)
	}

	var exported bytes.Buffer
	desc, err := s.ExportLayer(ctx, info.Name, &exported)
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	if !bytes.Equal(exported.Bytes(), blob) || desc != *info.Layer {
		t.Errorf("export: %d bytes described %+v; want the blob's %d bytes, %+v", exported.Len(), desc, len(blob), *info.Layer)
	}
	if _, err := s.ExportLayer(ctx, "work", io.Discard); !errors.Is(err, ErrPrecondition) {
		t.Errorf("export of an active snapshot: got %v, want ErrPrecondition", err)
	}

	// The same changes again are the same layer.
	again, err := s.CommitLayer(ctx, "work", LayerOptions{Compression: layer.Gzip})
	if err != nil || again.Name != info.Name || again.ID != info.ID {
		t.Errorf("commit layer again: got %q in %s, %v; want %q in %s", again.Name, again.ID, err, info.Name, info.ID)
	}

	other := newStore(t)
	if b := applyBlob(t, other, baseBlob, ""); b.Name != base.Name {
		t.Errorf("base in another store: %s, want %s", b.Name, base.Name)
	}
	got := applyBlob(t, other, exported.Bytes(), base.Name)
	if got.Name != info.Name || got.Layer == nil || *got.Layer != *info.Layer {
		t.Errorf("exported layer applied in another store: got %s %+v, want %s %+v", got.Name, got.Layer, info.Name, info.Layer)
	}
	checkTreeEqual(t, filepath.Join(other.snapshotDir(got.ID), fsDir), filepath.Join(s.snapshotDir(info.ID), fsDir))
	for _, st := range []*Store{s, other} {
		if rep, err := st.Check(ctx); err != nil || len(rep.Problems) != 0 {
			t.Errorf("check %s: %v, %v", st.Root(), rep.Problems, err)
		}
	}
}

func statOK(t testing.TB, s *Store, key string) Info {
	t.Helper()
	info, err := s.Stat(context.Background(), key)
	if err != nil {
		t.Fatalf("stat %q: %v", key, err)
	}
	return info
}

// TestResolve: a snapshot is found by key, and a layer by a prefix of
// its chain ID.
func TestResolve(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	base := applyBlob(t, s, makeTar(t, baseLayer...), "")
	second := applyBlob(t, s, makeTar(t, tarFile("second", "2")), base.Name)
	if _, err := s.Prepare(ctx, "work", base.Name, nil); err != nil {
		t.Fatal(err)
	}
	hex := func(name string) string { return strings.TrimPrefix(name, "sha256:") }
	tests := []struct {
		ref     string
		want    string
		wantErr error
	}{
		{ref: hex(base.Name)[:12], want: base.Name},
		{ref: "sha256:" + hex(second.Name)[:12], want: second.Name},
		{ref: hex(second.Name)[:4], want: second.Name},
		{ref: second.Name, want: second.Name},
		{ref: "work", want: "work"},
		{ref: hex(base.Name)[:3], wantErr: ErrNotFound},
		{ref: strings.ToUpper(hex(base.Name)[:12]), wantErr: ErrNotFound},
		{ref: "000000000000", wantErr: ErrNotFound},
		{ref: "missing", wantErr: ErrNotFound},
	}
	if hex(base.Name)[:4] == hex(second.Name)[:4] {
		t.Skip("the two chain IDs share their first 4 digits")
	}
	for _, tc := range tests {
		t.Run(tc.ref, func(t *testing.T) {
			info, err := s.Resolve(ctx, tc.ref)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("got %q, %v; want an error that is %v", info.Name, err, tc.wantErr)
				}
				return
			}
			if err != nil || info.Name != tc.want {
				t.Errorf("got %q, %v; want %q", info.Name, err, tc.want)
			}
		})
	}
}

// deadOp makes a snapshot through an op whose process then died: its
// flock is released and everything it made is left.
func deadOp(t testing.TB, s *Store) (o *op, key, id string) {
	t.Helper()
	o, key, id = liveOp(t, s)
	if err := o.lock.Close(); err != nil { // what the kernel does when the process dies
		t.Fatal(err)
	}
	return o, key, id
}

// liveOp makes a snapshot through an op that is still held, with a
// partial layer in it and a partial blob in the op's directory.
func liveOp(t testing.TB, s *Store) (o *op, key, id string) {
	t.Helper()
	o, err := s.beginOp("apply")
	if err != nil {
		t.Fatal(err)
	}
	key = "apply/" + o.name
	m, err := s.create(context.Background(), KindActive, key, "", nil, o.name)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m.Upper, "partial"), []byte("half a layer"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(o.dir, "blob"), []byte("half a blob"), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := getRecordOf(s, key)
	if err != nil {
		t.Fatal(err)
	}
	return o, key, r.ID
}

func getRecordOf(s *Store, key string) (record, error) {
	var r record
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		r, err = getRecord(tx, key)
		return err
	})
	return r, err
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// TestCleanupInterruptedOp: Cleanup removes the snapshot and scratch of
// an op whose process died, and leaves a live op's alone.
func TestCleanupInterruptedOp(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	base := applyBlob(t, s, makeTar(t, baseLayer...), "")
	dead, deadKey, deadID := deadOp(t, s)
	live, liveKey, liveID := liveOp(t, s)

	// An op's snapshot is nobody's to see.
	if names := listNames(t, s); fmt.Sprint(names) != fmt.Sprint([]string{base.Name}) {
		t.Errorf("list: got %v, want only %s", names, base.Name)
	}

	rep, err := s.Cleanup(ctx)
	if err != nil {
		t.Fatalf("cleanup: %v", err)
	}
	if !rep.Repaired || len(rep.Problems) != 2 ||
		!strings.Contains(rep.Problems[0]+rep.Problems[1], deadKey) || !strings.Contains(rep.Problems[0]+rep.Problems[1], dead.name) {
		t.Errorf("cleanup report: %+v, want the dead op's snapshot %q and scratch %s", rep, deadKey, dead.name)
	}
	for _, p := range rep.Problems {
		if strings.Contains(p, live.name) {
			t.Errorf("cleanup reports the live op: %q", p)
		}
	}
	if _, err := getRecordOf(s, deadKey); !errors.Is(err, ErrNotFound) {
		t.Errorf("record of the dead op's snapshot: %v, want ErrNotFound", err)
	}
	if exists(s.snapshotDir(deadID)) || exists(dead.dir) {
		t.Errorf("the dead op's snapshot %s or scratch %s is left", deadID, dead.dir)
	}
	if _, err := getRecordOf(s, liveKey); err != nil {
		t.Errorf("record of the live op's snapshot: %v", err)
	}
	if !exists(filepath.Join(s.snapshotDir(liveID), fsDir, "partial")) || !exists(filepath.Join(live.dir, "blob")) {
		t.Errorf("the live op's snapshot %s or scratch %s was touched", liveID, live.dir)
	}
	if statOK(t, s, base.Name).Kind != KindCommitted {
		t.Errorf("the committed layer was touched")
	}

	// The live op ends as Apply's error path does.
	if err := errors.Join(s.dropOpSnapshot(live, liveKey), live.end()); err != nil {
		t.Fatalf("end the live op: %v", err)
	}
	if rep, err := s.Check(ctx); err != nil || len(rep.Problems) != 0 {
		t.Errorf("check after: %v, %v", rep.Problems, err)
	}
	checkStoreDirs(t, s, base.ID)
}

// storeState describes everything under the store's root, the
// metadata's bytes included.
func storeState(t testing.TB, s *Store) string {
	t.Helper()
	lines, err := describeTree(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n")
}

// TestCheck: Check finds every kind of leftover and changes nothing;
// Cleanup repairs all but a lost directory, which Check reports still.
func TestCheck(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	base := applyBlob(t, s, makeTar(t, baseLayer...), "")
	lost := applyBlob(t, s, makeTar(t, tarFile("lost", "lost")), base.Name)
	if _, err := s.Prepare(ctx, "mounted", base.Name, nil); err != nil {
		t.Fatal(err)
	}
	_, deadKey, _ := deadOp(t, s)
	live, liveKey, _ := liveOp(t, s)
	t.Cleanup(func() { _ = errors.Join(s.dropOpSnapshot(live, liveKey), live.end()) })

	// A lost layer directory, moved out of the store.
	if err := os.Rename(s.snapshotDir(lost.ID), filepath.Join(t.TempDir(), "lost")); err != nil {
		t.Fatal(err)
	}
	// Directories of a crashed create and of a record that is gone.
	for _, d := range []string{newPrefix + "0123456789abcdef", "999"} {
		if err := os.MkdirAll(filepath.Join(s.Root(), snapshotsDir, d, fsDir), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// Scratch of a dead op; an old staging dir and a young one.
	for _, d := range []string{opPrefix + "apply-dead", stagingPrefix + "old", stagingPrefix + "young"} {
		if err := os.Mkdir(filepath.Join(s.Root(), tmpDir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * stagingGrace)
	if err := os.Chtimes(filepath.Join(s.Root(), tmpDir, stagingPrefix+"old"), old, old); err != nil {
		t.Fatal(err)
	}
	// A mount daemon that is gone.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if err := s.SetMounted(ctx, "mounted", Daemon{Dir: t.TempDir(), Pid: cmd.Process.Pid}); err != nil {
		t.Fatal(err)
	}

	// What Cleanup repairs: each once, and the dead op's scratch.
	wantProblems := []string{
		`snapshot "` + deadKey + `" of an interrupted operation`,
		"directory snapshots/" + newPrefix + "0123456789abcdef belongs to no snapshot",
		"directory snapshots/999 belongs to no snapshot",
		"scratch tmp/" + opPrefix + "apply-dead",
		"scratch tmp/" + stagingPrefix + "old",
		`"mounted": mount daemon`,
	}
	wantUnrepairable := `snapshot "` + lost.Name + `": directory snapshots/` + lost.ID + ` missing`
	checkReport := func(what string, rep Report, repaired bool, want []string) {
		t.Helper()
		if rep.Repaired != repaired {
			t.Errorf("%s: repaired %v, want %v", what, rep.Repaired, repaired)
		}
		for _, w := range want {
			n := 0
			for _, p := range rep.Problems {
				if strings.Contains(p, w) {
					n++
				}
			}
			if n != 1 {
				t.Errorf("%s: %d problems say %q, want 1", what, n, w)
			}
		}
		if extra := len(rep.Problems) - len(want); extra != 0 && (len(want) == 0 || extra != 1) {
			t.Errorf("%s: %d problems, want %d and the dead op's scratch:\n%s", what, len(rep.Problems), len(want), strings.Join(rep.Problems, "\n"))
		}
		for _, p := range rep.Problems {
			if strings.Contains(p, live.name) || strings.Contains(p, "young") {
				t.Errorf("%s reports something live: %q", what, p)
			}
		}
		if len(rep.Unrepairable) != 1 || !strings.HasPrefix(rep.Unrepairable[0], wantUnrepairable) {
			t.Errorf("%s: unrepairable %q, want one %q", what, rep.Unrepairable, wantUnrepairable)
		}
	}

	before := storeState(t, s)
	checked, err := s.Check(ctx)
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	if after := storeState(t, s); after != before {
		t.Errorf("check changed the store:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	repaired, err := s.Cleanup(ctx)
	if err != nil {
		t.Fatalf("cleanup: %v", err)
	}
	checkReport("cleanup", repaired, true, wantProblems)
	// Check reports what Cleanup would repair: the same lines.
	if !slices.Equal(checked.Problems, repaired.Problems) {
		t.Errorf("check reported:\n%s\ncleanup repaired:\n%s", strings.Join(checked.Problems, "\n"), strings.Join(repaired.Problems, "\n"))
	}
	checkReport("check", checked, false, wantProblems)

	if _, ok, err := s.Mounted(ctx, "mounted"); ok || err != nil {
		t.Errorf("mounted after cleanup: %v, %v", ok, err)
	}
	after, err := s.Check(ctx)
	if err != nil {
		t.Fatalf("check after cleanup: %v", err)
	}
	checkReport("check after cleanup", after, false, nil)
	if !exists(filepath.Join(s.Root(), tmpDir, stagingPrefix+"young")) {
		t.Errorf("cleanup removed a young staging directory")
	}
	if statOK(t, s, base.Name).Kind != KindCommitted || statOK(t, s, lost.Name).Kind != KindCommitted {
		t.Errorf("cleanup touched committed snapshots")
	}
}

// TestConcurrentStores: two Stores on one root, as two processes would
// have, change it from several goroutines at once, with Cleanup running
// beside them; nothing fails, Cleanup never finds anything to repair,
// and the store is consistent afterwards.
func TestConcurrentStores(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	var stores [2]*Store
	for i := range stores {
		s, err := Open(root, Options{})
		if err != nil {
			t.Fatal(err)
		}
		stores[i] = s
	}
	base := applyBlob(t, stores[0], makeTar(t, baseLayer...), "")
	shared := makeTar(t, tarFile("shared", "the same layer from every worker"))

	const workers = 4
	deadline := time.Now().Add(2 * time.Second)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		problems []string
		iters    [workers]int
		endedOps int // ended ops Cleanup took for interrupted ones
	)
	stop := make(chan struct{})
	fail := func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		problems = append(problems, fmt.Sprintf(format, a...))
	}
	for w := 0; w < workers; w++ {
		s := stores[w%2]
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline) || i < 3; i++ {
				if err := churn(ctx, s, base.Name, shared, fmt.Sprintf("w%d/%d", w, i)); err != nil {
					fail("worker %d, round %d: %v", w, i, err)
					return
				}
				iters[w]++
			}
		})
	}
	var cleanups int
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			rep, err := stores[cleanups%2].Cleanup(ctx)
			cleanups++
			if err != nil {
				fail("cleanup %d while others work: %v", cleanups, err)
			}
			for _, p := range rep.Problems {
				// No op dies here: a scratch reported is an op that
				// ended while Cleanup looked, the race that
				// TestCheckRacesEndingOps shows. Anything else fails.
				if strings.HasPrefix(p, "scratch "+tmpDir+"/"+opPrefix) && strings.HasSuffix(p, " of an interrupted operation") {
					mu.Lock()
					endedOps++
					mu.Unlock()
					continue
				}
				fail("cleanup %d while others work: %q", cleanups, p)
			}
		}
	})
	time.Sleep(time.Until(deadline))
	close(stop)
	wg.Wait()
	t.Logf("rounds per worker %v, cleanups %d, ended ops reported as interrupted %d", iters, cleanups, endedOps)
	for _, p := range problems {
		t.Error(p)
	}

	rep, err := stores[1].Check(ctx)
	if err != nil || len(rep.Problems) != 0 {
		t.Errorf("check: %q, %v", rep.Problems, err)
	}
	ls, err := stores[0].List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, l := range ls {
		ids = append(ids, l.ID)
		if l.Name != base.Name && l.Parent != base.Name {
			t.Errorf("left after the workers: %q (parent %q)", l.Name, l.Parent)
		}
	}
	if len(ls) != 2 {
		t.Errorf("list: got %d snapshots, want the base and the shared layer", len(ls))
	}
	checkStoreDirs(t, stores[0], ids...)
}

// churn is one round of a worker of TestConcurrentStores: it makes and
// removes snapshots named under prefix, and applies the shared layer.
func churn(ctx context.Context, s *Store, base string, shared []byte, prefix string) error {
	active, committed := prefix+"/active", prefix+"/committed"
	m, err := s.Prepare(ctx, active, base, map[string]string{"worker": prefix})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(m.Upper, "file"), []byte(prefix), 0o644); err != nil {
		return err
	}
	layerInfo, err := s.CommitLayer(ctx, active, LayerOptions{})
	if err != nil {
		return err
	}
	if err := s.Commit(ctx, committed, active, nil); err != nil {
		return err
	}
	if _, err := s.View(ctx, prefix+"/view", committed, nil); err != nil {
		return err
	}
	if _, err := s.Prepare(ctx, prefix+"/child", committed, nil); err != nil {
		return err
	}
	info, err := s.Apply(ctx, bytes.NewReader(shared), base, ApplyOptions{})
	if err != nil {
		return err
	}
	if info.Parent != base {
		return fmt.Errorf("shared layer on %q, want %q", info.Parent, base)
	}
	ls, err := s.List(ctx)
	if err != nil {
		return err
	}
	var seen int
	for _, l := range ls {
		if l.Name == base || l.Name == committed || l.Name == layerInfo.Name {
			seen++
		}
	}
	if seen != 3 {
		return fmt.Errorf("list misses the base, %q or %q", committed, layerInfo.Name)
	}
	for _, key := range []string{prefix + "/child", prefix + "/view", committed, layerInfo.Name} {
		if err := s.Remove(ctx, key); err != nil {
			return err
		}
	}
	return nil
}

// TestSharing: stacks prepared on one layer share it: the store grows
// by far less than a copy of the layer per stack.
func TestSharing(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	const size, stacks = 8 << 20, 10
	data := make([]byte, size)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	base := applyBlob(t, s, makeTar(t, tarDir("usr/"), tarFile("usr/big", string(data))), "")
	before := diskUsageOf(t, s.Root())
	if before < 2*size { // the layer and its blob
		t.Fatalf("the store holds %d bytes after applying an %d-byte layer", before, size)
	}
	layerDir := filepath.Join(s.snapshotDir(base.ID), fsDir)
	for i := 0; i < stacks; i++ {
		m, err := s.Prepare(ctx, fmt.Sprintf("stack-%d", i), base.Name, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Lowers) != 1 || m.Lowers[0] != layerDir {
			t.Errorf("stack %d: lowers %v, want the base layer %s", i, m.Lowers, layerDir)
		}
	}
	after := diskUsageOf(t, s.Root())
	const limit = 1 << 20
	t.Logf("%d stacks on a %d MiB layer: the store grew from %d to %d bytes", stacks, size>>20, before, after)
	if after-before > limit {
		t.Errorf("%d stacks on a %d MiB layer grew the store by %d bytes, want under %d (stacks*size is %d)", stacks, size>>20, after-before, limit, stacks*size)
	}
}

// TestRemoveReleasesBlob: the blob of a removed layer goes once no
// layer holds it (after Remove, or at the latest after Cleanup); a blob
// two layers share (one blob applied on two parents) stays while
// either is left.
func TestRemoveReleasesBlob(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	base := applyBlob(t, s, makeTar(t, baseLayer...), "")
	blob := makeTar(t, tarFile("shared", "one blob, two layers"))
	onNothing := applyBlob(t, s, blob, "")
	onBase := applyBlob(t, s, blob, base.Name)
	if onNothing.Name == onBase.Name || onNothing.Layer.Digest != onBase.Layer.Digest {
		t.Fatalf("one blob on two parents: %s and %s", onNothing.Name, onBase.Name)
	}
	blobs := func() []string {
		t.Helper()
		if _, err := s.Cleanup(ctx); err != nil {
			t.Fatal(err)
		}
		return dirNames(t, filepath.Join(s.Root(), blobsDir))
	}
	if err := s.Remove(ctx, onNothing.Name); err != nil {
		t.Fatal(err)
	}
	if got := blobs(); len(got) != 2 {
		t.Errorf("blobs with the base and one holder of the shared blob: %v, want 2", got)
	}
	if err := s.Remove(ctx, onBase.Name); err != nil {
		t.Fatal(err)
	}
	if got := blobs(); fmt.Sprint(got) != fmt.Sprint([]string{base.Layer.Digest.Encoded()}) {
		t.Errorf("blobs with only the base left: %v, want the base's %s", got, base.Layer.Digest.Encoded())
	}
	if err := s.Remove(ctx, base.Name); err != nil {
		t.Fatal(err)
	}
	if got := blobs(); len(got) != 0 {
		t.Errorf("blobs of an empty store: %v, want none", got)
	}
}

// TestChainIDNotTaken: a snapshot that a caller named like a chain ID
// is not handed out by Apply as that layer.
func TestChainIDNotTaken(t *testing.T) {
	ctx := context.Background()
	blob := makeTar(t, baseLayer...)
	diffID := digest.FromBytes(blob) // the chain ID of a base layer
	for _, kind := range []string{"active", "committed"} {
		t.Run(kind, func(t *testing.T) {
			s := newStore(t)
			key := diffID.String()
			if kind == "committed" {
				key = "active"
			}
			if _, err := s.Prepare(ctx, key, "", nil); err != nil {
				if errors.Is(err, ErrInvalid) {
					return // refused: chain IDs are the store's names
				}
				t.Fatal(err)
			}
			if kind == "committed" {
				if err := s.Commit(ctx, diffID.String(), key, nil); err != nil {
					if errors.Is(err, ErrInvalid) {
						return
					}
					t.Fatal(err)
				}
			}
			for _, opts := range []ApplyOptions{{}, {DiffID: diffID}} {
				info, err := s.Apply(ctx, bytes.NewReader(blob), "", opts)
				if err != nil {
					continue // refused: the name is taken
				}
				if info.Kind != KindCommitted || info.Parent != "" || info.Layer == nil || info.Layer.DiffID != diffID {
					t.Errorf("apply with diff ID %q: got %s snapshot %q on %q with layer %+v, not the layer applied", opts.DiffID, info.Kind, info.Name, info.Parent, info.Layer)
				}
			}
		})
	}
}

// TestExportCommitted: a snapshot made by Commit, which has no blob, is
// exported by encoding its layer; applied in another store the layer
// holds the same tree.
func TestExportCommitted(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	m, err := s.Prepare(ctx, "active", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := applyAll(m.Upper, []applier{
		createDir("etc", 0o750), createFile("etc/conf", "conf", 0o600), symlink("etc/conf", "link"),
		createFile("exe", "#!/bin/sh", 0o755), chown("exe", 12, 34),
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "committed", "active", nil); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	desc, err := s.ExportLayer(ctx, "committed", &buf)
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	if desc.Digest != digest.FromBytes(buf.Bytes()) || desc.Size != int64(buf.Len()) || desc.MediaType != layer.MediaTypeGzip {
		t.Errorf("export: described %+v, wrote %s, %d bytes", desc, digest.FromBytes(buf.Bytes()), buf.Len())
	}
	other := newStore(t)
	info, err := other.Apply(ctx, &buf, "", ApplyOptions{DiffID: desc.DiffID})
	if err != nil {
		t.Fatalf("apply the export: %v", err)
	}
	if info.Layer == nil || *info.Layer != desc {
		t.Errorf("applied layer %+v, exported %+v", info.Layer, desc)
	}
	checkTreeEqual(t, filepath.Join(other.snapshotDir(info.ID), fsDir), filepath.Join(s.snapshotDir(statOK(t, s, "committed").ID), fsDir))
}

// TestMountedRefused: a snapshot recorded as served by a live daemon
// is neither committed nor removed; once unmounted it is.
func TestMountedRefused(t *testing.T) {
	needFUSE(t)
	ctx := context.Background()
	s := newStore(t)
	m, err := s.Prepare(ctx, "active", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := mountSnapshot(t, m)
	if err := s.SetMounted(ctx, "active", Daemon{Dir: dir, Pid: os.Getpid()}); err != nil {
		t.Fatal(err)
	}
	if d, ok, err := s.Mounted(ctx, "active"); !ok || err != nil || d.Dir != dir {
		t.Errorf("mounted: %+v, %v, %v; want the daemon at %s", d, ok, err, dir)
	}
	if err := s.SetMounted(ctx, "active", Daemon{Dir: dir, Pid: os.Getppid()}); !errors.Is(err, ErrExists) {
		t.Errorf("a second live daemon: got %v, want ErrExists", err)
	}
	if err := s.Commit(ctx, "committed", "active", nil); !errors.Is(err, ErrPrecondition) {
		t.Errorf("commit of a mounted snapshot: got %v, want ErrPrecondition", err)
	}
	if err := s.Remove(ctx, "active"); !errors.Is(err, ErrPrecondition) {
		t.Errorf("remove of a mounted snapshot: got %v, want ErrPrecondition", err)
	}
	if ls, err := s.List(ctx); err != nil || len(ls) != 1 || ls[0].Daemon == nil || ls[0].Daemon.Dir != dir {
		t.Errorf("list: %+v, %v; want the snapshot with its daemon", ls, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "file"), []byte("written while mounted"), 0o644); err != nil {
		t.Fatal(err)
	}
	unmount(t, dir)
	if err := s.Commit(ctx, "committed", "active", nil); err != nil {
		t.Errorf("commit once unmounted: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(s.snapshotDir(statOK(t, s, "committed").ID), fsDir, "file")); err != nil || string(b) != "written while mounted" {
		t.Errorf("the committed layer's file: %q, %v", b, err)
	}
}

// TestCheckRacesEndingOps: ops that start and end while Check runs are
// never reported as interrupted. (Check lists tmp/ and then asks each
// op's flock; an op that ended in between must be passed over, not
// taken for a dead one.)
func TestCheckRacesEndingOps(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				o, err := s.beginOp("rm")
				if err != nil {
					t.Error(err)
					return
				}
				if err := o.end(); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	defer wg.Wait()
	defer close(stop)
	deadline := time.Now().Add(time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		rep, err := s.Check(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Problems) > 0 {
			t.Fatalf("check %d, with only live ops starting and ending: %q", i, rep.Problems)
		}
	}
}
