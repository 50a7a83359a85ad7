package sshclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/term"
)

// Target is where and how to reach one sandbox's sshd: through Dial when
// set (a backend's stream), else at Host:Port over TCP.
type Target struct {
	Host    string
	Port    int
	Dial    func(ctx context.Context) (net.Conn, error)
	User    string
	Signer  ssh.Signer
	HostKey ssh.PublicKey
}

// Dial connects and authenticates, honouring ctx for the connect and the
// handshake.
func Dial(ctx context.Context, t Target) (*ssh.Client, error) {
	addr := net.JoinHostPort(t.Host, strconv.Itoa(t.Port))
	dial := t.Dial
	if dial == nil {
		dial = func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		}
	} else {
		addr = "the guest"
	}
	cfg := &ssh.ClientConfig{
		User:              t.User,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(t.Signer)},
		HostKeyCallback:   checkPinned(t.HostKey),
		HostKeyAlgorithms: []string{ssh.KeyAlgoED25519},
		Timeout:           15 * time.Second,
	}
	conn, err := dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to sandbox sshd at %s: %w", addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	stop()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("ssh handshake with %s: %w", addr, err)
	}
	conn.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}

// ExecOptions describe one remote command.
type ExecOptions struct {
	Command string // a shell command line, run by the user's shell
	Stdin   io.Reader
	Stdout  io.Writer
	Stderr  io.Writer
	// ForwardSignals relays SIGINT, SIGTERM, SIGHUP and SIGQUIT received
	// by this process to the remote command.
	ForwardSignals bool
}

// Exec runs a command without a pty and returns its exit status.
func Exec(ctx context.Context, c *ssh.Client, o ExecOptions) (int, error) {
	s, err := c.NewSession()
	if err != nil {
		return -1, err
	}
	defer s.Close()
	s.Stdout, s.Stderr = o.Stdout, o.Stderr
	if o.Stdout != nil && o.Stdout == o.Stderr {
		// The session copies stdout and stderr on two goroutines; one
		// writer for both must be serialised (and must not be handed to
		// io.Copy as an io.ReaderFrom, which bytes.Buffer is).
		w := &lockedWriter{w: o.Stdout}
		s.Stdout, s.Stderr = w, w
	}
	var stdin io.WriteCloser
	if o.Stdin != nil {
		// Fed by us, not by the session, so that a read blocked on a
		// terminal never holds up the command's exit.
		if stdin, err = s.StdinPipe(); err != nil {
			return -1, err
		}
	}
	command := o.Command
	var abandon chan os.Signal
	if o.ForwardSignals {
		// sshd may ignore "signal" channel requests (Debian's 9.2 does),
		// so heyvm delivers signals itself: the remote shell first reports
		// its pid, which is also its process group (sshd makes each
		// session a new session), and a host signal becomes a kill of
		// that group from a second session on the same connection.
		pf := &pidFilter{w: s.Stderr, ready: make(chan struct{})}
		if pf.w == nil {
			pf.w = io.Discard
		}
		s.Stderr = pf
		command = "echo " + pidMarker + "$$ >&2; " + command
		sigs := make(chan os.Signal, 4)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
		defer signal.Stop(sigs)
		abandon = make(chan os.Signal, 1)
		go forwardSignals(ctx, c, pf, sigs, abandon)
	}
	if err := s.Start(command); err != nil {
		return -1, err
	}
	if stdin != nil {
		go feedStdin(stdin, o.Stdin)
	}
	return waitStatus(ctx, s, abandon)
}

// feedStdin copies r to a started session's stdin and then closes it.
// Only once the command has started: OpenSSH's sshd drops an EOF that
// arrives before the exec request (the channel has no command yet whose
// input it could close), and the command then waits for input forever;
// that is what `heyvm exec ID -- cat </dev/null` did.
func feedStdin(w io.WriteCloser, r io.Reader) {
	io.Copy(w, r)
	w.Close()
}

// AbandonAfter is how long heyvm waits for a remote command to end after
// forwarding a signal before it gives up on it.
var AbandonAfter = 3 * time.Second

// AbandonedError means heyvm stopped waiting for a remote command after
// a signal: the command did not end in time, or a second signal came.
type AbandonedError struct{ Signal os.Signal }

func (e *AbandonedError) Error() string {
	return fmt.Sprintf("gave up waiting after %s: the remote command may still be running", sigName(e.Signal))
}

// ExitCode is the shell's status for death by that signal (130 for SIGINT).
func (e *AbandonedError) ExitCode() int {
	if n, ok := e.Signal.(syscall.Signal); ok {
		return 128 + int(n)
	}
	return 130
}

func sigName(s os.Signal) string {
	if s == syscall.SIGINT {
		return "Ctrl-C"
	}
	return "SIG" + string(sshSignal(s))
}

// forwardSignals relays host signals to the remote process group. The
// first one is forwarded; if the command has not ended AbandonAfter
// later, or a second signal comes, heyvm gives up on it (a frozen or
// vanished VM never answers, and a user must always get the prompt back).
func forwardSignals(ctx context.Context, c *ssh.Client, pf *pidFilter, sigs <-chan os.Signal, abandon chan<- os.Signal) {
	var first os.Signal
	var timer <-chan time.Time
	for {
		select {
		case sig := <-sigs:
			if first != nil {
				abandon <- first
				return
			}
			first = sig
			timer = time.After(AbandonAfter)
			go func() {
				select {
				case <-pf.ready:
				case <-ctx.Done():
					return
				}
				if pf.pid > 0 {
					signalGroup(c, pf.pid, sshSignal(sig))
				}
			}()
		case <-timer:
			abandon <- first
			return
		case <-ctx.Done():
			return
		}
	}
}

const pidMarker = "HEYVM-PGID "

// signalGroup sends sig to a remote process group.
func signalGroup(c *ssh.Client, pgid int, sig ssh.Signal) {
	s, err := c.NewSession()
	if err != nil {
		return
	}
	defer s.Close()
	s.Run(fmt.Sprintf("kill -%s -- -%d", sig, pgid))
}

// pidFilter takes the pid line off the front of the remote stderr and
// passes everything after it through untouched.
type pidFilter struct {
	w     io.Writer
	head  []byte
	done  bool
	pid   int
	ready chan struct{}
}

func (f *pidFilter) Write(p []byte) (int, error) {
	if f.done {
		return f.w.Write(p)
	}
	n := len(p)
	f.head = append(f.head, p...)
	i := bytes.IndexByte(f.head, '\n')
	if i < 0 && len(f.head) < 64 {
		return n, nil
	}
	f.done = true
	rest := f.head
	if i >= 0 && bytes.HasPrefix(f.head, []byte(pidMarker)) {
		f.pid, _ = strconv.Atoi(string(f.head[len(pidMarker):i]))
		rest = f.head[i+1:]
	}
	close(f.ready)
	f.head = nil
	if len(rest) > 0 {
		if _, err := f.w.Write(rest); err != nil {
			return 0, err
		}
	}
	return n, nil
}

func waitStatus(ctx context.Context, s *ssh.Session, abandon <-chan os.Signal) (int, error) {
	done := make(chan error, 1)
	go func() { done <- s.Wait() }()
	var err error
	select {
	case err = <-done:
	case sig := <-abandon:
		go s.Close() // may block on a frozen peer; the process exits anyway
		return -1, &AbandonedError{Signal: sig}
	case <-ctx.Done():
		go func() { s.Signal(ssh.SIGKILL); s.Close() }()
		return -1, ctx.Err()
	}
	if err == nil {
		return 0, nil
	}
	var ee *ssh.ExitError
	if errors.As(err, &ee) {
		if ee.Signal() != "" {
			return 128 + signalNumber(ee.Signal()), nil
		}
		return ee.ExitStatus(), nil
	}
	var missing *ssh.ExitMissingError
	if errors.As(err, &missing) {
		return 255, errors.New("the connection to the sandbox closed before the command finished")
	}
	return -1, err
}

func sshSignal(sig os.Signal) ssh.Signal {
	switch sig {
	case syscall.SIGINT:
		return ssh.SIGINT
	case syscall.SIGTERM:
		return ssh.SIGTERM
	case syscall.SIGHUP:
		return ssh.SIGHUP
	case syscall.SIGQUIT:
		return ssh.SIGQUIT
	}
	return ssh.SIGTERM
}

func signalNumber(s string) int {
	switch ssh.Signal(s) {
	case ssh.SIGHUP:
		return 1
	case ssh.SIGINT:
		return 2
	case ssh.SIGQUIT:
		return 3
	case ssh.SIGKILL:
		return 9
	case ssh.SIGTERM:
		return 15
	}
	return 0
}

// ShellOptions describe an interactive session.
type ShellOptions struct {
	Command string // empty for a login shell
	Stdin   *os.File
	Stdout  io.Writer
	Stderr  io.Writer
}

// Shell runs an interactive session. With a terminal on Stdin it asks for
// a pty, puts the terminal in raw mode and forwards window-size changes;
// without one it runs the shell with plain pipes.
func Shell(ctx context.Context, c *ssh.Client, o ShellOptions) (int, error) {
	fd := int(o.Stdin.Fd())
	if !term.IsTerminal(fd) {
		cmd := o.Command
		if cmd == "" {
			cmd = "exec \"${SHELL:-/bin/sh}\" -l"
		}
		return Exec(ctx, c, ExecOptions{Command: cmd, Stdin: o.Stdin, Stdout: o.Stdout, Stderr: o.Stderr, ForwardSignals: true})
	}
	s, err := c.NewSession()
	if err != nil {
		return -1, err
	}
	defer s.Close()
	w, h, err := term.GetSize(fd)
	if err != nil {
		w, h = 80, 24
	}
	termName := os.Getenv("TERM")
	if termName == "" {
		termName = "xterm-256color"
	}
	if err := s.RequestPty(termName, h, w, ssh.TerminalModes{ssh.ECHO: 1, ssh.TTY_OP_ISPEED: 14400, ssh.TTY_OP_OSPEED: 14400}); err != nil {
		return -1, fmt.Errorf("request pty: %w", err)
	}
	old, err := term.MakeRaw(fd)
	if err != nil {
		return -1, err
	}
	defer term.Restore(fd, old)
	// A signal that ends heyvm (SIGTERM; SIGHUP when the terminal window
	// closes) ends the session instead, so the terminal's mode is put
	// back on the way out. In raw mode Ctrl-C is a byte for the guest.
	ends := make(chan os.Signal, 1)
	signal.Notify(ends, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(ends)
	s.Stdout, s.Stderr = o.Stdout, o.Stderr
	in, err := s.StdinPipe()
	if err != nil {
		return -1, err
	}
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	defer signal.Stop(winch)
	go func() {
		for range winch {
			if w, h, err := term.GetSize(fd); err == nil {
				s.WindowChange(h, w)
			}
		}
	}()
	if o.Command == "" {
		err = s.Shell()
	} else {
		err = s.Start(o.Command)
	}
	if err != nil {
		return -1, err
	}
	go feedStdin(in, o.Stdin)
	return waitStatus(ctx, s, ends)
}

// KeepAlive probes the connection every interval with OpenSSH's
// keepalive request; after misses intervals without an answer it closes
// the client, so every read and wait on it ends. dead reports whether
// that happened (a frozen or vanished VM, not a command's own error).
func KeepAlive(c *ssh.Client, interval time.Duration, misses int) (dead func() bool) {
	var mu sync.Mutex
	fired := false
	last := time.Now()
	closed := make(chan struct{})
	go func() { c.Wait(); close(closed) }()
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-closed:
				return
			case <-t.C:
			}
			go func() {
				if _, _, err := c.SendRequest("keepalive@openssh.com", true, nil); err == nil {
					mu.Lock()
					last = time.Now()
					mu.Unlock()
				}
			}()
			mu.Lock()
			silent := time.Since(last)
			mu.Unlock()
			if silent > time.Duration(misses)*interval {
				mu.Lock()
				fired = true
				mu.Unlock()
				c.Close()
				return
			}
		}
	}()
	return func() bool { mu.Lock(); defer mu.Unlock(); return fired }
}

// ShellQuote quotes one word for a POSIX shell.
func ShellQuote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+@%", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// CommandLine builds the remote command for `heyvm exec`: an optional
// working directory, user and environment around the quoted argv.
func CommandLine(argv []string, cwd, user string, env []string) string {
	var parts []string
	if cwd != "" {
		parts = append(parts, "cd "+ShellQuote(cwd)+" &&")
	}
	parts = append(parts, "exec")
	if user != "" && user != "root" {
		parts = append(parts, "runuser", "-u", ShellQuote(user), "--")
	}
	if len(env) > 0 {
		parts = append(parts, "env")
		for _, e := range env {
			parts = append(parts, ShellQuote(e))
		}
	}
	for _, a := range argv {
		parts = append(parts, ShellQuote(a))
	}
	return strings.Join(parts, " ")
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
