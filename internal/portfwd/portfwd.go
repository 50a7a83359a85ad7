// Package portfwd forwards ports of 127.0.0.1 on the host to a guest over
// the sandbox's SSH connection (direct-tcpip channels, as `ssh -L` does).
// It runs in the sandbox's owner, the same on every backend. The guest
// side connections are opened one at a time by sshd, so a burst does not
// overflow a small listen backlog in the guest the way passing every SYN
// straight through (QEMU's hostfwd) did; a guest service that is down
// gets each connection closed at once; and a dropped SSH connection is
// dialled again without the host port ever closing.
package portfwd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/heyvm/heyvm/internal/backend"
)

// Forward is one forward: 127.0.0.1:HostPort to GuestPort in the guest.
type Forward = backend.PortForward

// Dialer opens a fresh SSH connection to the guest.
type Dialer func(ctx context.Context) (*ssh.Client, error)

// Forwarder holds the listeners and the SSH connection they share.
type Forwarder struct {
	dial Dialer
	log  io.Writer

	dialMu    sync.Mutex // one SSH dial at a time, without holding mu
	mu        sync.Mutex
	client    *ssh.Client
	listeners map[int]*listener
	closed    bool
}

type listener struct {
	fwd Forward
	ln  net.Listener
}

// New makes a forwarder that reaches the guest through dial.
func New(dial Dialer, log io.Writer) *Forwarder {
	if log == nil {
		log = io.Discard
	}
	return &Forwarder{dial: dial, log: log, listeners: map[int]*listener{}}
}

// ErrPortInUse means the host port is taken.
var ErrPortInUse = errors.New("port in use")

// ErrPortPrivileged means the host port is below the first one this user
// may bind (1024, unless net.ipv4.ip_unprivileged_port_start says less).
var ErrPortPrivileged = errors.New("privileged port")

// portError is a one-line reason a host port cannot be forwarded; it
// matches ErrPortInUse or ErrPortPrivileged.
type portError struct {
	kind error
	msg  string
}

func (e *portError) Error() string { return e.msg }
func (e *portError) Unwrap() error { return e.kind }

// listen binds 127.0.0.1:port, or says in one line why it cannot.
func listen(port int) (net.Listener, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	switch {
	case err == nil:
		return ln, nil
	case errors.Is(err, syscall.EACCES):
		return nil, &portError{ErrPortPrivileged, fmt.Sprintf("host port %d is privileged: only root may listen on it; pick one of 1024 or above (HOST:GUEST, e.g. %d:GUEST)", port, port+8000)}
	case errors.Is(err, syscall.EADDRINUSE):
		return nil, &portError{ErrPortInUse, fmt.Sprintf("host port 127.0.0.1:%d is already in use: pick another with HOST:GUEST", port)}
	}
	return nil, fmt.Errorf("listen on 127.0.0.1:%d: %w", port, err)
}

// CheckFree says whether 127.0.0.1:port can be forwarded now, with the
// same one-line reasons as Add.
func CheckFree(port int) error {
	ln, err := listen(port)
	if err != nil {
		return err
	}
	return ln.Close()
}

// Add starts forwarding 127.0.0.1:f.HostPort (0: a free port) to f.GuestPort and
// returns the forward with its real host port.
func (fw *Forwarder) Add(f Forward) (Forward, error) {
	if f.GuestPort < 1 || f.GuestPort > 65535 || f.HostPort < 0 || f.HostPort > 65535 {
		return Forward{}, fmt.Errorf("port %d:%d is out of range: use 1-65535", f.HostPort, f.GuestPort)
	}
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if fw.closed {
		return Forward{}, errors.New("the sandbox is stopping")
	}
	if l, ok := fw.listeners[f.HostPort]; ok && f.HostPort != 0 {
		if l.fwd.GuestPort == f.GuestPort {
			return l.fwd, nil
		}
		return Forward{}, &portError{ErrPortInUse, fmt.Sprintf("host port %d already forwards to guest port %d: remove it first with `heyvm port rm`", f.HostPort, l.fwd.GuestPort)}
	}
	ln, err := listen(f.HostPort)
	if err != nil {
		return Forward{}, err
	}
	f.HostPort = ln.Addr().(*net.TCPAddr).Port
	l := &listener{fwd: f, ln: ln}
	fw.listeners[f.HostPort] = l
	go fw.serve(l)
	return f, nil
}

// Remove stops forwarding a host port. Connections already open go on.
func (fw *Forwarder) Remove(host int) (Forward, bool) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	l, ok := fw.listeners[host]
	if !ok {
		return Forward{}, false
	}
	delete(fw.listeners, host)
	l.ln.Close()
	return l.fwd, true
}

// List returns the forwards, by host port.
func (fw *Forwarder) List() []Forward {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	out := make([]Forward, 0, len(fw.listeners))
	for _, l := range fw.listeners {
		out = append(out, l.fwd)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].HostPort < out[j].HostPort })
	return out
}

// Close stops every listener and the SSH connection.
func (fw *Forwarder) Close() {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	fw.closed = true
	for p, l := range fw.listeners {
		l.ln.Close()
		delete(fw.listeners, p)
	}
	if fw.client != nil {
		fw.client.Close()
		fw.client = nil
	}
}

func (fw *Forwarder) serve(l *listener) {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return // closed by Remove or Close
		}
		go fw.handle(c, l.fwd.GuestPort)
	}
}

// handle carries one host connection to the guest port.
func (fw *Forwarder) handle(c net.Conn, guest int) {
	defer c.Close()
	ch, err := fw.open(guest)
	if err != nil {
		return // nothing listens in the guest (or it is gone): close at once
	}
	defer ch.Close()
	done := make(chan struct{}, 2)
	go func() {
		io.Copy(ch, c)
		if cw, ok := ch.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		done <- struct{}{}
	}()
	go func() {
		io.Copy(c, ch)
		if cw, ok := c.(*net.TCPConn); ok {
			cw.CloseWrite()
		}
		done <- struct{}{}
	}()
	<-done
	<-done
}

// open opens a channel to the guest port, dialling SSH again if the
// connection has dropped. A refusal by the guest (nothing listens) is
// not a dropped connection.
func (fw *Forwarder) open(guest int) (net.Conn, error) {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(guest))
	for attempt := 0; attempt < 2; attempt++ {
		c, err := fw.sshClient()
		if err != nil {
			return nil, err
		}
		ch, err := c.Dial("tcp", addr)
		if err == nil {
			return ch, nil
		}
		var oce *ssh.OpenChannelError
		if errors.As(err, &oce) {
			return nil, err // the guest refused: its service is down
		}
		fw.drop(c, err)
	}
	return nil, errors.New("the guest is unreachable over SSH")
}

func (fw *Forwarder) sshClient() (*ssh.Client, error) {
	fw.dialMu.Lock()
	defer fw.dialMu.Unlock()
	fw.mu.Lock()
	c, closed := fw.client, fw.closed
	fw.mu.Unlock()
	if closed {
		return nil, errors.New("the sandbox is stopping")
	}
	if c != nil {
		return c, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := fw.dial(ctx)
	if err != nil {
		fmt.Fprintf(fw.log, "ports: cannot reach the guest over SSH: %v\n", err)
		return nil, err
	}
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if fw.closed {
		c.Close()
		return nil, errors.New("the sandbox is stopping")
	}
	fw.client = c
	return c, nil
}

// drop forgets a broken SSH connection, so the next channel dials anew.
func (fw *Forwarder) drop(c *ssh.Client, why error) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if fw.client == c {
		fmt.Fprintf(fw.log, "ports: SSH connection lost (%v): dialling again\n", why)
		fw.client.Close()
		fw.client = nil
	}
}
