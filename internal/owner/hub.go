package owner

import (
	"io"
	"net"
	"os"
	"sync"

	"github.com/heyvm/heyvm/internal/console"
)

// consoleHub fans the guest console out to terminals attached through
// console.sock (`heyvm console`) and feeds their keystrokes back. Only the
// owner can read the hypervisor's console, so attaching goes through it.
type consoleHub struct {
	mu      sync.Mutex
	clients map[net.Conn]chan []byte
	l       net.Listener
	// firstAttach runs once, when the first terminal attaches.
	firstAttach sync.Once
}

func newConsoleHub() *consoleHub { return &consoleHub{clients: map[net.Conn]chan []byte{}} }

// Write copies console output to every client without ever blocking the
// console: a client that cannot keep up loses output, the VM never waits.
func (h *consoleHub) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ch := range h.clients {
		b := append([]byte(nil), p...)
		select {
		case ch <- b:
		default:
		}
	}
	return len(p), nil
}

// listenPrivate listens on a unix socket at path, replacing a stale one,
// readable and writable by the owner's user only.
func listenPrivate(path string) (net.Listener, error) {
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	os.Chmod(path, 0o600)
	return l, nil
}

// listen serves console.sock: each terminal attached gets the console's
// output and sends its keystrokes to to. heyvm's console commands leave
// the shell's echo off (console.Driver), and nobody types there until a
// person attaches: the first attach turns echo back on (console.EchoOn),
// typed as if by them at the prompt the shell is at.
func (h *consoleHub) listen(path string, to io.Writer) error {
	l, err := listenPrivate(path)
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.l = l
	h.mu.Unlock()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			h.firstAttach.Do(func() { to.Write([]byte(console.EchoOn)) })
			ch := make(chan []byte, 256)
			h.mu.Lock()
			h.clients[c] = ch
			h.mu.Unlock()
			go func() {
				for b := range ch {
					if _, err := c.Write(b); err != nil {
						c.Close()
						return
					}
				}
				c.Close()
			}()
			go func() {
				io.Copy(to, c)
				h.drop(c)
			}()
		}
	}()
	return nil
}

func (h *consoleHub) drop(c net.Conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ch, ok := h.clients[c]; ok {
		delete(h.clients, c)
		close(ch)
	}
}

func (h *consoleHub) close(path string) {
	h.mu.Lock()
	l := h.l
	h.l = nil
	var conns []net.Conn
	for c := range h.clients {
		conns = append(conns, c)
	}
	h.mu.Unlock()
	if l != nil {
		l.Close()
		os.Remove(path)
	}
	for _, c := range conns {
		h.drop(c)
	}
}
