package kubevirt

// Protocol tests (not integration tests: no cluster, no VM): the console
// and portforward clients against an in-process websocket server that
// speaks plain.kubevirt.io the way KubeVirt's virt-api and client-go do
// (raw bytes in binary websocket messages, subprotocol negotiated on the
// upgrade), over TLS with a bearer token, carrying a real shell and a real
// SSH session to a real sshd on 127.0.0.1.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/crypto/ssh"
	"k8s.io/client-go/rest"

	"github.com/heyvm/heyvm/internal/console"
)

// fakeVirtAPI serves the VMI subresources of namespace dev, and GET of the
// VirtualMachine (Console and PortForward look at it while they wait).
type fakeVirtAPI struct {
	sshdAddr    string
	consoleBusy atomic.Int32 // answer 400 (not running yet) this many times
	upgrader    websocket.Upgrader
}

func (f *fakeVirtAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer tok" {
		status(w, 401, "Unauthorized", "Unauthorized", nil)
		return
	}
	if r.URL.Path == vmsPath+"/demo" {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"apiVersion":"kubevirt.io/v1","kind":"VirtualMachine","metadata":{"name":"demo","namespace":"dev","labels":{"heyvm.dev/sandbox":"0123456789ab"}},"spec":{"runStrategy":"Always","template":{"spec":{"domain":{"devices":{}}}}},"status":{"printableStatus":"Starting"}}`)
		return
	}
	const prefix = "/apis/subresources.kubevirt.io/v1/namespaces/dev/virtualmachineinstances/"
	rest, ok := strings.CutPrefix(r.URL.Path, prefix)
	if !ok {
		status(w, 404, "NotFound", "the server could not find the requested resource", nil)
		return
	}
	name, sub, _ := strings.Cut(rest, "/")
	switch {
	case name == "locked":
		status(w, 403, "Forbidden", fmt.Sprintf(`virtualmachineinstances.subresources.kubevirt.io %q is forbidden: User "dev-user" cannot get resource "virtualmachineinstances/%s" in API group "subresources.kubevirt.io" in the namespace "dev"`, name, sub), nil)
		return
	case name != "demo":
		status(w, 404, "NotFound", fmt.Sprintf(`virtualmachineinstances.kubevirt.io %q not found`, name), map[string]any{"name": name, "kind": "virtualmachineinstances"})
		return
	case sub == "console" && f.consoleBusy.Add(-1) >= 0:
		http.Error(w, "Unable to connect to VM because phase is Scheduling instead of Running", http.StatusBadRequest)
		return
	}
	var backend io.ReadWriteCloser
	switch sub {
	case "portforward/22/tcp":
		c, err := net.Dial("tcp", f.sshdAddr)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		backend = c
	case "console":
		// The guest's serial console: a shell that first says it is ready.
		cmd := exec.Command("sh", "-c", `echo "boot noise"; echo "HEYVM-READY 0.42"; exec sh`)
		in, _ := cmd.StdinPipe()
		out, _ := cmd.StdoutPipe()
		cmd.Stderr = cmd.Stdout
		if err := cmd.Start(); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer cmd.Wait()
		backend = procRW{out, in, cmd}
	default:
		http.Error(w, "no such subresource "+sub, 404)
		return
	}
	defer backend.Close()
	ws, err := f.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer ws.Close()
	if sub == "console" {
		// Not data: a plain.kubevirt.io reader skips it.
		ws.WriteMessage(websocket.TextMessage, []byte("ignored"))
	}
	done := make(chan struct{}, 2)
	go func() { // guest → client, one binary message per read
		buf := make([]byte, 32<<10)
		for {
			n, err := backend.Read(buf)
			if n > 0 && ws.WriteMessage(websocket.BinaryMessage, buf[:n]) != nil {
				break
			}
			if err != nil {
				ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
				break
			}
		}
		done <- struct{}{}
	}()
	go func() { // client → guest
		for {
			typ, data, err := ws.ReadMessage()
			if err != nil {
				break
			}
			if typ == websocket.BinaryMessage {
				if _, err := backend.Write(data); err != nil {
					break
				}
			}
		}
		done <- struct{}{}
	}()
	<-done
}

type procRW struct {
	io.Reader
	w   io.WriteCloser
	cmd *exec.Cmd
}

func (p procRW) Write(b []byte) (int, error) { return p.w.Write(b) }
func (p procRW) Close() error {
	p.w.Close()
	p.cmd.Process.Kill()
	return nil
}

func streamCluster(t *testing.T, f *fakeVirtAPI) *Cluster {
	t.Helper()
	f.upgrader = websocket.Upgrader{Subprotocols: []string{Subprotocol}}
	srv := httptest.NewTLSServer(f)
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	c, err := NewForConfig(&rest.Config{Host: srv.URL, BearerToken: "tok", TLSClientConfig: rest.TLSClientConfig{CAData: ca}}, "dev")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestConsoleProtocol(t *testing.T) {
	f := &fakeVirtAPI{}
	f.consoleBusy.Store(2)
	c := streamCluster(t, f)
	old := RetryInterval
	RetryInterval = 10 * time.Millisecond
	defer func() { RetryInterval = old }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	conn, err := c.Console(ctx, "demo")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if f.consoleBusy.Load() >= 0 {
		t.Fatal("the console did not wait out the 400s")
	}
	d := console.New(conn, nil)
	up, err := d.WaitReady(ctx)
	if err != nil || up != "0.42" {
		t.Fatalf("WaitReady = %q, %v", up, err)
	}
	out, code, err := d.Run(ctx, `echo "IP $(echo 10.0.2.2)"; echo second line; exit_with() { return $1; }; exit_with 3`)
	if err != nil || code != 3 || out != "IP 10.0.2.2\nsecond line" {
		t.Fatalf("Run = %q, %d, %v", out, code, err)
	}
}

func TestStreamErrors(t *testing.T) {
	c := streamCluster(t, &fakeVirtAPI{})
	ctx := context.Background()
	_, err := c.Console(ctx, "locked")
	if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "virtualmachineinstances/console") || !strings.Contains(err.Error(), "kubevirt.io:edit") {
		t.Fatalf("console: %v", err)
	}
	_, err = c.PortForward(ctx, "locked", 22)
	if !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "virtualmachineinstances/portforward") {
		t.Fatalf("portforward: %v", err)
	}
	c.rest.BearerToken = "expired"
	_, err = c.PortForward(ctx, "demo", 22)
	if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "log in again") {
		t.Fatalf("expired login: %v", err)
	}
}

func TestPortForwardCarriesSSH(t *testing.T) {
	sshd := startSSHD(t)
	c := streamCluster(t, &fakeVirtAPI{sshdAddr: sshd.addr})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	conn, err := c.PortForward(ctx, "demo", 22)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cc, chans, reqs, err := ssh.NewClientConn(conn, "demo", &ssh.ClientConfig{
		User:              sshd.user,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(sshd.client)},
		HostKeyCallback:   ssh.FixedHostKey(sshd.hostKey),
		HostKeyAlgorithms: []string{ssh.KeyAlgoED25519},
		Timeout:           15 * time.Second,
	})
	if err != nil {
		t.Fatalf("ssh handshake over portforward: %v\nsshd: %s", err, sshd.log())
	}
	client := ssh.NewClient(cc, chans, reqs)
	defer client.Close()

	s, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.Output("echo hello-$((6*7))")
	if err != nil || string(out) != "hello-42\n" {
		t.Fatalf("output %q, %v", out, err)
	}

	// 4 MiB each way in one session: many websocket messages, in order.
	payload := make([]byte, 4<<20)
	rand.Read(payload)
	want := fmt.Sprintf("%x", sha256.Sum256(payload))
	s, err = client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	s.Stdin = bytes.NewReader(payload)
	var got bytes.Buffer
	s.Stdout = &got
	if err := s.Run("tee /dev/stderr 2>/dev/null | sha256sum; head -c 4194304 /dev/zero"); err != nil {
		t.Fatalf("run: %v", err)
	}
	line, rest, _ := strings.Cut(got.String(), "\n")
	if !strings.HasPrefix(line, want) || len(rest) != 4<<20 {
		t.Fatalf("sha256 %q (want %s), %d bytes back", line, want, len(rest))
	}
	// Concurrent sessions share the one forwarded connection.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := client.NewSession()
			if err != nil {
				errs <- err
				return
			}
			out, err := s.Output(fmt.Sprintf("echo %d", i))
			if err != nil || strings.TrimSpace(string(out)) != fmt.Sprint(i) {
				errs <- fmt.Errorf("session %d: %q, %v", i, out, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

type testSSHD struct {
	addr, user string
	client     ssh.Signer
	hostKey    ssh.PublicKey
	stderr     *bytes.Buffer
	mu         *sync.Mutex
}

func (s *testSSHD) log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stderr.String()
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// startSSHD runs OpenSSH's sshd on 127.0.0.1 with a throwaway config,
// host key and authorized key, as an ordinary process (-D -e). It skips
// the test when there is no sshd: HEYVM_TEST_SSHD names one, else
// /usr/sbin/sshd (Debian's openssh-server).
//
// As root, sshd wants its privilege separation user (sshd) and directory
// (/run/sshd); where they are missing (openssh-server unpacked rather than
// installed) it runs in a private mount namespace that has them, so
// nothing on the machine changes.
func startSSHD(t *testing.T) *testSSHD {
	t.Helper()
	bin := os.Getenv("HEYVM_TEST_SSHD")
	if bin == "" {
		bin = "/usr/sbin/sshd"
	}
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no sshd (%v): install openssh-server or set HEYVM_TEST_SSHD", err)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(hostPriv, "")
	if err != nil {
		t.Fatal(err)
	}
	hostKeyFile := filepath.Join(dir, "host_ed25519")
	if err := os.WriteFile(hostKeyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	hostSigner, _ := ssh.NewSignerFromKey(hostPriv)
	_, clientPriv, _ := ed25519.GenerateKey(rand.Reader)
	clientSigner, _ := ssh.NewSignerFromKey(clientPriv)
	authKeys := filepath.Join(dir, "authorized_keys")
	os.WriteFile(authKeys, ssh.MarshalAuthorizedKey(clientSigner.PublicKey()), 0o600)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(addr)
	cfg := filepath.Join(dir, "sshd_config")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`Port %s
ListenAddress 127.0.0.1
HostKey %s
AuthorizedKeysFile %s
PidFile none
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
LogLevel ERROR
`, port, hostKeyFile, authKeys)), 0o600)

	args := []string{bin, "-D", "-e", "-f", cfg}
	if os.Geteuid() == 0 && !hasPrivsep() {
		passwd, err := os.ReadFile("/etc/passwd")
		if err != nil {
			t.Fatal(err)
		}
		pw := filepath.Join(dir, "passwd")
		os.WriteFile(pw, append(passwd, []byte("sshd:x:65534:65534:sshd privsep:/run/sshd:/usr/sbin/nologin\n")...), 0o644)
		if _, err := exec.LookPath("unshare"); err != nil {
			t.Skip("sshd needs its privsep user, and there is no unshare to give it one")
		}
		args = append([]string{"unshare", "--mount", "--propagation", "private", "sh", "-c",
			`mount -t tmpfs heyvm-test /run && mkdir -m 755 /run/sshd && mount --bind "$0" /etc/passwd && exec "$@"`, pw}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	var mu sync.Mutex
	var stderr bytes.Buffer
	cmd.Stdout = lockedWriter{&mu, &stderr}
	cmd.Stderr = lockedWriter{&mu, &stderr}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	s := &testSSHD{addr: addr, user: u.Username, client: clientSigner, hostKey: hostSigner.PublicKey(), stderr: &stderr, mu: &mu}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return s
		}
		select {
		case <-exited:
			t.Fatalf("sshd exited: %s", s.log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd did not listen on %s: %s", addr, s.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func hasPrivsep() bool {
	if _, err := os.Stat("/run/sshd"); err != nil {
		return false
	}
	_, err := user.Lookup("sshd")
	return err == nil
}
