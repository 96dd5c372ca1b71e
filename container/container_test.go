package container

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

const (
	testPasswd = "root:x:0:0:root:/root:/bin/sh\n# a comment\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\nbroken\nbob:x:1001:1001::/home/bob:/bin/sh\n"
	testGroup  = "root:x:0:\nalice:x:1000:\nstaff:x:50:alice,bob\nwheel:x:10:bob\n"
)

func TestResolveUser(t *testing.T) {
	for _, tc := range []struct {
		spec    string
		want    specs.User
		home    string
		wantErr string
	}{
		{"", specs.User{UID: 0, GID: 0}, "/root", ""},
		{"root", specs.User{UID: 0, GID: 0}, "/root", ""},
		{"alice", specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{50}}, "/home/alice", ""},
		{"1000", specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{50}}, "/home/alice", ""},
		{"bob", specs.User{UID: 1001, GID: 1001, AdditionalGids: []uint32{50, 10}}, "/home/bob", ""},
		{"alice:staff", specs.User{UID: 1000, GID: 50}, "/home/alice", ""},
		{"alice:10", specs.User{UID: 1000, GID: 10}, "/home/alice", ""},
		{"4242", specs.User{UID: 4242, GID: 0}, "/", ""},
		{"4242:4343", specs.User{UID: 4242, GID: 4343}, "/", ""},
		{":staff", specs.User{UID: 0, GID: 50}, "/root", ""},
		{"carol", specs.User{}, "", "unable to find user carol"},
		{"alice:nogroup", specs.User{}, "", "unable to find group nogroup"},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			got, home, err := ResolveUser(strings.NewReader(testPasswd), strings.NewReader(testGroup), tc.spec)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %+v, %v; want an error with %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) || home != tc.home {
				t.Errorf("got %+v, home %q, %v; want %+v, home %q", got, home, err, tc.want, tc.home)
			}
		})
	}
	t.Run("no files", func(t *testing.T) {
		got, home, err := ResolveUser(nil, nil, "1000:1000")
		if err != nil || got.UID != 1000 || got.GID != 1000 || home != "/" {
			t.Errorf("got %+v, %q, %v", got, home, err)
		}
		if _, _, err := ResolveUser(nil, nil, "alice"); err == nil {
			t.Errorf("a name without a passwd file resolved")
		}
	})
}

func TestParsePort(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Port
		wantErr bool
	}{
		{"8080:80", Port{DefaultHostIP, 8080, 80, "tcp"}, false},
		{"127.0.0.1:8080:80", Port{"127.0.0.1", 8080, 80, "tcp"}, false},
		{"127.0.0.1:53:53/udp", Port{"127.0.0.1", 53, 53, "udp"}, false},
		{"[::1]:8080:80/tcp", Port{"::1", 8080, 80, "tcp"}, false},
		{"80", Port{}, true},
		{"0:80", Port{}, true},
		{"8080:70000", Port{}, true},
		{"8080:80/sctp", Port{}, true},
		{"host:8080:80", Port{}, true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParsePort(tc.in)
			if (err != nil) != tc.wantErr || (!tc.wantErr && got != tc.want) {
				t.Errorf("got %+v, %v; want %+v, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestMergeEnv(t *testing.T) {
	got := MergeEnv([]string{"A=1", "B=2", "PATH=/bin"}, []string{"B=3", "C=4", "A="})
	want := []string{"A=", "B=3", "PATH=/bin", "C=4"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestProcessEnv(t *testing.T) {
	c := Config{ID: strings.Repeat("ab", 32), Env: []string{"FOO=bar"}, Tty: true}
	got := ProcessEnv(c, "/home/x")
	want := []string{DefaultPath, "FOO=bar", "HOSTNAME=abababababab", "HOME=/home/x", "TERM=xterm"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	c = Config{ID: "x", Hostname: "h", Env: []string{"PATH=/p", "HOME=/h", "HOSTNAME=o"}}
	if got := ProcessEnv(c, "/home/x"); !slices.Equal(got, c.Env) {
		t.Errorf("set variables changed: got %q", got)
	}
}

func TestSpec(t *testing.T) {
	c := Config{
		ID: strings.Repeat("0123456789abcdef", 4), Cmd: []string{"sh"}, Entrypoint: []string{"/init"},
		WorkingDir: "/srv/", Network: NetworkPrivate, ReadOnly: true,
		Volumes:      []Volume{{Source: "/h", Destination: "/c", ReadOnly: true}, {Source: "/h2", Destination: "/c2"}},
		ExposedPorts: []string{"80/tcp", "53/udp"},
	}
	files := Files{Hosts: "/b/hosts", Hostname: "/b/hostname", ResolvConf: "/b/resolv.conf"}
	s, err := Spec(c, SpecInput{Rootfs: "/r", Files: files})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Process.Args; !slices.Equal(got, []string{"/init", "sh"}) {
		t.Errorf("args %q", got)
	}
	if s.Process.Cwd != "/srv" || s.Root.Path != "/r" || !s.Root.Readonly || s.Hostname != "0123456789ab" {
		t.Errorf("cwd %q, root %+v, hostname %q", s.Process.Cwd, s.Root, s.Hostname)
	}
	if !slices.Equal(s.Process.Capabilities.Effective, DefaultCapabilities) || len(DefaultCapabilities) != 14 {
		t.Errorf("root's capabilities %v", s.Process.Capabilities)
	}
	var ns []specs.LinuxNamespaceType
	for _, n := range s.Linux.Namespaces {
		ns = append(ns, n.Type)
	}
	if want := []specs.LinuxNamespaceType{"pid", "ipc", "uts", "mount", "network"}; !slices.Equal(ns, want) {
		t.Errorf("namespaces %v, want %v", ns, want)
	}
	mounts := map[string]specs.Mount{}
	for _, m := range s.Mounts {
		mounts[m.Destination] = m
	}
	for dst, want := range map[string]string{
		"/proc": "proc", "/dev": "tmpfs", "/dev/pts": "devpts", "/dev/shm": "tmpfs",
		"/dev/mqueue": "mqueue", "/sys": "sysfs", "/etc/hosts": "bind", "/etc/hostname": "bind",
		"/etc/resolv.conf": "bind", "/c": "bind", "/c2": "bind",
	} {
		if mounts[dst].Type != want {
			t.Errorf("mount %s: %+v, want type %s", dst, mounts[dst], want)
		}
	}
	if m := mounts["/etc/hosts"]; m.Source != files.Hosts || !slices.Contains(m.Options, "ro") {
		t.Errorf("hosts of a read-only container: %+v", m)
	}
	if !slices.Contains(mounts["/sys"].Options, "ro") || !slices.Contains(mounts["/c"].Options, "ro") || slices.Contains(mounts["/c2"].Options, "ro") {
		t.Errorf("ro options: /sys %v, /c %v, /c2 %v", mounts["/sys"].Options, mounts["/c"].Options, mounts["/c2"].Options)
	}
	if got := s.Annotations[LabelExposedPorts]; got != "53/udp,80/tcp" {
		t.Errorf("exposed ports %q", got)
	}
	if !slices.Contains(s.Linux.MaskedPaths, "/proc/kcore") || !slices.Contains(s.Linux.ReadonlyPaths, "/proc/sys") {
		t.Errorf("masked %v, read-only %v", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
	}

	t.Run("host network, another user", func(t *testing.T) {
		c := Config{ID: "x", Cmd: []string{"sh"}, Network: NetworkHost}
		s, err := Spec(c, SpecInput{Rootfs: "/r", User: specs.User{UID: 1000}})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range s.Linux.Namespaces {
			if n.Type == specs.NetworkNamespace {
				t.Errorf("a host-network container has a network namespace")
			}
		}
		if caps := s.Process.Capabilities; len(caps.Effective) > 0 || len(caps.Permitted) > 0 || len(caps.Bounding) == 0 {
			t.Errorf("capabilities of uid 1000: %+v", caps)
		}
		if s.Process.Cwd != "/" {
			t.Errorf("cwd %q, want /", s.Process.Cwd)
		}
	})
	for _, bad := range []Config{{ID: "x"}, {ID: "x", Cmd: []string{"sh"}, WorkingDir: "rel"}} {
		if _, err := Spec(bad, SpecInput{}); err == nil {
			t.Errorf("Spec(%+v) succeeded", bad)
		}
	}
}

func TestResolvConf(t *testing.T) {
	host := []byte("# generated\nnameserver 127.0.0.53\nnameserver 10.0.0.1\nnameserver ::1\nsearch example.com")
	if got, want := ResolvConf(host, NetworkPrivate), "# generated\nnameserver 10.0.0.1\nsearch example.com\n"; got != want {
		t.Errorf("private: got %q, want %q", got, want)
	}
	if got := ResolvConf(host, NetworkHost); got != string(host)+"\n" {
		t.Errorf("host: got %q", got)
	}
}

func TestObserve(t *testing.T) {
	started := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	running := State{Status: Running, Pid: 42, PidStart: 7, StartedAt: started}
	alive := func(pid int, start uint64) bool { return pid == 42 && start == 7 }
	dead := func(int, uint64) bool { return false }
	if got := running.Observe(alive); got != running {
		t.Errorf("a live container changed: %+v", got)
	}
	got := running.Observe(dead)
	if got.Status != Exited || !got.ExitUnknown || got.ExitCode != -1 || got.StartedAt != started {
		t.Errorf("a dead container: %+v", got)
	}
	exited := State{Status: Exited, ExitCode: 3}
	if got := exited.Observe(dead); got != exited {
		t.Errorf("an exited container changed: %+v", got)
	}
}

func TestStateRoundTrip(t *testing.T) {
	st := State{Status: Running, Pid: 1, PidStart: 2, Runner: 3, StartedAt: time.Unix(5, 0).UTC(), Rootfs: "/r"}
	v, err := Encode(st)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeState(map[string]string{LabelState: v})
	if err != nil || got != st {
		t.Errorf("got %+v, %v; want %+v", got, err, st)
	}
	if got, err := DecodeState(nil); err != nil || got.Status != Created {
		t.Errorf("no label: %+v, %v", got, err)
	}
	if _, err := DecodeConfig(map[string]string{LabelConfig: "{"}); err == nil {
		t.Errorf("a broken config label decoded")
	}
}
