package applevirt

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A VM that cannot be stopped for a while (starting, saving, restoring) is
// tried again until it can; one that never can, or whose stop call never
// returns, still lets Kill return by the limit, with an error that says
// what happened.
func TestForceStop(t *testing.T) {
	const retry, limit = 5 * time.Millisecond, 300 * time.Millisecond

	// Stoppable on the third try: stopped well before the limit.
	done := make(chan struct{})
	var tries atomic.Int32
	start := time.Now()
	err := forceStop(done, func() (bool, error) {
		if tries.Add(1) < 3 {
			return false, nil
		}
		close(done) // the framework's state change ends the machine
		return true, nil
	}, retry, limit)
	if err != nil || time.Since(start) >= limit {
		t.Fatalf("stoppable VM: %v after %s", err, time.Since(start))
	}

	// Already ended: nothing is tried.
	if err := forceStop(done, func() (bool, error) { t.Error("tried an ended machine"); return true, nil }, retry, limit); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		try  stopAttempt
		want string
	}{
		{"never stoppable", func() (bool, error) { return false, nil }, "would not let the VM be stopped"},
		{"stop fails", func() (bool, error) { return true, errors.New("invalid state transition") }, "invalid state transition"},
		{"stop accepted, VM lingers", func() (bool, error) { return true, nil }, "accepted the stop"},
		{"call hangs", func() (bool, error) { select {} }, "did not answer"},
	} {
		start := time.Now()
		err := forceStop(make(chan struct{}), tc.try, retry, limit)
		took := time.Since(start)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
		if took < limit || took > limit+time.Second {
			t.Errorf("%s: returned after %s, limit %s", tc.name, took, limit)
		}
	}
}

// A vsock connect that is never answered ends with ctx, or when the
// machine ends; a connection that arrives too late is closed, and a
// connect's own error comes back as it is.
func TestDialContext(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	c, err := dialContext(context.Background(), nil, func() (net.Conn, error) { return a, nil })
	if err != nil || c != a {
		t.Fatalf("%v %v", c, err)
	}

	boom := errors.New("connection refused")
	if _, err := dialContext(context.Background(), nil, func() (net.Conn, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("connect error: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	release := make(chan struct{})
	late := &closeRecorder{closed: make(chan struct{})}
	start := time.Now()
	_, err = dialContext(ctx, nil, func() (net.Conn, error) { <-release; return late, nil })
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("hung connect: %v after %s", err, time.Since(start))
	}
	close(release)
	select {
	case <-late.closed:
	case <-time.After(2 * time.Second):
		t.Fatal("a connection that came too late was left open")
	}

	done := make(chan struct{})
	go func() { time.Sleep(20 * time.Millisecond); close(done) }()
	if _, err := dialContext(context.Background(), done, func() (net.Conn, error) { select {} }); !errors.Is(err, errMachineEnded) {
		t.Fatalf("machine ended: %v", err)
	}
	if _, err := dialContext(context.Background(), done, func() (net.Conn, error) { t.Error("dialled an ended machine"); return nil, nil }); !errors.Is(err, errMachineEnded) {
		t.Fatalf("ended machine: %v", err)
	}
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	if _, err := dialContext(cctx, nil, func() (net.Conn, error) { t.Error("dialled with a dead ctx"); return nil, nil }); !errors.Is(err, context.Canceled) {
		t.Fatalf("dead ctx: %v", err)
	}
}

type closeRecorder struct {
	net.Conn
	closed chan struct{}
}

func (c *closeRecorder) Close() error { close(c.closed); return nil }
