// Package container turns an image's config and docker's run options
// into what runc needs: an OCI runtime spec (Spec), the user a process
// runs as (ResolveUser), the files strata bind-mounts into every
// container (/etc/hosts, /etc/hostname, /etc/resolv.conf), and the
// record of a container's configuration and life kept in the store
// (Config, State).
//
// Everything here but the _linux.go files is free of system calls, so
// the spec can be tested without root. The _linux.go files act on a
// running container: read its root filesystem without leaving it
// (openat2 RESOLVE_IN_ROOT), bring up its loopback interface and dial
// into its network namespace, and take the terminal runc makes.
package container

import (
	"encoding/json"
	"fmt"
	"time"
)

// The labels of a container's snapshot that hold its Config and State,
// as JSON. They live in the snapshot's record, so they are written in
// the store's transactions and go when the container is removed.
const (
	LabelConfig = "strata.container.config"
	LabelState  = "strata.container.state"
)

// Network modes of --network.
const (
	NetworkPrivate = "private" // a network namespace of its own, loopback only
	NetworkNone    = "none"    // the same as private: docker's name for it
	NetworkHost    = "host"    // the host's network namespace
)

// Config is what a container runs, fixed when it is created from the
// image config and the flags of `strata run` or `strata create`.
type Config struct {
	ID         string   // 64 hex digits; the hostname is its first 12
	Image      string   // the image's ID
	Entrypoint []string `json:",omitempty"`
	Cmd        []string `json:",omitempty"`
	Env        []string `json:",omitempty"`
	WorkingDir string   `json:",omitempty"`
	User       string   `json:",omitempty"` // USER[:GROUP], names or numbers
	Hostname   string   `json:",omitempty"`
	Network    string   `json:",omitempty"` // a Network* mode; "" is private
	Ports      []Port   `json:",omitempty"`
	Volumes    []Volume `json:",omitempty"`
	ReadOnly   bool     `json:",omitempty"`
	Tty        bool     `json:",omitempty"`
	OpenStdin  bool     `json:",omitempty"`
	AutoRemove bool     `json:",omitempty"`
	StopSignal string   `json:",omitempty"`
	// Runtime is the OCI runtime's path given with --runtime; "" is
	// runc on $PATH.
	Runtime string `json:",omitempty"`
	// ExposedPorts are the image's, recorded as a label of the spec.
	ExposedPorts []string `json:",omitempty"`
}

// Args is the command line of the container's process.
func (c Config) Args() []string {
	return append(append([]string(nil), c.Entrypoint...), c.Cmd...)
}

// ShortID is the container ID as docker shows it, and the default
// hostname.
func (c Config) ShortID() string {
	if len(c.ID) > 12 {
		return c.ID[:12]
	}
	return c.ID
}

// HostnameOrID is the container's hostname.
func (c Config) HostnameOrID() string {
	if c.Hostname != "" {
		return c.Hostname
	}
	return c.ShortID()
}

// Volume is a bind mount of -v HOST:CTR[:ro].
type Volume struct {
	Source      string // absolute path on the host
	Destination string // absolute path in the container
	ReadOnly    bool   `json:",omitempty"`
}

// Status is where a container is in its life.
type Status string

const (
	Created Status = "created"
	Running Status = "running"
	Exited  Status = "exited"
)

// State is a container's life as recorded in the store. The process
// that waits for the container (strata run, or the shim of run -d and
// start) writes it; since that process can be killed, a reader decides
// with Observe what is true now.
type State struct {
	Status Status
	// Pid is the container's first process, as the host sees it, and
	// PidStart its start time (field 22 of /proc/PID/stat), so that a
	// reused pid is not taken for it.
	Pid      int    `json:",omitempty"`
	PidStart uint64 `json:",omitempty"`
	// Runner is the process that waits for the container and records
	// its end.
	Runner      int       `json:",omitempty"`
	RunnerStart uint64    `json:",omitempty"`
	StartedAt   time.Time `json:",omitempty"`
	FinishedAt  time.Time `json:",omitempty"`
	ExitCode    int
	// ExitUnknown is set when the container ended while nothing waited
	// for it (its runner was killed): its exit code is lost.
	ExitUnknown bool `json:",omitempty"`
	// Rootfs is where the root filesystem is mounted while it runs.
	Rootfs string `json:",omitempty"`
}

// Alive tells whether the process pid, started at start, still runs.
type Alive func(pid int, start uint64) bool

// Observe returns the state as it is now: a container recorded as
// running whose process is gone has exited, at a time and with a code
// nobody saw.
func (s State) Observe(alive Alive) State {
	if s.Status == Running && !alive(s.Pid, s.PidStart) {
		s.Status = Exited
		s.ExitUnknown = true
		s.ExitCode = -1
	}
	return s
}

// DecodeConfig reads a Config from its label; a snapshot without one (a
// container made by an older strata, or by `create` on a layer) has the
// zero Config.
func DecodeConfig(labels map[string]string) (Config, error) {
	var c Config
	v := labels[LabelConfig]
	if v == "" {
		return c, nil
	}
	if err := json.Unmarshal([]byte(v), &c); err != nil {
		return c, fmt.Errorf("container config: %w", err)
	}
	return c, nil
}

// DecodeState reads a State from its label; none means Created.
func DecodeState(labels map[string]string) (State, error) {
	s := State{Status: Created}
	v := labels[LabelState]
	if v == "" {
		return s, nil
	}
	if err := json.Unmarshal([]byte(v), &s); err != nil {
		return s, fmt.Errorf("container state: %w", err)
	}
	return s, nil
}

// Encode returns v, a Config or a State, as a label value.
func Encode(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encode %T: %w", v, err)
	}
	return string(b), nil
}
