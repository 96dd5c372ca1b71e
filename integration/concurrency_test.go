package integration

import (
	"crypto/rand"
	"os"
	"path/filepath"
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
	if lsRuns < 3 {
		t.Skipf("the commit took only %v: too fast to test beside it", commitTime)
	}
	// Each ls waits at most for one short step of the commit, never for
	// the whole of it.
	if slowest > commitTime/2 {
		t.Errorf("an ls beside the commit took %v, over half the commit's %v: the commit holds the store", slowest, commitTime)
	}
}
