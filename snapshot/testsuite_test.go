package snapshot

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/cow"
	stratafs "github.com/strata-fs/strata/fs"
)

// The snapshotter suite, after containerd core/snapshots/testsuite:
// scenarios driven by a factory, each on a fresh store, each acting
// through real mounts of what the store describes. The same scenarios
// run mounted by strata's FUSE server and by kernel overlayfs, the
// reference; and crossed, each reading through views what the other
// wrote, so the layers either writes are the layers both read.

func TestSnapshotterFUSE(t *testing.T) {
	needFUSE(t)
	t.Parallel()
	runSuite(t, "strata-fuse", mounter{write: mountSnapshot, read: mountSnapshot}, openTestStore)
}

func TestSnapshotterOverlay(t *testing.T) {
	needRoot(t)
	t.Parallel()
	runSuite(t, "overlay", mounter{write: mountOverlay, read: mountOverlay}, openTestStore)
}

func TestSnapshotterFUSEReadByOverlay(t *testing.T) {
	needFUSE(t)
	t.Parallel()
	runSuite(t, "strata-fuse, views by overlay", mounter{write: mountSnapshot, read: mountOverlay, crossed: true}, openTestStore)
}

func TestSnapshotterOverlayReadByFUSE(t *testing.T) {
	needFUSE(t)
	t.Parallel()
	runSuite(t, "overlay, views by strata-fuse", mounter{write: mountOverlay, read: mountSnapshot, crossed: true}, openTestStore)
}

func openTestStore(root string) (*Store, error) { return Open(root, Options{}) }

// A mountFunc serves the snapshot mount m at a fresh directory and
// returns that directory. The mount is undone in t.Cleanup, or earlier
// by unmount.
type mountFunc func(t testing.TB, m Mount) string

// A mounter says how the suite mounts: active snapshots, which the
// scenarios change, with write; views, which they check, with read.
// A crossed suite (read is not write) checks that the layers one writes
// read the same through the other; it leaves 128LayersMount, a test of
// depth that the direct suites make, out.
type mounter struct {
	write, read mountFunc
	crossed     bool
}

// needRoot skips tests that mount when not root.
func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
}

// needFUSE skips tests that mount through /dev/fuse when the machine
// cannot.
func needFUSE(t testing.TB) {
	t.Helper()
	needRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
}

// mountSnapshot serves m with strata: a cow stack of m's layers, served
// by fs.Mount.
func mountSnapshot(t testing.TB, m Mount) string {
	t.Helper()
	dir := t.TempDir()
	st, err := cow.New(cow.Options{Lower: m.Lowers, Upper: m.Upper, Work: m.Work})
	if err != nil {
		t.Fatalf("cow stack of %v: %v", m.Options(), err)
	}
	srv, err := stratafs.Mount(dir, st, stratafs.MountOptions{FsName: "strata-test", Name: "strata"})
	if err != nil {
		st.Close()
		t.Fatalf("mount %v at %s: %v", m.Options(), dir, err)
	}
	t.Cleanup(func() {
		unmount(t, dir)
		srv.Wait()
		if err := st.Close(); err != nil {
			t.Errorf("close stack: %v", err)
		}
	})
	return dir
}

// mountOverlay serves m with kernel overlayfs, taking m.Options() as
// they are. Options longer than mount(2) takes (one page: 128 layers of
// a store under t.TempDir() make about 9 KiB) are given one by one
// through fsconfig(2), as "lowerdir+" values.
func mountOverlay(t testing.TB, m Mount) string {
	t.Helper()
	dir := t.TempDir()
	data := strings.Join(m.Options(), ",")
	var err error
	switch {
	case m.ReadOnly() && len(m.Lowers) == 1:
		// Kernel overlayfs refuses one lower without an upper ("at
		// least 2 lowerdir are needed while upperdir nonexistent");
		// containerd's overlay snapshotter mounts such a view as a
		// read-only bind mount of the layer, and so does the reference
		// here. TestMountsKernelOverlay holds the store to the
		// description as it is.
		err = mountReadOnlyBind(dir, m.Lowers[0])
	case len(data) < os.Getpagesize():
		err = unix.Mount("overlay", dir, "overlay", 0, data)
	default:
		err = mountOverlayFsconfig(dir, m)
	}
	if err != nil {
		t.Fatalf("mount -t overlay -o %s %s: %v", data, dir, err)
	}
	t.Cleanup(func() { unmount(t, dir) })
	return dir
}

func mountReadOnlyBind(dir, src string) error {
	if err := unix.Mount(src, dir, "", unix.MS_BIND, ""); err != nil {
		return err
	}
	if err := unix.Mount("", dir, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		return errors.Join(err, unix.Unmount(dir, 0))
	}
	return nil
}

func mountOverlayFsconfig(dir string, m Mount) (err error) {
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen: %w", err)
	}
	defer func() { err = errors.Join(err, unix.Close(fsfd)) }()
	for _, l := range m.Lowers {
		if err := unix.FsconfigSetString(fsfd, "lowerdir+", l); err != nil {
			return fmt.Errorf("lowerdir+ %s: %w", l, err)
		}
	}
	if m.Upper != "" {
		if err := unix.FsconfigSetString(fsfd, "upperdir", m.Upper); err != nil {
			return fmt.Errorf("upperdir: %w", err)
		}
		if err := unix.FsconfigSetString(fsfd, "workdir", m.Work); err != nil {
			return fmt.Errorf("workdir: %w", err)
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return fmt.Errorf("fsconfig create: %w", err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("fsmount: %w", err)
	}
	defer func() { err = errors.Join(err, unix.Close(mfd)) }()
	return unix.MoveMount(mfd, "", unix.AT_FDCWD, dir, unix.MOVE_MOUNT_F_EMPTY_PATH)
}

// unmount undoes the mount at dir, if it is still mounted, retrying
// briefly while it is busy.
func unmount(t testing.TB, dir string) {
	t.Helper()
	for i := 0; isMountpoint(t, dir); i++ {
		err := unix.Unmount(dir, 0)
		switch {
		case err == nil || errors.Is(err, unix.EINVAL):
		case errors.Is(err, unix.EBUSY) && i < 20:
			time.Sleep(50 * time.Millisecond)
		default:
			t.Errorf("unmount %s: %v", dir, err)
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
				t.Errorf("unmount -l %s: %v", dir, err)
			}
			return
		}
	}
}

// isMountpoint reports whether dir is a mountpoint in this process's
// mount namespace.
func isMountpoint(t testing.TB, dir string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		// id parent major:minor root mountpoint ...
		if f := strings.Fields(line); len(f) > 4 && unescapeMountinfo(f[4]) == dir {
			return true
		}
	}
	return false
}

// A harness is one scenario's store and mounts.
type harness struct {
	ctx  context.Context
	s    *Store
	root string
	mounter
}

// mount mounts an active snapshot, to change it.
func (h *harness) mount(t testing.TB, m Mount) string { return h.write(t, m) }

// mountView mounts a view, to check it.
func (h *harness) mountView(t testing.TB, m Mount) string { return h.read(t, m) }

// runSuite runs every scenario against a fresh store from factory,
// mounting with mnt.
func runSuite(t *testing.T, name string, mnt mounter, factory func(root string) (*Store, error)) {
	scenarios := []struct {
		name string
		fn   func(t *testing.T, h *harness)
	}{
		{"Basic", checkBasic},
		{"StatActive", checkStatActive},
		{"StatCommitted", checkStatCommitted},
		{"TransitivityTest", checkTransitivity},
		{"PreareViewFailingtest", checkPrepareViewFailing},
		{"RemoveIntermediateSnapshot", checkRemoveIntermediateSnapshot},
		{"Update", checkUpdate},
		{"Usage", checkUsage},
		{"ViewReadonly", checkViewReadonly},
		{"LayerFileupdate", checkLayerFileUpdate},
		{"RemoveDirectoryInLowerLayer", checkRemoveDirectoryInLowerLayer},
		{"DeletedFilesInChild", checkDeletedFilesInChild},
		{"MoveFileFromLowerLayer", checkMoveFileFromLowerLayer},
		{"Chown", checkChown},
		{"DirectoryPermissionOnCommit", checkDirectoryPermissionOnCommit},
		{"128LayersMount", check128LayersMount},
	}
	for _, sc := range scenarios {
		if mnt.crossed && sc.name == "128LayersMount" {
			continue
		}
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			s, err := factory(root)
			if err != nil {
				t.Fatalf("%s: open store: %v", name, err)
			}
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("close store: %v", err)
				}
			})
			sc.fn(t, &harness{ctx: context.Background(), s: s, root: root, mounter: mnt})
		})
	}
}

func (h *harness) prepare(t testing.TB, key, parent string) Mount {
	t.Helper()
	m, err := h.s.Prepare(h.ctx, key, parent, nil)
	if err != nil {
		t.Fatalf("prepare %q on %q: %v", key, parent, err)
	}
	return m
}

func (h *harness) view(t testing.TB, key, parent string) Mount {
	t.Helper()
	m, err := h.s.View(h.ctx, key, parent, nil)
	if err != nil {
		t.Fatalf("view %q of %q: %v", key, parent, err)
	}
	return m
}

func (h *harness) commit(t testing.TB, name, key string) {
	t.Helper()
	if err := h.s.Commit(h.ctx, name, key, nil); err != nil {
		t.Fatalf("commit %q as %q: %v", key, name, err)
	}
}

func (h *harness) stat(t testing.TB, key string) Info {
	t.Helper()
	info, err := h.s.Stat(h.ctx, key)
	if err != nil {
		t.Fatalf("stat %q: %v", key, err)
	}
	return info
}

// change mounts m, makes the changes as through the mount, and
// unmounts, as a container does before its snapshot is committed.
func (h *harness) change(t testing.TB, m Mount, as ...applier) {
	t.Helper()
	dir := h.mount(t, m)
	err := applyAll(dir, as)
	unmount(t, dir)
	if err != nil {
		t.Fatalf("through the mount: %v", err)
	}
}

// commitLayer prepares key on parent, makes the changes as through its
// mount, and commits it as name.
func (h *harness) commitLayer(t testing.TB, name, parent string, as ...applier) {
	t.Helper()
	key := name + "-active"
	h.change(t, h.prepare(t, key, parent), as...)
	h.commit(t, name, key)
}

// checkView mounts a view of the committed snapshot name and compares
// it with the tree want.
func (h *harness) checkView(t testing.TB, name, want string) {
	t.Helper()
	key := "view-of-" + name
	dir := h.mountView(t, h.view(t, key, name))
	checkTreeEqual(t, dir, want)
	unmount(t, dir)
	if err := h.s.Remove(h.ctx, key); err != nil {
		t.Errorf("remove %q: %v", key, err)
	}
}

// flatDir returns a fresh directory looking like the root of an empty
// snapshot, to apply the layers' changes to.
func flatDir(t testing.TB) string {
	t.Helper()
	d := t.TempDir()
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// checkLayers commits each layer of changes on the one before, made
// through mounts, and applies it to a flat copy too; after every
// checkEvery-th layer and the last it compares a view of the committed
// stack with the flat copy. It returns the top layer's name.
func checkLayers(t testing.TB, h *harness, checkEvery int, layers ...[]applier) string {
	t.Helper()
	flat := flatDir(t)
	parent := ""
	for i, l := range layers {
		name := fmt.Sprintf("layer-%03d", i)
		h.commitLayer(t, name, parent, l...)
		if err := applyAll(flat, l); err != nil {
			t.Fatalf("layer %d, flat copy: %v", i, err)
		}
		if (i+1)%checkEvery == 0 || i == len(layers)-1 {
			h.checkView(t, name, flat)
			if t.Failed() {
				t.Fatalf("after layer %d of %d", i, len(layers))
			}
		}
		parent = name
	}
	return parent
}

// checkBasic: prepare, write through the mount, commit, prepare a child
// that sees the files, change them, commit, view; Stat and Walk show
// each snapshot's kind and parent.
func checkBasic(t *testing.T, h *harness) {
	base := []applier{
		createDir("a", 0o755),
		createFile("a/b", "hello", 0o644),
		createDir("a/c", 0o711),
		createFile("a/c/d", "nested", 0o600),
		symlink("a/b", "link"),
		createFile("top", "top level", 0o755),
	}
	h.commitLayer(t, "committed", "", base...)
	flat := flatDir(t)
	if err := applyAll(flat, base); err != nil {
		t.Fatal(err)
	}

	m := h.prepare(t, "next", "committed")
	dir := h.mount(t, m)
	checkTreeEqual(t, dir, flat)
	next := []applier{
		createFile("a/b", "changed", 0o644),
		remove("top"),
		createFile("a/new", "new file", 0o640),
	}
	if err := applyAll(dir, next); err != nil {
		t.Fatal(err)
	}
	if err := applyAll(flat, next); err != nil {
		t.Fatal(err)
	}
	checkTreeEqual(t, dir, flat)
	unmount(t, dir)
	h.commit(t, "nextCommitted", "next")
	if _, err := h.s.Stat(h.ctx, "next"); !errors.Is(err, ErrNotFound) {
		t.Errorf("stat of the committed active key: got %v, want ErrNotFound", err)
	}
	h.view(t, "view", "nextCommitted")
	// The committed key is free again.
	dir = h.mount(t, h.prepare(t, "next", "nextCommitted"))
	checkTreeEqual(t, dir, flat)
	h.checkView(t, "nextCommitted", flat)

	type kp struct {
		kind   Kind
		parent string
	}
	want := map[string]kp{
		"committed":     {KindCommitted, ""},
		"nextCommitted": {KindCommitted, "committed"},
		"view":          {KindView, "nextCommitted"},
		"next":          {KindActive, "nextCommitted"},
	}
	got := map[string]kp{}
	err := h.s.Walk(h.ctx, func(_ context.Context, info Info) error {
		got[info.Name] = kp{info.Kind, info.Parent}
		return nil
	})
	if err != nil {
		t.Fatalf("walk: %v", err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("walk: got %v, want %v", got, want)
	}
	for name, w := range want {
		info := h.stat(t, name)
		if info.Name != name || info.Kind != w.kind || info.Parent != w.parent {
			t.Errorf("stat %q: got name %q kind %v parent %q, want kind %v parent %q", name, info.Name, info.Kind, info.Parent, w.kind, w.parent)
		}
		if info.Created.IsZero() || info.Updated.Before(info.Created) {
			t.Errorf("stat %q: created %v, updated %v", name, info.Created, info.Updated)
		}
	}
}

func checkStatActive(t *testing.T, h *harness) {
	h.change(t, h.prepare(t, "active", ""), createFile("foo", "foo", 0o644))
	info := h.stat(t, "active")
	if info.Name != "active" || info.Kind != KindActive || info.Parent != "" {
		t.Errorf("stat: got %+v, want an active snapshot \"active\" with no parent", info)
	}
}

func checkStatCommitted(t *testing.T, h *harness) {
	h.commitLayer(t, "committed", "", createFile("foo", "foo", 0o644))
	info := h.stat(t, "committed")
	if info.Name != "committed" || info.Kind != KindCommitted || info.Parent != "" {
		t.Errorf("stat: got %+v, want a committed snapshot \"committed\" with no parent", info)
	}
}

// checkTransitivity: in a chain A <- B <- C each layer's data stays
// visible through the next ones, and each records its parent.
func checkTransitivity(t *testing.T, h *harness) {
	flat := flatDir(t)
	layers := []struct {
		name, parent string
		changes      []applier
	}{
		{"A", "", []applier{createFile("foo", "foo", 0o644), createFile("a", "a", 0o644)}},
		{"B", "A", []applier{createFile("foo", "foo bar", 0o644), createFile("b", "b", 0o644)}},
		{"C", "B", []applier{createFile("foo", "foo bar baz", 0o644), createFile("c", "c", 0o644)}},
	}
	for _, l := range layers {
		h.commitLayer(t, l.name, l.parent, l.changes...)
		if err := applyAll(flat, l.changes); err != nil {
			t.Fatal(err)
		}
		if got := h.stat(t, l.name).Parent; got != l.parent {
			t.Errorf("parent of %s: got %q, want %q", l.name, got, l.parent)
		}
	}
	dir := h.mount(t, h.prepare(t, "top", "C"))
	checkTreeEqual(t, dir, flat)
	b, err := os.ReadFile(filepath.Join(dir, "foo"))
	if err != nil || string(b) != "foo bar baz" {
		t.Errorf("foo: got %q, %v; want %q", b, err, "foo bar baz")
	}
}

// checkPrepareViewFailing: a missing parent, an existing key and an
// active parent are refused, and leave nothing behind.
func checkPrepareViewFailing(t *testing.T, h *harness) {
	h.commitLayer(t, "committed", "", createFile("foo", "foo", 0o644))
	dir := h.mount(t, h.prepare(t, "active", "committed"))
	if err := os.WriteFile(filepath.Join(dir, "bar"), []byte("bar"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.view(t, "view", "committed")
	before := dirNames(t, filepath.Join(h.root, snapshotsDir))

	tests := []struct {
		name    string
		create  func(ctx context.Context, key, parent string, labels map[string]string) (Mount, error)
		key     string
		parent  string
		wantErr error
	}{
		{"prepare, missing parent", h.s.Prepare, "k1", "missing", ErrNotFound},
		{"view, missing parent", h.s.View, "k2", "missing", ErrNotFound},
		{"prepare, existing active key", h.s.Prepare, "active", "committed", ErrExists},
		{"prepare, existing view key", h.s.Prepare, "view", "", ErrExists},
		{"view, existing committed key", h.s.View, "committed", "committed", ErrExists},
		{"view, existing active key", h.s.View, "active", "committed", ErrExists},
		{"prepare on an active parent", h.s.Prepare, "k3", "active", ErrPrecondition},
		{"view of a view", h.s.View, "k4", "view", ErrPrecondition},
		{"prepare, empty key", h.s.Prepare, "", "committed", ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := tc.create(h.ctx, tc.key, tc.parent, nil)
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("got mount %v, error %v; want an error that is %v", m, err, tc.wantErr)
			}
		})
	}
	if after := dirNames(t, filepath.Join(h.root, snapshotsDir)); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("snapshots/ after the refused calls: got %v, want %v", after, before)
	}
	// The live mount is untouched by the refusals.
	if b, err := os.ReadFile(filepath.Join(dir, "bar")); err != nil || string(b) != "bar" {
		t.Errorf("bar through the mount: got %q, %v", b, err)
	}
}

// checkRemoveIntermediateSnapshot: a committed snapshot with children
// cannot be removed; removing from the top down works and leaves an
// empty store.
func checkRemoveIntermediateSnapshot(t *testing.T, h *harness) {
	h.commitLayer(t, "base", "", createDir("foo", 0o755))
	h.commitLayer(t, "layer1", "base", createFile("foo/bar", "bar", 0o644))
	dir := h.mount(t, h.prepare(t, "top", "layer1"))
	if b, err := os.ReadFile(filepath.Join(dir, "foo/bar")); err != nil || string(b) != "bar" {
		t.Errorf("foo/bar: got %q, %v", b, err)
	}
	unmount(t, dir)

	for _, key := range []string{"layer1", "base"} {
		if err := h.s.Remove(h.ctx, key); !errors.Is(err, ErrPrecondition) {
			t.Errorf("remove %q, which has a child: got %v, want ErrPrecondition", key, err)
		}
	}
	for _, key := range []string{"top", "layer1", "base"} {
		if err := h.s.Remove(h.ctx, key); err != nil {
			t.Fatalf("remove %q: %v", key, err)
		}
		if _, err := h.s.Stat(h.ctx, key); !errors.Is(err, ErrNotFound) {
			t.Errorf("stat %q after remove: got %v, want ErrNotFound", key, err)
		}
	}
	if names := dirNames(t, filepath.Join(h.root, snapshotsDir)); len(names) != 0 {
		t.Errorf("snapshots/ after removing everything: %v", names)
	}
	if names := dirNames(t, filepath.Join(h.root, tmpDir)); len(names) != 0 {
		t.Errorf("tmp/ after removing everything: %v", names)
	}
}

// checkUpdate: labels are replaced as a whole ("labels", or no field
// paths) or one by one ("labels.<name>"); nothing else changes.
func checkUpdate(t *testing.T, h *harness) {
	m, err := h.s.Prepare(h.ctx, "active", "", map[string]string{"a": "1", "b": "2"})
	if err != nil {
		t.Fatal(err)
	}
	h.change(t, m, createFile("foo", "foo", 0o644))
	h.commit(t, "committed", "active") // nil labels: the active's are kept
	created := h.stat(t, "committed").Created

	tests := []struct {
		name       string
		labels     map[string]string
		fieldpaths []string
		want       map[string]string
	}{
		{"kept by commit", nil, nil, map[string]string{"a": "1", "b": "2"}},
		{"all, no field paths", map[string]string{"c": "3"}, []string{}, map[string]string{"c": "3"}},
		{"all, labels", map[string]string{"d": "4", "e": "5"}, []string{"labels"}, map[string]string{"d": "4", "e": "5"}},
		{"one added", map[string]string{"x": "y", "d": "ignored"}, []string{"labels.x"}, map[string]string{"d": "4", "e": "5", "x": "y"}},
		{"one changed, one removed", map[string]string{"x": "z"}, []string{"labels.x", "labels.d"}, map[string]string{"e": "5", "x": "z"}},
	}
	prev := h.stat(t, "committed").Updated
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			info := h.stat(t, "committed")
			if tc.labels != nil {
				info.Labels, info.Parent, info.Kind = tc.labels, "bogus", KindView
				got, err := h.s.Update(h.ctx, info, tc.fieldpaths...)
				if err != nil {
					t.Fatalf("update: %v", err)
				}
				if fmt.Sprint(got.Labels) != fmt.Sprint(tc.want) {
					t.Errorf("update returned labels %v, want %v", got.Labels, tc.want)
				}
				if got.Updated.Before(prev) {
					t.Errorf("updated went back from %v to %v", prev, got.Updated)
				}
				prev = got.Updated
			}
			st := h.stat(t, "committed")
			if fmt.Sprint(st.Labels) != fmt.Sprint(tc.want) {
				t.Errorf("stat: labels %v, want %v", st.Labels, tc.want)
			}
			if st.Kind != KindCommitted || st.Parent != "" || !st.Created.Equal(created) {
				t.Errorf("stat: kind %v parent %q created %v; update changed more than labels", st.Kind, st.Parent, st.Created)
			}
		})
	}
	if _, err := h.s.Update(h.ctx, Info{Name: "committed"}, "parent"); !errors.Is(err, ErrInvalid) {
		t.Errorf("update of field \"parent\": got %v, want ErrInvalid", err)
	}
	if _, err := h.s.Update(h.ctx, Info{Name: "missing"}, "labels"); !errors.Is(err, ErrNotFound) {
		t.Errorf("update of a missing snapshot: got %v, want ErrNotFound", err)
	}
}

// checkUsage: 1 MiB written through the mount shows in the active
// snapshot's usage, and the usage recorded at commit; a child does not
// count its parent's layer.
func checkUsage(t *testing.T, h *harness) {
	const oneMiB = 1 << 20
	data := make([]byte, oneMiB)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	m := h.prepare(t, "active", "")
	dir := h.mount(t, m)
	if err := os.WriteFile(filepath.Join(dir, "big"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	checkUsageNear := func(what string, u Usage, size, inodes int64) {
		t.Helper()
		const slack = 64 << 10 // directory blocks and file-system rounding
		if u.Size < size || u.Size > size+slack || u.Inodes != inodes {
			t.Errorf("usage of %s: got %d bytes in %d inodes, want %d..%d bytes in %d", what, u.Size, u.Inodes, size, size+slack, inodes)
		}
	}
	u, err := h.s.Usage(h.ctx, "active")
	if err != nil {
		t.Fatal(err)
	}
	checkUsageNear("the active snapshot", u, oneMiB, 2) // root and big
	unmount(t, dir)
	h.commit(t, "committed", "active")
	if u, err = h.s.Usage(h.ctx, "committed"); err != nil {
		t.Fatal(err)
	}
	checkUsageNear("the committed snapshot", u, oneMiB, 2)

	h.prepare(t, "child", "committed")
	if u, err = h.s.Usage(h.ctx, "child"); err != nil {
		t.Fatal(err)
	}
	checkUsageNear("a child", u, 0, 1) // its empty upper
	if _, err := h.s.Usage(h.ctx, "missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("usage of a missing snapshot: got %v, want ErrNotFound", err)
	}
}

// checkViewReadonly: every write through a view's mount fails with
// EROFS, and reads work.
func checkViewReadonly(t *testing.T, h *harness) {
	h.commitLayer(t, "committed", "", createFile("foo", "foo", 0o644), createDir("dir", 0o755))
	m := h.view(t, "view", "committed")
	if !m.ReadOnly() {
		t.Errorf("mount of a view is not read-only: %v", m.Options())
	}
	dir := h.mountView(t, m)
	if b, err := os.ReadFile(filepath.Join(dir, "foo")); err != nil || string(b) != "foo" {
		t.Errorf("read foo: got %q, %v", b, err)
	}
	writes := []struct {
		name string
		fn   func() error
	}{
		{"create", func() error { return os.WriteFile(filepath.Join(dir, "new"), nil, 0o644) }},
		{"open for writing", func() error {
			f, err := os.OpenFile(filepath.Join(dir, "foo"), os.O_WRONLY, 0)
			if err == nil {
				f.Close()
			}
			return err
		}},
		{"mkdir", func() error { return os.Mkdir(filepath.Join(dir, "newdir"), 0o755) }},
		{"unlink", func() error { return os.Remove(filepath.Join(dir, "foo")) }},
		{"rmdir", func() error { return os.Remove(filepath.Join(dir, "dir")) }},
		{"rename", func() error { return os.Rename(filepath.Join(dir, "foo"), filepath.Join(dir, "bar")) }},
		{"chmod", func() error { return os.Chmod(filepath.Join(dir, "foo"), 0o600) }},
		{"symlink", func() error { return os.Symlink("foo", filepath.Join(dir, "link")) }},
	}
	for _, w := range writes {
		if err := w.fn(); !errors.Is(err, unix.EROFS) {
			t.Errorf("%s through a view: got %v, want EROFS", w.name, err)
		}
	}
}

// checkLayerFileUpdate: a file changed in each of several layers; the
// top one wins, whatever its size against the ones below.
func checkLayerFileUpdate(t *testing.T, h *harness) {
	checkLayers(t, h, 1,
		[]applier{createDir("etc", 0o755), createFile("etc/hosts", "mydomain 10.0.0.1", 0o644), createFile("etc/motd", "hello", 0o644)},
		[]applier{createFile("etc/hosts", "mydomain 10.0.0.2", 0o644)},
		[]applier{createFile("etc/hosts", "mydomain 10.0.0.120", 0o600)},
		[]applier{createFile("etc/hosts", "x", 0o644), createFile("etc/motd", strings.Repeat("long motd ", 100), 0o644)},
		[]applier{createFile("etc/hosts", "mydomain 10.0.0.4", 0o644)},
	)
}

// checkRemoveDirectoryInLowerLayer: rm -r of a lower directory through
// a child hides all of it; a directory made again in its place is
// opaque.
func checkRemoveDirectoryInLowerLayer(t *testing.T, h *harness) {
	checkLayers(t, h, 1,
		[]applier{
			createDir("lib", 0o755), createFile("lib/hidden", "hidden", 0o644),
			createDir("lib/sub", 0o755), createFile("lib/sub/deep", "deep", 0o644),
			createDir("keep", 0o755), createFile("keep/file", "kept", 0o644),
		},
		[]applier{removeAll("lib")},
		[]applier{createDir("lib", 0o700), createFile("lib/not-hidden", "new", 0o644)},
		[]applier{removeAll("lib"), removeAll("keep")},
	)
}

// checkDeletedFilesInChild: files of lower layers unlinked through a
// child are gone in the layers above it.
func checkDeletedFilesInChild(t *testing.T, h *harness) {
	checkLayers(t, h, 1,
		[]applier{
			createDir("bin", 0o755), createFile("bin/ls", "ls", 0o755), createFile("bin/sh", "sh", 0o755),
			createDir("etc", 0o755), createFile("etc/passwd", "root", 0o644), symlink("/bin/sh", "etc/shell"),
		},
		[]applier{remove("bin/ls"), remove("etc/shell")},
		[]applier{createFile("bin/cat", "cat", 0o755), remove("etc/passwd")},
		[]applier{createFile("bin/ls", "ls again", 0o755)},
	)
}

// checkMoveFileFromLowerLayer: mv of lower files, to a new name and over
// an existing one, across directories.
func checkMoveFileFromLowerLayer(t *testing.T, h *harness) {
	checkLayers(t, h, 1,
		[]applier{
			createFile("a", "content of a", 0o644), createFile("b", "content of b", 0o600),
			createDir("dir1", 0o755), createFile("dir1/f1", "f1", 0o644),
			createDir("dir2", 0o755), createFile("dir2/f2", "f2", 0o640),
		},
		[]applier{rename("a", "b"), rename("dir1/f1", "dir2/f1")},
		[]applier{rename("dir2/f2", "f2"), rename("b", "dir1/b")},
	)
}

// checkChown: owners changed through a child survive commit.
func checkChown(t *testing.T, h *harness) {
	checkLayers(t, h, 1,
		[]applier{
			createDir("opt", 0o755), createDir("opt/a", 0o755), createDir("opt/a/b", 0o755),
			createFile("opt/a.txt", "a", 0o644), symlink("a.txt", "opt/link"),
		},
		[]applier{chown("opt", 1, 1), chown("opt/a", 1, 2), chown("opt/a/b", 2, 2), chown("opt/a.txt", 3, 4), chown("opt/link", 5, 6)},
		[]applier{createFile("opt/a/b/new", "new", 0o644), chown("opt/a/b/new", 7, 7)},
	)
}

// checkDirectoryPermissionOnCommit: the modes of directories, made and
// copied up (by creating files in them), are kept across commits.
func checkDirectoryPermissionOnCommit(t *testing.T, h *harness) {
	checkLayers(t, h, 1,
		[]applier{
			createDir("dir1", 0o700), createDir("dir2", 0o750), createDir("dir3", 0o711),
			createDir("dir4", 0o555), createDir("tmp", 0o1777), createDir("setgid", 0o2775),
			createDir("dir2/sub", 0o700), chown("dir2", 1, 1),
		},
		[]applier{
			createFile("dir1/file1", "1", 0o644), createFile("dir2/sub/file2", "2", 0o600),
			createFile("dir3/file3", "3", 0o644), createFile("dir4/file4", "4", 0o400),
			createFile("tmp/file5", "5", 0o644), createDir("setgid/sub", 0o755),
		},
		[]applier{chmod("dir1", 0o750), chmod("dir2/sub", 0o755), createDir("dir5", 0o705)},
	)
}

// check128LayersMount: 128 committed layers, each adding a file and
// most changing or removing one of the layers below; the merged view
// equals a flat copy with the same changes.
func check128LayersMount(t *testing.T, h *harness) {
	layers := [][]applier{{
		createDir("dir", 0o755), createDir("bin", 0o755),
		createFile("bottom", "layer 0", 0o644), createFile("bin/tool", "v0", 0o755),
	}}
	for i := 1; i < 128; i++ {
		l := []applier{createFile(fmt.Sprintf("dir/layer-%03d", i), fmt.Sprintf("added by layer %d", i), 0o644)}
		switch {
		case i%2 == 0:
			l = append(l, createFile("bottom", fmt.Sprintf("changed by layer %d", i), 0o644))
		case i%10 == 5:
			l = append(l, remove(fmt.Sprintf("dir/layer-%03d", i-4)))
		case i%16 == 7:
			l = append(l, symlink(fmt.Sprintf("dir/layer-%03d", i), fmt.Sprintf("link-%03d", i)))
		case i%16 == 13:
			l = append(l, createFile("bin/tool", strings.Repeat(fmt.Sprint(i), 1000), 0o700))
		case i%32 == 3:
			l = append(l, chmod("dir", 0o750+os.FileMode(i%2)))
		}
		layers = append(layers, l)
	}
	top := checkLayers(t, h, 64, layers...)

	// The active stack on top of them all reads the same.
	m := h.prepare(t, "top", top)
	if len(m.Lowers) != 128 {
		t.Errorf("stack on 128 layers has %d lowers", len(m.Lowers))
	}
	dir := h.mount(t, m)
	if b, err := os.ReadFile(filepath.Join(dir, "bottom")); err != nil || !bytes.Equal(b, []byte("changed by layer 126")) {
		t.Errorf("bottom: got %q, %v; want the last change", b, err)
	}
}

// TestMountsKernelOverlay mounts what Mounts describes for each kind of
// snapshot with kernel overlayfs, taking the options as they are: the
// package doc promises that kernel overlayfs serves the same
// description as strata does.
func TestMountsKernelOverlay(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{ctx: ctx, s: s, mounter: mounter{write: mountOverlay, read: mountOverlay}}
	h.commitLayer(t, "base", "", createFile("foo", "foo", 0o644))
	h.commitLayer(t, "second", "base", createFile("bar", "bar", 0o644))
	h.view(t, "view-of-base", "base")
	h.view(t, "view-of-second", "second")
	h.view(t, "view-of-nothing", "")
	h.prepare(t, "active-on-nothing", "")
	h.prepare(t, "active-on-base", "base")

	for _, key := range []string{"base", "second", "view-of-base", "view-of-second", "view-of-nothing", "active-on-nothing", "active-on-base"} {
		t.Run(key, func(t *testing.T) {
			m, err := s.Mounts(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			data := strings.Join(m.Options(), ",")
			if err := unix.Mount("overlay", dir, "overlay", 0, data); err != nil {
				t.Fatalf("mount -t overlay -o %s: %v", data, err)
			}
			unmount(t, dir)
		})
	}
}
