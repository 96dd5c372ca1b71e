package debfixture

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestNameKeysTheCommandLine(t *testing.T) {
	a := Bookworm
	b := Bookworm
	b.Mirror = "http://mirror.invalid/debian"
	c := Bookworm
	c.Variant = "buildd"
	if a.Name() != Bookworm.Name() {
		t.Errorf("Name is not stable: %s, %s", a.Name(), Bookworm.Name())
	}
	for _, o := range []Rootfs{b, c} {
		if o.Name() == a.Name() {
			t.Errorf("%+v and %+v share the cache name %s", a, o, a.Name())
		}
	}
	if !strings.HasPrefix(a.Name(), "debootstrap-minbase-bookworm-") || !strings.HasSuffix(a.Name(), ".tar") {
		t.Errorf("Name %q: want debootstrap-minbase-bookworm-ARCH-HASH.tar", a.Name())
	}
}

// TestOpenRemovesLeftovers: a killed build's directory goes when the
// cache is next opened; complete entries stay.
func TestOpenRemovesLeftovers(t *testing.T) {
	dir := t.TempDir()
	left := filepath.Join(dir, tempPrefix+"123", "rootfs", "etc")
	if err := os.MkdirAll(left, 0o755); err != nil {
		t.Fatal(err)
	}
	done := filepath.Join(dir, Bookworm.Name())
	if err := os.WriteFile(done, []byte("tar"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Open(dir, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := os.Stat(filepath.Join(dir, tempPrefix+"123")); !os.IsNotExist(err) {
		t.Errorf("leftover build directory: stat err %v, want it gone", err)
	}
	// A cached tarball is returned as it is: no debootstrap runs.
	got, err := c.RootfsTarball(context.Background(), Bookworm)
	if err != nil || got != done {
		t.Errorf("RootfsTarball: %q, %v; want the cached %q", got, err, done)
	}
}

// TestOpenWaitsForTheLock: a second Open waits until the first closes.
func TestOpenWaitsForTheLock(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	opened := make(chan error, 1)
	go func() {
		c2, err := Open(dir, nil)
		if err == nil {
			err = c2.Close()
		}
		opened <- err
	}()
	select {
	case err := <-opened:
		t.Fatalf("second Open returned (%v) while the first held the lock", err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-opened:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("second Open still waits after the first closed")
	}
}

func TestDebsFindsOneVersion(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	debs := filepath.Join(dir, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		t.Fatal(err)
	}
	one := filepath.Join(debs, "hello_2.10-3_amd64.deb")
	if err := os.WriteFile(one, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := c.Debs(context.Background(), "hello")
	if err != nil || len(got) != 1 || got[0] != one {
		t.Fatalf("Debs(hello): %q, %v; want [%s]", got, err, one)
	}
	if err := os.WriteFile(filepath.Join(debs, "hello_2.11-1_amd64.deb"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Debs(context.Background(), "hello"); err == nil || !strings.Contains(err.Error(), "2 versions of hello") {
		t.Errorf("Debs(hello) with two versions cached: err %v, want one naming both", err)
	}
}
