package container

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Port is a published port, -p [IP:]HOST:CTR[/udp]: strata listens on
// HostIP:HostPort and forwards to 127.0.0.1:ContainerPort inside the
// container's network namespace.
type Port struct {
	HostIP        string
	HostPort      uint16
	ContainerPort uint16
	Protocol      string // "tcp" or "udp"
}

// DefaultHostIP is where a published port listens when -p names no
// address: docker's 0.0.0.0.
const DefaultHostIP = "0.0.0.0"

func (p Port) String() string {
	return fmt.Sprintf("%s:%d->%d/%s", p.HostIP, p.HostPort, p.ContainerPort, p.Protocol)
}

// ParsePort parses -p [IP:]HOST:CTR[/tcp|/udp]. A bare CTR, which
// docker maps to a random host port, is refused: strata has no way to
// report the port it would pick.
func ParsePort(s string) (Port, error) {
	p := Port{HostIP: DefaultHostIP, Protocol: "tcp"}
	rest, proto, ok := strings.Cut(s, "/")
	if ok {
		if proto != "tcp" && proto != "udp" {
			return p, fmt.Errorf("port %q: protocol %q: want tcp or udp", s, proto)
		}
		p.Protocol = proto
	}
	i := strings.LastIndex(rest, ":")
	if i < 0 {
		return p, fmt.Errorf("port %q: want [IP:]HOST:CONTAINER[/udp] (a container port alone is not offered)", s)
	}
	hostPart, ctr := rest[:i], rest[i+1:]
	if j := strings.LastIndex(hostPart, ":"); j >= 0 {
		ip := strings.TrimSuffix(strings.TrimPrefix(hostPart[:j], "["), "]")
		if net.ParseIP(ip) == nil {
			return p, fmt.Errorf("port %q: %q is not an IP address", s, ip)
		}
		p.HostIP, hostPart = ip, hostPart[j+1:]
	}
	var err error
	if p.HostPort, err = parsePortNumber(hostPart); err != nil {
		return p, fmt.Errorf("port %q: host port: %w", s, err)
	}
	if p.ContainerPort, err = parsePortNumber(ctr); err != nil {
		return p, fmt.Errorf("port %q: container port: %w", s, err)
	}
	return p, nil
}

func parsePortNumber(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a port number (1-65535)", s)
	}
	return uint16(n), nil
}
