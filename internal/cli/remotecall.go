package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/heyvm/heyvm/internal/contexts"
	"github.com/heyvm/heyvm/internal/layout"
	"github.com/heyvm/heyvm/internal/remote"
	"github.com/heyvm/heyvm/internal/version"
)

// The remote side of an SSH context: a heyvm run by another over SSH
// (remote.Host.Run) checks that it is the same heyvm, records its pid
// under the call's id so that the caller's Ctrl-C reaches it
// (`heyvm __signal`), and takes the end of its SSH session (its parent,
// sshd, gone) as a hangup.

// servingCall is set in a heyvm run for another over SSH: its sandboxes
// are here, whatever --context says.
var servingCall bool

// originContext is the context's name as the caller typed it (--context):
// the commands this heyvm suggests name it.
var originContext string

// heyvmHint is a heyvm command line to suggest: with the caller's
// --context when this heyvm runs for another that named its context.
func heyvmHint(args string) string {
	if originContext != "" {
		return "heyvm --context " + originContext + " " + args
	}
	return "heyvm " + args
}

// remoteCall prepares a heyvm run for another; the returned function
// ends it. A version mismatch is an error.
func remoteCall(ctx context.Context) (context.Context, func(), error) {
	noop := func() {}
	// What the caller set is for this process only: a process it starts
	// (a sandbox's owner, which outlives the call) must not take itself
	// for the call, watch its parent and hang itself up.
	want, call := os.Getenv(remote.EnvClientVersion), os.Getenv(remote.EnvCall)
	origin := os.Getenv(remote.EnvOrigin)
	os.Unsetenv(remote.EnvClientVersion)
	os.Unsetenv(remote.EnvCall)
	os.Unsetenv(remote.EnvOrigin)
	servingCall = call != ""
	if servingCall && origin != "" && contexts.ValidateName(origin) == nil {
		originContext = origin
	}
	if want != "" {
		if mine := version.Get(); mine.Key() != want {
			return ctx, noop, fmt.Errorf("this host runs heyvm %s and the heyvm that called it is %s: run `heyvm context create NAME --host ... --install` again there, or install the same heyvm on both", mine.Key(), want)
		}
	}
	if call == "" || !validCallID(call) {
		return ctx, noop, nil
	}
	root, err := layout.Open()
	if err != nil {
		return ctx, noop, err
	}
	dir := filepath.Join(root.Dir, "run", "calls")
	if err := layout.EnsureDir(dir); err != nil {
		return ctx, noop, err
	}
	file := filepath.Join(dir, call)
	os.WriteFile(file, []byte(strconv.Itoa(os.Getpid())), 0o600)
	ctx, cancel := context.WithCancel(ctx)
	// The session's end: sshd (the parent) is gone, and with it the
	// caller. It is a hangup, which commands take as the end.
	parent := os.Getppid()
	go func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if os.Getppid() != parent {
					// The hangup first, which a command running in a
					// sandbox passes on to it there (exec's signal
					// relay); the end of the context only if it is
					// still running after that.
					syscall.Kill(os.Getpid(), syscall.SIGHUP)
					time.AfterFunc(5*time.Second, cancel)
					return
				}
			}
		}
	}()
	return ctx, func() { cancel(); os.Remove(file) }, nil
}

func validCallID(s string) bool {
	if len(s) != 16 {
		return false
	}
	return strings.Trim(s, "0123456789abcdef") == ""
}

// newSignalCmd is `heyvm __signal CALL SIG`: the caller's signal, to the
// heyvm of one of its calls.
func newSignalCmd() *cobra.Command {
	return &cobra.Command{
		Use: remote.SignalCommand + " CALL SIGNAL", Hidden: true, Args: cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			if !validCallID(args[0]) {
				return fmt.Errorf("not a call id: %q", args[0])
			}
			root, err := layout.Open()
			if err != nil {
				return err
			}
			b, err := os.ReadFile(filepath.Join(root.Dir, "run", "calls", args[0]))
			if err != nil {
				return nil // the call has ended
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil || pid <= 1 {
				return nil
			}
			sig := map[string]syscall.Signal{"INT": syscall.SIGINT, "TERM": syscall.SIGTERM, "HUP": syscall.SIGHUP, "QUIT": syscall.SIGQUIT}[args[1]]
			if sig == 0 {
				return fmt.Errorf("not a signal heyvm sends: %q", args[1])
			}
			syscall.Kill(pid, sig)
			return nil
		},
	}
}
