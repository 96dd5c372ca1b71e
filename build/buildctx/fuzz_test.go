package buildctx

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzFromTar unpacks arbitrary context tars: whatever the bytes, nothing
// may appear beside the temporary directory, and a refused tar leaves
// nothing behind.
func FuzzFromTar(f *testing.F) {
	for _, entries := range hostile() {
		f.Add(makeTar(f, false, entries...))
	}
	f.Add(makeTar(f, true, goodEntries()...))
	f.Fuzz(func(t *testing.T, b []byte) {
		outer := t.TempDir()
		tmp := filepath.Join(outer, "tmp")
		if err := os.Mkdir(tmp, 0o755); err != nil {
			t.Fatal(err)
		}
		c, err := FromTar(bytes.NewReader(b), tmp)
		if err == nil {
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
		}
		ents, _ := os.ReadDir(outer)
		if len(ents) != 1 || ents[0].Name() != "tmp" {
			t.Fatalf("beside the temporary directory: %v", ents)
		}
		if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
			t.Fatalf("left in the temporary directory: %v", ents)
		}
	})
}
