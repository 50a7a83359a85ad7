package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/heyvm/heyvm/internal/contexts"
	"github.com/heyvm/heyvm/internal/layout"
	"github.com/heyvm/heyvm/internal/remote"
)

// Where a command runs is the context's business (internal/contexts):
// this machine's sandboxes, or another host's, or a cluster's. The root
// command resolves the context before any command runs (runOnContext); a
// command whose work is all where the sandboxes are (create, list, exec,
// images ...) then runs there as a whole, through the context's target,
// with the same flags and output. Commands that have a part on this
// machine too (the context commands themselves, version, wt --deploy,
// ssh-config, port forward, images export/import) are marked local and
// use the target for the other part.

// annLocal marks a command that runs here whatever the context.
const annLocal = "heyvm.local"

// annTTY marks a command that wants the terminal (a pty) when it has one.
const annTTY = "heyvm.tty"

// target runs heyvm commands where a context's sandboxes are.
type target interface {
	// run runs heyvm with argv there, on ios; tty asks for a pty.
	run(ctx context.Context, ios IO, argv []string, tty bool) (int, error)
}

// argsKey carries the command line through the context to the root's
// PersistentPreRunE, which forwards it.
type argsKey struct{}

// errRanElsewhere: the command ran on its context's target, with this
// exit status.
type errRanElsewhere struct{ code int }

func (e errRanElsewhere) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// addContextSupport adds --context and the dispatch to the root.
func addContextSupport(root *cobra.Command, ios IO) {
	var name string
	root.PersistentFlags().StringVar(&name, "context", "", "where sandboxes run (see `heyvm context ls`; default: the current context, or $"+contexts.Env+")")
	root.PersistentPreRunE = func(c *cobra.Command, _ []string) error {
		return runOnContext(c, ios, name)
	}
	root.AddCommand(newContextCmd(ios))
}

// isLocal says whether a command runs here whatever the context.
func isLocal(c *cobra.Command) bool {
	for p := c; p != nil; p = p.Parent() {
		if p.Annotations[annLocal] == "yes" {
			return true
		}
	}
	return c.Name() == "help" || c.Name() == "completion" || strings.HasPrefix(c.Name(), "__")
}

// runOnContext runs the whole command on its context's target when that
// is not this machine, and stops it here.
func runOnContext(c *cobra.Command, ios IO, name string) error {
	if isLocal(c) || servingCall {
		// A heyvm run for another one (its remote call) is where the
		// sandboxes are, whatever --context says.
		return nil
	}
	t, ctxName, err := resolveTarget(name)
	if err != nil || t == nil {
		return err
	}
	args, _ := c.Context().Value(argsKey{}).([]string)
	tty := c.Annotations[annTTY] == "yes" && isTerminal(ios.In)
	code, err := t.run(c.Context(), ios, args, tty)
	if err != nil {
		return fmt.Errorf("context %s: %w", ctxName, err)
	}
	return errRanElsewhere{code}
}

// resolveTarget returns the target of the named (or current) context; nil
// for this machine.
func resolveTarget(name string) (target, string, error) {
	root, err := layout.Open()
	if err != nil {
		return nil, "", err
	}
	c, err := contexts.Resolve(root, name)
	if err != nil {
		return nil, "", err
	}
	t, err := targetOf(root, c)
	if r, ok := t.(remoteTarget); ok && name != "" {
		r.h.Origin = c.Name
	}
	return t, c.Name, err
}

// targetOf is a context's target: nil for this machine.
func targetOf(root layout.Root, c *contexts.Context) (target, error) {
	switch c.Kind {
	case contexts.Local:
		return nil, nil
	case contexts.SSH:
		h, err := remoteHost(root, c)
		if err != nil {
			return nil, err
		}
		return remoteTarget{h}, nil
	case contexts.KubeVirt:
		return pluginTarget(c)
	}
	return nil, fmt.Errorf("context %s is of a kind this heyvm does not know (%s): update heyvm", c.Name, c.Kind)
}

// remoteHost is an SSH context's host.
func remoteHost(root layout.Root, c *contexts.Context) (*remote.Host, error) {
	t, err := contexts.ParseSSH(c.Host)
	if err != nil {
		return nil, err
	}
	return &remote.Host{Name: c.Name, Target: t, Heyvm: c.Heyvm, ControlDir: controlDir(root), ClientVersion: clientVersionKey()}, nil
}

// controlDir keeps the shared SSH connections' sockets: short (a unix
// socket path has about 100 bytes), private, one per user.
func controlDir(root layout.Root) string {
	d := filepath.Join(root.Dir, "run", "ssh")
	if len(d) > 60 {
		d = filepath.Join(os.TempDir(), fmt.Sprintf("heyvm-%d", os.Getuid()), "ssh")
	}
	return d
}

// remoteTarget runs commands on an SSH host's heyvm.
type remoteTarget struct{ h *remote.Host }

func (r remoteTarget) run(ctx context.Context, ios IO, argv []string, tty bool) (int, error) {
	return r.h.Run(ctx, remote.Streams{In: ios.In, Out: ios.Out, Err: ios.ErrOut, TTY: tty}, argv)
}

// kubevirtPlugin is the program that runs a KubeVirt context's commands:
// the cluster client is kept out of heyvm itself (it would double its
// size), as kubectl and Docker keep their plugins.
const kubevirtPlugin = "heyvm-kubevirt"

// pluginTarget finds heyvm-kubevirt beside this heyvm or on PATH.
func pluginTarget(c *contexts.Context) (target, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), kubevirtPlugin)
		if _, err := os.Stat(p); err == nil {
			return execTarget{p, c.Name}, nil
		}
	}
	if p, err := exec.LookPath(kubevirtPlugin); err == nil {
		return execTarget{p, c.Name}, nil
	}
	return nil, fmt.Errorf("context %s is a KubeVirt cluster, which needs %s beside heyvm or on PATH: install it (it comes with heyvm's packages; from source: `make kubevirt`)", c.Name, kubevirtPlugin)
}

// execTarget runs a plugin program with the command line, on this
// process's streams, telling it the context.
type execTarget struct{ path, context string }

func (p execTarget) run(ctx context.Context, ios IO, argv []string, _ bool) (int, error) {
	cmd := exec.CommandContext(ctx, p.path, argv...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = ios.In, ios.Out, ios.ErrOut
	cmd.Env = append(os.Environ(), contexts.Env+"="+p.context)
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	return 0, err
}

func newContextCmd(ios IO) *cobra.Command {
	cmd := &cobra.Command{Use: "context", Short: "Where sandboxes run: this machine, another host over SSH, a KubeVirt cluster",
		Annotations: map[string]string{annLocal: "yes"}}
	cmd.AddCommand(newContextCreateCmd(ios), newContextListCmd(ios), newContextUseCmd(ios), newContextRmCmd(ios))
	requireSubcommand(cmd)
	return cmd
}

func newContextListCmd(ios IO) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use: "ls", Aliases: []string{"list"}, Short: "List contexts (* is the current one)", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			root, err := layout.Open()
			if err != nil {
				return err
			}
			s, err := contexts.Load(root)
			if err != nil {
				return err
			}
			all := s.List()
			if asJSON {
				type row struct {
					*contexts.Context
					Current bool `json:"current"`
				}
				var rows []row
				for _, x := range all {
					rows = append(rows, row{x, x.Name == s.CurrentName()})
				}
				return writeJSON(ios, rows)
			}
			tw := tabwriter.NewWriter(ios.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tKIND\tWHERE\tREGISTRY")
			for _, x := range all {
				mark := ""
				if x.Name == s.CurrentName() {
					mark = " *"
				}
				fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\n", x.Name, mark, x.Kind, x.Describe(), dash(x.Registry))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newContextUseCmd(ios IO) *cobra.Command {
	return &cobra.Command{
		Use: "use NAME", Short: "Make a context the current one (`default` is this machine)", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return editContexts(func(s *contexts.Store) error { return s.Use(args[0]) },
				func() { fmt.Fprintf(ios.Out, "the current context is %s\n", args[0]) })
		},
	}
}

func newContextRmCmd(ios IO) *cobra.Command {
	return &cobra.Command{
		Use: "rm NAME", Short: "Remove a context (its sandboxes stay where they run)", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			root, err := layout.Open()
			if err != nil {
				return err
			}
			var closeConn func()
			err = editContexts(func(s *contexts.Store) error {
				if x, err := s.Get(args[0]); err == nil && x.Kind == contexts.SSH {
					if h, err := remoteHost(root, x); err == nil {
						closeConn = h.Close
					}
				}
				return s.Remove(args[0])
			}, func() { fmt.Fprintf(ios.Out, "removed context %s\n", args[0]) })
			if err == nil && closeConn != nil {
				closeConn()
			}
			return err
		},
	}
}

// editContexts changes contexts.yaml under a lock, then says so.
func editContexts(change func(*contexts.Store) error, done func()) error {
	root, err := layout.Open()
	if err != nil {
		return err
	}
	lock, err := lockContexts(root)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	s, err := contexts.Load(root)
	if err != nil {
		return err
	}
	if err := change(s); err != nil {
		return err
	}
	if err := s.Save(root); err != nil {
		return err
	}
	done()
	return nil
}
