package portfwd

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// sshServer is a minimal sshd that serves direct-tcpip channels, as the
// guest's does, and can drop its connections.
type sshServer struct {
	addr  string
	cfg   *ssh.ServerConfig
	mu    sync.Mutex
	conns []net.Conn
}

func startSSH(t *testing.T) (*sshServer, Dialer) {
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	hostSigner, _ := ssh.NewSignerFromKey(hostPriv)
	_, userPriv, _ := ed25519.GenerateKey(rand.Reader)
	userSigner, _ := ssh.NewSignerFromKey(userPriv)
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
		if string(k.Marshal()) == string(userSigner.PublicKey().Marshal()) {
			return nil, nil
		}
		return nil, errors.New("unknown key")
	}}
	cfg.AddHostKey(hostSigner)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sshServer{addr: ln.Addr().String(), cfg: cfg}
	t.Cleanup(func() { ln.Close(); s.dropAll() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			go s.serve(c)
		}
	}()
	dial := func(ctx context.Context) (*ssh.Client, error) {
		return ssh.Dial("tcp", s.addr, &ssh.ClientConfig{User: "root", Auth: []ssh.AuthMethod{ssh.PublicKeys(userSigner)},
			HostKeyCallback: ssh.FixedHostKey(hostSigner.PublicKey()), Timeout: 5 * time.Second})
	}
	return s, dial
}

func (s *sshServer) serve(c net.Conn) {
	_, chans, reqs, err := ssh.NewServerConn(c, s.cfg)
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "direct-tcpip" {
			nc.Reject(ssh.UnknownChannelType, "no")
			continue
		}
		d := nc.ExtraData()
		hostLen := binary.BigEndian.Uint32(d)
		host := string(d[4 : 4+hostLen])
		port := binary.BigEndian.Uint32(d[4+hostLen:])
		target, err := net.Dial("tcp", net.JoinHostPort(host, fmt.Sprint(port)))
		if err != nil {
			nc.Reject(ssh.ConnectionFailed, err.Error())
			continue
		}
		ch, reqs, _ := nc.Accept()
		go ssh.DiscardRequests(reqs)
		go func() { io.Copy(ch, target); ch.CloseWrite() }()
		go func() { io.Copy(target, ch); target.Close() }()
	}
}

func (s *sshServer) dropAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
}

// echoServer answers each line with "echo: LINE".
func echoServer(t *testing.T, addr string) net.Listener {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					fmt.Fprintf(c, "echo: %s\n", sc.Text())
				}
			}()
		}
	}()
	return ln
}

func roundTrip(port int, msg string) (string, error) {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprintf(c, "%s\n", msg)
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

func TestForwardRestartAndReconnect(t *testing.T) {
	srv, dial := startSSH(t)
	target := echoServer(t, "127.0.0.1:0")
	guest := target.Addr().(*net.TCPAddr).Port
	fw := New(dial, nil)
	defer fw.Close()
	f, err := fw.Add(Forward{GuestPort: guest})
	if err != nil || f.HostPort == 0 {
		t.Fatalf("add: %+v %v", f, err)
	}
	if got, err := roundTrip(f.HostPort, "hi"); err != nil || got != "echo: hi" {
		t.Fatalf("round trip: %q %v", got, err)
	}
	// Many at once: all served.
	var wg sync.WaitGroup
	var failed sync.Map
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if got, err := roundTrip(f.HostPort, fmt.Sprint(i)); err != nil || got != fmt.Sprintf("echo: %d", i) {
				failed.Store(i, err)
			}
		}(i)
	}
	wg.Wait()
	failed.Range(func(k, v any) bool { t.Errorf("request %v failed: %v", k, v); return true })

	// The guest service goes away: connections close at once.
	target.Close()
	start := time.Now()
	if _, err := roundTrip(f.HostPort, "x"); err == nil {
		t.Fatal("a connection to a stopped service was answered")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("refusal took %s", d)
	}
	// It comes back on the same port: served again.
	target = echoServer(t, fmt.Sprintf("127.0.0.1:%d", guest))
	defer target.Close()
	if got, err := roundTrip(f.HostPort, "back"); err != nil || got != "echo: back" {
		t.Fatalf("after restart: %q %v", got, err)
	}
	// The SSH connection drops: the host port stays, and the next
	// connection dials SSH again.
	srv.dropAll()
	time.Sleep(100 * time.Millisecond)
	if got, err := roundTrip(f.HostPort, "again"); err != nil || got != "echo: again" {
		t.Fatalf("after an SSH drop: %q %v", got, err)
	}

	// A taken host port is refused with its number; remove frees it.
	if _, err := fw.Add(Forward{HostPort: f.HostPort, GuestPort: guest + 1}); !errors.Is(err, ErrPortInUse) || !strings.Contains(err.Error(), fmt.Sprint(f.HostPort)) {
		t.Fatalf("duplicate host port: %v", err)
	}
	other, _ := net.Listen("tcp", "127.0.0.1:0")
	defer other.Close()
	taken := other.Addr().(*net.TCPAddr).Port
	if _, err := fw.Add(Forward{HostPort: taken, GuestPort: guest}); !errors.Is(err, ErrPortInUse) || !strings.Contains(err.Error(), fmt.Sprint(taken)) {
		t.Fatalf("port in use by another program: %v", err)
	}
	if _, ok := fw.Remove(f.HostPort); !ok || len(fw.List()) != 0 {
		t.Fatal("remove")
	}
	if _, err := roundTrip(f.HostPort, "gone"); err == nil {
		t.Fatal("a removed forward still answers")
	}
}

func TestParseListening(t *testing.T) {
	round := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 0F02000A:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 100 0 0 10 0
   3: 0F02000A:0016 0202000A:C000 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0000000000000000 100 0 0 10 0
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5 1
   1: 00000000000000000000000001000000:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6 1
`
	got := fmt.Sprint(ParseListening(round))
	// 22 (any), 8080 (loopback and ::), 9000 (::1); not 3000 (10.0.2.15 only) nor the established 22.
	if got != "[22 8080 9000]" {
		t.Fatalf("listening: %s", got)
	}
}
