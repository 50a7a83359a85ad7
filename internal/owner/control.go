package owner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/heyvm/heyvm/internal/backend"
	"github.com/heyvm/heyvm/internal/layout"
	"github.com/heyvm/heyvm/internal/sandbox"
)

// The owner's control socket (control.sock, 0600 in the 0700 sandbox
// directory) lets a later heyvm change a running sandbox: one JSON
// request per connection, one JSON reply.

// ControlRequest is what a CLI asks the owner.
type ControlRequest struct {
	Op   string              `json:"op"` // port-add, port-rm, port-list, info, suspend
	Port backend.PortForward `json:"port"`
}

// ControlReply is the owner's answer: the forwards after the change.
type ControlReply struct {
	Ports   []backend.PortForward `json:"ports"`
	Suspend *sandbox.SuspendInfo  `json:"suspend,omitempty"`
	Error   string                `json:"error,omitempty"`
}

// controlDeadline bounds one request; a suspend writes the VM's memory.
func controlDeadline(op string) time.Duration {
	if op == "suspend" {
		return SuspendTimeout + 30*time.Second
	}
	return 30 * time.Second
}

func (s *Session) listenControl(path string) error {
	l, err := listenPrivate(path)
	if err != nil {
		return err
	}
	s.control = l
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go s.serveControl(c)
		}
	}()
	return nil
}

func (s *Session) serveControl(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	var req ControlRequest
	if err := json.NewDecoder(c).Decode(&req); err != nil {
		return
	}
	c.SetDeadline(time.Now().Add(controlDeadline(req.Op)))
	var reply ControlReply
	switch req.Op {
	case "suspend":
		ctx, cancel := context.WithTimeout(context.Background(), SuspendTimeout)
		si, err := s.Suspend(ctx)
		cancel()
		if err != nil {
			reply.Error = err.Error()
			fmt.Fprintf(s.log, "owner: suspend failed: %v\n", err)
		} else {
			reply.Suspend = &si
		}
		json.NewEncoder(c).Encode(reply)
		return
	case "port-add":
		f, err := s.ports.Add(req.Port)
		if err != nil {
			reply.Error = err.Error()
		} else {
			fmt.Fprintf(s.log, "owner: forwarding 127.0.0.1:%d to guest port %d\n", f.HostPort, f.GuestPort)
		}
	case "port-rm":
		if f, ok := s.ports.Remove(req.Port.HostPort); !ok {
			reply.Error = fmt.Sprintf("no forward on host port %d", req.Port.HostPort)
		} else {
			fmt.Fprintf(s.log, "owner: stopped forwarding 127.0.0.1:%d (guest port %d)\n", f.HostPort, f.GuestPort)
		}
	case "port-list", "info":
		// Both rewrite owner.json (recordPorts, below): "info" is how a
		// CLI that found it damaged gets it back.
	default:
		reply.Error = "unknown request " + req.Op
	}
	reply.Ports = s.ports.List()
	s.recordPorts(reply.Ports)
	json.NewEncoder(c).Encode(reply)
}

// recordPorts keeps owner.json's forwards current.
func (s *Session) recordPorts(ports []backend.PortForward) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping || !s.ready {
		return
	}
	s.Info.Ports = ports
	sandbox.WriteOwnerInfo(s.sb.Files, s.Info)
}

func init() {
	sandbox.RewriteOwnerInfo = func(files layout.Sandbox) error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err := Control(ctx, &sandbox.Sandbox{Config: &sandbox.Config{}, Files: files}, ControlRequest{Op: "info"})
		return err
	}
}

// ErrNotRunning means the sandbox has no owner to ask.
var ErrNotRunning = errors.New("the sandbox is not running")

// Control sends one request to a running sandbox's owner.
func Control(ctx context.Context, sb *sandbox.Sandbox, req ControlRequest) (ControlReply, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", sb.Files.ControlSock())
	if err != nil {
		return ControlReply{}, ErrNotRunning
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(controlDeadline(req.Op)))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return ControlReply{}, err
	}
	var reply ControlReply
	if err := json.NewDecoder(c).Decode(&reply); err != nil {
		return ControlReply{}, fmt.Errorf("no answer from the owner of %s: %w", sb.Config.Name, err)
	}
	if reply.Error != "" {
		return reply, errors.New(reply.Error)
	}
	return reply, nil
}
