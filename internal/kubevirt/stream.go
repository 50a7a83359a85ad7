package kubevirt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/client-go/rest"
)

// Subprotocol is the websocket subprotocol of KubeVirt's streaming
// subresources (console, portforward, vnc): raw bytes carried in binary
// messages, nothing else.
const Subprotocol = "plain.kubevirt.io"

// SubresourcePath is the API path of a VMI's streaming subresource, as
// KubeVirt's virt-api serves it (and kubevirt.io/client-go dials it).
func SubresourcePath(namespace, vmi, sub string) string {
	return path.Join("/apis/subresources.kubevirt.io/v1/namespaces", namespace, "virtualmachineinstances", vmi, sub)
}

// Console opens the VMI's serial console (the "console" subresource).
// While the VMI is not running yet KubeVirt answers 400, and Console tries
// again every second until ctx ends. KubeVirt lets one client hold a
// console at a time: a new connection takes it from the previous one.
func (c *Cluster) Console(ctx context.Context, name string) (io.ReadWriteCloser, error) {
	return c.openRetrying(ctx, name, "console")
}

// PortForward opens a TCP connection to port in the guest through the
// VMI's "portforward" subresource; the bytes are the guest's, so an SSH
// client runs over it as over a socket.
func (c *Cluster) PortForward(ctx context.Context, name string, port int) (net.Conn, error) {
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("port %d is out of range", port)
	}
	return c.openRetrying(ctx, name, "portforward/"+strconv.Itoa(port)+"/tcp")
}

// RetryInterval is how long Console and PortForward wait between tries
// while the VMI is not running yet.
var RetryInterval = time.Second

func (c *Cluster) openRetrying(ctx context.Context, name, sub string) (net.Conn, error) {
	for {
		conn, err := c.open(ctx, name, sub)
		if err == nil || !errors.Is(err, ErrNotRunning) {
			return conn, err
		}
		// 400 (not running yet) and 404 (no VMI yet, after a start)
		// both pass with time; a stuck sandbox does not, and Get says why.
		if s, gerr := c.Get(ctx, name); gerr == nil && s.Problem != nil {
			return nil, s.Problem
		} else if gerr == nil && !s.Running {
			return nil, err
		} else if errors.Is(gerr, ErrNotFound) {
			return nil, gerr
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (gave up: %v)", err, ctx.Err())
		case <-time.After(RetryInterval):
		}
	}
}

// open dials the subresource's websocket once. Authentication (tokens,
// client certificates, exec credential plugins) and proxies come from the
// rest.Config, as for every other request.
func (c *Cluster) open(ctx context.Context, name, sub string) (net.Conn, error) {
	base, _, err := rest.DefaultServerUrlFor(c.rest)
	if err != nil {
		return nil, err
	}
	u := *base
	switch u.Scheme {
	case "https":
		u.Scheme = "wss"
	case "http":
		u.Scheme = "ws"
	default:
		return nil, fmt.Errorf("unsupported API server scheme %q", u.Scheme)
	}
	u.Path = path.Join(u.Path, SubresourcePath(c.Namespace, name, sub))
	tlsConfig, err := rest.TLSConfigFor(c.rest)
	if err != nil {
		return nil, err
	}
	proxy := http.ProxyFromEnvironment
	if c.rest.Proxy != nil {
		proxy = c.rest.Proxy
	}
	d := &dialRT{dialer: &websocket.Dialer{
		Proxy:            proxy,
		TLSClientConfig:  tlsConfig,
		Subprotocols:     []string{Subprotocol},
		HandshakeTimeout: 30 * time.Second,
		ReadBufferSize:   32 << 10,
		WriteBufferSize:  32 << 10,
	}}
	rt, err := rest.HTTPWrappersForConfig(c.rest, d)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return nil, c.streamError(name, sub, 0, "", err)
	}
	defer resp.Body.Close()
	if d.conn == nil {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return nil, c.streamError(name, sub, resp.StatusCode, statusMessage(body), fmt.Errorf("HTTP %s", resp.Status))
	}
	if got := d.conn.Subprotocol(); got != Subprotocol {
		d.conn.Close()
		return nil, fmt.Errorf("open %s of sandbox %s: the server speaks websocket subprotocol %q, not %s", sub, name, got, Subprotocol)
	}
	return newWSConn(d.conn), nil
}

// dialRT is the innermost round tripper: it dials the websocket with the
// headers the auth wrappers set, and hands back the response of a refused
// handshake so its status and body can be read.
type dialRT struct {
	dialer *websocket.Dialer
	conn   *websocket.Conn
}

func (d *dialRT) RoundTrip(req *http.Request) (*http.Response, error) {
	conn, resp, err := d.dialer.DialContext(req.Context(), req.URL.String(), req.Header)
	if err != nil {
		if resp != nil && errors.Is(err, websocket.ErrBadHandshake) {
			return resp, nil
		}
		return nil, err
	}
	d.conn = conn
	return resp, nil
}

// statusMessage is a Kubernetes Status body's message, or the body.
func statusMessage(body []byte) string {
	var st struct {
		Kind    string `json:"kind"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &st) == nil && st.Kind == "Status" && st.Message != "" {
		return st.Message
	}
	return string(body)
}

// wsConn is a net.Conn over a plain.kubevirt.io websocket: each Write is
// one binary message; Read returns binary messages' bytes in order and
// skips other data messages; a close from the server is EOF.
type wsConn struct {
	ws        *websocket.Conn
	rmu, wmu  sync.Mutex
	r         io.Reader
	closeOnce sync.Once
	closeErr  error
}

func newWSConn(ws *websocket.Conn) *wsConn { return &wsConn{ws: ws} }

func (c *wsConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				return 0, wsErr(err)
			}
			if typ != websocket.BinaryMessage {
				continue
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if err == io.EOF {
			c.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, wsErr(err)
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, wsErr(err)
	}
	return len(p), nil
}

// Close says goodbye (a close frame, so the server ends the stream at
// once) and closes the connection.
func (c *wsConn) Close() error {
	c.closeOnce.Do(func() {
		msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
		c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		c.closeErr = c.ws.Close()
	})
	return c.closeErr
}

func (c *wsConn) LocalAddr() net.Addr  { return c.ws.LocalAddr() }
func (c *wsConn) RemoteAddr() net.Addr { return c.ws.RemoteAddr() }

func (c *wsConn) SetDeadline(t time.Time) error {
	return errors.Join(c.ws.SetReadDeadline(t), c.ws.SetWriteDeadline(t))
}
func (c *wsConn) SetReadDeadline(t time.Time) error  { return c.ws.SetReadDeadline(t) }
func (c *wsConn) SetWriteDeadline(t time.Time) error { return c.ws.SetWriteDeadline(t) }

func wsErr(err error) error {
	if err == nil {
		return nil
	}
	var ce *websocket.CloseError
	if errors.As(err, &ce) && (ce.Code == websocket.CloseNormalClosure || ce.Code == websocket.CloseGoingAway) {
		return io.EOF
	}
	if errors.Is(err, net.ErrClosed) {
		return net.ErrClosed
	}
	return err
}

var _ net.Conn = (*wsConn)(nil)
