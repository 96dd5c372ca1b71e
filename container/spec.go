package container

import (
	"fmt"
	"path"
	"sort"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// DefaultPath is the PATH of a container whose image sets none, as
// docker's.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// LabelExposedPorts is the spec annotation that lists the image's
// exposed ports, comma-separated ("80/tcp,53/udp").
const LabelExposedPorts = "org.strata.exposed-ports"

// DefaultCapabilities is docker's default capability set
// (moby oci/caps/defaults.go).
var DefaultCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// MaskedPaths and ReadonlyPaths are docker's defaults (moby
// oci/defaults.go): kernel interfaces a container should not see or
// change.
var (
	MaskedPaths = []string{
		"/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
		"/proc/sched_debug", "/proc/scsi", "/sys/firmware",
		"/sys/devices/virtual/powercap",
	}
	ReadonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

// Files are the per-container files strata writes and bind-mounts, as
// docker does, each an absolute host path.
type Files struct {
	Hosts, Hostname, ResolvConf string
}

// SpecInput is what Spec needs besides the Config: things found when
// the container starts.
type SpecInput struct {
	Rootfs string     // the mounted root filesystem
	User   specs.User // resolved with ResolveUser
	Home   string     // the user's home, for HOME when Env has none
	Files  Files
}

// Spec returns the OCI runtime spec of c: docker's defaults (mounts,
// capabilities, masked paths, namespaces) with c's process, hostname,
// volumes and network mode.
func Spec(c Config, in SpecInput) (*specs.Spec, error) {
	args := c.Args()
	if len(args) == 0 {
		return nil, fmt.Errorf("no command: the image has no Entrypoint or Cmd, so name one after the image")
	}
	cwd := c.WorkingDir
	if cwd == "" {
		cwd = "/"
	}
	if !path.IsAbs(cwd) {
		return nil, fmt.Errorf("working directory %q is not absolute", cwd)
	}
	caps := &specs.LinuxCapabilities{Bounding: DefaultCapabilities}
	if in.User.UID == 0 {
		// As moby: a process of another user gets no capabilities, only
		// the bounding set that limits what it can regain.
		caps.Effective, caps.Permitted = DefaultCapabilities, DefaultCapabilities
	}
	s := &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			Terminal:        c.Tty,
			User:            in.User,
			Args:            args,
			Env:             ProcessEnv(c, in.Home),
			Cwd:             path.Clean(cwd),
			Capabilities:    caps,
			NoNewPrivileges: false,
		},
		Root:     &specs.Root{Path: in.Rootfs, Readonly: c.ReadOnly},
		Hostname: c.HostnameOrID(),
		Mounts:   Mounts(c, in.Files),
		Linux: &specs.Linux{
			Namespaces: Namespaces(c.Network),
			// Device access: deny all but the default devices runc
			// creates (null, zero, full, random, urandom, tty, and the
			// terminal), which runc allows by itself.
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
			},
			CgroupsPath:   "/strata/" + c.ID,
			MaskedPaths:   MaskedPaths,
			ReadonlyPaths: ReadonlyPaths,
		},
	}
	if len(c.ExposedPorts) > 0 {
		ports := append([]string(nil), c.ExposedPorts...)
		sort.Strings(ports)
		s.Annotations = map[string]string{LabelExposedPorts: strings.Join(ports, ",")}
	}
	return s, nil
}

// ProcessEnv is the environment of c's process: c.Env with PATH,
// HOSTNAME, HOME and (with a terminal) TERM added where it has none, as
// docker adds them.
func ProcessEnv(c Config, home string) []string {
	env := append([]string(nil), c.Env...)
	has := func(k string) bool {
		for _, kv := range env {
			if strings.HasPrefix(kv, k+"=") {
				return true
			}
		}
		return false
	}
	if !has("PATH") {
		env = append([]string{DefaultPath}, env...)
	}
	if !has("HOSTNAME") {
		env = append(env, "HOSTNAME="+c.HostnameOrID())
	}
	if !has("HOME") {
		if home == "" {
			home = "/"
		}
		env = append(env, "HOME="+home)
	}
	if c.Tty && !has("TERM") {
		env = append(env, "TERM=xterm")
	}
	return env
}

// MergeEnv returns base with each K=V of over set, replacing K's
// earlier value in place, as docker merges -e into the image's Env.
func MergeEnv(base, over []string) []string {
	out := append([]string(nil), base...)
	for _, kv := range over {
		k, _, _ := strings.Cut(kv, "=")
		replaced := false
		for i, old := range out {
			if ok, _, _ := strings.Cut(old, "="); ok == k {
				out[i], replaced = kv, true
				break
			}
		}
		if !replaced {
			out = append(out, kv)
		}
	}
	return out
}

// Namespaces are a container's: private mount, pid, ipc and uts
// namespaces always, and a network namespace unless network is host.
func Namespaces(network string) []specs.LinuxNamespace {
	ns := []specs.LinuxNamespace{
		{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace},
		{Type: specs.UTSNamespace}, {Type: specs.MountNamespace},
	}
	if network != NetworkHost {
		ns = append(ns, specs.LinuxNamespace{Type: specs.NetworkNamespace})
	}
	return ns
}

// Mounts are docker's default mounts (moby oci/defaults.go), the three
// files, and the volumes, in the order runc mounts them.
func Mounts(c Config, f Files) []specs.Mount {
	ms := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"ro", "nosuid", "noexec", "nodev"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
	}
	for _, b := range []struct{ src, dst string }{
		{f.ResolvConf, "/etc/resolv.conf"}, {f.Hostname, "/etc/hostname"}, {f.Hosts, "/etc/hosts"},
	} {
		if b.src == "" {
			continue
		}
		opts := []string{"rbind", "rprivate"}
		if c.ReadOnly {
			opts = append(opts, "ro")
		}
		ms = append(ms, specs.Mount{Destination: b.dst, Type: "bind", Source: b.src, Options: opts})
	}
	for _, v := range c.Volumes {
		opts := []string{"rbind", "rprivate"}
		if v.ReadOnly {
			opts = append(opts, "ro")
		}
		ms = append(ms, specs.Mount{Destination: v.Destination, Type: "bind", Source: v.Source, Options: opts})
	}
	return ms
}

// HostsFile is the /etc/hosts of a container: loopback names and its
// hostname, as docker writes it.
func HostsFile(hostname string) string {
	return "127.0.0.1\tlocalhost\n" +
		"::1\tlocalhost ip6-localhost ip6-loopback\n" +
		"fe00::0\tip6-localnet\n" +
		"ff00::0\tip6-mcastprefix\n" +
		"ff02::1\tip6-allnodes\n" +
		"ff02::2\tip6-allrouters\n" +
		"127.0.1.1\t" + hostname + "\n"
}

// ResolvConf is a container's /etc/resolv.conf made from the host's:
// with a network of its own (private, none) the container cannot reach
// the host's loopback, so nameservers on 127.0.0.0/8 and ::1 are
// dropped, as docker drops them.
func ResolvConf(host []byte, network string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(string(host), "\n") {
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		if network != NetworkHost && len(f) >= 2 && f[0] == "nameserver" &&
			(strings.HasPrefix(f[1], "127.") || f[1] == "::1") {
			continue
		}
		b.WriteString(line)
		if !strings.HasSuffix(line, "\n") {
			b.WriteByte('\n')
		}
	}
	return b.String()
}
