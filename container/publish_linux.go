package container

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"strconv"
	"sync"
	"time"
)

// udpIdle is how long a UDP flow (one client address) is kept without
// traffic.
const udpIdle = 2 * time.Minute

// Publisher forwards the published ports of one container: it listens
// on the host and, for each TCP connection or UDP client, dials
// 127.0.0.1:CTR inside the container's network namespace.
type Publisher struct {
	pid    int
	logger *log.Logger
	wg     sync.WaitGroup
	mu     sync.Mutex
	lns    []io.Closer
}

// Publish starts listening on every port of ports for the container
// whose first process is pid. Listening is done before it returns, so
// a port in use is an error now, not later.
func Publish(pid int, ports []Port, logger *log.Logger) (*Publisher, error) {
	p := &Publisher{pid: pid, logger: logger}
	for _, port := range ports {
		addr := net.JoinHostPort(port.HostIP, strconv.Itoa(int(port.HostPort)))
		switch port.Protocol {
		case "udp":
			pc, err := net.ListenPacket("udp", addr)
			if err != nil {
				return nil, errors.Join(fmt.Errorf("publish %s: %w", port, err), p.Close())
			}
			p.lns = append(p.lns, pc)
			p.wg.Add(1)
			go p.serveUDP(pc, port)
		default:
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return nil, errors.Join(fmt.Errorf("publish %s: %w", port, err), p.Close())
			}
			p.lns = append(p.lns, ln)
			p.wg.Add(1)
			go p.serveTCP(ln, port)
		}
	}
	return p, nil
}

// Close stops listening and waits for the listeners to stop; forwarded
// connections end when either side closes them.
func (p *Publisher) Close() error {
	p.mu.Lock()
	var errs []error
	for _, ln := range p.lns {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	p.mu.Unlock()
	p.wg.Wait()
	return errors.Join(errs...)
}

func (p *Publisher) serveTCP(ln net.Listener, port Port) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				p.logger.Printf("publish %s: accept: %v", port, err)
			}
			return
		}
		go p.forwardTCP(c, port)
	}
}

func (p *Publisher) forwardTCP(c net.Conn, port Port) {
	defer c.Close()
	in, err := DialInNetns(p.pid, "tcp", port.ContainerPort)
	if err != nil {
		p.logger.Printf("publish %s: %v", port, err)
		return
	}
	defer in.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(in, c)
	go pipe(c, in)
	<-done
	<-done
}

func (p *Publisher) serveUDP(pc net.PacketConn, port Port) {
	defer p.wg.Done()
	var mu sync.Mutex
	flows := map[string]net.Conn{}
	buf := make([]byte, 65535)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			mu.Lock()
			for _, c := range flows {
				c.Close()
			}
			mu.Unlock()
			return
		}
		mu.Lock()
		c := flows[from.String()]
		mu.Unlock()
		if c == nil {
			if c, err = DialInNetns(p.pid, "udp", port.ContainerPort); err != nil {
				p.logger.Printf("publish %s: %v", port, err)
				continue
			}
			mu.Lock()
			flows[from.String()] = c
			mu.Unlock()
			go func(c net.Conn, from net.Addr) {
				defer func() {
					mu.Lock()
					delete(flows, from.String())
					mu.Unlock()
					c.Close()
				}()
				b := make([]byte, 65535)
				for {
					_ = c.SetReadDeadline(time.Now().Add(udpIdle))
					n, err := c.Read(b)
					if err != nil {
						return
					}
					if _, err := pc.WriteTo(b[:n], from); err != nil {
						return
					}
				}
			}(c, from)
		}
		if _, err := c.Write(buf[:n]); err != nil {
			p.logger.Printf("publish %s: %v", port, err)
		}
	}
}
