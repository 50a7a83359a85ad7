package owner

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/heyvm/heyvm/internal/fsutil"
	"github.com/heyvm/heyvm/internal/hostinfo"
	"github.com/heyvm/heyvm/internal/layout"
	"github.com/heyvm/heyvm/internal/sandbox"
)

// OwnerCommand is the hidden command a detached owner runs as.
const OwnerCommand = "__sandbox_owner"

// readyFD is the fd on which a detached owner reports "ok" or "error: …".
const readyFD = 3

// Start makes sure the sandbox runs under a detached owner and returns
// once SSH is ready. It is idempotent, and concurrent calls start exactly
// one VM: they serialise on start.lock, and the later ones find it
// running.
func Start(ctx context.Context, root layout.Root, sb *sandbox.Sandbox) (started bool, err error) {
	return underStartLock(ctx, sb, func(st sandbox.State) (bool, error) {
		if st.Status != sandbox.Stopped && st.Status != sandbox.Suspended {
			return false, nil
		}
		return true, spawn(ctx, sb)
	})
}

// DiscardSaved removes a suspended sandbox's saved VM, so the next start
// boots its disk. It serialises with starts, and refuses a running one.
func DiscardSaved(ctx context.Context, sb *sandbox.Sandbox) (bool, error) {
	return underStartLock(ctx, sb, func(st sandbox.State) (bool, error) {
		if st.Status != sandbox.Suspended {
			return false, nil
		}
		return true, sandbox.DiscardSuspend(sb.Files)
	})
}

// underStartLock runs do with the sandbox's state read under start.lock,
// which serialises everything that may start it.
func underStartLock(ctx context.Context, sb *sandbox.Sandbox, do func(sandbox.State) (bool, error)) (bool, error) {
	lock, err := LockStart(ctx, sb)
	if err != nil {
		return false, err
	}
	defer lock.Unlock()
	st, err := sandbox.ReadState(sb.Files)
	if err != nil {
		return false, err
	}
	return do(st)
}

// WaitGone waits until the sandbox's owner has let go of it.
func WaitGone(ctx context.Context, sb *sandbox.Sandbox) error {
	if err := fsutil.WaitUnlocked(ctx, sb.Files.OwnerLock()); err != nil {
		return err
	}
	sandbox.ReadState(sb.Files)
	return nil
}

func spawn(ctx context.Context, sb *sandbox.Sandbox) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(sb.Files.OwnerLog(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	defer pr.Close()
	cmd := exec.Command(exe, OwnerCommand, sb.Config.ID)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{pw}
	// A session of its own: the owner survives this CLI, its terminal and
	// the terminal's signals. (Go cannot fork; re-executing is the way.)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	pw.Close()
	if err != nil {
		return fmt.Errorf("start owner process: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()

	msg := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(bufio.NewReader(pr))
		msg <- strings.TrimSpace(string(b))
	}()
	select {
	case m := <-msg:
		if m == "ok" {
			return nil
		}
		if m == "" {
			<-exited
			return fmt.Errorf("the owner process exited before the sandbox was ready: see %s", sb.Files.OwnerLog())
		}
		return errors.New(strings.TrimPrefix(m, "error: "))
	case <-ctx.Done():
		// The owner is on its own now: stop it so nothing half-started
		// stays behind.
		cmd.Process.Signal(syscall.SIGTERM)
		return ctx.Err()
	}
}

// RunDetached is the body of `heyvm __sandbox_owner <id>`: boot, report on
// the ready pipe, then keep the VM until it stops or a signal asks.
func RunDetached(root layout.Root, id string) int {
	ready := os.NewFile(readyFD, "ready")
	report := func(s string) {
		if ready != nil {
			fmt.Fprintln(ready, s)
			ready.Close()
			ready = nil
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
	fmt.Printf("owner: pid %d starting sandbox %s at %s\n", os.Getpid(), id, time.Now().UTC().Format(time.RFC3339))
	sb, err := sandbox.Store{Root: root}.Lookup(id)
	if err != nil {
		report("error: " + err.Error())
		return 1
	}
	s, err := Boot(ctx, BootOptions{Root: root, Sandbox: sb, Log: os.Stdout, Detached: true})
	if err != nil {
		fmt.Printf("owner: boot failed: %v\n", err)
		report("error: " + err.Error())
		return 1
	}
	report("ok")
	reason := s.Wait(ctx)
	fmt.Printf("owner: exiting (%s)\n", reason)
	return 0
}

// Stop asks the sandbox's owner to shut the VM down and waits until it has
// let go of the sandbox. A sandbox that is not running is left as it is.
// If the owner does not finish in time it is killed (its VM dies with it).
func Stop(ctx context.Context, sb *sandbox.Sandbox, timeout time.Duration) (wasRunning bool, err error) {
	held, pid, err := fsutil.HolderPID(sb.Files.OwnerLock())
	if err != nil || !held {
		sandbox.ReadState(sb.Files) // clears a stale owner.json
		return false, err
	}
	if pid <= 0 {
		return true, fmt.Errorf("sandbox %s is starting and its owner has not recorded its pid yet: try again", sb.Config.Name)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return true, fmt.Errorf("signal owner %d: %w", pid, err)
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := fsutil.WaitUnlocked(wctx, sb.Files.OwnerLock()); err != nil {
		if ctx.Err() != nil {
			return true, ctx.Err()
		}
		// Still held: the owner is stuck. Kill it; qemu dies with it.
		if held, pid2, _ := fsutil.HolderPID(sb.Files.OwnerLock()); held && pid2 == pid {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		kctx, kcancel := context.WithTimeout(ctx, 10*time.Second)
		defer kcancel()
		if err := fsutil.WaitUnlocked(kctx, sb.Files.OwnerLock()); err != nil {
			return true, fmt.Errorf("sandbox %s did not stop: %w", sb.Config.Name, err)
		}
		sandbox.WriteStopInfo(sb.Files, sandbox.StopInfo{At: time.Now().UTC(), Reason: sandbox.StopRequested, Detail: "forced: the owner did not stop in time"})
	}
	sandbox.ReadState(sb.Files)
	return true, nil
}

// LockStart takes start.lock, which serialises starts of one sandbox.
func LockStart(ctx context.Context, sb *sandbox.Sandbox) (*fsutil.Lock, error) {
	return fsutil.LockContext(ctx, sb.Files.StartLock())
}

// Resume asks the owner of a paused sandbox to resume its VM and waits
// until it runs again. A VM paused by a full disk is resumed only with
// room to write: otherwise it would pause again at once.
func Resume(ctx context.Context, sb *sandbox.Sandbox, st sandbox.State) error {
	if st.Owner.Paused.NoSpace {
		if err := hostinfo.NeedSpace(sb.Files.Dir, ResumeMargin, "sandbox "+sb.Config.Name+" to resume"); err != nil {
			return err
		}
	}
	if err := syscall.Kill(st.Owner.PID, ResumeSignal); err != nil {
		return fmt.Errorf("ask the owner of %s to resume: %w", sb.Config.Name, err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		cur, err := sandbox.ReadState(sb.Files)
		if err != nil {
			return err
		}
		if cur.Status != sandbox.Paused {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("sandbox %s is still paused after the resume request: see `heyvm logs --owner %s`", sb.Config.Name, sb.Config.Name)
}
