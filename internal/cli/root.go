// Package cli holds heyvm's commands. Each command has an Options struct
// and a run function that takes a context and writers, so tests can drive
// a command without a terminal; cobra only parses flags into Options.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
)

// IO is where a command reads and writes.
type IO struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
}

// ExitError carries a specific exit status (e.g. a remote command's),
// and optionally a line to print.
type ExitError struct {
	Code int
	Msg  string
}

func (e ExitError) Error() string {
	if e.Msg != "" {
		return e.Msg
	}
	return fmt.Sprintf("exit status %d", e.Code)
}

// NewRoot builds the command tree.
func NewRoot(ios IO) *cobra.Command {
	root := &cobra.Command{
		Use:           "heyvm",
		Short:         "Full Linux VMs as throwaway or long-lived developer sandboxes",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(ios.In)
	root.SetOut(ios.Out)
	root.SetErr(ios.ErrOut)
	root.AddCommand(newImagesCmd(ios))
	addSandboxCommands(root, ios)
	addVersion(root, ios)
	addContextSupport(root, ios)
	root.AddCommand(newSignalCmd(), newGitSSHCmd(ios))
	addCompletions(root)
	return root
}

// Main runs heyvm and returns the process exit status. Errors are printed
// as one line prefixed with "heyvm: ".
func Main(ctx context.Context, args []string) int {
	ios := IO{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	os.Setenv("PATH", withSystemDirs(os.Getenv("PATH")))
	ctx, endCall, err := remoteCall(ctx)
	defer endCall()
	if err != nil {
		fmt.Fprintf(ios.ErrOut, "heyvm: %v\n", err)
		return 3
	}
	root := NewRoot(ios)
	root.SetArgs(args)
	err = root.ExecuteContext(context.WithValue(ctx, argsKey{}, args))
	if err == nil {
		return 0
	}
	var elsewhere errRanElsewhere
	if errors.As(err, &elsewhere) {
		return elsewhere.code
	}
	var ee ExitError
	if errors.As(err, &ee) {
		if ee.Msg != "" {
			fmt.Fprintf(ios.ErrOut, "heyvm: %s\n", ee.Msg)
		}
		return ee.Code
	}
	fmt.Fprintf(ios.ErrOut, "heyvm: %v\n", err)
	return 1
}

// requireSubcommand makes a command group fail on a missing or unknown
// subcommand, with cobra's suggestion, instead of printing help and
// exiting 0.
func requireSubcommand(cmd *cobra.Command) {
	cmd.Args = cobra.ArbitraryArgs
	cmd.SuggestionsMinimumDistance = 2
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return fmt.Errorf("%s needs a subcommand: see `%s --help`", c.CommandPath(), c.CommandPath())
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
		if s := c.SuggestionsFor(args[0]); len(s) > 0 {
			msg += fmt.Sprintf(" (did you mean %q?)", s[0])
		}
		return fmt.Errorf("%s: see `%s --help`", msg, c.CommandPath())
	}
}

// withSystemDirs adds the system folders an ordinary user's PATH lacks on
// Debian (/usr/sbin, /sbin), after the user's own: the tools heyvm runs
// (mkfs.ext4, depmod, ip) live there.
func withSystemDirs(path string) string {
	have := map[string]bool{}
	for _, d := range filepath.SplitList(path) {
		have[d] = true
	}
	for _, d := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin"} {
		if !have[d] {
			if path != "" {
				path += string(filepath.ListSeparator)
			}
			path += d
		}
	}
	return path
}
