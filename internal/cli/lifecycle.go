package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/heyvm/heyvm/internal/owner"
	"github.com/heyvm/heyvm/internal/sandbox"
)

// start, stop (and --suspend) and restart.

const stopTimeout = 45 * time.Second

// StartOptions are the flags of `heyvm start`.
type StartOptions struct {
	Ref  string
	Cold bool // boot the disk even if a saved VM is there (and discard it)
}

func newStartCmd(ios IO) *cobra.Command {
	o := &StartOptions{}
	cmd := &cobra.Command{
		Use:   "start ID",
		Short: "Start a stopped sandbox in the background, or resume a suspended or paused one",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			o.Ref = args[0]
			return RunStart(c.Context(), ios, o)
		},
	}
	cmd.Flags().BoolVar(&o.Cold, "cold", false, "boot from the disk; a suspended sandbox's saved state is discarded")
	return cmd
}

// RunStart is the body of `heyvm start`.
func RunStart(ctx context.Context, ios IO, o *StartOptions) error {
	e, sb, err := openSandbox(o.Ref)
	if err != nil {
		return err
	}
	st, err := sandbox.ReadState(sb.Files)
	if err != nil {
		return err
	}
	name := sb.Config.Name
	if st.Status == sandbox.Paused {
		if err := owner.Resume(ctx, sb, st); err != nil {
			return err
		}
		fmt.Fprintf(ios.Out, "resumed %s\n", name)
		return nil
	}
	resuming := st.Status == sandbox.Suspended
	if resuming && o.Cold {
		discarded, err := owner.DiscardSaved(ctx, sb)
		if err != nil {
			return err
		}
		if discarded {
			fmt.Fprintf(ios.ErrOut, "discarded the saved state of %s: booting its disk\n", name)
		}
		resuming = false
	}
	began := time.Now()
	started, err := owner.Start(ctx, e.root, sb)
	if err != nil {
		return fmt.Errorf("start %s: %w (see `heyvm logs %s`)", name, err, name)
	}
	switch {
	case !started:
		fmt.Fprintf(ios.Out, "%s is already running\n", name)
	case resuming:
		fmt.Fprintf(ios.Out, "resumed %s in %s (suspended at %s)\n", name, time.Since(began).Round(time.Millisecond), st.Suspend.At.Local().Format(time.DateTime))
	default:
		fmt.Fprintf(ios.Out, "started %s\n", name)
	}
	return nil
}

// StopOptions are the flags of `heyvm stop`.
type StopOptions struct {
	Ref     string
	Suspend bool // save the running VM instead of shutting it down
}

func newStopCmd(ios IO) *cobra.Command {
	o := &StopOptions{}
	cmd := &cobra.Command{
		Use:   "stop ID",
		Short: "Stop a sandbox (its disk is kept), or with --suspend save it to resume later",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			o.Ref = args[0]
			return RunStop(c.Context(), ios, o)
		},
	}
	cmd.Flags().BoolVar(&o.Suspend, "suspend", false, "save the whole running VM (processes, memory) into the sandbox directory; `heyvm start` resumes it")
	return cmd
}

// RunStop is the body of `heyvm stop`.
func RunStop(ctx context.Context, ios IO, o *StopOptions) error {
	_, sb, err := openSandbox(o.Ref)
	if err != nil {
		return err
	}
	name := sb.Config.Name
	if o.Suspend {
		return runSuspend(ctx, ios, sb)
	}
	if st, err := sandbox.ReadState(sb.Files); err == nil && st.Status == sandbox.Suspended {
		fmt.Fprintf(ios.Out, "%s is suspended, not running: `heyvm start %s` resumes it, `heyvm start --cold %s` discards the saved state\n", name, name, name)
		return nil
	}
	was, err := owner.Stop(ctx, sb, stopTimeout)
	if err != nil {
		return err
	}
	if was {
		fmt.Fprintf(ios.Out, "stopped %s\n", name)
	} else {
		fmt.Fprintf(ios.Out, "%s is already stopped\n", name)
	}
	return nil
}

func runSuspend(ctx context.Context, ios IO, sb *sandbox.Sandbox) error {
	name := sb.Config.Name
	st, err := sandbox.ReadState(sb.Files)
	if err != nil {
		return err
	}
	switch st.Status {
	case sandbox.Suspended:
		fmt.Fprintf(ios.Out, "%s is already suspended\n", name)
		return nil
	case sandbox.Stopped:
		return fmt.Errorf("sandbox %s is stopped: there is nothing to suspend (`heyvm start %s` boots it)", name, name)
	case sandbox.Starting:
		return fmt.Errorf("sandbox %s is still starting: suspend it once it runs", name)
	}
	began := time.Now()
	reply, err := owner.Control(ctx, sb, owner.ControlRequest{Op: "suspend"})
	if err != nil {
		return fmt.Errorf("cannot suspend sandbox %s: %w", name, err)
	}
	// The owner replies once the state is recorded; it then exits.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := owner.WaitGone(wctx, sb); err != nil {
		return fmt.Errorf("sandbox %s was saved but its owner did not exit: %w", name, err)
	}
	fmt.Fprintf(ios.Out, "suspended %s in %s (%d MB saved); `heyvm start %s` resumes it\n", name, time.Since(began).Round(time.Millisecond), reply.Suspend.DiskBytes>>20, name)
	return nil
}

func newRestartCmd(ios IO) *cobra.Command {
	return &cobra.Command{
		Use: "restart ID", Short: "Stop and start a sandbox", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			e, sb, err := openSandbox(args[0])
			if err != nil {
				return err
			}
			if _, err := owner.Stop(c.Context(), sb, stopTimeout); err != nil {
				return err
			}
			if _, err := owner.Start(c.Context(), e.root, sb); err != nil {
				return fmt.Errorf("start %s: %w (see `heyvm logs %s`)", sb.Config.Name, err, sb.Config.Name)
			}
			fmt.Fprintf(ios.Out, "restarted %s\n", sb.Config.Name)
			return nil
		},
	}
}
