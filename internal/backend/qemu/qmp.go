package qemu

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
)

// qmpClient speaks just enough QMP for heyvm: capabilities negotiation,
// commands, and the events it cares about (SHUTDOWN).
type qmpClient struct {
	conn    net.Conn
	mu      sync.Mutex // one command in flight
	replies chan qmpMsg
	events  chan qmpMsg
	version string // "QEMU 7.2.19", from the greeting
}

type qmpMsg struct {
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
	QMP   json.RawMessage `json:"QMP"`
}

func newQMP(conn net.Conn) (*qmpClient, error) {
	c := &qmpClient{conn: conn, replies: make(chan qmpMsg, 1), events: make(chan qmpMsg, 16)}
	r := bufio.NewReader(conn)
	greeting, err := r.ReadBytes('\n')
	if err != nil {
		return nil, fmt.Errorf("qmp greeting: %w", err)
	}
	var g qmpMsg
	if err := json.Unmarshal(greeting, &g); err != nil || g.QMP == nil {
		return nil, fmt.Errorf("qmp: unexpected greeting %q", greeting)
	}
	var v struct {
		Version struct {
			QEMU struct{ Major, Minor, Micro int } `json:"qemu"`
		} `json:"version"`
	}
	if json.Unmarshal(g.QMP, &v) == nil {
		q := v.Version.QEMU
		c.version = fmt.Sprintf("QEMU %d.%d.%d", q.Major, q.Minor, q.Micro)
	}
	go c.readLoop(r)
	if _, err := c.execute("qmp_capabilities", nil); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *qmpClient) readLoop(r *bufio.Reader) {
	defer close(c.replies)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		var m qmpMsg
		if json.Unmarshal(line, &m) != nil {
			continue
		}
		if m.Event != "" {
			select {
			case c.events <- m:
			default: // nobody listening; events are advisory
			}
			continue
		}
		c.replies <- m
	}
}

func (c *qmpClient) execute(cmd string, args any) (json.RawMessage, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, _ := json.Marshal(req)
	if _, err := c.conn.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	return c.reply(cmd)
}

// awaitReply waits for the reply to a command sent some other way.
func (c *qmpClient) awaitReply(cmd string) error {
	_, err := c.reply(cmd)
	return err
}

func (c *qmpClient) reply(cmd string) (json.RawMessage, error) {
	m, ok := <-c.replies
	if !ok {
		return nil, errors.New("qmp: qemu closed the connection")
	}
	if m.Error != nil {
		return nil, fmt.Errorf("qmp %s: %s", cmd, m.Error.Desc)
	}
	return m.Return, nil
}

// hmp runs a human monitor command and returns its text output.
func (c *qmpClient) hmp(line string) (string, error) {
	raw, err := c.execute("human-monitor-command", map[string]string{"command-line": line})
	if err != nil {
		return "", err
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", err
	}
	return s, nil
}
