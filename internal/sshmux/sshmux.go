// Package sshmux lets every heyvm process on the host share a sandbox
// owner's SSH connections to its guest, as OpenSSH's ControlMaster does.
//
// Why: a new SSH connection costs the guest a fork of sshd, a key
// exchange and an authentication, about 0.2 s under TCG, on every
// `heyvm exec`; a new session on a connection that is already up costs
// only the fork of the command. The owner holds the connections; a CLI
// speaks SSH to the owner over a unix socket in the sandbox's directory
// (0600, in a 0700 directory), and the owner relays each channel — its
// data, its requests (pty, env, exec, signals, window changes) and the
// guest's replies (exit status) — to a channel it opens on a guest
// connection. The socket hop is SSH too, so the CLI's code is the same
// either way, and it is authenticated both ways: the owner's host key is
// made at its start and published in owner.json, and the CLI signs in
// with heyvm's managed key.
package sshmux

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// sessionsPerConn is how many session channels one guest connection
// carries before another is opened: sshd allows 10 (MaxSessions), and
// heyvm's signal relay opens a second session beside a command's.
const sessionsPerConn = 8

// Dialer opens a new authenticated connection to the guest's sshd.
type Dialer func(ctx context.Context) (*ssh.Client, error)

// StreamDialer opens a raw stream to the guest's sshd (the backend's
// DialSSH), for a client that speaks SSH to the guest itself.
type StreamDialer func(ctx context.Context) (net.Conn, error)

// SSHDChannel is the channel type that asks the owner for a raw stream to
// the guest's sshd: OpenSSH's ProxyCommand (`heyvm ssh-proxy`) uses it,
// whatever the backend's transport (a TCP port, a vsock stream).
const SSHDChannel = "sshd@heyvm.dev"

// Server relays channels from local clients to the guest.
type Server struct {
	ln     net.Listener
	config *ssh.ServerConfig
	dial   Dialer
	stream StreamDialer

	mu     sync.Mutex
	conns  []*guestConn
	closed bool
}

// guestConn is one connection to the guest, with the channels relayed
// on it (sessions among them).
type guestConn struct {
	c        *ssh.Client
	channels int
	sessions int
	dead     bool
}

// NewHostKey makes the owner's host key for the socket hop; it lives as
// long as the owner does.
func NewHostKey() (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return ssh.NewSignerFromKey(priv)
}

// Listen serves path. first, if not nil, is a guest connection already
// up (the owner's readiness check); dial opens more when needed, and
// stream opens raw streams to the guest's sshd (SSHDChannel). Only
// clientKey signs in.
func Listen(path string, hostKey ssh.Signer, clientKey ssh.PublicKey, first *ssh.Client, dial Dialer, stream StreamDialer) (*Server, error) {
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	want := clientKey.Marshal()
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
			if bytes.Equal(k.Marshal(), want) {
				return nil, nil
			}
			return nil, errors.New("not heyvm's key")
		},
	}
	cfg.AddHostKey(hostKey)
	s := &Server{ln: ln, config: cfg, dial: dial, stream: stream}
	if first != nil {
		s.adopt(first)
	}
	go s.serve()
	return s, nil
}

// Close stops serving and closes every guest connection, which ends the
// channels relayed on them.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	err := s.ln.Close()
	s.DropGuests()
	return err
}

// DropGuests closes the guest connections, ending what is relayed on
// them; the next channel opens a new one. A VM is saved without them, so
// that no sshd child is left in it for a connection that cannot resume.
func (s *Server) DropGuests() {
	s.mu.Lock()
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for _, g := range conns {
		g.c.Close()
	}
}

// Guest lends a guest connection for one session of the owner's own;
// release gives it back.
func (s *Server) Guest(ctx context.Context) (c *ssh.Client, release func(), err error) {
	g, release, err := s.guest(ctx, true)
	if err != nil {
		return nil, nil, err
	}
	return g.c, release, nil
}

func (s *Server) serve() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		go s.serveClient(c)
	}
}

// adopt adds a guest connection and notices when it ends.
func (s *Server) adopt(c *ssh.Client) *guestConn {
	g := &guestConn{c: c}
	s.mu.Lock()
	s.conns = append(s.conns, g)
	s.mu.Unlock()
	go func() {
		c.Wait()
		s.mu.Lock()
		g.dead = true
		s.mu.Unlock()
	}()
	return g
}

// guest returns a live guest connection with room for one more channel
// (session says it is a session), opening one if none has; release
// gives the room back. A connection opened for a burst of sessions is
// closed once its last channel ends; the first one stays.
func (s *Server) guest(ctx context.Context, session bool) (g *guestConn, release func(), err error) {
	s.mu.Lock()
	live := s.conns[:0]
	for _, c := range s.conns {
		if !c.dead {
			live = append(live, c)
		}
	}
	s.conns = live
	for _, c := range live {
		if !session || c.sessions < sessionsPerConn {
			g = c
			g.take(session)
			break
		}
	}
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, nil, errors.New("the sandbox is stopping")
	}
	if g == nil {
		dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		c, err := s.dial(dctx)
		cancel()
		if err != nil {
			return nil, nil, err
		}
		g = s.adopt(c)
		s.mu.Lock()
		g.take(session)
		s.mu.Unlock()
	}
	var once sync.Once
	return g, func() { once.Do(func() { s.release(g, session) }) }, nil
}

func (g *guestConn) take(session bool) {
	g.channels++
	if session {
		g.sessions++
	}
}

func (s *Server) release(g *guestConn, session bool) {
	s.mu.Lock()
	g.channels--
	if session {
		g.sessions--
	}
	spare := g.channels == 0 && len(s.conns) > 1 && s.conns[0] != g
	if spare {
		for i, c := range s.conns {
			if c == g {
				s.conns = append(s.conns[:i], s.conns[i+1:]...)
				break
			}
		}
	}
	s.mu.Unlock()
	if spare {
		g.c.Close()
	}
}

func (s *Server) serveClient(nc net.Conn) {
	nc.SetDeadline(time.Now().Add(15 * time.Second))
	conn, chans, reqs, err := ssh.NewServerConn(nc, s.config)
	if err != nil {
		nc.Close()
		return
	}
	nc.SetDeadline(time.Time{})
	defer conn.Close()
	go s.globalRequests(reqs)
	for ch := range chans {
		if ch.ChannelType() == SSHDChannel {
			go s.relayStream(ch)
			continue
		}
		go s.relay(ch)
	}
}

// relayStream joins the client's channel to a new raw stream to the
// guest's sshd, until both ends have closed.
func (s *Server) relayStream(nc ssh.NewChannel) {
	if s.stream == nil {
		nc.Reject(ssh.UnknownChannelType, "this owner has no stream to the guest's sshd")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	up, err := s.stream(ctx)
	cancel()
	if err != nil {
		nc.Reject(ssh.ConnectionFailed, fmt.Sprintf("reach the guest's sshd: %v", err))
		return
	}
	down, reqs, err := nc.Accept()
	if err != nil {
		up.Close()
		return
	}
	go ssh.DiscardRequests(reqs)
	Join(down, up)
}

// halfCloser is a stream whose sending side can be closed alone.
type halfCloser interface{ CloseWrite() error }

// Join copies a and b into each other until both directions have ended,
// passing each end on as a half close, then closes both.
func Join(a, b io.ReadWriteCloser) {
	var wg sync.WaitGroup
	pipe := func(dst, src io.ReadWriteCloser) {
		defer wg.Done()
		io.Copy(dst, src)
		if hc, ok := dst.(halfCloser); ok {
			hc.CloseWrite()
		} else {
			dst.Close()
		}
	}
	wg.Add(2)
	go pipe(a, b)
	go pipe(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}

// globalRequests answers a client's keepalives with the guest's: a
// frozen guest leaves them unanswered, as a direct connection would.
// Nothing else (remote forwarding) is offered.
func (s *Server) globalRequests(reqs <-chan *ssh.Request) {
	for r := range reqs {
		ok := false
		if r.Type == "keepalive@openssh.com" {
			if g, release, err := s.guest(context.Background(), false); err == nil {
				ok, _, err = g.c.SendRequest(r.Type, true, r.Payload)
				release()
				if err != nil {
					continue // the guest connection is gone: no answer
				}
			}
		}
		if r.WantReply {
			r.Reply(ok, nil)
		}
	}
}

// relay opens the client's channel on the guest and copies both ways
// until both ends have closed.
func (s *Server) relay(nc ssh.NewChannel) {
	g, release, err := s.guest(context.Background(), nc.ChannelType() == "session")
	if err != nil {
		nc.Reject(ssh.ConnectionFailed, fmt.Sprintf("reach the guest: %v", err))
		return
	}
	defer release()
	up, upReqs, err := g.c.OpenChannel(nc.ChannelType(), nc.ExtraData())
	if err != nil {
		var oe *ssh.OpenChannelError
		if errors.As(err, &oe) {
			nc.Reject(oe.Reason, oe.Message)
		} else {
			nc.Reject(ssh.ConnectionFailed, err.Error())
		}
		return
	}
	down, downReqs, err := nc.Accept()
	if err != nil {
		up.Close()
		return
	}
	// The client's requests go up, with the guest's answers. started is
	// closed once the guest has answered the request that starts the
	// session's command (or the channel is not a session, or ends).
	started := make(chan struct{})
	var startOnce sync.Once
	markStarted := func() { startOnce.Do(func() { close(started) }) }
	if nc.ChannelType() != "session" {
		markStarted()
	}
	go func() {
		defer markStarted()
		for r := range downReqs {
			ok, err := up.SendRequest(r.Type, r.WantReply, r.Payload)
			if r.WantReply {
				r.Reply(ok && err == nil, nil)
			}
			if startsCommand(r.Type) {
				markStarted()
			}
		}
		// The client closed its channel.
		up.Close()
	}()
	// The client's input goes up; its end is the guest's EOF, which must
	// not overtake the exec request on its way: sshd drops an EOF that
	// comes before the command, and the command then reads forever.
	go func() {
		io.Copy(up, down)
		<-started
		up.CloseWrite()
	}()
	go io.Copy(up.Stderr(), down.Stderr())
	// The guest's output comes down, then its requests (exit-status
	// among them), then the close.
	var out sync.WaitGroup
	out.Add(2)
	go func() { io.Copy(down, up); out.Done() }()
	go func() { io.Copy(down.Stderr(), up.Stderr()); out.Done() }()
	for r := range upReqs {
		ok, err := down.SendRequest(r.Type, r.WantReply, r.Payload)
		if r.WantReply {
			r.Reply(ok && err == nil, nil)
		}
	}
	out.Wait()
	down.CloseWrite()
	down.Close()
}

// startsCommand says whether a session request starts its command.
func startsCommand(req string) bool {
	return req == "exec" || req == "shell" || req == "subsystem"
}

// DialSSHD opens a raw stream to the guest's sshd through an owner's
// socket (SSHDChannel). Closing it closes its connection to the owner.
func DialSSHD(ctx context.Context, path string, hostKey ssh.PublicKey, signer ssh.Signer) (io.ReadWriteCloser, error) {
	c, err := Dial(ctx, path, hostKey, signer)
	if err != nil {
		return nil, err
	}
	ch, reqs, err := c.OpenChannel(SSHDChannel, nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	go ssh.DiscardRequests(reqs)
	return &sshdStream{Channel: ch, conn: c}, nil
}

// sshdStream is a raw stream to the guest's sshd on its own connection to
// the owner.
type sshdStream struct {
	ssh.Channel
	conn *ssh.Client
}

func (s *sshdStream) Close() error {
	s.Channel.Close()
	return s.conn.Close()
}

// Dial connects to an owner's socket, pinning its host key, and signs in
// with signer.
func Dial(ctx context.Context, path string, hostKey ssh.PublicKey, signer ssh.Signer) (*ssh.Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	want := hostKey.Marshal()
	cfg := &ssh.ClientConfig{
		User: "root",
		Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: func(_ string, _ net.Addr, k ssh.PublicKey) error {
			if !bytes.Equal(k.Marshal(), want) {
				return errors.New("the owner's socket answered with another host key")
			}
			return nil
		},
		HostKeyAlgorithms: []string{ssh.KeyAlgoED25519},
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, path, cfg)
	if err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}
