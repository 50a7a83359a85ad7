package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/heyvm/heyvm/internal/owner"
	"github.com/heyvm/heyvm/internal/sandbox"
)

func newRmCmd(ios IO) *cobra.Command {
	var yes, force bool
	cmd := &cobra.Command{
		Use: "rm ID...", Short: "Remove sandboxes and their disks", Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			e, err := openEnv()
			if err != nil {
				return err
			}
			return runRmAll(c.Context(), ios, e, args, yes, force)
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	cmd.Flags().BoolVarP(&force, "force", "f", false, "stop it first if it runs; remove it even if its sandbox.yaml is damaged")
	return cmd
}

// runRmAll removes each sandbox named. A name that matches nothing
// stops it before anything is removed (a typo must not cost the others);
// a sandbox that cannot be removed is reported and the rest still go.
func runRmAll(ctx context.Context, ios IO, e env, refs []string, yes, force bool) error {
	// Each sandbox once, however many of the refs name it.
	seen := map[string]bool{}
	var unique []string
	for _, ref := range refs {
		sb, err := e.lookup(ref)
		if err != nil && !(force && !errors.Is(err, sandbox.ErrNotFound) && isSandboxDir(e, ref)) {
			if len(refs) > 1 {
				return fmt.Errorf("%w (nothing was removed)", err)
			}
			return err
		}
		id := ref
		if sb != nil {
			id = sb.Config.ID
		}
		if !seen[id] {
			seen[id] = true
			unique = append(unique, ref)
		}
	}
	refs = unique
	if len(refs) == 1 {
		return runRm(ctx, ios, e, refs[0], yes, force)
	}
	var failed []string
	for _, ref := range refs {
		if err := runRm(ctx, ios, e, ref, yes, force); err != nil {
			fmt.Fprintf(ios.ErrOut, "heyvm: %v\n", err)
			failed = append(failed, ref)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d sandboxes were not removed: %s", len(failed), len(refs), strings.Join(failed, ", "))
	}
	return nil
}

func runRm(ctx context.Context, ios IO, e env, ref string, yes, force bool) error {
	sb, err := e.lookup(ref)
	var id, name string
	switch {
	case err == nil:
		id, name = sb.Config.ID, sb.Config.Name
	case force && !errors.Is(err, sandbox.ErrNotFound) && isSandboxDir(e, ref):
		// A damaged sandbox: only its exact id (the directory) is accepted.
		id, name = ref, ref
		sb = &sandbox.Sandbox{Config: &sandbox.Config{ID: ref, Name: ref}, Files: e.root.Sandbox(ref)}
	default:
		return err
	}
	st, err := sandbox.ReadState(sb.Files)
	if err != nil {
		return err
	}
	if st.Status != sandbox.Stopped && st.Status != sandbox.Suspended {
		if !force {
			return fmt.Errorf("sandbox %s is %s: stop it with `heyvm stop %s`, or use `heyvm rm --force %s`", name, st.Status, name, name)
		}
		if _, err := owner.Stop(ctx, sb, stopTimeout); err != nil {
			return err
		}
	}
	if !yes {
		if !isTerminal(ios.In) {
			return fmt.Errorf("removing %s deletes its disk: pass --yes to confirm", name)
		}
		fmt.Fprintf(ios.ErrOut, "Remove sandbox %s (%s) and its disk? [y/N] ", name, id)
		var answer string
		fmt.Fscanln(ios.In, &answer)
		if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
			return errors.New("not removed")
		}
	}
	if err := e.store.Remove(ctx, id); err != nil {
		return err
	}
	fmt.Fprintf(ios.Out, "removed %s\n", name)
	if sb.Config.Autostart {
		return syncAutostartUnit(e, ios)
	}
	return nil
}

func isSandboxDir(e env, id string) bool {
	if strings.ContainsAny(id, "/.") {
		return false
	}
	fi, err := os.Stat(e.root.Sandbox(id).Dir)
	return err == nil && fi.IsDir()
}
