// Package integration holds black-box tests of strata's built binaries.
//
// TestMain builds the binaries once into a temporary directory. Set
// STRATA_FUSE to an existing binary with a fuse-overlayfs compatible command
// line (for example fuse-overlayfs itself) to run the mount tests against it
// instead; this is how the harness is checked against a peer.
package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// strataFuse is the path of the mount program under test.
var strataFuse string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if p := os.Getenv("STRATA_FUSE"); p != "" {
		strataFuse = p
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "strata-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	strataFuse = filepath.Join(dir, "strata-fuse")
	cmd := exec.Command("go", "build", "-o", strataFuse, "github.com/strata-fs/strata/cmd/strata-fuse")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build strata-fuse:", err)
		return 1
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
