package integration

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Tests of strata run and the commands around it (start, stop, exec,
// logs, ps STATUS), on real containers: busybox-static in an image
// imported offline, run by runc.

// runWWW is the page busybox httpd serves in the test image.
const runWWW = "hello from busybox httpd\n"

// needRunTools checks for runc and returns a static busybox; missing,
// they skip the test, or fail it under CI=true.
func needRunTools(t testing.TB) string {
	t.Helper()
	needTool(t, "runc")
	return staticBusybox(t)
}

// runStore is a store with the test images:
//
//	busybox:base   busybox, /etc/passwd with root and alice, /www
//	busybox:test   on it: CMD echo, ENV FOO=bar, WORKDIR /work
//	busybox:user   on it: USER alice
//	busybox:ep     on it: ENTRYPOINT ["echo","ep"], CMD ["default"]
type runStore struct {
	*cliStore
}

func newRunStore(t *testing.T) *runStore {
	t.Helper()
	needFUSE(t)
	busybox := needRunTools(t)
	s := &runStore{newCLIStore(t)}
	// Registered after the store's cleanup, so it runs first: kill what
	// still runs, remove the containers, then the store unmounts.
	t.Cleanup(s.removeAll)
	dir := t.TempDir()
	bb, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	entries := []imgTarEntry{
		{name: "bin/", typ: tar.TypeDir}, {name: "etc/", typ: tar.TypeDir},
		{name: "tmp/", typ: tar.TypeDir}, {name: "www/", typ: tar.TypeDir},
		{name: "work/", typ: tar.TypeDir}, {name: "home/", typ: tar.TypeDir},
		{name: "bin/busybox", typ: tar.TypeReg, body: bb},
		{name: "etc/passwd", typ: tar.TypeReg, body: []byte("root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\n")},
		{name: "etc/group", typ: tar.TypeReg, body: []byte("root:x:0:\nalice:x:1000:\nstaff:x:50:alice\n")},
		{name: "www/index.html", typ: tar.TypeReg, body: []byte(runWWW)},
	}
	for _, a := range []string{"sh", "cat", "echo", "env", "httpd", "id", "ip", "ls", "pwd", "sleep", "touch", "hostname", "stat", "tty", "stty", "true", "kill"} {
		entries = append(entries, imgTarEntry{name: "bin/" + a, typ: tar.TypeSymlink, link: "busybox"})
	}
	writeTar(t, filepath.Join(dir, "rootfs.tar"), entries)
	// busybox itself must be executable: writeTar makes files 0644.
	s.imgMust("import", filepath.Join(dir, "rootfs.tar"), "busybox:plain")
	s.must("create", "--name", "fix", "busybox:plain")
	mp := strings.TrimSpace(s.must("mount", "fix"))
	if err := os.Chmod(filepath.Join(mp, "bin/busybox"), 0o755); err != nil {
		t.Fatal(err)
	}
	s.must("unmount", "fix")
	s.must("commit", "fix", "busybox:base")
	s.must("rm", "fix")
	for _, img := range []struct {
		name    string
		changes []string
	}{
		{"busybox:test", []string{`CMD ["sh","-c","echo hello from the image"]`, "ENV FOO=bar", "WORKDIR /work", "EXPOSE 80"}},
		{"busybox:user", []string{"USER alice"}},
		{"busybox:ep", []string{`ENTRYPOINT ["echo","ep"]`, `CMD ["default"]`}},
	} {
		s.must("create", "--name", "fix", "busybox:base")
		args := []string{"commit"}
		for _, c := range img.changes {
			args = append(args, "-c", c)
		}
		s.must(append(args, "fix", img.name)...)
		s.must("rm", "fix")
	}
	return s
}

// psRow is a row of `strata ps --format json`.
type psRow struct {
	Name   string
	Status string
	Ports  []string
	State  struct {
		Status      string
		Pid         int
		Runner      int
		ExitCode    int
		ExitUnknown bool
	}
	MountedAt string
}

func (s *runStore) ps() map[string]psRow {
	s.t.Helper()
	var rows []psRow
	out := s.must("ps", "-a", "--format", "json")
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		s.t.Fatalf("ps -a --format json: %v\n%s", err, out)
	}
	m := map[string]psRow{}
	for _, r := range rows {
		m[r.Name] = r
	}
	return m
}

// removeAll kills the processes of containers still running (by the
// pids strata recorded: processes this test started) and removes every
// container.
func (s *runStore) removeAll() {
	r := s.run("ps", "-a", "--format", "json")
	var rows []psRow
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &rows) != nil {
		s.t.Errorf("cleanup: %v", r)
		return
	}
	for _, row := range rows {
		if row.State.Status == "running" && row.State.Pid > 0 {
			_ = unix.Kill(row.State.Pid, unix.SIGKILL)
		}
		if r := s.run("rm", "-f", row.Name); r.code != 0 {
			s.t.Errorf("cleanup: %v", r)
		}
	}
}

// checkNothingLeft checks that no container, mount, runc state or
// bundle is left in the store, and that the store is consistent.
func (s *runStore) checkNothingLeft() {
	s.t.Helper()
	s.mustCheck()
	if ps := s.ps(); len(ps) > 0 {
		s.t.Errorf("containers left: %v", ps)
	}
	if m := mountsUnder(s.root); len(m) > 0 {
		s.t.Errorf("mounts left: %v", m)
	}
	for _, d := range []string{"containers", "runc"} {
		names, _ := os.ReadDir(filepath.Join(s.root, d))
		if len(names) > 0 {
			s.t.Errorf("%s/ left: %v", d, names)
		}
	}
}

// runArgs runs `strata run --rm ARGS` and checks its exit status and
// stdout.
func (s *runStore) runArgs(t *testing.T, args []string, wantCode int, wantOut string) cliResult {
	t.Helper()
	r := s.run(append([]string{"run", "--rm"}, args...)...)
	if r.err != nil || r.code != wantCode || (wantOut != "" && r.stdout != wantOut) {
		t.Errorf("got %v\nwant exit %d, stdout %q", r, wantCode, wantOut)
	}
	return r
}

func TestRunExitStatus(t *testing.T) {
	s := newRunStore(t)
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"zero", []string{"busybox:test", "true"}, 0, ""},
		{"three", []string{"busybox:test", "sh", "-c", "exit 3"}, 3, ""},
		{"not found", []string{"busybox:test", "nosuch"}, 127, "executable file not found"},
		{"missing path", []string{"busybox:test", "/bin/nosuch"}, 127, "executable file not found"},
		{"not executable", []string{"busybox:test", "/etc/passwd"}, 126, "permission denied"},
		{"directory", []string{"busybox:test", "/tmp"}, 126, "permission denied"},
		{"no such image", []string{"nosuch:image"}, 125, "not found"},
		{"bad flag", []string{"--bogus", "busybox:test"}, 125, "unknown flag"},
		{"unknown user", []string{"-u", "bob", "busybox:test", "id"}, 125, "unable to find user bob"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := s.runArgs(t, tc.args, tc.code, "")
			if !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("stderr %q, want it to hold %q", r.stderr, tc.stderr)
			}
		})
	}
	t.Run("not executable by the user", func(t *testing.T) {
		// Executable by root only: runc finds that out, as alice.
		s.addProgram(t, "busybox:test", "busybox:rootonly", "rootonly", 0o700, "package main\n\nfunc main() {}\n")
		r := s.runArgs(t, []string{"-u", "alice", "busybox:rootonly", "rootonly"}, 126, "")
		if !strings.Contains(r.stderr, "permission denied") {
			t.Errorf("stderr %q, want permission denied", r.stderr)
		}
		s.runArgs(t, []string{"busybox:rootonly", "rootonly"}, 0, "")
		s.must("run", "-d", "--name", "ro", "busybox:rootonly", "sleep", "60")
		if r := s.run("exec", "-u", "alice", "ro", "rootonly"); r.code != 126 {
			t.Errorf("exec as alice: %v, want exit 126", r)
		}
		if r := s.run("exec", "ro", "sh", "-c", "rootonly; exit 9"); r.code != 9 {
			t.Errorf("exec as root: %v, want exit 9", r)
		}
		s.must("rm", "-f", "ro")
	})
	t.Run("signal", func(t *testing.T) {
		// The container's process is killed from the host: 128+9.
		p := s.startRun(t, "--name", "sig", "busybox:test", "sleep", "60")
		pid := s.waitRunning(t, "sig").State.Pid
		if err := unix.Kill(pid, unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if code := p.wait(t); code != 137 {
			t.Errorf("exit status %d, want 137\n%s", code, p.output())
		}
		if st := s.ps()["sig"]; !strings.HasPrefix(st.Status, "Exited (137)") {
			t.Errorf("ps STATUS %q, want Exited (137)", st.Status)
		}
		s.must("rm", "sig")
	})
	t.Run("forwarded signal", func(t *testing.T) {
		// SIGTERM to strata run reaches the process, whose trap exits 42.
		p := s.startRun(t, "--rm", "--name", "fwd", "busybox:test", "sh", "-c", `trap "exit 42" TERM; echo ready; while :; do sleep 0.05; done`)
		s.waitRunning(t, "fwd")
		p.waitOutput(t, "ready")
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := p.wait(t); code != 42 {
			t.Errorf("exit status %d, want 42\n%s", code, p.output())
		}
	})
	s.checkNothingLeft()
}

func TestRunConfig(t *testing.T) {
	s := newRunStore(t)
	dir := t.TempDir()
	envFile := filepath.Join(dir, "env")
	if err := os.WriteFile(envFile, []byte("# a comment\nFROMFILE=1\n\nFOO=file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		out  string
	}{
		{"image cmd", []string{"busybox:test"}, "hello from the image\n"},
		{"image env", []string{"busybox:test", "sh", "-c", "echo $FOO $PATH $HOME"}, "bar /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /root\n"},
		{"-e", []string{"-e", "A=1", "-e", "FOO=baz", "busybox:test", "sh", "-c", "echo $A $FOO"}, "1 baz\n"},
		{"--env-file", []string{"--env-file", envFile, "-e", "A=2", "busybox:test", "sh", "-c", "echo $FROMFILE $FOO $A"}, "1 file 2\n"},
		{"image workdir", []string{"busybox:test", "pwd"}, "/work\n"},
		{"-w", []string{"-w", "/tmp", "busybox:test", "pwd"}, "/tmp\n"},
		{"root", []string{"busybox:test", "id"}, "uid=0(root) gid=0(root)\n"},
		{"image user", []string{"busybox:user", "sh", "-c", "id; echo $HOME"}, "uid=1000(alice) gid=1000(alice) groups=50(staff)\n/home/alice\n"},
		{"-u name:group", []string{"-u", "alice:staff", "busybox:test", "id"}, "uid=1000(alice) gid=50(staff)\n"},
		{"-u uid", []string{"-u", "1000", "busybox:test", "id", "-u"}, "1000\n"},
		{"-u unknown uid", []string{"-u", "4242:4343", "busybox:test", "sh", "-c", "id -u; id -g"}, "4242\n4343\n"},
		{"-u root over image", []string{"-u", "root", "busybox:user", "id", "-u"}, "0\n"},
		{"image entrypoint", []string{"busybox:ep"}, "ep default\n"},
		{"entrypoint and args", []string{"busybox:ep", "x", "y"}, "ep x y\n"},
		{"--entrypoint drops cmd", []string{"--entrypoint", "/bin/echo", "busybox:ep"}, "\n"},
		{"--entrypoint with args", []string{"--entrypoint", "echo", "busybox:ep", "a", "b"}, "a b\n"},
		{"--hostname", []string{"--hostname", "h1", "busybox:test", "sh", "-c", "hostname; cat /etc/hostname; echo $HOSTNAME"}, "h1\nh1\nh1\n"},
		{"hosts", []string{"--hostname", "h2", "busybox:test", "sh", "-c", "grep -c localhost /etc/hosts; grep h2 /etc/hosts"}, "2\n127.0.1.1\th2\n"},
		{"--read-only", []string{"--read-only", "busybox:test", "sh", "-c", "touch /x 2>/dev/null || echo read-only"}, "read-only\n"},
		{"pid namespace", []string{"busybox:test", "sh", "-c", "echo $$"}, "1\n"},
		{"capabilities", []string{"busybox:test", "sh", "-c", "grep CapEff /proc/self/status"}, "CapEff:\t00000000a80425fb\n"},
		{"no capabilities as a user", []string{"-u", "alice", "busybox:test", "sh", "-c", "grep CapEff /proc/self/status"}, "CapEff:\t0000000000000000\n"},
		{"masked", []string{"busybox:test", "sh", "-c", "cat /proc/kcore | wc -c"}, "0\n"},
		{"read-only /proc/sys", []string{"busybox:test", "sh", "-c", "echo 1 > /proc/sys/kernel/domainname 2>/dev/null || echo refused"}, "refused\n"},
		{"devices", []string{"busybox:test", "sh", "-c", "ls /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty /dev/pts/ptmx /dev/shm /dev/mqueue >/dev/null && echo ok"}, "ok\n"},
	} {
		t.Run(tc.name, func(t *testing.T) { s.runArgs(t, tc.args, 0, tc.out) })
	}
	t.Run("default hostname is the short ID", func(t *testing.T) {
		r := s.runArgs(t, []string{"busybox:test", "hostname"}, 0, "")
		if h := strings.TrimSpace(r.stdout); len(h) != 12 || strings.Trim(h, "0123456789abcdef") != "" {
			t.Errorf("hostname %q, want 12 hex digits", h)
		}
	})
	t.Run("-i", func(t *testing.T) {
		in := cliOpts{stdin: strings.NewReader("typed\n")}
		if r := s.runWith(in, "run", "--rm", "-i", "busybox:test", "cat"); r.code != 0 || r.stdout != "typed\n" {
			t.Errorf("with -i: %v", r)
		}
		if r := s.runWith(in, "run", "--rm", "busybox:test", "cat"); r.code != 0 || r.stdout != "" {
			t.Errorf("without -i stdin is not /dev/null: %v", r)
		}
	})
	t.Run("an existing container runs again", func(t *testing.T) {
		s.must("create", "--name", "again", "-e", "N=7", "busybox:test", "sh", "-c", "echo run $N >> /count; cat /count")
		if r := s.run("run", "again"); r.code != 0 || r.stdout != "run 7\n" {
			t.Errorf("first run: %v", r)
		}
		// The container keeps what its first run wrote.
		if r := s.run("run", "again"); r.code != 0 || r.stdout != "run 7\nrun 7\n" {
			t.Errorf("second run: %v", r)
		}
		if r := s.run("run", "again", "echo", "other"); r.code != 125 {
			t.Errorf("a command for an existing container: %v, want exit 125", r)
		}
		s.must("rm", "again")
	})
	s.checkNothingLeft()
}

func TestRunVolumes(t *testing.T) {
	s := newRunStore(t)
	host := t.TempDir()
	if err := os.WriteFile(filepath.Join(host, "in"), []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.runArgs(t, []string{"-v", host + ":/data", "busybox:test", "sh", "-c", "cat /data/in; echo from the container > /data/out"}, 0, "from the host\n")
	if b, err := os.ReadFile(filepath.Join(host, "out")); err != nil || string(b) != "from the container\n" {
		t.Errorf("out on the host: %q, %v", b, err)
	}
	r := s.runArgs(t, []string{"-v", host + ":/data:ro", "busybox:test", "sh", "-c", "cat /data/in; echo x > /data/ro"}, 1, "from the host\n")
	if !strings.Contains(r.stderr, "Read-only file system") {
		t.Errorf("stderr %q, want Read-only file system", r.stderr)
	}
	if _, err := os.Stat(filepath.Join(host, "ro")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a read-only volume was written: %v", err)
	}
	if r := s.run("run", "--rm", "-v", "named:/data", "busybox:test", "true"); r.code != 125 {
		t.Errorf("a named volume: %v, want exit 125", r)
	}
	s.checkNothingLeft()
}

func TestRunNetwork(t *testing.T) {
	s := newRunStore(t)
	links := func(t *testing.T, args ...string) []string {
		r := s.runArgs(t, append(args, "busybox:test", "sh", "-c", "ip -o link | cut -d: -f2"), 0, "")
		var names []string
		for _, f := range strings.Fields(r.stdout) {
			names = append(names, strings.TrimSuffix(strings.SplitN(f, "@", 2)[0], ":"))
		}
		sort.Strings(names)
		return names
	}
	for _, mode := range []string{"none", "private"} {
		t.Run(mode, func(t *testing.T) {
			if got := links(t, "--network", mode); strings.Join(got, " ") != "lo" {
				t.Errorf("interfaces %v, want lo only", got)
			}
			s.runArgs(t, []string{"--network", mode, "busybox:test", "sh", "-c", "ip -o link show lo | grep -o '[<,]UP[,>]' | head -1"}, 0, ",UP,\n")
		})
	}
	t.Run("host", func(t *testing.T) {
		ifs, err := net.Interfaces()
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, i := range ifs {
			want = append(want, i.Name)
		}
		sort.Strings(want)
		if got := links(t, "--network", "host"); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("interfaces %v, want the host's %v", got, want)
		}
	})
	t.Run("publish", func(t *testing.T) {
		port := freePort(t)
		s.must("run", "-d", "--name", "web", "-p", fmt.Sprintf("127.0.0.1:%d:8080", port), "busybox:test", "httpd", "-f", "-p", "8080", "-h", "/www")
		if ps := s.ps()["web"]; len(ps.Ports) != 1 || ps.Ports[0] != fmt.Sprintf("127.0.0.1:%d->8080/tcp", port) {
			t.Errorf("ps Ports %v", ps.Ports)
		}
		url := fmt.Sprintf("http://127.0.0.1:%d/index.html", port)
		var body []byte
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := http.Get(url)
			if err == nil {
				body, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			if err == nil && resp.StatusCode == 200 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET %s: %v (logs: %s)", url, err, s.must("logs", "web"))
			}
			time.Sleep(50 * time.Millisecond)
		}
		if string(body) != runWWW {
			t.Errorf("body %q, want %q", body, runWWW)
		}
		s.must("stop", "-t", "1", "web")
		if _, err := http.Get(url); err == nil {
			t.Errorf("GET %s after stop: the port is still published", url)
		}
		s.must("rm", "web")
	})
	s.checkNothingLeft()
}

// freePort returns a TCP port on 127.0.0.1 that nothing listens on.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestRunDetached(t *testing.T) {
	s := newRunStore(t)
	script := `trap "echo got TERM; exit 7" TERM; echo started; echo to stderr >&2; while :; do sleep 0.05; done`
	if out := s.must("run", "-d", "--name", "bg", "busybox:test", "sh", "-c", script); out != "bg\n" {
		t.Errorf("run -d printed %q, want the name", out)
	}
	if st := s.ps()["bg"].Status; !strings.HasPrefix(st, "Up ") {
		t.Errorf("STATUS %q, want Up ...", st)
	}
	waitLogs(t, s, "bg", "started\nto stderr\n")
	if r := s.run("exec", "bg", "sh", "-c", "echo in exec $FOO; exit 4"); r.code != 4 || r.stdout != "in exec bar\n" {
		t.Errorf("exec: %v, want exit 4", r)
	}
	if r := s.run("exec", "-e", "FOO=x", "-w", "/tmp", "-u", "alice", "bg", "sh", "-c", "echo $FOO $(pwd) $(id -u)"); r.code != 0 || r.stdout != "x /tmp 1000\n" {
		t.Errorf("exec -e -w -u: %v", r)
	}
	if r := s.run("exec", "bg", "nosuch"); r.code != 127 {
		t.Errorf("exec nosuch: %v, want exit 127", r)
	}
	if r := s.run("exec", "bg", "/etc/passwd"); r.code != 126 {
		t.Errorf("exec /etc/passwd: %v, want exit 126", r)
	}
	if r := s.run("rm", "bg"); r.code == 0 || !strings.Contains(r.stderr, "is running") {
		t.Errorf("rm of a running container: %v, want a refusal", r)
	}
	s.must("stop", "bg")
	if st := s.ps()["bg"].Status; !strings.HasPrefix(st, "Exited (7) ") {
		t.Errorf("STATUS %q, want Exited (7) ...", st)
	}
	// docker's ps -a lists stopped containers; strata's ps always does.
	if out := s.must("ps", "-a"); !strings.Contains(out, "Exited (7)") {
		t.Errorf("ps -a:\n%s", out)
	}
	if got := s.must("logs", "bg"); got != "started\nto stderr\ngot TERM\n" {
		t.Errorf("logs %q", got)
	}
	if r := s.run("exec", "bg", "true"); r.code == 0 {
		t.Errorf("exec in a stopped container: %v", r)
	}
	s.must("start", "bg")
	if st := s.ps()["bg"].Status; !strings.HasPrefix(st, "Up ") {
		t.Errorf("STATUS after start %q, want Up ...", st)
	}
	waitLogs(t, s, "bg", "started\nto stderr\ngot TERM\nstarted\nto stderr\n")
	// The management forms are the same commands.
	s.group("container", "stop", "bg")
	if got := s.group("container", "logs", "bg"); strings.Count(got, "got TERM") != 2 {
		t.Errorf("logs after two runs %q", got)
	}
	s.group("container", "rm", "bg")
	s.checkNothingLeft()
}

// waitLogs waits until the logs of name are want.
func waitLogs(t *testing.T, s *runStore, name, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := s.must("logs", name)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("logs %q, want %q", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRunRemoveLeavesNothing(t *testing.T) {
	s := newRunStore(t)
	s.runArgs(t, []string{"--name", "gone", "busybox:test", "sh", "-c", "echo x > /new"}, 0, "")
	s.checkNothingLeft()
	if ls := s.list(); len(ls) != 4 {
		// The four images' layers, and no stack.
		for _, l := range ls {
			if l.Kind != "committed" {
				t.Errorf("left: %+v", l)
			}
		}
	}
	// -d --rm: the shim removes it.
	s.must("run", "-d", "--rm", "--name", "bgone", "busybox:test", "sleep", "0.2")
	deadline := time.Now().Add(10 * time.Second)
	for len(s.ps()) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	s.checkNothingLeft()
}

func TestRunDiffCommit(t *testing.T) {
	s := newRunStore(t)
	s.must("run", "--name", "ch", "busybox:test", "sh", "-c", "echo new > /new; rm /www/index.html; echo more >> /etc/passwd")
	// Only the process's changes: the mountpoints runc made for /proc,
	// /dev, /sys and /etc/hosts are gone, as docker's init layer keeps
	// them out of its diff.
	want := "C /etc\nC /etc/passwd\nA /new\nC /www\nD /www/index.html\n"
	if diff := s.must("diff", "ch"); diff != want {
		t.Errorf("diff:\n%swant:\n%s", diff, want)
	}
	s.must("commit", "ch", "busybox:changed")
	s.runArgs(t, []string{"busybox:changed", "sh", "-c", "cat /new; ls /www | wc -l"}, 0, "new\n0\n")
	s.must("rm", "ch")
	s.checkNothingLeft()
}

func TestRunKilled(t *testing.T) {
	s := newRunStore(t)
	t.Run("strata run, then the container", func(t *testing.T) {
		p := s.startRun(t, "--name", "k", "busybox:test", "sleep", "60")
		st := s.waitRunning(t, "k").State
		if err := p.cmd.Process.Signal(unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		p.wait(t)
		if row := s.ps()["k"]; !strings.HasPrefix(row.Status, "Up ") {
			t.Errorf("after kill -9 of strata run: STATUS %q, want Up (the container still runs)", row.Status)
		}
		if err := unix.Kill(st.Pid, unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, s, "k", "Exited (unknown)")
		s.must("rm", "k")
	})
	t.Run("shim", func(t *testing.T) {
		s.must("run", "-d", "--name", "ks", "busybox:test", "sleep", "60")
		st := s.ps()["ks"].State
		if err := unix.Kill(st.Runner, unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if row := s.ps()["ks"]; !strings.HasPrefix(row.Status, "Up ") {
			t.Errorf("after kill -9 of the shim: STATUS %q, want Up", row.Status)
		}
		s.must("stop", "-t", "0", "ks")
		waitStatus(t, s, "ks", "Exited (unknown)")
		// It starts again, with a new shim.
		s.must("start", "ks")
		if row := s.ps()["ks"]; !strings.HasPrefix(row.Status, "Up ") {
			t.Errorf("after start: STATUS %q", row.Status)
		}
		s.must("stop", "-t", "0", "ks")
		if row := s.ps()["ks"]; !strings.HasPrefix(row.Status, "Exited (137)") {
			t.Errorf("after stop: STATUS %q, want Exited (137)", row.Status)
		}
		s.must("rm", "ks")
	})
	t.Run("the container, under a shim", func(t *testing.T) {
		s.must("run", "-d", "--name", "kc", "busybox:test", "sleep", "60")
		if err := unix.Kill(s.ps()["kc"].State.Pid, unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, s, "kc", "Exited (137)")
		s.must("rm", "kc")
	})
	t.Run("the mount daemon", func(t *testing.T) {
		// The container's root filesystem dies under it: stop and rm
		// still clean up, the dead mount included.
		s.must("run", "-d", "--name", "km", "busybox:test", "sleep", "60")
		pid := 0
		for _, l := range s.list() {
			if l.Name == "km" {
				pid = l.DaemonPid
			}
		}
		if pid <= 0 {
			t.Fatalf("no mount daemon for km: %+v", s.list())
		}
		if err := unix.Kill(pid, unix.SIGKILL); err != nil {
			t.Fatal(err)
		}
		s.must("stop", "-t", "1", "km")
		waitStatus(t, s, "km", "Exited (137)")
		s.must("rm", "km")
	})
	t.Run("system prune", func(t *testing.T) {
		// A container whose shim and process were killed is pruned, its
		// leftover mount with it; a running one stays.
		s.must("run", "-d", "--name", "dead", "busybox:test", "sleep", "60")
		s.must("run", "-d", "--name", "alive", "busybox:test", "sleep", "60")
		st := s.ps()["dead"].State
		for _, pid := range []int{st.Runner, st.Pid} {
			if err := unix.Kill(pid, unix.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
		waitStatus(t, s, "dead", "Exited (unknown)")
		out := s.group("system", "prune", "-f")
		if !strings.Contains(out, "Deleted Containers:\ndead\n") || strings.Contains(out, "alive") {
			t.Errorf("system prune printed:\n%s", out)
		}
		ps := s.ps()
		if _, ok := ps["dead"]; ok {
			t.Errorf("dead container still listed")
		}
		if !strings.HasPrefix(ps["alive"].Status, "Up ") {
			t.Errorf("the running container: %+v", ps["alive"])
		}
		s.must("rm", "-f", "alive")
	})
	t.Run("rm -f of a running container", func(t *testing.T) {
		s.must("run", "-d", "--name", "kf", "busybox:test", "sleep", "60")
		s.must("rm", "-f", "kf")
	})
	s.checkNothingLeft()
}

// waitStatus waits until ps shows name with a STATUS that starts with
// want.
func waitStatus(t *testing.T, s *runStore, name, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := s.ps()[name].Status
		if strings.HasPrefix(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("STATUS of %s %q, want %s...", name, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runProc is a `strata run` in the foreground that the test started.
type runProc struct {
	cmd            *exec.Cmd
	stdout, stderr *os.File
	done           chan struct{}
}

// startRun starts `strata run ARGS`; t.Cleanup kills it (by its PID)
// if it still runs.
func (s *runStore) startRun(t *testing.T, args ...string) *runProc {
	t.Helper()
	cmd, stdout, stderr, err := cliCommand(t.TempDir(), cliOpts{}, s.args(append([]string{"run"}, args...))...)
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &runProc{cmd: cmd, stdout: stdout, stderr: stderr, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
		stdout.Close()
		stderr.Close()
	})
	return p
}

func (p *runProc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(cliTimeout):
		t.Fatalf("strata run did not exit within %v", cliTimeout)
	}
	return p.cmd.ProcessState.ExitCode()
}

func (p *runProc) output() string {
	out, _ := os.ReadFile(p.stdout.Name())
	errb, _ := os.ReadFile(p.stderr.Name())
	return "stdout:\n" + string(out) + "stderr:\n" + string(errb)
}

// waitOutput waits until the run's stdout holds want.
func (p *runProc) waitOutput(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := os.ReadFile(p.stdout.Name())
		if strings.Contains(string(out), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the output:\n%s", want, p.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitRunning waits until ps shows the container name running.
func (s *runStore) waitRunning(t *testing.T, name string) psRow {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		row, ok := s.ps()[name]
		if ok && row.State.Status == "running" {
			return row
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is not running: %+v", name, row)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// group runs a two-word command, `strata GROUP SUB ARGS`, which must
// succeed, and returns its stdout.
func (s *runStore) group(group, sub string, args ...string) string {
	s.t.Helper()
	r := cliRun(s.t, cliOpts{}, append([]string{group, sub, "--root", s.root}, args...)...)
	if r.code != 0 || r.err != nil {
		s.t.Fatalf("%v", r)
	}
	return r.stdout
}

// onTerminal runs `strata ARGS` with stdin, stdout and stderr on a new
// pseudo-terminal of 31 rows and 97 columns, types input, and returns
// the exit status and all that appeared on the terminal.
func (s *runStore) onTerminal(t *testing.T, input string, args ...string) (int, string) {
	t.Helper()
	master, slave, err := openPTY()
	if err != nil {
		t.Fatalf("no pseudo-terminal: %v", err)
	}
	defer master.Close()
	if err := unix.IoctlSetWinsize(int(slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 31, Col: 97}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(strataBin, s.args(args)...)
	cmd.Env = cliEnv()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	if err := cmd.Start(); err != nil {
		slave.Close()
		t.Fatal(err)
	}
	slave.Close()
	read := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(master) // EIO once the last slave fd closes
		read <- string(b)
	}()
	if _, err := io.WriteString(master, input); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(cliTimeout):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("strata %s did not exit within %v", strings.Join(args, " "), cliTimeout)
	}
	return cmd.ProcessState.ExitCode(), <-read
}

func TestRunTerminal(t *testing.T) {
	s := newRunStore(t)
	check := func(t *testing.T, code int, out string) {
		t.Helper()
		// The process's terminal is its own, the size strata's.
		for _, want := range []string{"/dev/pts/0", "31 97", "xterm"} {
			if !strings.Contains(out, want) {
				t.Errorf("no %q on the terminal:\n%s", want, out)
			}
		}
		if code != 5 {
			t.Errorf("exit status %d, want 5; terminal:\n%s", code, out)
		}
	}
	t.Run("run -it", func(t *testing.T) {
		code, out := s.onTerminal(t, "tty; stty size; echo $TERM; exit 5\n", "run", "--rm", "-it", "busybox:test", "sh")
		check(t, code, out)
	})
	t.Run("exec -it", func(t *testing.T) {
		s.must("run", "-d", "--name", "term", "busybox:test", "sleep", "60")
		code, out := s.onTerminal(t, "tty; stty size; echo $TERM; exit 5\n", "exec", "-it", "term", "sh")
		check(t, code, out)
		s.must("rm", "-f", "term")
	})
	t.Run("run -dt logs", func(t *testing.T) {
		s.must("run", "-d", "-t", "--name", "dt", "busybox:test", "sh", "-c", "tty")
		waitStatus(t, s, "dt", "Exited (0)")
		if got := s.must("logs", "dt"); got != "/dev/pts/0\r\n" {
			t.Errorf("logs %q, want the terminal's name", got)
		}
		s.must("rm", "dt")
	})
	s.checkNothingLeft()
}

// TestRunConcurrentStarts starts one container from several processes
// at once: one start wins, the others find it running, and the one
// container that runs is not disturbed by the losers' cleanup.
func TestRunConcurrentStarts(t *testing.T) {
	s := newRunStore(t)
	s.must("create", "--name", "one", "busybox:test", "sleep", "60")
	const n = 4
	results := make(chan cliResult, n)
	for i := 0; i < n; i++ {
		go func() { results <- cliRun(t, cliOpts{}, s.args([]string{"start", "one"})...) }()
	}
	for i := 0; i < n; i++ {
		if r := <-results; r.code != 0 {
			t.Errorf("start: %v", r)
		}
	}
	row := s.ps()["one"]
	if !strings.HasPrefix(row.Status, "Up ") {
		t.Fatalf("after the starts: %+v", row)
	}
	time.Sleep(200 * time.Millisecond)
	if now := s.ps()["one"]; now.State.Pid != row.State.Pid || !strings.HasPrefix(now.Status, "Up ") {
		t.Errorf("the container changed: %+v, then %+v", row, now)
	}
	s.must("stop", "-t", "0", "one")
	s.must("rm", "one")
	s.checkNothingLeft()
}

// TestRunSetuid runs a set-user-ID root program as another user: the
// root filesystem is mounted without nosuid (it is in the store, which
// only root can enter), so the program runs with effective uid 0.
func TestRunSetuid(t *testing.T) {
	s := newRunStore(t)
	s.addProgram(t, "busybox:test", "busybox:suid", "uids", os.ModeSetuid|0o755,
		"package main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n)\n\nfunc main() { fmt.Println(os.Getuid(), os.Geteuid()) }\n")
	s.runArgs(t, []string{"-u", "alice", "busybox:suid", "uids"}, 0, "1000 0\n")
	s.runArgs(t, []string{"busybox:suid", "sh", "-c", "grep -E '^[0-9]+ [0-9]+ [^ ]+ [^ ]+ / ' /proc/self/mountinfo | grep -c nosuid"}, 1, "0\n")
	s.checkNothingLeft()
}

// addProgram builds the Go program src (static), puts it in a container
// on image as /bin/NAME with mode, and commits that as the image dst.
func (s *runStore) addProgram(t *testing.T, image, dst, name string, mode os.FileMode, src string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, name)
	build := exec.Command("go", "build", "-o", bin, filepath.Join(dir, "main.go"))
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	s.must("create", "--name", "fix", image)
	mp := strings.TrimSpace(s.must("mount", "fix"))
	p := filepath.Join(mp, "bin", name)
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	s.must("unmount", "fix")
	s.must("commit", "fix", dst)
	s.must("rm", "fix")
}

// TestRunPublishUDP publishes a UDP port to an echo server in the
// container.
func TestRunPublishUDP(t *testing.T) {
	s := newRunStore(t)
	s.addProgram(t, "busybox:test", "busybox:udp", "udpecho", 0o755, `package main

import "net"

func main() {
	pc, err := net.ListenPacket("udp", "127.0.0.1:9999")
	if err != nil {
		panic(err)
	}
	println("listening")
	b := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(b)
		if err != nil {
			panic(err)
		}
		pc.WriteTo(append([]byte("echo "), b[:n]...), from)
	}
}
`)
	ln, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.LocalAddr().(*net.UDPAddr).Port
	ln.Close()
	s.must("run", "-d", "--name", "udp", "-p", fmt.Sprintf("127.0.0.1:%d:9999/udp", port), "busybox:udp", "udpecho")
	waitLogs(t, s, "udp", "listening\n")
	c, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, msg := range []string{"one", "two"} {
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 100)
		n, err := c.Read(b)
		if err != nil || string(b[:n]) != "echo "+msg {
			t.Errorf("reply to %q: %q, %v", msg, b[:n], err)
		}
	}
	s.must("rm", "-f", "udp")
	s.checkNothingLeft()
}

// TestRunRuntimeKilled runs with --runtime a wrapper of runc that is
// killed (SIGKILL) in runc create or in runc start: run fails with 125
// and leaves nothing, the half-made container included.
func TestRunRuntimeKilled(t *testing.T) {
	s := newRunStore(t)
	runc, err := exec.LookPath("runc")
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []string{"create", "start"} {
		t.Run(step, func(t *testing.T) {
			wrapper := filepath.Join(t.TempDir(), "runc-dies")
			script := fmt.Sprintf("#!/bin/sh\n# strata runs RUNTIME [GLOBAL OPTIONS] COMMAND ...\nfor a in \"$@\"; do [ \"$a\" = %s ] && kill -KILL $$; done\nexec %s \"$@\"\n", step, runc)
			if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			r := s.run("run", "--rm", "--runtime", wrapper, "busybox:test", "sleep", "60")
			if r.code != 125 {
				t.Errorf("got %v, want exit 125", r)
			}
			s.checkNothingLeft()
		})
	}
	t.Run("runtime gone", func(t *testing.T) {
		// A container whose runtime is gone does not run, and is removed.
		gone := filepath.Join(t.TempDir(), "gone")
		s.must("create", "--name", "norun", "--runtime", gone, "busybox:test", "true")
		if r := s.run("run", "norun"); r.code != 125 {
			t.Errorf("got %v, want exit 125", r)
		}
		s.must("rm", "norun")
		s.checkNothingLeft()
	})
}

// TestRunStaleState leaves what a crash between removing a container's
// record and its files would: a bundle of no container, with a mount on
// its rootfs, and runc state of no container's ID. The next rm removes
// them.
func TestRunStaleState(t *testing.T) {
	s := newRunStore(t)
	s.must("run", "-d", "--name", "live", "busybox:test", "sleep", "60")
	// A second runc container from live's spec, in a cgroup of its own:
	// known to runc, to no container record.
	var spec map[string]any
	b, err := os.ReadFile(filepath.Join(s.root, "containers", "live", "config.json"))
	if err == nil {
		err = json.Unmarshal(b, &spec)
	}
	if err != nil {
		t.Fatal(err)
	}
	spec["linux"].(map[string]any)["cgroupsPath"] = "/strata-test/ghost-" + strconv.Itoa(os.Getpid())
	// and a root filesystem of its own, so that it does not hold live's.
	bundle := t.TempDir()
	rootfs := filepath.Join(bundle, "rootfs")
	bb, err := os.ReadFile(needRunTools(t))
	if err == nil {
		err = os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(rootfs, "bin", "sleep"), bb, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	spec["root"] = map[string]any{"path": rootfs}
	spec["mounts"] = []map[string]any{{"destination": "/proc", "type": "proc", "source": "proc"}}
	if b, err = json.Marshal(spec); err == nil {
		err = os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o644)
	}
	if err != nil {
		t.Fatal(err)
	}
	// Its stdio is the container's, which keeps it open: files, not pipes.
	errf, err := os.CreateTemp(t.TempDir(), "runc-stderr-")
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()
	create := exec.Command("runc", "--root", filepath.Join(s.root, "runc"), "create",
		"--bundle", bundle, "ghost-id")
	create.Stderr = errf
	if err := create.Run(); err != nil {
		b, _ := os.ReadFile(errf.Name())
		t.Fatalf("runc create: %v\n%s", err, b)
	}
	// Its first process is this test's child now (the test is the child
	// subreaper): reap it when runc delete kills it, or runc waits for it.
	stateOut, err := exec.Command("runc", "--root", filepath.Join(s.root, "runc"), "state", "ghost-id").Output()
	if err != nil {
		t.Fatalf("runc state: %v", err)
	}
	var ghostState struct{ Pid int }
	if err := json.Unmarshal(stateOut, &ghostState); err != nil || ghostState.Pid <= 0 {
		t.Fatalf("runc state: %v: %s", err, stateOut)
	}
	go func() {
		var ws unix.WaitStatus
		_, _ = unix.Wait4(ghostState.Pid, &ws, 0, nil)
	}()
	ghost := filepath.Join(s.root, "containers", "ghost", "rootfs")
	if err := os.MkdirAll(ghost, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", ghost, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(ghost, unix.MNT_DETACH) })
	s.must("rm", "-f", "live")
	s.checkNothingLeft()
}
