//go:build linux

package cow_test

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/cow"
)

// Setattr's requests that no plain chmod or chown makes: clearing set-ID
// bits (FATTR_KILL_SUIDGID, which a kernel sends under
// HANDLE_KILLPRIV_V2) and a change of ctime alone (FATTR_CTIME). A lower
// file is copied up with its data, as by any attribute change.
func TestSetattrKillSuidGidAndCtime(t *testing.T) {
	// c is in the upper already, so that no copy-up changes its ctime.
	f := newFixture(t, []fixtureEntry{{path: "c", kind: kFile, content: "data"}}, []fixtureEntry{
		{path: "gx", kind: kFile, content: "data", mode: 0o6755},   // set-group-ID and group-executable
		{path: "lock", kind: kFile, content: "data", mode: 0o2644}, // set-group-ID without group-execute: mandatory locking, kept
	})
	for _, tc := range []struct {
		path string
		a    cow.SetAttr
		mode uint32
	}{
		{"gx", cow.SetAttr{KillSuidGid: true}, 0o755},
		{"lock", cow.SetAttr{KillSuidGid: true}, 0o2644},
		{"c", cow.SetAttr{Ctime: true}, 0o644},
	} {
		e, err := f.lookup(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		before := e.Stat.Ctim
		time.Sleep(10 * time.Millisecond) // a ctime the clock can tell apart
		if err := f.s.Setattr(tc.path, &e, tc.a, -1); err != nil {
			t.Fatalf("setattr %s %+v: %v", tc.path, tc.a, err)
		}
		got, err := f.lookup(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		if !got.InUpper() || got.Stat.Mode&0o7777 != tc.mode || got.Stat.Size != 4 {
			t.Errorf("%s after %+v: layer %d, mode %04o, size %d; want the upper, %04o, 4", tc.path, tc.a, got.Layer, got.Stat.Mode&0o7777, got.Stat.Size, tc.mode)
		}
		if unix.TimespecToNsec(got.Stat.Ctim) <= unix.TimespecToNsec(before) {
			t.Errorf("%s after %+v: ctime %v not after %v", tc.path, tc.a, got.Stat.Ctim, before)
		}
		if e.Stat.Ctim != got.Stat.Ctim || e.Stat.Mode != got.Stat.Mode {
			t.Errorf("%s: the entry Setattr refreshed (mode %o) is not what a lookup finds (mode %o)", tc.path, e.Stat.Mode, got.Stat.Mode)
		}
	}
}
