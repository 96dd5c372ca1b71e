package snapshot

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/snapshot/layer"
)

// TestCommitLayerRedirectMetacopy: CommitLayer gives layer.Write the
// snapshot's parent layers, so an upper that kernel overlayfs made with
// redirect_dir=on,metacopy=on (a renamed lower directory, a chmod without
// data copy) commits to a layer with the directory's contents and the
// file's data in it.
func TestCommitLayerRedirectMetacopy(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts kernel overlayfs")
	}
	ctx := context.Background()
	s := newStore(t)
	base := applyBlob(t, s, makeTar(t, baseLayer...), "")
	m, err := s.Prepare(ctx, "work", base.Name, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Lowers) != 1 {
		t.Fatalf("lowers %v, want the base layer", m.Lowers)
	}
	mnt := t.TempDir()
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s,redirect_dir=on,metacopy=on,index=off", m.Lowers[0], m.Upper, m.Work)
	if err := unix.Mount("overlay", mnt, "overlay", 0, opts); err != nil {
		t.Skipf("kernel overlayfs: %v", err)
	}
	mounted := true
	defer func() {
		if mounted {
			unix.Unmount(mnt, 0)
		}
	}()
	if out, err := exec.Command("sh", "-ec", "cd "+mnt+"; mv etc etc2; chmod 600 bin/ls").CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	mounted = false

	info, err := s.CommitLayer(ctx, "work", LayerOptions{Compression: layer.Uncompressed})
	if err != nil {
		t.Fatalf("commit layer: %v", err)
	}
	dir := filepath.Join(s.snapshotDir(info.ID), fsDir)
	for p, want := range map[string]string{"etc2/hosts": "127.0.0.1 localhost\n", "bin/ls": "ls"} {
		got, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil || string(got) != want {
			t.Errorf("committed layer's %s: %q, %v; want %q", p, got, err, want)
		}
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "bin/ls"), &st); err != nil || st.Mode&0o7777 != 0o600 {
		t.Errorf("committed layer's bin/ls: mode %o, %v; want 600", st.Mode&0o7777, err)
	}
	if err := unix.Lstat(filepath.Join(dir, "etc"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR {
		t.Errorf("committed layer's etc: mode %o, %v; want a whiteout", st.Mode, err)
	}
	for _, p := range []string{"etc2", "bin/ls"} {
		for _, x := range []string{"trusted.overlay.redirect", "trusted.overlay.metacopy"} {
			if _, err := unix.Lgetxattr(filepath.Join(dir, p), x, nil); err == nil {
				t.Errorf("committed layer's %s carries %s", p, x)
			}
		}
	}
}
