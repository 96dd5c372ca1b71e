package integration

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Black-box tests of the mount program as a process: its command line
// forms, daemon life cycle, signals, options and refusal of bad input.

// procStdLayout makes a layout with two lower layers holding a few files.
func procStdLayout(t *testing.T) *layout {
	t.Helper()
	l := newLayout(t, 2)
	writeTree(t, l.lowers[0], map[string]string{
		"top.txt":     "from top\n",
		"shared":      "top wins\n",
		"dir/fromtop": "top dir file\n",
	})
	writeTree(t, l.lowers[1], map[string]string{
		"bottom.txt":   "from bottom\n",
		"shared":       "bottom loses\n",
		"dir/deep.txt": "deep\n",
	})
	return l
}

// procCheckContent reads path and compares it with want.
func procCheckContent(t *testing.T, path, want string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("read %s: %v", path, err)
		return
	}
	if string(got) != want {
		t.Errorf("read %s: got %q, want %q", path, got, want)
	}
}

// procWriteSync creates path with content, fsyncs it when sync is set,
// and closes it.
func procWriteSync(t *testing.T, path, content string, sync bool) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatalf("create %s: %v", path, err)
	}
	if _, err := f.WriteString(content); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatalf("fsync %s: %v", path, err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close %s: %v", path, err)
	}
}

// procRunAsNobody runs a command as uid/gid 65534 with no supplementary
// groups and returns its combined output.
func procRunAsNobody(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// procExpectCleanExit waits for the process to exit with status 0 and for
// its mount to disappear.
func procExpectCleanExit(t *testing.T, p *fuseProc, how string) {
	t.Helper()
	if !p.wait(mountTimeout) {
		t.Fatalf("after %s: daemon (pid %d) still running after %v; stderr:\n%s", how, p.cmd.Process.Pid, mountTimeout, p.stderr())
	}
	if got := p.status(); got != "exit 0" {
		t.Errorf("after %s: daemon ended with %s, want exit 0; stderr:\n%s", how, got, p.stderr())
	}
	if !waitUnmounted(p.mnt, time.Second) {
		t.Errorf("after %s: %s still in /proc/self/mountinfo after the daemon exited", how, p.mnt)
	}
}

// TestProcessBackgroundMount checks the background form: exit 0 only once
// the mount is live and usable, the mountinfo fstype, one st_dev for the
// whole tree, and a clean daemon exit (status 0) on umount.
func TestProcessBackgroundMount(t *testing.T) {
	needFUSE(t)
	l := procStdLayout(t)

	// Become a child subreaper so the daemon, orphaned when the program
	// it was started by exits, is re-parented to this process and its
	// exit status can be collected.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("PR_SET_CHILD_SUBREAPER: %v", err)
	}
	var daemons []int
	t.Cleanup(func() {
		_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
		// Runs after the unmount registered by mountFUSE: reap daemons
		// not waited for (on failure paths) so no zombie is left.
		for _, pid := range daemons {
			procReap(pid, time.Second)
		}
	})

	mountFUSE(t, l.mnt, "-o", l.opts(), l.mnt)

	// Usable at once: no sleep between the exit and these reads.
	procCheckContent(t, filepath.Join(l.mnt, "shared"), "top wins\n")
	procCheckContent(t, filepath.Join(l.mnt, "bottom.txt"), "from bottom\n")
	procCheckContent(t, filepath.Join(l.mnt, "dir", "deep.txt"), "deep\n")

	e, _ := mountEntry(l.mnt)
	if e.fsType != wantFSType() {
		t.Errorf("mountinfo fstype: got %q, want %q", e.fsType, wantFSType())
	}

	// One st_dev across files of both lower layers, the upper layer and
	// the root, equal to the device of the mount.
	procWriteSync(t, filepath.Join(l.mnt, "new.txt"), "upper\n", false)
	for _, rel := range []string{".", "top.txt", "bottom.txt", "dir", "dir/fromtop", "dir/deep.txt", "new.txt"} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(l.mnt, rel), &st); err != nil {
			t.Errorf("lstat %s: %v", rel, err)
			continue
		}
		if st.Dev != e.dev {
			t.Errorf("st_dev of %s: got %d:%d, want %d:%d (mountinfo)", rel, unix.Major(st.Dev), unix.Minor(st.Dev), unix.Major(e.dev), unix.Minor(e.dev))
		}
	}

	// The daemon is the live child of this process serving l.mnt (other
	// tests running in parallel may have children of their own).
	serving := map[int]bool{}
	for _, pid := range procsMentioning(l.mnt) {
		serving[pid] = true
	}
	for _, pid := range childPIDs() {
		if serving[pid] {
			daemons = append(daemons, pid)
		}
	}
	if len(daemons) != 1 {
		t.Errorf("found %d daemon processes (%v) re-parented to the test, want 1", len(daemons), daemons)
	}

	if out, err := exec.Command("umount", l.mnt).CombinedOutput(); err != nil {
		t.Fatalf("umount %s: %v: %s", l.mnt, err, out)
	}
	if !waitUnmounted(l.mnt, time.Second) {
		t.Errorf("%s still mounted after umount", l.mnt)
	}
	for _, pid := range daemons {
		ws, ok := procReap(pid, mountTimeout)
		switch {
		case !ok:
			t.Errorf("daemon pid %d did not exit within %v of umount", pid, mountTimeout)
		case !ws.Exited() || ws.ExitStatus() != 0:
			t.Errorf("daemon pid %d: got wait status %#x (exited=%v status=%d signaled=%v), want exit 0", pid, uint32(ws), ws.Exited(), ws.ExitStatus(), ws.Signaled())
		}
	}
	daemons = nil
}

// procReap waits up to d for the child pid to end and returns its status.
func procReap(pid int, d time.Duration) (unix.WaitStatus, bool) {
	deadline := time.Now().Add(d)
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if err != nil {
			return 0, false
		}
		if got == pid {
			return ws, true
		}
		if time.Now().After(deadline) {
			return 0, false
		}
		time.Sleep(pollInterval)
	}
}

// TestProcessForegroundUnmount checks that with -f the program stays in
// the foreground serving, and that umount or fusermount3 -u ends it with
// status 0.
func TestProcessForegroundUnmount(t *testing.T) {
	needFUSE(t)
	cases := []struct {
		name    string
		unmount []string // command; the mountpoint is appended
	}{
		{"umount", []string{"umount"}},
		{"fusermount3", []string{"fusermount3", "-u"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := exec.LookPath(tc.unmount[0]); err != nil {
				t.Skipf("%s not installed", tc.unmount[0])
			}
			l := procStdLayout(t)
			p := startFUSE(t, l.mnt, "-f", "-o", l.opts(), l.mnt)
			procCheckContent(t, filepath.Join(l.mnt, "top.txt"), "from top\n")
			if p.wait(100 * time.Millisecond) {
				t.Fatalf("-f: program returned (%s) while mounted, want it to stay in the foreground", p.status())
			}
			args := append(tc.unmount[1:], l.mnt)
			if out, err := exec.Command(tc.unmount[0], args...).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v: %s", strings.Join(append(tc.unmount[:1], args...), " "), err, out)
			}
			procExpectCleanExit(t, p, tc.name)
		})
	}
}

// TestProcessSignals checks that SIGTERM and SIGINT unmount and end the
// foreground daemon with status 0.
func TestProcessSignals(t *testing.T) {
	needFUSE(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(unix.SignalName(sig), func(t *testing.T) {
			l := procStdLayout(t)
			p := startFUSE(t, l.mnt, "-f", "-o", l.opts(), l.mnt)
			procWriteSync(t, filepath.Join(l.mnt, "w.txt"), "written\n", false)
			if err := p.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			procExpectCleanExit(t, p, unix.SignalName(sig))
			procCheckContent(t, filepath.Join(l.upper, "w.txt"), "written\n")
		})
	}
}

// TestProcessDebugLog checks that -d logs FUSE requests to stderr and that
// without it nothing of the kind is logged.
func TestProcessDebugLog(t *testing.T) {
	needFUSE(t)
	for _, debug := range []bool{true, false} {
		name := "without-d"
		args := []string{"-f"}
		if debug {
			name = "with-d"
			args = append(args, "-d")
		}
		t.Run(name, func(t *testing.T) {
			l := procStdLayout(t)
			p := startFUSE(t, l.mnt, append(args, "-o", l.opts(), l.mnt)...)
			if _, err := os.ReadDir(filepath.Join(l.mnt, "dir")); err != nil {
				t.Error(err)
			}
			procCheckContent(t, filepath.Join(l.mnt, "dir", "deep.txt"), "deep\n")
			unmountT(t, l.mnt)
			procExpectCleanExit(t, p, "unmount")
			logged := strings.Contains(strings.ToLower(p.stderr()), "lookup")
			if debug && !logged {
				t.Errorf("-d: stderr has no LOOKUP request logged; stderr:\n%s", p.stderr())
			}
			if !debug && logged {
				t.Errorf("without -d: stderr logs requests; stderr:\n%s", p.stderr())
			}
		})
	}
}

// TestProcessMountHelperForm checks `PROG SOURCE MOUNTPOINT -o OPTS`, both
// run directly and through mount.fuse3 with -t TYPE.
func TestProcessMountHelperForm(t *testing.T) {
	needFUSE(t)
	t.Run("direct", func(t *testing.T) {
		l := procStdLayout(t)
		mountFUSE(t, l.mnt, "strata-src", l.mnt, "-o", l.opts())
		procCheckContent(t, filepath.Join(l.mnt, "shared"), "top wins\n")
		procWriteSync(t, filepath.Join(l.mnt, "new"), "x", true)
		procCheckContent(t, filepath.Join(l.upper, "new"), "x")
	})
	t.Run("mount.fuse3", func(t *testing.T) {
		helper, err := exec.LookPath("mount.fuse3")
		if err != nil {
			t.Skip("mount.fuse3 not installed")
		}
		l := procStdLayout(t)
		t.Cleanup(func() { unmountT(t, l.mnt) })
		cmd := exec.Command(helper, "strata-src", l.mnt, "-t", filepath.Base(strataFuse), "-o", l.opts())
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(strataFuse)+string(os.PathListSeparator)+os.Getenv("PATH"))
		out, err := procRunFile(cmd)
		if err != nil {
			t.Fatalf("mount.fuse3: %v; output:\n%s", err, out)
		}
		e, ok := mountEntry(l.mnt)
		if !ok {
			t.Fatalf("mount.fuse3 exited 0 but %s is not mounted; output:\n%s", l.mnt, out)
		}
		if e.fsType != wantFSType() {
			t.Errorf("mountinfo fstype: got %q, want %q", e.fsType, wantFSType())
		}
		procCheckContent(t, filepath.Join(l.mnt, "bottom.txt"), "from bottom\n")
	})
}

// procRunFile runs cmd with its output in a file rather than a pipe (a
// daemon it starts may keep inherited pipes open) and returns the output.
func procRunFile(cmd *exec.Cmd) (string, error) {
	f, err := os.CreateTemp("", "strata-out-")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	err = cmd.Run()
	b, _ := os.ReadFile(f.Name())
	return string(b), err
}

// TestProcessArgForms checks other spellings of the command line:
// relative layer and mountpoint paths, -o given more than once, and the
// options after the mountpoint.
func TestProcessArgForms(t *testing.T) {
	needFUSE(t)
	cases := []struct {
		name string
		dir  bool // run in the layout's base directory
		args func(l *layout) []string
	}{
		{"relative-paths", true, func(l *layout) []string {
			return []string{"-o", "lowerdir=lower0:lower1,upperdir=upper,workdir=work", "mnt"}
		}},
		{"split-o", false, func(l *layout) []string {
			return []string{"-o", "lowerdir=" + l.lowerdir(), "-o", "upperdir=" + l.upper + ",workdir=" + l.work, l.mnt}
		}},
		{"o-after-mountpoint", false, func(l *layout) []string {
			return []string{l.mnt, "-o", l.opts()}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := procStdLayout(t)
			t.Cleanup(func() { unmountT(t, l.mnt) })
			cmd := exec.Command(strataFuse, tc.args(l)...)
			if tc.dir {
				cmd.Dir = l.base
			}
			if out, err := procRunFile(cmd); err != nil {
				t.Fatalf("%s: %v; output:\n%s", strings.Join(cmd.Args, " "), err, out)
			}
			if _, ok := mountEntry(l.mnt); !ok {
				t.Fatalf("exit 0 but %s is not mounted", l.mnt)
			}
			procCheckContent(t, filepath.Join(l.mnt, "shared"), "top wins\n")
			procCheckContent(t, filepath.Join(l.mnt, "bottom.txt"), "from bottom\n")
			procWriteSync(t, filepath.Join(l.mnt, "new"), "new\n", true)
			procCheckContent(t, filepath.Join(l.upper, "new"), "new\n")
		})
	}
}

// TestProcessReadOnly checks that a mount without upperdir, and one with
// -o ro, refuse every write with EROFS and change no layer.
func TestProcessReadOnly(t *testing.T) {
	needFUSE(t)
	cases := []struct {
		name   string
		opts   func(l *layout) string
		wantRO bool // the per-mount options must say ro
	}{
		{"no-upperdir", func(l *layout) string { return l.roOpts() }, false},
		{"ro-option", func(l *layout) string { return l.opts("ro") }, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := procStdLayout(t)
			// The work dir is the daemon's own; only layers must not change.
			before := treeSnapshot(t, l.base, "mnt", "work")
			mountFUSE(t, l.mnt, "-o", tc.opts(l), l.mnt)
			e, _ := mountEntry(l.mnt)
			if tc.wantRO && !hasOpt(e.mountOpts, "ro") {
				t.Errorf("mountinfo mount options: got %v, want ro", e.mountOpts)
			}
			procCheckContent(t, filepath.Join(l.mnt, "shared"), "top wins\n")
			m := func(p string) string { return filepath.Join(l.mnt, p) }
			writes := []struct {
				op string
				fn func() error
			}{
				{"create", func() error { return os.WriteFile(m("new"), nil, 0o644) }},
				{"open O_WRONLY", func() error {
					f, err := os.OpenFile(m("top.txt"), os.O_WRONLY, 0)
					if err == nil {
						f.Close()
					}
					return err
				}},
				{"mkdir", func() error { return os.Mkdir(m("newdir"), 0o755) }},
				{"unlink", func() error { return os.Remove(m("bottom.txt")) }},
				{"rename", func() error { return os.Rename(m("top.txt"), m("moved")) }},
				{"chmod", func() error { return os.Chmod(m("dir/deep.txt"), 0o600) }},
				{"symlink", func() error { return os.Symlink("x", m("sl")) }},
				{"truncate", func() error { return os.Truncate(m("shared"), 0) }},
			}
			for _, w := range writes {
				if err := w.fn(); !errors.Is(err, syscall.EROFS) {
					t.Errorf("%s: got error %v, want EROFS", w.op, err)
				}
			}
			unmountT(t, l.mnt)
			if d := diffSnapshots(before, treeSnapshot(t, l.base, "mnt", "work")); len(d) > 0 {
				t.Errorf("read-only mount changed the layers:\n%s", strings.Join(d, "\n"))
			}
		})
	}
}

// TestProcessOptions checks fsname, allow_other and default_permissions.
func TestProcessOptions(t *testing.T) {
	needFUSE(t)
	t.Run("fsname", func(t *testing.T) {
		l := procStdLayout(t)
		mountFUSE(t, l.mnt, "-o", l.opts("fsname=strata-test-src"), l.mnt)
		e, _ := mountEntry(l.mnt)
		if e.source != "strata-test-src" {
			t.Errorf("mountinfo source: got %q, want %q", e.source, "strata-test-src")
		}
	})
	t.Run("allow_other", func(t *testing.T) {
		l := procStdLayout(t)
		mountFUSE(t, l.mnt, "-o", l.opts("allow_other"), l.mnt)
		e, _ := mountEntry(l.mnt)
		if !hasOpt(e.superOpts, "allow_other") {
			t.Errorf("mountinfo super options: got %v, want allow_other", e.superOpts)
		}
		out, err := procRunAsNobody("cat", filepath.Join(l.mnt, "top.txt"))
		if err != nil || out != "from top\n" {
			t.Errorf("cat as another user with allow_other: got %q, %v; want %q", out, err, "from top\n")
		}
	})
	t.Run("root-default-allow_other", func(t *testing.T) {
		// Mounted by root, the mount serves containers whose processes
		// run as any user (fuse-overlayfs does the same); the kernel
		// checks their permissions.
		l := procStdLayout(t)
		mountFUSE(t, l.mnt, "-o", l.opts(), l.mnt)
		out, err := procRunAsNobody("cat", filepath.Join(l.mnt, "top.txt"))
		if err != nil || out != "from top\n" {
			t.Errorf("cat as another user of a root mount: got %q, %v; want %q", out, err, "from top\n")
		}
	})
	t.Run("default_permissions", func(t *testing.T) {
		l := procStdLayout(t)
		writeTree(t, l.lowers[1], map[string]string{"secret": "secret\n"})
		if err := os.Chmod(filepath.Join(l.lowers[1], "secret"), 0o600); err != nil {
			t.Fatal(err)
		}
		mountFUSE(t, l.mnt, "-o", l.opts("allow_other", "default_permissions"), l.mnt)
		e, _ := mountEntry(l.mnt)
		if !hasOpt(e.superOpts, "default_permissions") {
			t.Errorf("mountinfo super options: got %v, want default_permissions", e.superOpts)
		}
		if out, err := procRunAsNobody("cat", filepath.Join(l.mnt, "secret")); err == nil {
			t.Errorf("cat of a 0600 root file as another user: got %q, want permission denied", out)
		}
		if out, err := procRunAsNobody("cat", filepath.Join(l.mnt, "top.txt")); err != nil || out != "from top\n" {
			t.Errorf("cat of a 0644 file as another user: got %q, %v; want %q", out, err, "from top\n")
		}
	})
}

// TestProcessHarmlessOptions checks that fuse-overlayfs options that only
// tune its implementation are accepted, each with a warning on stderr
// naming it.
func TestProcessHarmlessOptions(t *testing.T) {
	needFUSE(t)
	for _, opt := range []string{"fast_ino=1", "noacl", "static_nlink", "threaded=1", "writeback=1", "xattr_permissions=1"} {
		t.Run(opt, func(t *testing.T) {
			l := procStdLayout(t)
			stderr := mountFUSE(t, l.mnt, "-o", l.opts(opt), l.mnt)
			procCheckContent(t, filepath.Join(l.mnt, "shared"), "top wins\n")
			key, _, _ := strings.Cut(opt, "=")
			if !strings.Contains(stderr, key) {
				t.Errorf("stderr does not warn about %q; stderr:\n%s", opt, stderr)
			}
		})
	}
}

// procBadCase is one invalid invocation of the mount program.
type procBadCase struct {
	name string
	// args returns the arguments (without -f); it may mount a first
	// daemon (returned) that must survive the failed invocation.
	args func(t *testing.T, l *layout) ([]string, *fuseProc)
	// want lists substrings, one of which stderr must contain
	// (case-insensitive): the message must name the problem.
	want []string
}

// procBadCases are the invocations that must be refused.
func procBadCases() []procBadCase {
	full := func(l *layout, o string) []string { return []string{"-o", o, l.mnt} }
	return []procBadCase{
		{"missing-lowerdir", func(t *testing.T, l *layout) ([]string, *fuseProc) {
			return full(l, "upperdir="+l.upper+",workdir="+l.work), nil
		}, []string{"lowerdir", "lower dir"}},
		{"empty-lowerdir", func(t *testing.T, l *layout) ([]string, *fuseProc) {
			return full(l, "lowerdir=,upperdir="+l.upper+",workdir="+l.work), nil
		}, []string{"lowerdir", "lower dir"}},
		{"lowerdir-nonexistent", func(t *testing.T, l *layout) ([]string, *fuseProc) {
			return full(l, "lowerdir="+l.lowers[0]+":"+filepath.Join(l.base, "nope-lower")), nil
		}, []string{"nope-lower"}},
		{"lowerdir-not-a-directory", func(t *testing.T, l *layout) ([]string, *fuseProc) {
			return full(l, "lowerdir="+filepath.Join(l.lowers[0], "top.txt")), nil
		}, []string{"not a directory"}},
		{"upperdir-nonexistent", func(t *testing.T, l *layout) ([]string, *fuseProc) {
			return full(l, "lowerdir="+l.lowerdir()+",upperdir="+filepath.Join(l.base, "nope-upper")+",workdir="+l.work), nil
		}, []string{"nope-upper"}},
		{"workdir-nonexistent", func(t *testing.T, l *layout) ([]string, *fuseProc) {
			return full(l, "lowerdir="+l.lowerdir()+",upperdir="+l.upper+",workdir="+filepath.Join(l.base, "nope-work")), nil
		}, []string{"nope-work"}},
		{"upperdir-without-workdir", func(t *testing.T, l *layout) ([]string, *fuseProc) {
			return full(l, "lowerdir="+l.lowerdir()+",upperdir="+l.upper), nil
		}, []string{"workdir"}},
		{"workdir-other-filesystem", func(t *testing.T, l *layout) ([]string, *fuseProc) {
			fs := filepath.Join(l.base, "tmpfs")
			if err := os.Mkdir(fs, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mount("tmpfs", fs, "tmpfs", 0, "size=1m"); err != nil {
				t.Fatalf("mount tmpfs: %v", err)
			}
			t.Cleanup(func() {
				if err := unix.Unmount(fs, 0); err != nil {
					_ = unix.Unmount(fs, unix.MNT_DETACH)
				}
			})
			w := filepath.Join(fs, "work")
			if err := os.Mkdir(w, 0o755); err != nil {
				t.Fatal(err)
			}
			return full(l, "lowerdir="+l.lowerdir()+",upperdir="+l.upper+",workdir="+w), nil
		}, []string{"workdir"}},
		{"upperdir-inside-lowerdir", func(t *testing.T, l *layout) ([]string, *fuseProc) {
			u := filepath.Join(l.lowers[1], "up")
			if err := os.Mkdir(u, 0o755); err != nil {
				t.Fatal(err)
			}
			return full(l, "lowerdir="+l.lowerdir()+",upperdir="+u+",workdir="+l.work), nil
		}, []string{"upper"}},
		{"upperdir-is-lowerdir", func(t *testing.T, l *layout) ([]string, *fuseProc) {
			return full(l, "lowerdir="+l.lowerdir()+",upperdir="+l.lowers[0]+",workdir="+l.work), nil
		}, []string{"upper"}},
		{"workdir-inside-lowerdir", func(t *testing.T, l *layout) ([]string, *fuseProc) {
			w := filepath.Join(l.lowers[0], "wk")
			if err := os.Mkdir(w, 0o755); err != nil {
				t.Fatal(err)
			}
			return full(l, "lowerdir="+l.lowerdir()+",upperdir="+l.upper+",workdir="+w), nil
		}, []string{"work"}},
		{"mountpoint-busy", func(t *testing.T, l *layout) ([]string, *fuseProc) {
			first := startFUSE(t, l.mnt, "-f", "-o", l.roOpts(), l.mnt)
			return full(l, l.opts()), first
		}, []string{"busy", "already", "mountpoint", "mount point"}},
		{"unknown-option", func(t *testing.T, l *layout) ([]string, *fuseProc) {
			return full(l, l.opts("bogus_opt_xyz")), nil
		}, []string{"bogus_opt_xyz"}},
		{"no-mountpoint", func(t *testing.T, l *layout) ([]string, *fuseProc) {
			return []string{"-o", l.opts()}, nil
		}, []string{"mountpoint", "mount point"}},
		{"mountpoint-nonexistent", func(t *testing.T, l *layout) ([]string, *fuseProc) {
			return []string{"-o", l.opts(), filepath.Join(l.base, "nope-mnt")}, nil
		}, []string{"nope-mnt"}},
	}
}

// TestProcessBadInput checks that each invalid invocation, in the
// background and the foreground form, exits non-zero with a message that
// names the problem, leaves no mount and no process behind, and leaves a
// daemon already on the mountpoint working.
func TestProcessBadInput(t *testing.T) {
	needFUSE(t)
	for _, tc := range procBadCases() {
		for _, fg := range []bool{false, true} {
			form := "bg"
			if fg {
				form = "fg"
			}
			t.Run(tc.name+"/"+form, func(t *testing.T) {
				l := procStdLayout(t)
				args, first := tc.args(t, l)
				mountsBefore := len(mountEntries(l.mnt))
				t.Cleanup(func() { unmountT(t, l.mnt) })

				var code int
				var stderr string
				if fg {
					args = append([]string{"-f"}, args...)
					p := startFUSENoWait(t, l.mnt, args...)
					deadline := time.Now().Add(mountTimeout)
					for !p.exited() && len(mountEntries(l.mnt)) == mountsBefore && time.Now().Before(deadline) {
						time.Sleep(pollInterval)
					}
					if !p.exited() {
						t.Fatalf("%s: program still running (mounted: %v), want it to fail; stderr:\n%s",
							strings.Join(args, " "), len(mountEntries(l.mnt)) > mountsBefore, p.stderr())
					}
					code, stderr = p.cmd.ProcessState.ExitCode(), p.stderr()
				} else {
					res := runFUSE(t, args...)
					if res.err != nil {
						t.Fatalf("%s: %v; stderr:\n%s", strings.Join(args, " "), res.err, res.stderr)
					}
					code, stderr = res.code, res.stderr
				}

				if code == 0 {
					t.Errorf("%s: exit status 0, want non-zero; stderr:\n%s", strings.Join(args, " "), stderr)
				}
				low := strings.ToLower(stderr)
				named := false
				for _, w := range tc.want {
					named = named || strings.Contains(low, strings.ToLower(w))
				}
				if !named {
					t.Errorf("stderr does not name the problem (want one of %q); stderr:\n%s", tc.want, stderr)
				}
				if got := len(mountEntries(l.mnt)); got != mountsBefore {
					t.Errorf("mounts on %s: got %d, want %d (a failed invocation left a mount)", l.mnt, got, mountsBefore)
					// Undo the extra mount so that its daemon ends and
					// the checks below see the first one.
					for i := mountsBefore; i < got; i++ {
						if err := unix.Unmount(l.mnt, 0); err != nil {
							_ = unix.Unmount(l.mnt, unix.MNT_DETACH)
						}
					}
				}
				procCheckNoStray(t, l.base, first)
				if first != nil {
					if first.exited() {
						t.Errorf("first daemon on the busy mountpoint ended (%s)", first.status())
					}
					procCheckContent(t, filepath.Join(l.mnt, "top.txt"), "from top\n")
				}
			})
		}
	}
}

// procCheckNoStray fails if a process other than keep mentions dir on its
// command line a short while after a failed invocation; such strays are
// the program's own descendants and are killed by PID.
func procCheckNoStray(t *testing.T, dir string, keep *fuseProc) {
	t.Helper()
	var stray []int
	deadline := time.Now().Add(time.Second)
	for {
		stray = stray[:0]
		for _, pid := range procsMentioning(dir) {
			if keep == nil || pid != keep.cmd.Process.Pid {
				stray = append(stray, pid)
			}
		}
		if len(stray) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, pid := range stray {
		cmdline, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		t.Errorf("process %d left behind: %s", pid, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
		if filepath.Base(string(bytes.SplitN(cmdline, []byte{0}, 2)[0])) == filepath.Base(strataFuse) {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
}

// TestProcessKilledDaemon checks a daemon killed with SIGKILL: the mount
// answers ENOTCONN, umount -l cleans it up, and every file written and
// closed through the mount before the kill is in the upper layer.
func TestProcessKilledDaemon(t *testing.T) {
	needFUSE(t)
	l := procStdLayout(t)
	p := startFUSE(t, l.mnt, "-f", "-o", l.opts(), l.mnt)
	big := strings.Repeat("0123456789abcdef", 64<<10) // 1 MiB
	files := []struct {
		rel, content string
		sync         bool
	}{
		{"new-synced.txt", "synced\n", true},
		{"new-closed.txt", "closed only\n", false},
		{"dir/deep.txt", "copied up and rewritten\n", true},
		{"big.bin", big, true},
		{"newdir/sub/nested.txt", "nested\n", true},
	}
	if err := os.MkdirAll(filepath.Join(l.mnt, "newdir", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		procWriteSync(t, filepath.Join(l.mnt, f.rel), f.content, f.sync)
	}

	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !p.wait(mountTimeout) {
		t.Fatal("daemon did not die from SIGKILL")
	}
	// A plain stat of the root may be answered from the kernel's
	// attribute cache, so access it in ways that need the daemon.
	if _, err := os.ReadDir(l.mnt); !errors.Is(err, unix.ENOTCONN) {
		t.Errorf("readdir of the mountpoint after SIGKILL: got %v, want ENOTCONN", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(l.mnt, "never-looked-up"), &st); !errors.Is(err, unix.ENOTCONN) {
		t.Errorf("lstat of a new name after SIGKILL: got %v, want ENOTCONN", err)
	}
	if _, err := os.ReadFile(filepath.Join(l.mnt, "top.txt")); !errors.Is(err, unix.ENOTCONN) {
		t.Errorf("read through the mount after SIGKILL: got %v, want ENOTCONN", err)
	}
	if out, err := exec.Command("umount", "-l", l.mnt).CombinedOutput(); err != nil {
		t.Errorf("umount -l: %v: %s", err, out)
	}
	if !waitUnmounted(l.mnt, time.Second) {
		t.Errorf("%s still mounted after umount -l", l.mnt)
	}
	for _, f := range files {
		got, err := os.ReadFile(filepath.Join(l.upper, f.rel))
		switch {
		case err != nil:
			t.Errorf("upper %s after SIGKILL: %v", f.rel, err)
		case string(got) != f.content:
			t.Errorf("upper %s after SIGKILL: got %d bytes, want %d bytes of written content", f.rel, len(got), len(f.content))
		}
	}
	procCheckContent(t, filepath.Join(l.lowers[1], "dir", "deep.txt"), "deep\n")
}
