package buildctx

import (
	"os"
	"path/filepath"
	"testing"
)

const passwd = "root:x:0:0:root:/root:/bin/sh\n# comment\napp:x:1000:1001::/home/app:/bin/sh\nbad:x:notanumber:1:::\n"
const group = "root:x:0:\nstaff:x:50:app\napp:x:1001:\n"

func TestLookupOwner(t *testing.T) {
	rootfs := t.TempDir()
	writeTree(t, rootfs, map[string]file{"etc/passwd": {Data: passwd}, "etc/group": {Data: group}})
	for spec, want := range map[string][2]int{
		"app":           {1000, 1001}, // primary group from passwd
		"app:staff":     {1000, 50},
		"app:7":         {1000, 7},
		"1234":          {1234, 1234}, // docker: a uid alone is also the gid
		"1234:staff":    {1234, 50},
		"0:0":           {0, 0},
		"root":          {0, 0},
		"4294967294:12": {4294967294, 12},
	} {
		uid, gid, err := LookupOwner(rootfs, spec)
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		if uid != want[0] || gid != want[1] {
			t.Errorf("%s: %d:%d, want %d:%d", spec, uid, gid, want[0], want[1])
		}
	}
	for spec, msg := range map[string]string{
		"nobody":     `no user "nobody" in the image's /etc/passwd`,
		"app:wheel":  `no group "wheel" in the image's /etc/group`,
		"bad":        `no user "bad"`,
		"":           "want user, user:group",
		"app:":       "want user, user:group",
		"4294967295": `no user "4294967295"`,
	} {
		_, _, err := LookupOwner(rootfs, spec)
		wantErr(t, err, msg)
	}
	// No /etc/passwd at all (FROM scratch): numbers only.
	empty := t.TempDir()
	if u, g, err := LookupOwner(empty, "5:6"); err != nil || u != 5 || g != 6 {
		t.Fatalf("scratch 5:6: %d:%d %v", u, g, err)
	}
	_, _, err := LookupOwner(empty, "app")
	wantErr(t, err, `no user "app"`)
}

// The image's /etc/passwd is a symlink (or /etc is) to the host's: the
// host's file must not be read. The host has root in its /etc/passwd, so
// a "root" answer would show it was.
func TestLookupOwnerHostileSymlinks(t *testing.T) {
	if _, err := os.Stat("/etc/passwd"); err != nil {
		t.Fatalf("the host has no /etc/passwd to be hostile with: %v", err)
	}
	for name, tree := range map[string]map[string]file{
		"passwd-abs":   {"etc/passwd": {Link: "/etc/passwd"}},
		"passwd-up":    {"etc/passwd": {Link: "../../../../../../../../etc/passwd"}},
		"etc-abs":      {"etc": {Link: "/etc"}},
		"etc-up":       {"etc": {Link: "../../../../../../../../etc"}},
		"passwd-proc":  {"etc/passwd": {Link: "/proc/self/root/etc/passwd"}},
		"passwd-chain": {"etc/passwd": {Link: "/x"}, "x": {Link: "/etc/passwd"}},
	} {
		t.Run(name, func(t *testing.T) {
			rootfs := t.TempDir()
			writeTree(t, rootfs, tree)
			uid, gid, err := LookupOwner(rootfs, "root")
			if err == nil {
				t.Fatalf("resolved root to %d:%d: the host's /etc/passwd was read", uid, gid)
			}
			t.Log(err)
		})
	}
	// A symlink that stays in the image is followed there.
	rootfs := t.TempDir()
	writeTree(t, rootfs, map[string]file{
		"etc/passwd":       {Link: "/usr/share/passwd"},
		"usr/share/passwd": {Data: passwd},
		"etc/group":        {Link: "../usr/share/group"},
		"usr/share/group":  {Data: group},
	})
	if u, g, err := LookupOwner(rootfs, "app:staff"); err != nil || u != 1000 || g != 50 {
		t.Fatalf("app:staff through in-image symlinks: %d:%d %v", u, g, err)
	}
	// A directory or a fifo as /etc/passwd is an error, not a hang.
	odd := t.TempDir()
	writeTree(t, odd, map[string]file{"etc/passwd": {Dir: true}})
	_, _, err := LookupOwner(odd, "app")
	wantErr(t, err, "not a regular file")
	fifo := t.TempDir()
	os.MkdirAll(filepath.Join(fifo, "etc"), 0o755)
	if err := mkfifo(filepath.Join(fifo, "etc/passwd")); err != nil {
		t.Fatal(err)
	}
	_, _, err = LookupOwner(fifo, "app")
	wantErr(t, err, "not a regular file")
}
