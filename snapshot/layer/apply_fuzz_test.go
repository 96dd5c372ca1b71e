//go:build linux

package layer

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// atFuzzSeeds are layers to start FuzzApply from: valid ones of every
// kind of entry, each compression, and the hostile ones.
func atFuzzSeeds(t testing.TB) [][]byte {
	valid := [][]atEntry{
		{
			atDir("d").mod(0o750).own(1, 2).at(atT1),
			atFile("d/f", "hello").mod(0o4755).x("user.a", "b"),
			atSym("d/l", "../outside/file"),
			atLink("d/h", "d/f"),
			atFifo("p"),
			atChar("c", 1, 3),
			atDir("./").mod(0o755),
		},
		{atWh("gone"), atFile("d/.wh..wh..opq", ""), atFile("d/a", "a"), atWh("d/b")},
		{atFile("d/a", "a"), atWh("d"), atFile("x", "x"), atWh("x"), atWh("y"), atDir("y")},
		{atFile("l/deep/file", ""), atFile("d/f", "").x("trusted.overlay.opaque", "y")},
	}
	var seeds [][]byte
	for _, entries := range valid {
		seeds = append(seeds, atTar(t, entries...))
	}
	seeds = append(seeds, atCompress(t, Gzip, seeds[0]), atCompress(t, Zstd, seeds[1]), atSparseTar(t, 1<<20))
	for _, h := range atHostile(t) {
		if len(h.blob) <= 4<<10 { // the fuzzer minimizes byte by byte
			seeds = append(seeds, h.blob)
		}
	}
	return seeds
}

// FuzzApply applies arbitrary bytes as a layer beside a sentinel tree
// and a lower layer, and checks that Apply never writes outside its
// directory, whatever it decides, and that what it accepts is a layer
// whose digests DiffID agrees with.
func FuzzApply(f *testing.F) {
	for _, seed := range atFuzzSeeds(f) {
		f.Add(seed)
	}
	// One sandbox per process, its layer directories in "layer": an
	// iteration costs an Apply and a walk of a small tree. In memory
	// where there is a tmpfs: the fuzzer minimizes an input with
	// thousands of runs of it.
	base, err := os.MkdirTemp("/dev/shm", "strata-fuzz-apply-")
	if err != nil {
		base = atTempDir(f)
	} else {
		f.Cleanup(func() { atRemove(f, base) })
	}
	sandbox, layers, lower := atSandboxIn(f, base)
	before := atSnapshot(f, sandbox)
	canary := filepath.Join("/tmp", atCanary)
	f.Fuzz(func(t *testing.T, blob []byte) {
		layer, err := os.MkdirTemp(layers, "")
		if err != nil {
			t.Fatal(err)
		}
		defer atRemove(t, layer)
		res, err := Apply(context.Background(), layer, bytes.NewReader(blob), ApplyOptions{
			Lowers: []string{lower},
			Warn:   func(string) {},
		})
		atCompareTree(t, atSnapshot(t, sandbox), before)
		if names, _ := os.ReadDir(layers); len(names) != 1 {
			t.Errorf("%s holds %d entries, want only this iteration's layer", layers, len(names))
		}
		if _, err := os.Lstat(canary); err == nil {
			os.Remove(canary)
			t.Errorf("%s was created", canary)
		}
		if err != nil {
			if !strings.HasPrefix(err.Error(), "apply layer: ") {
				t.Errorf("error %q does not start with \"apply layer: \"", err)
			}
			return
		}
		var st unix.Stat_t
		if err := unix.Lstat(layer, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			t.Errorf("the layer directory is no longer a directory: %v", err)
		}
		id, size, err := DiffID(bytes.NewReader(blob))
		if err != nil || id != res.DiffID || size != res.Size {
			t.Errorf("DiffID = %s, %d, %v; Apply said %s, %d", id, size, err, res.DiffID, res.Size)
		}
		if res.Digest != atSHA256(blob) || res.BlobSize != int64(len(blob)) {
			t.Errorf("Digest, BlobSize = %s, %d; want %s, %d", res.Digest, res.BlobSize, atSHA256(blob), len(blob))
		}
	})
}

// atRemove removes a layer directory, whatever modes it was left with.
func atRemove(t testing.TB, dir string) {
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
}
