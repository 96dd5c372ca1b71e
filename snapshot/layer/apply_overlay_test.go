package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/ovl"
)

// TestApplyStripsRedirectMetacopy: a hostile layer that carries the
// kernel's redirect and metacopy xattrs (and their userxattr and escaped
// forms) to point its files and directories at another layer's data gets
// none of them on disk: mounted over that layer with redirect_dir=on,
// metacopy=on, which follow them, its entries show their own contents.
func TestApplyStripsRedirectMetacopy(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: trusted.* xattrs and kernel overlayfs")
	}
	lower := t.TempDir()
	writeTestBuild(t, lower, []writeTestNode{
		wtFile("secret", "SECRET"),
		wtFile("secretdir/key", "KEY"),
	})
	hostile := map[string]string{
		ovl.XattrRedirect:                      "/secret",
		ovl.XattrUserRedirect:                  "/secret",
		ovl.XattrMetacopy:                      "",
		ovl.XattrUserMetacopy:                  "",
		"trusted.overlay.overlay.redirect":     "/secret", // the kernel's escaped form
		"trusted.overlay.overlay.metacopy":     "",
		ovl.XattrOrigin:                        "12345678",
		ovl.XattrOpaque:                        "y",
		"user.fuseoverlayfs.opaque":            "y",
		"user.kept":                            "k", // an ordinary xattr stays
		"trusted.overlay":                      "not in the namespace",
		"trusted.overlayfoo.redirect":          "/not/overlay",
		"user.overlay.strata.origin.something": "x",
	}
	dirHostile := map[string]string{}
	for k, v := range hostile {
		dirHostile[k] = v
	}
	dirHostile[ovl.XattrRedirect] = "/secretdir"
	dirHostile[ovl.XattrUserRedirect] = "/secretdir"
	delete(dirHostile, ovl.XattrOpaque)
	delete(dirHostile, "user.fuseoverlayfs.opaque")
	blob := atTar(t,
		// Holes of the secret's size: followed, the metacopy record
		// would show the secret's data.
		atEntry{name: "f", typ: tar.TypeReg, mode: 0o644, data: "\x00\x00\x00\x00\x00\x00", xattrs: hostile},
		atEntry{name: "empty", typ: tar.TypeReg, mode: 0o644, xattrs: hostile},
		atEntry{name: "d/", typ: tar.TypeDir, mode: 0o755, xattrs: dirHostile},
		atEntry{name: "d/own", typ: tar.TypeReg, mode: 0o644, data: "own"},
	)
	dir := t.TempDir()
	if _, err := Apply(context.Background(), dir, bytes.NewReader(blob), ApplyOptions{Lowers: []string{lower}}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"f", "empty", "d"} {
		buf := make([]byte, 4096)
		n, err := unix.Llistxattr(filepath.Join(dir, p), buf)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, x := range strings.Split(string(buf[:n]), "\x00") {
			if x == "" {
				continue
			}
			names = append(names, x)
			if ovl.IsHiddenXattr(x) {
				t.Errorf("%s: the layer set %s", p, x)
			}
		}
		for _, keep := range []string{"user.kept", "trusted.overlay", "trusted.overlayfoo.redirect"} {
			if !strings.Contains("\x00"+string(buf[:n]), "\x00"+keep+"\x00") {
				t.Errorf("%s: xattr %s dropped (has %v)", p, keep, names)
			}
		}
	}

	m := t.TempDir()
	opts := fmt.Sprintf("lowerdir=%s:%s,redirect_dir=on,metacopy=on", dir, lower)
	if err := unix.Mount("overlay", m, "overlay", 0, opts); err != nil {
		t.Skipf("kernel overlayfs (%s): %v", opts, err)
	}
	defer func() {
		if err := unix.Unmount(m, 0); err != nil {
			t.Errorf("unmount: %v", err)
		}
	}()
	for p, want := range map[string]string{"f": "\x00\x00\x00\x00\x00\x00", "empty": ""} {
		got, err := os.ReadFile(filepath.Join(m, p))
		if err != nil || string(got) != want {
			t.Errorf("%s through the mount: %q, %v; want %q", p, got, err, want)
		}
	}
	ents, err := os.ReadDir(filepath.Join(m, "d"))
	if err != nil || len(ents) != 1 || ents[0].Name() != "own" {
		t.Errorf("d through the mount: %v, %v; want only its own entry", ents, err)
	}
	// And strata's own reader agrees.
	v, err := openLowers([]string{dir, lower})
	if err != nil {
		t.Fatal(err)
	}
	defer v.close()
	hits, err := v.lookup("f")
	if err != nil || len(hits) != 1 {
		t.Errorf("lookup f: %d hits, %v; want the layer's own file alone", len(hits), err)
	}
	v.closeHits(hits)
}
