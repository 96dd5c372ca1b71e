package oci

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestFIFOBlob checks that a FIFO in place of a blob is refused, not
// opened: opening it would block until a writer came.
func TestFIFOBlob(t *testing.T) {
	dir := t.TempDir()
	bi := simpleImage(linuxAMD64).build(t)
	writeLayout(t, dir, map[string]builtImage{"latest": bi})
	name := blobFile(dir, bi.layers[0].Digest)
	if err := os.Remove(name); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(name, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := readSource(dir, &linuxAMD64, t.TempDir())
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") || !strings.Contains(err.Error(), string(bi.layers[0].Digest)) {
			t.Fatalf("got %v, want a refusal naming the blob", err)
		}
	case <-time.After(10 * time.Second):
		// Unblock the reader before failing.
		f, err := os.OpenFile(name, os.O_WRONLY, 0)
		t.Fatal("reading a layout with a FIFO blob blocked", errors.Join(err, f.Close()))
	}
}
