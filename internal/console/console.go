// Package console drives a guest's serial console: it records it to a
// size-bounded log, waits for the image's ready line, and runs shell
// commands on the root shell there. It is how heyvm learns the guest's
// address and host key before any SSH exists.
package console

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
)

// ReadyMarker starts the line the guest prints once sshd listens and the
// console shell is up. FailedMarker starts a line saying boot failed.
const (
	ReadyMarker  = "HEYVM-READY"
	FailedMarker = "HEYVM-FAILED"
)

// EchoOn, typed at the console shell's prompt, turns echo back on for a
// person at the console; Run turns it off again when it next runs
// (HEYVM_NOECHO tells it to).
const EchoOn = "stty echo 2>/dev/null; HEYVM_NOECHO=\n"

// Driver reads a console stream and lets callers wait for lines on it.
type Driver struct {
	rw   io.ReadWriter
	sink io.Writer

	mu       sync.Mutex
	line     bytes.Buffer
	watchers map[int]func(string) bool
	nextID   int
	closed   error
	done     chan struct{}
	wmu      sync.Mutex
}

// New starts reading rw; every byte is also written to sink (a log, and
// any attached terminals). Reading stops when rw returns an error.
func New(rw io.ReadWriter, sink io.Writer) *Driver {
	if sink == nil {
		sink = io.Discard
	}
	d := &Driver{rw: rw, sink: sink, watchers: map[int]func(string) bool{}, done: make(chan struct{})}
	go d.readLoop()
	return d
}

func (d *Driver) readLoop() {
	buf := make([]byte, 32<<10)
	for {
		n, err := d.rw.Read(buf)
		if n > 0 {
			d.sink.Write(buf[:n])
			d.feed(buf[:n])
		}
		if err != nil {
			d.mu.Lock()
			d.closed = fmt.Errorf("console closed: %w", err)
			d.mu.Unlock()
			close(d.done)
			return
		}
	}
}

func (d *Driver) feed(p []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, b := range p {
		if b != '\n' {
			if d.line.Len() < 64<<10 {
				d.line.WriteByte(b)
			}
			continue
		}
		l := strings.TrimRight(d.line.String(), "\r")
		d.line.Reset()
		for id, w := range d.watchers {
			if w(l) {
				delete(d.watchers, id)
			}
		}
	}
}

// Done is closed when the console stream ends (the VM is gone).
func (d *Driver) Done() <-chan struct{} { return d.done }

// Write sends bytes to the guest console, e.g. from an attached terminal.
func (d *Driver) Write(p []byte) (int, error) {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	return d.rw.Write(p)
}

// waitLine calls match on every complete line from now on until it
// returns true, ctx ends, or the console closes.
func (d *Driver) waitLine(ctx context.Context, match func(string) bool, send func() error) error {
	hit := make(chan struct{})
	d.mu.Lock()
	if d.closed != nil {
		err := d.closed
		d.mu.Unlock()
		return err
	}
	id := d.nextID
	d.nextID++
	d.watchers[id] = func(l string) bool {
		if match(l) {
			close(hit)
			return true
		}
		return false
	}
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.watchers, id)
		d.mu.Unlock()
	}()
	if send != nil {
		if err := send(); err != nil {
			return err
		}
	}
	select {
	case <-hit:
		return nil
	case <-d.done:
		select {
		case <-hit:
			return nil
		default:
		}
		return d.closed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ErrBootFailed is returned when the guest reports a failed boot.
var ErrBootFailed = errors.New("guest boot failed")

// WaitReady waits for the guest's ready line and returns what follows the
// marker (the guest uptime).
func (d *Driver) WaitReady(ctx context.Context) (string, error) {
	var got string
	var failed string
	err := d.waitLine(ctx, func(l string) bool {
		if i := strings.Index(l, ReadyMarker+" "); i >= 0 {
			got = strings.TrimSpace(l[i+len(ReadyMarker):])
			return true
		}
		if i := strings.Index(l, FailedMarker); i >= 0 {
			failed = strings.TrimSpace(l[i+len(FailedMarker):])
			return true
		}
		return false
	}, nil)
	if err != nil {
		return "", err
	}
	if failed != "" {
		return "", fmt.Errorf("%w: %s", ErrBootFailed, failed)
	}
	return got, nil
}

// Run runs a shell command on the console's root shell and returns its
// output (stdout and stderr) and exit status. Markers delimit the output;
// they are printed through printf so the echoed command line, which
// holds the format but not the result, can never match them.
func (d *Driver) Run(ctx context.Context, script string) (string, int, error) {
	return d.RunWithInput(ctx, script, "")
}

// RunWithInput is Run with one more line sent after the command, for
// the script (or a process it wakes) to read from the console. A process
// reads such a line with one read(2); bash reads its own input a byte at
// a time, each a tenth of a millisecond under TCG. The script must read
// the line whatever happens, or the shell runs it as a command.
func (d *Driver) RunWithInput(ctx context.Context, script, input string) (string, int, error) {
	nonce := newNonce()
	begin := "HEYVM-BEGIN-" + nonce
	end := "HEYVM-END-" + nonce
	var out []string
	capturing := false
	status := -1
	// A short first line turns line editing off, which would redraw the
	// line for every byte it is sent (a fifth of a second for a 2 KB
	// script under TCG), and echo off, once per shell (stty is a process,
	// and each costs tens of milliseconds under TCG). The script is then
	// read as plain lines (at most 4095 bytes each, a terminal's limit),
	// and editing is back on for a person at the console, unless the
	// script set HEYVM_PLAIN (a VM saved to be restored: its next script
	// is then read plainly from the first line).
	cmd := "set +o emacs +o vi 2>/dev/null; [ -n \"$HEYVM_NOECHO\" ] || { stty -echo 2>/dev/null; HEYVM_NOECHO=1; }\n" +
		fmt.Sprintf("printf '%%s-%%s\\n' HEYVM-BEGIN %s; { %s\n} 2>&1; printf '%%s-%%s %%s\\n' HEYVM-END %s $?; [ -n \"$HEYVM_PLAIN\" ] || set -o emacs 2>/dev/null\n", nonce, script, nonce)
	if input != "" {
		cmd += input + "\n"
	}
	err := d.waitLine(ctx, func(l string) bool {
		switch {
		case strings.Contains(l, begin):
			capturing = true
			out = nil
		case strings.Contains(l, end):
			fmt.Sscanf(strings.TrimSpace(l[strings.Index(l, end)+len(end):]), "%d", &status)
			return true
		case capturing:
			out = append(out, l)
		}
		return false
	}, func() error {
		_, err := d.Write([]byte(cmd))
		return err
	})
	if err != nil {
		return "", -1, err
	}
	return strings.Join(out, "\n"), status, nil
}

func newNonce() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
