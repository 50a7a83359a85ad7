package owner

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/heyvm/heyvm/internal/backend"
	"github.com/heyvm/heyvm/internal/portfwd"
	"github.com/heyvm/heyvm/internal/sshclient"
)

// watchPorts does what Lima and VS Code do: it follows the guest's
// listening TCP sockets (one SSH session printing /proc/net/tcp about once
// a second) and forwards each new one to the same host port if that is
// free, else to a free one, and drops the forward when the socket goes.
func (s *Session) watchPorts() {
	auto := map[int]int{} // guest port → host port
	for {
		select {
		case <-s.stopped:
			return
		default:
		}
		err := s.watchPortsOnce(auto)
		select {
		case <-s.stopped:
			return
		case <-time.After(2 * time.Second):
		}
		if err != nil {
			fmt.Fprintf(s.log, "owner: auto-ports: %v; watching again\n", err)
		}
	}
}

func (s *Session) watchPortsOnce(auto map[int]int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	c, err := sshclient.Dial(ctx, s.target)
	cancel()
	if err != nil {
		return err
	}
	defer c.Close()
	go func() { <-s.stopped; c.Close() }()
	sess, err := c.NewSession()
	if err != nil {
		return err
	}
	defer sess.Close()
	out, err := sess.StdoutPipe()
	if err != nil {
		return err
	}
	if err := sess.Start(portfwd.WatchScript); err != nil {
		return err
	}
	r := bufio.NewReader(out)
	var round strings.Builder
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			if err == io.EOF {
				return fmt.Errorf("the watch session ended")
			}
			return err
		}
		if strings.TrimSpace(line) != "---" {
			round.WriteString(line)
			continue
		}
		s.applyListening(auto, portfwd.ParseListening(round.String()))
		round.Reset()
	}
}

// applyListening brings the automatic forwards in line with the guest's
// listening ports.
func (s *Session) applyListening(auto map[int]int, listening []int) {
	now := map[int]bool{}
	explicit := map[int]bool{}
	for _, f := range s.ports.List() {
		if !f.Auto {
			explicit[f.GuestPort] = true
		}
	}
	changed := false
	for _, g := range listening {
		now[g] = true
		if g == 22 || explicit[g] {
			continue
		}
		if _, ok := auto[g]; ok {
			continue
		}
		f, err := s.ports.Add(backend.PortForward{HostPort: g, GuestPort: g, Auto: true})
		if err != nil {
			f, err = s.ports.Add(backend.PortForward{HostPort: 0, GuestPort: g, Auto: true})
		}
		if err != nil {
			fmt.Fprintf(s.log, "owner: auto-ports: cannot forward guest port %d: %v\n", g, err)
			auto[g] = -1 // do not retry every second
			continue
		}
		auto[g] = f.HostPort
		changed = true
		fmt.Fprintf(s.log, "owner: auto-ports: guest port %d listens: forwarding 127.0.0.1:%d\n", g, f.HostPort)
	}
	for g, h := range auto {
		if now[g] {
			continue
		}
		delete(auto, g)
		if h > 0 {
			s.ports.Remove(h)
			changed = true
			fmt.Fprintf(s.log, "owner: auto-ports: guest port %d closed: stopped forwarding 127.0.0.1:%d\n", g, h)
		}
	}
	if changed {
		s.recordPorts(s.ports.List())
	}
}
