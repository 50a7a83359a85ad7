package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

	"github.com/heyvm/heyvm/internal/owner"
	"github.com/heyvm/heyvm/internal/sandbox"
	"github.com/heyvm/heyvm/internal/sshclient"
)

// newTestVMCmd is `heyvm test-vm`: boot a short-lived default sandbox,
// run a command over SSH, clean up, and say PASS or FAIL.
func newTestVMCmd(ios IO, use, backendName string) *cobra.Command {
	var detach bool
	cmd := &cobra.Command{
		Use: use, Short: "Boot a throwaway sandbox and check it end to end", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return RunTestVM(ctx, ios, backendName, detach)
		},
	}
	cmd.Flags().BoolVar(&detach, "detach", false, "run the VM under a detached owner process, as `create` does")
	return cmd
}

// RunTestVM is the body of test-vm; it returns an error (exit 1) on FAIL.
func RunTestVM(ctx context.Context, ios IO, backendName string, detach bool) error {
	start := time.Now()
	e, err := openEnv()
	if err != nil {
		return err
	}
	o := &CreateOptions{Name: "test-vm-" + sandbox.NewID()[:6], Image: "default", Backend: backendName, CPUs: 2, MemoryMiB: 512}
	sb, err := createSandbox(ctx, ios, e, o)
	if err != nil {
		fmt.Fprintf(ios.Out, "FAIL: %v\n", err)
		return ExitError{Code: 1}
	}
	defer func() {
		owner.Stop(context.Background(), sb, stopTimeout)
		e.store.Remove(context.Background(), sb.Config.ID)
	}()
	mode := "in this process"
	if detach {
		mode = "under a detached owner"
	}
	fmt.Fprintf(ios.ErrOut, "booting %s (%s)...\n", sb.Config.Name, mode)

	check := func(c *ssh.Client) error {
		defer c.Close()
		var out bytes.Buffer
		code, err := sshclient.Exec(ctx, c, sshclient.ExecOptions{Command: "echo hello-from-$(hostname); uname -sm", Stdout: &out, Stderr: &out})
		if err != nil {
			return err
		}
		if code != 0 || !strings.Contains(out.String(), "hello-from-"+sb.Config.Name) {
			return fmt.Errorf("unexpected answer over SSH (status %d): %q", code, out.String())
		}
		fmt.Fprintf(ios.ErrOut, "guest says: %s", out.String())
		return nil
	}

	var accel string
	if detach {
		err = func() error {
			if _, err := owner.Start(ctx, e.root, sb); err != nil {
				return err
			}
			st, err := sandbox.ReadState(sb.Files)
			if err != nil || st.Owner == nil {
				return fmt.Errorf("sandbox not running after start (state %v, %v)", st.Status, err)
			}
			accel = st.Owner.Accelerator
			c, err := connect(ctx, e, sb)
			if err != nil {
				return err
			}
			err = check(c.Client)
			c.Close()
			if err != nil {
				return err
			}
			_, err = owner.Stop(ctx, sb, stopTimeout)
			return err
		}()
	} else {
		err = RunForeground(ctx, ctx, e, sb, func(s *owner.Session) error {
			accel = s.Info.Accelerator
			c, err := sshclient.Dial(ctx, s.Target())
			if err != nil {
				return err
			}
			return check(c)
		})
	}
	if err == nil {
		st, _ := sandbox.ReadState(sb.Files)
		if st.Status != sandbox.Stopped {
			err = fmt.Errorf("sandbox still %s after stop", st.Status)
		}
	}
	if err != nil {
		fmt.Fprintf(ios.Out, "FAIL: %v\n", err)
		if tail := consoleTail(sb, 20); tail != "" {
			fmt.Fprintf(ios.Out, "--- last lines of console.log ---\n%s\n", tail)
		}
		return ExitError{Code: 1}
	}
	fmt.Fprintf(ios.Out, "PASS: %s booted (%s, %s), answered over SSH and stopped in %s\n", sb.Config.Name, sb.Config.Backend, accel, time.Since(start).Round(100*time.Millisecond))
	return nil
}

// RunForeground boots the sandbox inside this process, runs fn, and shuts
// the VM down when fn returns (or when this process is told to stop).
// bootCtx bounds only the boot (Ctrl-C while booting cancels it); ctx
// bounds the whole session.
func RunForeground(ctx, bootCtx context.Context, e env, sb *sandbox.Sandbox, fn func(*owner.Session) error) error {
	logf, err := os.OpenFile(sb.Files.OwnerLog(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	s, err := bootLocked(bootCtx, e, sb, logf)
	if err != nil {
		return err
	}
	// SIGTERM or SIGHUP (`heyvm stop`, a closed terminal) end the session.
	sctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- fn(s) }()
	select {
	case err = <-done:
		s.Shutdown(sandbox.StopRequested)
	case <-sctx.Done():
		s.Shutdown(sandbox.StopRequested)
		err = fmt.Errorf("sandbox %s was stopped", sb.Config.Name)
	case <-s.Stopped():
		err = fmt.Errorf("sandbox %s stopped: %s", sb.Config.Name, s.Reason())
	}
	return err
}

func bootLocked(ctx context.Context, e env, sb *sandbox.Sandbox, logf *os.File) (*owner.Session, error) {
	lock, err := owner.LockStart(ctx, sb)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	s, err := owner.Boot(ctx, owner.BootOptions{Root: e.root, Sandbox: sb, Log: logf})
	if err == owner.ErrAlreadyRunning {
		return nil, fmt.Errorf("sandbox %s is already running: use `%s`, or stop it first", sb.Config.Name, heyvmHint("sh "+sb.Config.Name))
	}
	return s, err
}
