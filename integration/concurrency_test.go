package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCLILongCommitDoesNotBlockLs checks the store's promise that a long
// operation holds the metadata only for its short first and last steps:
// while `strata commit` writes a large layer, `strata ls` answers at
// once, many times over.
func TestCLILongCommitDoesNotBlockLs(t *testing.T) {
	s := newCLIStore(t)
	s.must("create", "--name", "big")
	dir, _ := s.mount("big")
	// 256 MiB of incompressible data: gzip makes the commit take seconds.
	buf := make([]byte, 1<<20)
	for i := 0; i < 8; i++ {
		f, err := os.Create(filepath.Join(dir, "blob"+string(rune('a'+i))))
		if err != nil {
			t.Fatal(err)
		}
		for j := 0; j < 32; j++ {
			_, _ = rand.Read(buf)
			if _, err := f.Write(buf); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	cmd, stdout, stderr, err := cliCommand("", cliOpts{}, s.args([]string{"commit", "-q", "big"})...)
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(stdout.Name())
	defer os.Remove(stderr.Name())
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	var (
		lsRuns  int
		slowest time.Duration
	)
	for running := true; running; {
		select {
		case err := <-done:
			if err != nil {
				b, _ := os.ReadFile(stderr.Name())
				t.Fatalf("commit: %v\n%s", err, b)
			}
			running = false
		default:
			t0 := time.Now()
			s.must("ls", "-q")
			if d := time.Since(t0); d > slowest {
				slowest = d
			}
			lsRuns++
		}
	}
	commitTime := time.Since(start)
	t.Logf("commit took %v; %d ls runs beside it, the slowest %v", commitTime, lsRuns, slowest)
	if commitTime < time.Second {
		t.Skipf("the commit took only %v: too fast to test beside it", commitTime)
	}
	// A commit that held the store throughout would let one ls through,
	// at its end.
	if lsRuns < 3 {
		t.Errorf("only %d ls runs finished during a %v commit: the commit holds the store", lsRuns, commitTime)
	}
	// Each ls waits at most for one short step of the commit, never for
	// the whole of it.
	if slowest > commitTime/2 {
		t.Errorf("an ls beside the commit took %v, over half the commit's %v: the commit holds the store", slowest, commitTime)
	}
}

// TestCLICommitWhileWriting commits a mounted stack again and again while
// a writer rewrites files through the mount (open with O_TRUNC, write in
// pieces, close), as a program in the container would. The daemon
// freezes changes for each commit and waits for open files to be closed,
// so every committed layer holds each file whole: one version, all its
// bytes.
func TestCLICommitWhileWriting(t *testing.T) {
	s := newCLIStore(t)
	s.must("create", "--name", "busy")
	dir, _ := s.mount("busy")
	const (
		files = 4
		size  = 256 << 10
	)
	stop := make(chan struct{})
	writerDone := make(chan error, 1)
	go func() {
		buf := make([]byte, 16<<10)
		for v := 0; ; v++ {
			select {
			case <-stop:
				writerDone <- nil
				return
			default:
			}
			for i := range buf {
				buf[i] = byte('a' + v%26)
			}
			f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("f%d", v%files)), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
			if err != nil {
				writerDone <- err
				return
			}
			for n := 0; n < size; n += len(buf) {
				if _, err := f.Write(buf); err != nil {
					f.Close()
					writerDone <- err
					return
				}
			}
			if err := f.Close(); err != nil {
				writerDone <- err
				return
			}
		}
	}()
	defer func() {
		close(stop)
		if err := <-writerDone; err != nil {
			t.Errorf("writer: %v", err)
		}
	}()
	time.Sleep(50 * time.Millisecond)
	for c := 0; c < 5; c++ {
		r := s.run("commit", "-q", "busy")
		if r.code != 0 {
			t.Fatalf("%v", r)
		}
		layer := strings.TrimSpace(r.stdout)
		out := filepath.Join(t.TempDir(), "layer.tar")
		s.must("layer", "export", layer, out)
		checkWholeFiles(t, out, size)
	}
}

// checkWholeFiles reads a layer tarball and checks that every regular
// file in it has size bytes, all the same.
func checkWholeFiles(t *testing.T, layerPath string, size int64) {
	t.Helper()
	f, err := os.Open(layerPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg || strings.Contains(h.Name, ".wh.") {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(b)) != size {
			t.Errorf("%s: %d bytes in the layer, want %d: a file caught mid-write", h.Name, len(b), size)
			continue
		}
		if n := bytes.Count(b, b[:1]); n != len(b) {
			t.Errorf("%s: %d of %d bytes are %q: two versions mixed", h.Name, n, len(b), b[:1])
		}
	}
}
