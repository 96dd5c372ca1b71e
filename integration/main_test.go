// Package integration holds black-box tests of strata's built binaries.
//
// TestMain builds the binaries once into a temporary directory. Set
// STRATA_FUSE to an existing binary with a fuse-overlayfs compatible command
// line (for example fuse-overlayfs itself) to run the mount tests against it
// instead; this is how the harness is checked against a peer. Set STRATA to
// an existing strata binary to run the CLI tests against it.
package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

var (
	// strataFuse is the path of the mount program under test.
	strataFuse string
	// strataBin is the path of the strata command under test.
	strataBin string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	bins := []struct {
		path *string
		env  string // names an existing binary to use instead
		pkg  string
	}{
		{&strataFuse, "STRATA_FUSE", "github.com/strata-fs/strata/cmd/strata-fuse"},
		{&strataBin, "STRATA", "github.com/strata-fs/strata/cmd/strata"},
	}
	dir, err := os.MkdirTemp("", "strata-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	for _, b := range bins {
		if p := os.Getenv(b.env); p != "" {
			*b.path = p
			continue
		}
		*b.path = filepath.Join(dir, filepath.Base(b.pkg))
		cmd := exec.Command("go", "build", "-o", *b.path, b.pkg)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n", filepath.Base(b.pkg), err)
			return 1
		}
	}
	return m.Run()
}

// needFUSE skips a test that needs root and /dev/fuse.
func needFUSE(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
}
