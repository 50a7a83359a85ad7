package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/spf13/cobra"

	"github.com/heyvm/heyvm/internal/autostart"
	"github.com/heyvm/heyvm/internal/owner"
	"github.com/heyvm/heyvm/internal/sandbox"
)

func newAutostartCmd(ios IO) *cobra.Command {
	cmd := &cobra.Command{Use: "autostart", Short: "Start marked sandboxes when the host boots (no daemon: one boot-time unit)"}
	mark := func(on bool) *cobra.Command {
		use, short := "on ID", "Mark a sandbox to start at boot (installs the boot-time unit with the first mark)"
		if !on {
			use, short = "off ID", "Unmark a sandbox (removes the unit with the last mark)"
		}
		return &cobra.Command{
			Use: use, Short: short, Args: cobra.ExactArgs(1),
			RunE: func(c *cobra.Command, args []string) error {
				e, sb, err := openSandbox(args[0])
				if err != nil {
					return err
				}
				if _, err := e.store.Update(c.Context(), sb.Config.ID, func(cfg *sandbox.Config) { cfg.Autostart = on }); err != nil {
					return err
				}
				word := "will start at boot"
				if !on {
					word = "will not start at boot"
				}
				fmt.Fprintf(ios.Out, "%s %s\n", sb.Config.Name, word)
				return syncAutostartUnit(e, ios)
			},
		}
	}
	run := &cobra.Command{
		Use: "run", Short: "Start every marked sandbox that is not running (what the boot-time unit runs)", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			e, err := openEnv()
			if err != nil {
				return err
			}
			return runAutostart(c.Context(), ios, e)
		},
	}
	stop := &cobra.Command{
		Use: "stop", Short: "Stop every running marked sandbox cleanly (the unit's stop action at shutdown)", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			e, err := openEnv()
			if err != nil {
				return err
			}
			return stopAutostarted(c.Context(), ios, e)
		},
	}
	status := &cobra.Command{
		Use: "status", Short: "Show the boot-time unit and the marked sandboxes", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			e, err := openEnv()
			if err != nil {
				return err
			}
			return autostartStatus(ios, e)
		},
	}
	cmd.AddCommand(mark(true), mark(false), run, stop, status)
	requireSubcommand(cmd)
	return cmd
}

// marked lists the sandboxes marked for autostart, by name.
func marked(e env) ([]*sandbox.Sandbox, error) {
	all, _, err := e.store.List()
	if err != nil {
		return nil, err
	}
	var out []*sandbox.Sandbox
	for _, sb := range all {
		if sb.Config.Autostart {
			out = append(out, sb)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Config.Name < out[j].Config.Name })
	return out, nil
}

func autostartUnit(e env) (autostart.Unit, error) {
	bin, err := os.Executable()
	if err != nil {
		return autostart.Unit{}, err
	}
	if real, err := filepath.EvalSymlinks(bin); err == nil {
		bin = real
	}
	return autostart.For(e.root, bin)
}

// syncAutostartUnit installs the unit when some sandbox is marked and
// removes it when none is, so it exists exactly while it has work.
func syncAutostartUnit(e env, ios IO) error {
	u, err := autostartUnit(e)
	if err != nil {
		return err
	}
	list, err := marked(e)
	if err != nil {
		return err
	}
	switch {
	case len(list) > 0:
		// Rewritten every time: the heyvm binary may have moved.
		notes, err := u.Install()
		if err != nil {
			return err
		}
		for _, n := range notes {
			fmt.Fprintln(ios.ErrOut, n)
		}
	case u.Installed():
		if err := u.Remove(); err != nil {
			return err
		}
		fmt.Fprintf(ios.ErrOut, "no sandbox is marked for autostart any more: removed %s\n", u.Path())
	}
	return nil
}

// runAutostart starts every marked sandbox that is not running, side by
// side; one that fails does not keep the others from starting.
func runAutostart(ctx context.Context, ios IO, e env) error {
	list, err := marked(e)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	failed := 0
	for _, sb := range list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started, err := owner.Start(ctx, e.root, sb)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				failed++
				fmt.Fprintf(ios.ErrOut, "autostart: %s did not start: %v (see `heyvm logs %s`)\n", sb.Config.Name, err, sb.Config.Name)
			case started:
				fmt.Fprintf(ios.Out, "started %s\n", sb.Config.Name)
			default:
				fmt.Fprintf(ios.Out, "%s is already running\n", sb.Config.Name)
			}
		}()
	}
	wg.Wait()
	if failed > 0 {
		return fmt.Errorf("%d of %d marked sandboxes did not start", failed, len(list))
	}
	return nil
}

func stopAutostarted(ctx context.Context, ios IO, e env) error {
	list, err := marked(e)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, sb := range list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			was, err := owner.Stop(ctx, sb, stopTimeout)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", sb.Config.Name, err))
			} else if was {
				fmt.Fprintf(ios.Out, "stopped %s\n", sb.Config.Name)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func autostartStatus(ios IO, e env) error {
	u, err := autostartUnit(e)
	if err != nil {
		return err
	}
	if u.Installed() {
		fmt.Fprintf(ios.Out, "unit:   %s (%s), runs `%s autostart run` for HEYO_HOME=%s\n", u.Path(), u.Kind, u.Binary, u.Home)
	} else {
		fmt.Fprintf(ios.Out, "unit:   not installed (%s would be written by the first `heyvm autostart on`)\n", u.Path())
	}
	list, err := marked(e)
	if err != nil {
		return err
	}
	if len(list) == 0 {
		fmt.Fprintln(ios.Out, "marked: none")
		return nil
	}
	fmt.Fprintln(ios.Out, "marked:")
	for _, sb := range list {
		st, err := sandbox.ReadState(sb.Files)
		state := "unknown"
		if err == nil {
			state = string(st.Status)
		}
		fmt.Fprintf(ios.Out, "  %s (%s) %s\n", sb.Config.Name, sb.Config.ID, state)
	}
	return nil
}
