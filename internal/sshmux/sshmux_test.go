package sshmux

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// guest is a small sshd standing in for the guest's: "exec" echoes its
// command and stdin on stdout, writes "err" on stderr and exits with the
// status the command names ("exit N"); "env" requests are remembered;
// "block" runs until the client closes the channel. It counts connections and
// sessions open at once.
type guest struct {
	addr     string
	cfg      *ssh.ServerConfig
	conns    atomic.Int32
	ended    atomic.Int32 // connections closed
	open     atomic.Int32
	maxOpen  atomic.Int32
	keepSeen atomic.Int32
	mu       sync.Mutex
	nets     []net.Conn
}

func newSigner(t *testing.T) ssh.Signer {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func startGuest(t *testing.T, user ssh.PublicKey) *guest {
	host := newSigner(t)
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
		if bytes.Equal(k.Marshal(), user.Marshal()) {
			return nil, nil
		}
		return nil, errors.New("unknown key")
	}}
	cfg.AddHostKey(host)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &guest{addr: ln.Addr().String(), cfg: cfg}
	t.Cleanup(func() { ln.Close(); g.drop() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			g.mu.Lock()
			g.nets = append(g.nets, c)
			g.mu.Unlock()
			go g.serve(c)
		}
	}()
	return g
}

func (g *guest) dialer(signer ssh.Signer) Dialer {
	return func(ctx context.Context) (*ssh.Client, error) {
		return ssh.Dial("tcp", g.addr, &ssh.ClientConfig{User: "root", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
			HostKeyCallback: func(string, net.Addr, ssh.PublicKey) error { return nil }, Timeout: 5 * time.Second})
	}
}

// streamDialer opens raw TCP streams to the guest's sshd.
func (g *guest) streamDialer() StreamDialer {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", g.addr)
	}
}

// drop closes every connection, as a guest whose sshd died would.
func (g *guest) drop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, c := range g.nets {
		c.Close()
	}
	g.nets = nil
}

func (g *guest) serve(c net.Conn) {
	_, chans, reqs, err := ssh.NewServerConn(c, g.cfg)
	if err != nil {
		return
	}
	g.conns.Add(1)
	go func() {
		for r := range reqs {
			if r.Type == "keepalive@openssh.com" {
				g.keepSeen.Add(1)
			}
			r.Reply(r.Type == "keepalive@openssh.com", nil)
		}
	}()
	defer g.ended.Add(1)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.Prohibited, "only sessions here")
			continue
		}
		ch, reqs, err := nc.Accept()
		if err != nil {
			continue
		}
		n := g.open.Add(1)
		for {
			m := g.maxOpen.Load()
			if n <= m || g.maxOpen.CompareAndSwap(m, n) {
				break
			}
		}
		go g.session(ch, reqs)
	}
}

func (g *guest) session(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer g.open.Add(-1)
	defer ch.Close()
	env := ""
	for r := range reqs {
		switch r.Type {
		case "env":
			var kv struct{ K, V string }
			ssh.Unmarshal(r.Payload, &kv)
			env += kv.K + "=" + kv.V + " "
			r.Reply(true, nil)
		case "exec":
			var cmd struct{ C string }
			ssh.Unmarshal(r.Payload, &cmd)
			r.Reply(true, nil)
			if cmd.C == "block" {
				continue // until the requests end: the channel closed
			}
			in, _ := io.ReadAll(ch)
			fmt.Fprintf(ch, "%scmd=%s stdin=%s", env, cmd.C, in)
			io.WriteString(ch.Stderr(), "err")
			code := 0
			fmt.Sscanf(cmd.C, "exit %d", &code)
			ch.SendRequest("exit-status", false, binary.BigEndian.AppendUint32(nil, uint32(code)))
			return
		default:
			r.Reply(false, nil)
		}
	}
}

// mux starts a Server for g on a socket in a temporary folder and returns
// a dialer for clients.
func mux(t *testing.T, g *guest, user ssh.Signer, first bool) (*Server, func() (*ssh.Client, error)) {
	host := newSigner(t)
	dial := g.dialer(user)
	var c *ssh.Client
	if first {
		var err error
		if c, err = dial(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "ssh.sock")
	s, err := Listen(path, host, user.PublicKey(), c, dial, g.streamDialer())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, func() (*ssh.Client, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return Dial(ctx, path, host.PublicKey(), user)
	}
}

func run(t *testing.T, c *ssh.Client, cmd, stdin string) (stdout, stderr string, code int) {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var o, e bytes.Buffer
	s.Stdout, s.Stderr, s.Stdin = &o, &e, strings.NewReader(stdin)
	s.Setenv("LANG", "C.UTF-8")
	err = s.Run(cmd)
	var ee *ssh.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitStatus()
	case err != nil:
		t.Fatalf("run %q: %v", cmd, err)
	}
	return o.String(), e.String(), code
}

// A command through the socket: its env, stdin, stdout, stderr and exit
// status all cross, on the owner's connection (no new one).
func TestRelay(t *testing.T) {
	user := newSigner(t)
	g := startGuest(t, user.PublicKey())
	_, dial := mux(t, g, user, true)
	c, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	out, errOut, code := run(t, c, "exit 3", "hello")
	if out != "LANG=C.UTF-8 cmd=exit 3 stdin=hello" || errOut != "err" || code != 3 {
		t.Errorf("got %q, %q, %d", out, errOut, code)
	}
	if _, _, code := run(t, c, "true", ""); code != 0 {
		t.Errorf("exit status %d", code)
	}
	if n := g.conns.Load(); n != 1 {
		t.Errorf("%d guest connections; want the owner's one", n)
	}
	// A keepalive is answered by the guest.
	if ok, _, err := c.SendRequest("keepalive@openssh.com", true, nil); err != nil || !ok || g.keepSeen.Load() != 1 {
		t.Errorf("keepalive: %v, %v, guest saw %d", ok, err, g.keepSeen.Load())
	}
	// What the guest refuses is refused with its reason.
	if _, err := c.Dial("tcp", "127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "only sessions here") {
		t.Errorf("direct-tcpip: %v", err)
	}
}

// More sessions at once than sshd allows on one connection (MaxSessions)
// go on a second connection; a dead connection is replaced.
func TestRelaySpreadsAndRedials(t *testing.T) {
	user := newSigner(t)
	g := startGuest(t, user.PublicKey())
	_, dial := mux(t, g, user, false)
	c, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var sessions []*ssh.Session
	for i := 0; i < sessionsPerConn+2; i++ {
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start("block"); err != nil {
			t.Fatal(err)
		}
		sessions = append(sessions, s)
	}
	deadline := time.Now().Add(5 * time.Second)
	for g.open.Load() < int32(len(sessions)) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := g.conns.Load(); n != 2 {
		t.Errorf("%d guest connections for %d sessions; want 2", n, len(sessions))
	}
	for _, s := range sessions {
		s.Close()
	}
	// The second connection, opened for the burst, is closed once idle.
	for g.ended.Load() < 1 && time.Now().Before(deadline.Add(5*time.Second)) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := g.ended.Load(); n != 1 {
		t.Errorf("%d guest connections closed after the burst; want the spare one", n)
	}
	if out, _, _ := run(t, c, "true", ""); out != "LANG=C.UTF-8 cmd=true stdin=" || g.conns.Load() != 2 {
		t.Errorf("on the first connection after the burst: %q, %d connections", out, g.conns.Load())
	}
	g.drop()
	time.Sleep(50 * time.Millisecond)
	if out, _, _ := run(t, c, "true", ""); out != "LANG=C.UTF-8 cmd=true stdin=" {
		t.Errorf("after the guest's connections dropped: %q", out)
	}
	if n := g.conns.Load(); n != 3 {
		t.Errorf("%d guest connections; want a new one after the drop", n)
	}
}

// Only heyvm's key signs in, and a client pinning another host key
// refuses the socket.
func TestAuthBothWays(t *testing.T) {
	user := newSigner(t)
	g := startGuest(t, user.PublicKey())
	host := newSigner(t)
	path := filepath.Join(t.TempDir(), "ssh.sock")
	s, err := Listen(path, host, user.PublicKey(), nil, g.dialer(user), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if _, err := Dial(ctx, path, host.PublicKey(), newSigner(t)); err == nil {
		t.Error("a stranger's key signed in")
	}
	if _, err := Dial(ctx, path, newSigner(t).PublicKey(), user); err == nil || !strings.Contains(err.Error(), "another host key") {
		t.Errorf("a wrong pin: %v", err)
	}
	c, err := Dial(ctx, path, host.PublicKey(), user)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	s.Close()
	if _, err := Dial(ctx, path, host.PublicKey(), user); err == nil {
		t.Error("a closed server still answered")
	}
}

// A raw stream to the guest's sshd through the owner (OpenSSH's
// ProxyCommand): the client speaks SSH to the guest itself over it.
func TestSSHDStream(t *testing.T) {
	user := newSigner(t)
	g := startGuest(t, user.PublicKey())
	host := newSigner(t)
	path := filepath.Join(t.TempDir(), "ssh.sock")
	s, err := Listen(path, host, user.PublicKey(), nil, g.dialer(user), g.streamDialer())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := DialSSHD(ctx, path, host.PublicKey(), user)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	// An ssh.Conn over the stream: net.Conn's extra methods are not used.
	conn, chans, reqs, err := ssh.NewClientConn(streamConn{stream}, "guest", &ssh.ClientConfig{User: "root",
		Auth: []ssh.AuthMethod{ssh.PublicKeys(user)}, HostKeyCallback: func(string, net.Addr, ssh.PublicKey) error { return nil }})
	if err != nil {
		t.Fatalf("SSH to the guest over the owner's stream: %v", err)
	}
	c := ssh.NewClient(conn, chans, reqs)
	defer c.Close()
	if out, _, code := run(t, c, "exit 3", "through"); code != 3 || !strings.Contains(out, "through") {
		t.Fatalf("over the stream: %q %d", out, code)
	}
	// Without a stream dialer the owner says so.
	path2 := filepath.Join(t.TempDir(), "ssh.sock")
	s2, err := Listen(path2, host, user.PublicKey(), nil, g.dialer(user), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s2.Close() })
	if _, err := DialSSHD(ctx, path2, host.PublicKey(), user); err == nil || !strings.Contains(err.Error(), "no stream") {
		t.Fatalf("no stream dialer: %v", err)
	}
}

// streamConn makes a stream a net.Conn for ssh.NewClientConn.
type streamConn struct{ io.ReadWriteCloser }

func (streamConn) LocalAddr() net.Addr              { return &net.UnixAddr{} }
func (streamConn) RemoteAddr() net.Addr             { return &net.UnixAddr{} }
func (streamConn) SetDeadline(time.Time) error      { return nil }
func (streamConn) SetReadDeadline(time.Time) error  { return nil }
func (streamConn) SetWriteDeadline(time.Time) error { return nil }
