package container

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// ConsoleSocket is the unix socket on which runc sends the master end
// of the terminal it makes for a container (runc --console-socket), as
// an SCM_RIGHTS message.
type ConsoleSocket struct {
	Path string
	dir  string
	ln   *net.UnixListener
}

// NewConsoleSocket listens on a new socket in a private temporary
// directory: a socket's path must be short (108 bytes), which a path in
// the store may not be.
func NewConsoleSocket() (*ConsoleSocket, error) {
	dir, err := os.MkdirTemp("", "strata-console-")
	if err != nil {
		return nil, err
	}
	p := filepath.Join(dir, "console.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("console socket: %w", err), os.RemoveAll(dir))
	}
	return &ConsoleSocket{Path: p, dir: dir, ln: ln}, nil
}

// Receive waits up to timeout for runc to connect and returns the
// terminal's master end.
func (c *ConsoleSocket) Receive(timeout time.Duration) (*os.File, error) {
	if err := c.ln.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	conn, err := c.ln.AcceptUnix()
	if err != nil {
		return nil, fmt.Errorf("console socket: %w", err)
	}
	defer conn.Close()
	if err := conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	name := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := conn.ReadMsgUnix(name, oob)
	if err != nil {
		return nil, fmt.Errorf("console socket: read: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("console socket: want one control message, got %d (%v)", len(msgs), err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("console socket: want one fd, got %d (%v)", len(fds), err)
	}
	unix.CloseOnExec(fds[0])
	return os.NewFile(uintptr(fds[0]), string(name[:n])), nil
}

// Close stops listening and removes the socket.
func (c *ConsoleSocket) Close() error {
	return errors.Join(c.ln.Close(), os.RemoveAll(c.dir))
}
