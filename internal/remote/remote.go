// Package remote runs heyvm on another host over SSH: the SSH kind of
// context. Every command a user types against such a context runs there,
// as that host's own heyvm, with the same flags and output; the owners of
// its sandboxes are that host's processes, so nothing stays running here
// for a detached remote sandbox.
//
// The connection is OpenSSH's own `ssh`, as Docker's ssh:// contexts use
// it, so the user's ~/.ssh/config (ProxyJump, IdentityFile, Match), agent
// and known_hosts apply exactly as they do for `ssh`: a host key that is
// not known is refused, never accepted (BatchMode). One connection per
// context is kept for a minute after use (ControlMaster), so a command
// costs a session on it, not a handshake.
package remote

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/heyvm/heyvm/internal/contexts"
	"github.com/heyvm/heyvm/internal/sshclient"
)

// Host is a host that runs heyvm, reached with OpenSSH.
type Host struct {
	Name   string // the context's name, for messages
	Target contexts.SSHTarget
	// Heyvm is heyvm's path there; "" for the one on its PATH.
	Heyvm string
	// ControlDir holds the shared connection's socket and ssh's logs
	// (0700, short: a unix socket path is at most about 100 bytes).
	ControlDir string
	// ClientVersion is this heyvm's version key: the remote one refuses
	// to run for another (env HEYVM_CLIENT_VERSION).
	ClientVersion string
	// SSH is the ssh binary ("ssh" on PATH if empty).
	SSH string
	// Origin is the context's name when the caller named it (--context):
	// the remote heyvm's hints then say `heyvm --context NAME ...`
	// (env HEYVM_ORIGIN_CONTEXT).
	Origin string
}

// Env variables a remote heyvm reads.
const (
	// EnvClientVersion carries the calling heyvm's version key.
	EnvClientVersion = "HEYVM_CLIENT_VERSION"
	// EnvCall names a remote call, so that a signal can be sent to it
	// (heyvm __signal) and it ends if its connection drops.
	EnvCall = "HEYVM_REMOTE_CALL"
	// EnvOrigin is the context's name as the caller typed it, for the
	// commands a remote heyvm suggests.
	EnvOrigin = "HEYVM_ORIGIN_CONTEXT"
)

// controlPath is the shared connection's socket (OpenSSH expands %C).
func (h *Host) controlPath() string { return filepath.Join(h.ControlDir, "cm-%C") }

// sshArgs is the ssh command line for a command on the host.
func (h *Host) sshArgs(logFile string, tty bool, remote string) []string {
	args := []string{
		"-E", logFile,
		"-o", "BatchMode=yes",
		// Errors only: no "Shared connection to ... closed." after a
		// pty session (what fails is in the log, and then one line).
		"-o", "LogLevel=ERROR",
		"-o", "ControlMaster=auto",
		"-o", "ControlPath=" + h.controlPath(),
		"-o", "ControlPersist=60",
		"-o", "ServerAliveInterval=5",
		"-o", "ServerAliveCountMax=3",
	}
	if h.Target.User != "" {
		args = append(args, "-l", h.Target.User)
	}
	if h.Target.Port != 0 {
		args = append(args, "-p", strconv.Itoa(h.Target.Port))
	}
	if tty {
		args = append(args, "-t")
	} else {
		args = append(args, "-T")
	}
	return append(args, h.Target.Host, "--", remote)
}

// heyvmCommand is the remote shell command that runs heyvm with argv.
func (h *Host) heyvmCommand(call string, argv []string) string {
	bin := "heyvm"
	switch {
	case strings.HasPrefix(h.Heyvm, "~/"):
		bin = `"$HOME"/` + sshclient.ShellQuote(strings.TrimPrefix(h.Heyvm, "~/"))
	case h.Heyvm != "":
		bin = sshclient.ShellQuote(h.Heyvm)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s=%s %s=%s ", EnvClientVersion, sshclient.ShellQuote(h.ClientVersion), EnvCall, call)
	if h.Origin != "" {
		fmt.Fprintf(&b, "%s=%s ", EnvOrigin, sshclient.ShellQuote(h.Origin))
	}
	fmt.Fprintf(&b, "exec %s", bin)
	for _, a := range argv {
		b.WriteString(" " + sshclient.ShellQuote(a))
	}
	return b.String()
}

// Streams are a command's standard streams.
type Streams struct {
	In       io.Reader
	Out, Err io.Writer
	// TTY: stdin is a terminal; the remote command gets a pty.
	TTY bool
}

// Run runs heyvm there with argv and returns its exit status. A signal
// to this process (Ctrl-C without a terminal, SIGTERM) is sent on to
// the remote heyvm, which handles it as it would here; with a terminal,
// Ctrl-C travels in the pty.
func (h *Host) Run(ctx context.Context, s Streams, argv []string) (int, error) {
	call := newCallID()
	return h.run(ctx, s, h.heyvmCommand(call, argv), call)
}

// Shell runs a plain shell command there (not heyvm), for setup and
// checks.
func (h *Host) Shell(ctx context.Context, s Streams, command string) (int, error) {
	return h.run(ctx, s, command, "")
}

// Output runs a heyvm command there and returns its standard output; a
// failure is an error holding its last line of standard error.
func (h *Host) Output(ctx context.Context, argv ...string) ([]byte, error) {
	var out, errb bytes.Buffer
	code, err := h.Run(ctx, Streams{In: strings.NewReader(""), Out: &out, Err: &errb}, argv)
	if err != nil {
		return nil, err
	}
	if code != 0 {
		msg := strings.TrimSpace(errb.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:]
		}
		msg = strings.TrimPrefix(msg, "heyvm: ")
		if msg == "" {
			msg = fmt.Sprintf("exit status %d", code)
		}
		return nil, fmt.Errorf("on %s: %s", h.Name, msg)
	}
	return out.Bytes(), nil
}

func (h *Host) run(ctx context.Context, s Streams, remote, call string) (int, error) {
	if err := os.MkdirAll(h.ControlDir, 0o700); err != nil {
		return -1, err
	}
	logFile := filepath.Join(h.ControlDir, "ssh-"+newCallID()+".log")
	defer os.Remove(logFile)
	cmd := exec.Command(h.sshBin(), h.sshArgs(logFile, s.TTY, remote)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = s.In, s.Out, s.Err
	if s.In == nil {
		cmd.Stdin = strings.NewReader("")
	}
	var sigs chan os.Signal
	if !s.TTY && call != "" {
		sigs = make(chan os.Signal, 4)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
		defer signal.Stop(sigs)
	}
	if err := cmd.Start(); err != nil {
		return -1, fmt.Errorf("run ssh: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case err := <-done:
			return h.outcome(cmd, err, logFile)
		case sig := <-sigs:
			// Sent on through a second session; if that fails the
			// connection is gone, and the remote heyvm ends by itself.
			go h.signal(call, sig)
		case <-ctx.Done():
			go h.signal(call, syscall.SIGTERM)
			select {
			case err := <-done:
				return h.outcome(cmd, err, logFile)
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				<-done
				return -1, ctx.Err()
			}
		}
	}
}

// signal sends sig to the remote heyvm of a call.
func (h *Host) signal(call string, sig os.Signal) {
	name := "TERM"
	switch sig {
	case syscall.SIGINT:
		name = "INT"
	case syscall.SIGHUP:
		name = "HUP"
	case syscall.SIGQUIT:
		name = "QUIT"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var sink bytes.Buffer
	h.run(ctx, Streams{In: strings.NewReader(""), Out: &sink, Err: &sink}, h.heyvmCommand("", []string{SignalCommand, call, name}), "")
}

// SignalCommand is the hidden command that delivers a signal to a remote
// call: `heyvm __signal CALL INT`.
const SignalCommand = "__signal"

func (h *Host) sshBin() string {
	if h.SSH != "" {
		return h.SSH
	}
	return "ssh"
}

// outcome turns ssh's end into heyvm's: the remote status, or (255: ssh
// itself failed) one line naming what went wrong and what to do.
func (h *Host) outcome(cmd *exec.Cmd, err error, logFile string) (int, error) {
	if err == nil {
		return 0, nil
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return -1, err
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		// ssh itself was killed (it may have been the shared connection's
		// master): what ran there is cut off.
		return 255, h.lostConnection(fmt.Sprintf("ssh was killed by %v", ws.Signal()))
	}
	if ee.ExitCode() != 255 {
		return ee.ExitCode(), nil
	}
	log, _ := os.ReadFile(logFile)
	if strings.TrimSpace(string(log)) == "" {
		// Silent: the remote command's own status 255, or the shared
		// connection gone under a client (its master killed, the host
		// gone), which says nothing either. The master tells them apart.
		if h.masterAlive() {
			return 255, nil
		}
		return 255, h.lostConnection("")
	}
	return 255, h.sshError(string(log))
}

// masterAlive says whether the shared connection to the host is up: only
// the master's own answer counts. (The exit status does not: a master
// that dies while asked fails the handshake, and OpenSSH then goes on to
// a connection of its own, which succeeds.)
func (h *Host) masterAlive() bool {
	out, _ := h.muxCommand("check").CombinedOutput()
	return bytes.Contains(out, []byte("Master running"))
}

// muxCommand is `ssh -O op` for the shared connection. It never starts a
// master itself, and should it fall back to a connection of its own (the
// master gone half-way), that connection runs `true` and nothing else.
func (h *Host) muxCommand(op string) *exec.Cmd {
	args := []string{"-O", op, "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ControlMaster=no",
		"-o", "ControlPath=" + h.controlPath()}
	if h.Target.User != "" {
		args = append(args, "-l", h.Target.User)
	}
	if h.Target.Port != 0 {
		args = append(args, "-p", strconv.Itoa(h.Target.Port))
	}
	return exec.Command(h.sshBin(), append(args, h.Target.Host, "true")...)
}

// lostConnection is the one line for a connection that ended under a
// command, with what ssh said of it (if anything).
func (h *Host) lostConnection(detail string) error {
	if detail != "" {
		detail = " (" + detail + ")"
	}
	return fmt.Errorf("lost the connection to %s%s: what ran there was stopped; run the command again", h.Target.String(), detail)
}

// sshError is ssh's own failure, from its log, as one line with the fix.
func (h *Host) sshError(log string) error {
	host := h.Target.String()
	last := lastLine(log)
	switch {
	case strings.Contains(log, "Host key verification failed") || strings.Contains(log, "No ED25519 host key is known") ||
		strings.Contains(log, "No RSA host key is known") || strings.Contains(log, "No ECDSA host key is known") || strings.Contains(log, "host key is known for"):
		return fmt.Errorf("the host key of %s is not in your known_hosts (heyvm never accepts one unseen): check its fingerprint and add it, e.g. by connecting once with `ssh %s`", host, h.sshDest())
	case strings.Contains(log, "REMOTE HOST IDENTIFICATION HAS CHANGED"):
		return fmt.Errorf("the host key of %s has CHANGED since it was recorded in your known_hosts: if you know why (a reinstalled host), remove the old key with `ssh-keygen -R %s`; otherwise someone may be intercepting the connection", host, h.Target.Host)
	case strings.Contains(log, "Permission denied"):
		return fmt.Errorf("%s refused your SSH key (%s): add your public key to ~/.ssh/authorized_keys there, or set IdentityFile for it in ~/.ssh/config", host, last)
	case strings.Contains(log, "Could not resolve hostname"):
		return fmt.Errorf("cannot resolve the host name of %s: check the name (and ~/.ssh/config)", host)
	case strings.Contains(log, "Connection refused"):
		return fmt.Errorf("%s refused the connection: is sshd running there, on that port?", host)
	case strings.Contains(log, "timed out") || strings.Contains(log, "No route to host") || strings.Contains(log, "Network is unreachable"):
		return fmt.Errorf("cannot reach %s (%s): check the address and the network", host, last)
	case strings.Contains(log, "Broken pipe") || strings.Contains(log, "closed by remote host") || strings.Contains(log, "Connection reset") || strings.Contains(log, "Timeout, server"):
		return h.lostConnection(last)
	case last == "":
		return fmt.Errorf("the connection to %s ended (ssh exited 255 without a word)", host)
	}
	return fmt.Errorf("ssh to %s failed: %s", host, last)
}

// sshDest is how the user would type the host to ssh.
func (h *Host) sshDest() string {
	d := h.Target.Host
	if h.Target.User != "" {
		d = h.Target.User + "@" + d
	}
	if h.Target.Port != 0 {
		d = "-p " + strconv.Itoa(h.Target.Port) + " " + d
	}
	return d
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			return strings.TrimRight(l, "\r.")
		}
	}
	return ""
}

// Forward listens on this machine's 127.0.0.1:local and carries each
// connection to the host's 127.0.0.1:port (OpenSSH's -L, on the shared
// connection), until ctx ends.
func (h *Host) Forward(ctx context.Context, local, port int) error {
	if err := os.MkdirAll(h.ControlDir, 0o700); err != nil {
		return err
	}
	logFile := filepath.Join(h.ControlDir, "ssh-"+newCallID()+".log")
	defer os.Remove(logFile)
	args := h.sshArgs(logFile, false, "")
	// -N: no command; the forward only. ExitOnForwardFailure: a port
	// here that is taken ends it at once.
	args = append([]string{"-N", "-o", "ExitOnForwardFailure=yes", "-L", fmt.Sprintf("127.0.0.1:%d:127.0.0.1:%d", local, port)}, args[:len(args)-3]...)
	cmd := exec.CommandContext(ctx, h.sshBin(), append(args, h.Target.Host)...)
	err := cmd.Run()
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		log, _ := os.ReadFile(logFile)
		if strings.Contains(string(log), "Address already in use") || strings.Contains(string(log), "cannot listen") {
			return fmt.Errorf("port 127.0.0.1:%d here is already in use: pick another with LOCAL:%d", local, port)
		}
		return h.sshError(string(log))
	}
	return nil
}

// Close ends the shared connection, if one is up.
func (h *Host) Close() {
	h.muxCommand("exit").Run()
}

func newCallID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}
