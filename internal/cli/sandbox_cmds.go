package cli

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/heyvm/heyvm/internal/backend"
	"github.com/heyvm/heyvm/internal/backend/qemu"
	"github.com/heyvm/heyvm/internal/layout"
	"github.com/heyvm/heyvm/internal/owner"
	"github.com/heyvm/heyvm/internal/sandbox"
)

func addSandboxCommands(root *cobra.Command, ios IO) {
	root.AddCommand(
		newCreateCmd(ios), newStartCmd(ios), newStopCmd(ios), newRestartCmd(ios), newRmCmd(ios),
		newListCmd(ios), newGetCmd(ios), newExecCmd(ios), newShCmd(ios), newSSHConfigCmd(ios), newSSHProxyCmd(ios),
		newTestVMCmd(ios, "test-vm", ""), newTestVMCmd(ios, "test-apple-virt", "apple_virt"), newBackendsCmd(ios), newOwnerCmd(),
		newWtCmd(ios), newConsoleCmd(ios), newLogsCmd(ios), newAutostartCmd(ios), newPortCmd(ios),
	)
}

// env is what every sandbox command needs.
type env struct {
	root  layout.Root
	store sandbox.Store
}

func openEnv() (env, error) {
	root, err := layout.Open()
	if err != nil {
		return env{}, err
	}
	return env{root: root, store: sandbox.Store{Root: root}}, nil
}

func (e env) lookup(ref string) (*sandbox.Sandbox, error) { return e.store.Lookup(ref) }

// openSandbox opens the state root and finds the sandbox ref names.
func openSandbox(ref string) (env, *sandbox.Sandbox, error) {
	e, err := openEnv()
	if err != nil {
		return env{}, nil, err
	}
	sb, err := e.lookup(ref)
	return e, sb, err
}

func newBackendsCmd(ios IO) *cobra.Command {
	return &cobra.Command{
		Use: "backends", Short: "List hypervisor backends and whether they run here", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			for _, s := range backend.Statuses() {
				mark := "available"
				if !s.Available {
					mark = "unavailable: " + s.Reason
				}
				def := ""
				if s.Default {
					def = " (default)"
				}
				fmt.Fprintf(ios.Out, "%-12s %s%s\n", s.Name, mark, def)
			}
			return nil
		},
	}
}

func newOwnerCmd() *cobra.Command {
	return &cobra.Command{
		Use: owner.OwnerCommand + " ID", Hidden: true, Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			root, err := layout.Open()
			if err != nil {
				return err
			}
			if code := owner.RunDetached(root, args[0]); code != 0 {
				return ExitError{Code: code}
			}
			return nil
		},
	}
}

// consoleTail returns the last lines of a sandbox's console log, for
// failure reports.
func consoleTail(sb *sandbox.Sandbox, n int) string {
	b, err := os.ReadFile(sb.Files.ConsoleLog())
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// noteKVMOnce tells a user once (per state root) that joining the kvm
// group would make their VMs fast.
func noteKVMOnce(ios IO, root layout.Root) {
	if _, err := os.Stat(root.KVMNoteShown()); err == nil {
		return
	}
	if note := qemu.KVMNoteHere(); note != "" {
		fmt.Fprintln(ios.ErrOut, note)
		os.WriteFile(root.KVMNoteShown(), nil, 0o600)
	}
}
