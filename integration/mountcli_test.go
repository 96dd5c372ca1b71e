package integration

// strata mount and unmount as a user meets them: a daemon that was
// killed, a mountpoint that is wrong, and the defaults of a mount on a
// directory other users may reach.

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// cliStack makes a store with one stack, NAME, on a small base layer.
func cliStack(t *testing.T, name string) *cliStore {
	t.Helper()
	s := newCLIStore(t)
	blob, _ := cliLayer(t, cliBaseFiles, "gzip")
	f := filepath.Join(t.TempDir(), "base.tar.gz")
	if err := os.WriteFile(f, blob, 0o644); err != nil {
		t.Fatal(err)
	}
	base := s.mustLine("layer", "apply", f)
	s.mustLine("create", "--name", name, base)
	return s
}

// After kill -9 of the mount daemon, ls and ps say so, and unmount
// removes the dead mount (which answers ENOTCONN) and succeeds.
func TestCLIMountDeadDaemon(t *testing.T) {
	s := cliStack(t, "c")
	mnt, w := s.mount("c")
	w.kill()
	if !w.wait(daemonExitTimeout) {
		t.Fatalf("daemon %d did not die", w.pid)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(mnt, "etc"), &st); err != unix.ENOTCONN {
		t.Fatalf("stat under a dead mount: got %v, want ENOTCONN", err)
	}
	if out := s.must("ls"); !strings.Contains(out, mnt+" (daemon dead") {
		t.Errorf("strata ls does not show the dead mount of c:\n%s", out)
	}
	r := s.run("unmount", "c")
	if r.code != 0 {
		t.Fatalf("strata unmount c after its daemon died: %v", r)
	}
	if !strings.Contains(r.stderr, "had died") {
		t.Errorf("strata unmount c: stderr %q does not say the daemon had died", r.stderr)
	}
	if _, ok := mountEntry(mnt); ok {
		t.Fatalf("strata unmount c left the dead mount at %s", mnt)
	}
	if l := s.list(); len(l) != 2 || l[0].MountedAt != "" && l[1].MountedAt != "" {
		t.Errorf("after unmount, ls still shows a mount: %+v", l)
	}
	if r := s.run("unmount", "c"); r.code == 0 || !strings.Contains(r.stderr, "not mounted") {
		t.Errorf("a second unmount: got %v, want an error saying c is not mounted", r)
	}
	// It mounts again, with its files.
	mnt, w = s.mount("c")
	if b, err := os.ReadFile(filepath.Join(mnt, "etc/hostname")); err != nil || string(b) != "base\n" {
		t.Errorf("remounted c: etc/hostname = %q, %v", b, err)
	}
	s.unmount("c", w)
}

// A missing mountpoint or one that is a file is refused with an error
// that says so; no daemon and no mount is left, and the stack is not
// recorded as mounted.
func TestCLIMountBadDir(t *testing.T) {
	s := cliStack(t, "c")
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ dir, want string }{
		{filepath.Join(dir, "missing"), "does not exist"},
		{file, "is not a directory"},
	} {
		r := s.run("mount", "c", tc.dir)
		if r.code == 0 || !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, tc.dir) {
			t.Errorf("strata mount c %s: got %v, want an error naming it and saying %q", tc.dir, r, tc.want)
		}
		if _, ok := mountEntry(tc.dir); ok {
			t.Errorf("strata mount c %s left a mount there", tc.dir)
		}
		if l := s.inspect("c")[0]; l.MountedAt != "" || l.DaemonPid != 0 {
			t.Errorf("after a refused mount, c shows as mounted: %+v", l)
		}
	}
	if got := procsMentioning(s.root); len(got) != 0 {
		t.Errorf("daemons left running after refused mounts: %v", got)
	}
}

// On a directory of the user's, a mount is nosuid,nodev unless --suid or
// --dev: an image's set-user-ID root binary and its device nodes are
// inert for the other local users who can reach the directory. The
// default mountpoint, inside the store, keeps them working.
func TestCLIMountSafeDefaults(t *testing.T) {
	s := cliStack(t, "c")
	// A set-user-ID root copy of id(1) and a device node, written into
	// the stack through a mount of it.
	mnt, w := s.mount("c")
	idBin, err := exec.LookPath("id")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(idBin)
	if err != nil {
		t.Fatal(err)
	}
	must(os.WriteFile(filepath.Join(mnt, "suid-id"), b, 0o755))
	must(unix.Chmod(filepath.Join(mnt, "suid-id"), 0o4755)) // os.Chmod drops bits it has no FileMode for
	must(unix.Mknod(filepath.Join(mnt, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	s.unmount("c", w)

	probe := func(mnt string) (euid string, devErr error) {
		out, err := procRunAsNobody(filepath.Join(mnt, "suid-id"), "-u")
		if err != nil {
			t.Fatalf("run suid-id as nobody: %v %s", err, out)
		}
		f, err := os.OpenFile(filepath.Join(mnt, "null"), os.O_WRONLY, 0)
		if err == nil {
			f.Close()
		}
		return strings.TrimSpace(out), err
	}
	for _, tc := range []struct {
		name     string
		args     []string
		own      bool // mounted on a directory of the test's
		euid     string
		devWorks bool
	}{
		{"own dir", nil, true, "65534", false},
		{"own dir --suid --dev", []string{"--suid", "--dev"}, true, "0", true},
		{"own dir --suid", []string{"--suid"}, true, "0", false},
		{"default mountpoint", nil, false, "0", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"mount", "c"}, tc.args...)
			if tc.own {
				args = append(args, filepath.Join(tempBase(t), "m"))
				must(os.Mkdir(args[len(args)-1], 0o755))
			}
			mnt := s.mustLine(args...)
			in := s.inspect("c")[0]
			w := watchDaemon(in.DaemonPid, "c", mnt)
			defer s.unmount("c", w)
			e, ok := mountEntry(mnt)
			if !ok {
				t.Fatalf("%s is not mounted", mnt)
			}
			if hasOpt(e.mountOpts, "nosuid") != (tc.euid != "0") || hasOpt(e.mountOpts, "nodev") != !tc.devWorks {
				t.Errorf("mount options %v: want nosuid=%v nodev=%v", e.mountOpts, tc.euid != "0", !tc.devWorks)
			}
			if !tc.own {
				// Reaching it takes getting through the store's root.
				st, err := os.Stat(s.root)
				if err != nil || st.Mode().Perm()&0o077 != 0 {
					t.Fatalf("store root %s: mode %v, %v; want 0700", s.root, st.Mode(), err)
				}
				// The probe runs as nobody: let it through for the test.
				must(os.Chmod(s.root, 0o711))
				defer os.Chmod(s.root, 0o700)
			}
			euid, devErr := probe(mnt)
			if euid != tc.euid {
				t.Errorf("set-user-ID root id run by nobody: euid %s, want %s", euid, tc.euid)
			}
			if (devErr == nil) != tc.devWorks {
				t.Errorf("open of the device node: %v, want it to work: %v", devErr, tc.devWorks)
			}
		})
	}
}
