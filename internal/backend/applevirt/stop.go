package applevirt

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Bounds of Kill: how often a stop is tried while the framework says the
// VM cannot stop yet (it is starting, saving or restoring), and how long
// in all before Kill gives up. A save or restore of a few GiB takes
// seconds, so the limit leaves room for one to finish.
const (
	killRetry = 250 * time.Millisecond
	killLimit = 30 * time.Second
)

// stopAttempt tries once to stop the VM: attempted is false when the
// framework says it cannot be stopped now, and err is its answer when it
// was asked. It may block.
type stopAttempt func() (attempted bool, err error)

// forceStop stops a machine within limit. It tries every retry until done
// is closed (the machine ended) or limit has passed. The attempts run in
// the background, so one that blocks (a framework call stuck behind the
// VM's queue) cannot hold the caller past limit. It returns nil once done
// is closed, else an error that says what happened last; the caller then
// ends the machine itself (the VM dies with the process).
func forceStop(done <-chan struct{}, try stopAttempt, retry, limit time.Duration) error {
	select {
	case <-done:
		return nil
	default:
	}
	var (
		mu               sync.Mutex
		tried, attempted bool
		lastErr          error
		quit             = make(chan struct{})
	)
	defer close(quit)
	go func() {
		for {
			a, err := try()
			mu.Lock()
			tried, attempted, lastErr = true, a, err
			mu.Unlock()
			select {
			case <-quit:
				return
			case <-done:
				return
			case <-time.After(retry):
			}
		}
	}()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	select {
	case <-done:
		return nil
	case <-deadline.C:
	}
	mu.Lock()
	defer mu.Unlock()
	switch {
	case !tried:
		return fmt.Errorf("Virtualization.framework did not answer a stop request within %s", limit)
	case lastErr != nil:
		return fmt.Errorf("Virtualization.framework did not stop the VM within %s: %v", limit, lastErr)
	case !attempted:
		return fmt.Errorf("Virtualization.framework would not let the VM be stopped for %s (it was still starting, saving or restoring)", limit)
	default:
		return fmt.Errorf("Virtualization.framework accepted the stop, but the VM had not ended %s later", limit)
	}
}

// errMachineEnded: a dial to a machine that has ended.
var errMachineEnded = errors.New("the VM has stopped")

// dialContext runs connect, which may never return (a vsock connect that
// the framework leaves unanswered), and gives up when ctx ends or the
// machine ends (done). A connection that arrives after that is closed.
func dialContext(ctx context.Context, done <-chan struct{}, connect func() (net.Conn, error)) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	select {
	case <-done:
		return nil, errMachineEnded
	default:
	}
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result) // unbuffered: a result nobody takes is closed
	abandoned := make(chan struct{})
	go func() {
		c, err := connect()
		select {
		case ch <- result{c, err}:
		case <-abandoned:
			if c != nil {
				c.Close()
			}
		}
	}()
	select {
	case r := <-ch:
		return r.c, r.err
	case <-ctx.Done():
		close(abandoned)
		return nil, ctx.Err()
	case <-done:
		close(abandoned)
		return nil, errMachineEnded
	}
}
