package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/crypto/ssh"

	"github.com/heyvm/heyvm/internal/sandbox"
	"github.com/heyvm/heyvm/internal/sshclient"
	"github.com/heyvm/heyvm/internal/sshmux"
)

func isTerminal(r any) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// connect opens an SSH client to a running sandbox.
// liveConn is an SSH connection to a sandbox watched by keepalives, so a
// frozen or vanished VM ends every command on it within about 15 s.
type liveConn struct {
	*ssh.Client
	sb   *sandbox.Sandbox
	dead func() bool
}

// Keepalive timing: a probe every 5 s, given up after 3 unanswered.
const keepaliveInterval, keepaliveMisses = 5 * time.Second, 3

// outcome turns a remote command's end into heyvm's: a lost connection
// says what state the sandbox is in; a command heyvm gave up on after a
// signal exits 130 or 143 with a line saying it may still run.
func (c *liveConn) outcome(code int, err error) (int, error) {
	var ab *sshclient.AbandonedError
	switch {
	case errors.As(err, &ab):
		return -1, ExitError{Code: ab.ExitCode(), Msg: ab.Error() + " in sandbox " + c.sb.Config.Name}
	case err != nil && c.dead():
		state := "in an unknown state"
		if st, serr := sandbox.ReadState(c.sb.Files); serr == nil {
			state = "now " + stateWithReason(st)
		}
		return -1, fmt.Errorf("lost the connection to sandbox %s: no answer for %s; it is %s", c.sb.Config.Name, keepaliveInterval*keepaliveMisses, state)
	}
	return code, err
}

// stateWithReason is a state as list shows it.
func stateWithReason(st sandbox.State) string { return stateText(st, "") }

func connect(ctx context.Context, e env, sb *sandbox.Sandbox) (*liveConn, error) {
	st, err := sandbox.ReadState(sb.Files)
	if err != nil {
		return nil, err
	}
	switch st.Status {
	case sandbox.Stopped:
		return nil, fmt.Errorf("sandbox %s is stopped: start it with `heyvm start %s`", sb.Config.Name, sb.Config.Name)
	case sandbox.Suspended:
		return nil, fmt.Errorf("sandbox %s is suspended: `heyvm start %s` resumes it", sb.Config.Name, sb.Config.Name)
	case sandbox.Starting:
		return nil, fmt.Errorf("sandbox %s is still starting: try again in a moment", sb.Config.Name)
	case sandbox.Paused:
		return nil, fmt.Errorf("sandbox %s is paused (%s): make room if its disk is full, then `heyvm start %s` resumes it", sb.Config.Name, st.Owner.Paused.Reason, sb.Config.Name)
	}
	if st.Owner == nil {
		return nil, fmt.Errorf("sandbox %s runs, but %s: `heyvm stop %s` and `heyvm start %s` bring it back", sb.Config.Name, st.OwnerDamaged, sb.Config.Name, sb.Config.Name)
	}
	signer, _, err := sshclient.ManagedKey(e.root)
	if err != nil {
		return nil, err
	}
	// HEYVM_SSH_DIRECT=1 skips the owner's shared connection (to tell
	// a fault of it from one of the guest's sshd).
	var c *ssh.Client
	if os.Getenv("HEYVM_SSH_DIRECT") != "1" {
		c, err = dialShared(ctx, sb, st.Owner, signer)
	}
	if c == nil {
		if st.Owner.SSHPort == 0 {
			// No port: the owner's stream is the only way in (vsock).
			if err == nil {
				err = errors.New("HEYVM_SSH_DIRECT is set, but this backend has no port to dial")
			}
			return nil, fmt.Errorf("reach sandbox %s through its owner: %w", sb.Config.Name, err)
		}
		key, kerr := sshclient.PinnedHostKey(sb.Files.KnownHosts())
		if kerr != nil {
			return nil, kerr
		}
		if c, err = sshclient.Dial(ctx, sshclient.Target{Host: st.Owner.SSHHost, Port: st.Owner.SSHPort, User: "root", Signer: signer, HostKey: key}); err != nil {
			return nil, err
		}
	}
	return &liveConn{Client: c, sb: sb, dead: sshclient.KeepAlive(c, keepaliveInterval, keepaliveMisses)}, nil
}

// dialShared connects through the owner's shared guest connection
// (ssh.sock), which spares the guest a handshake; an owner without one
// (an older heyvm's) gives an error, and the caller dials the guest.
func dialShared(ctx context.Context, sb *sandbox.Sandbox, oi *sandbox.OwnerInfo, signer ssh.Signer) (*ssh.Client, error) {
	if oi == nil || oi.SSHSockKey == "" {
		return nil, errors.New("the owner shares no connection")
	}
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(oi.SSHSockKey))
	if err != nil {
		return nil, err
	}
	return sshmux.Dial(ctx, sb.Files.SSHSock(), key, signer)
}

// validateEnv checks --env values (create, wt and exec share it).
func validateEnv(env []string) error {
	for _, e := range env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return fmt.Errorf("--env %q is not KEY=VALUE", e)
		}
	}
	return nil
}

// ExecOptions are the flags of `heyvm exec`.
type ExecOptions struct {
	Ref  string
	Argv []string
	Cwd  string
	Env  []string
	User string
}

func newExecCmd(ios IO) *cobra.Command {
	o := &ExecOptions{}
	cmd := &cobra.Command{
		Use:   "exec ID [--cwd DIR] [--env K=V]... [--user U] -- CMD...",
		Short: "Run a command in a sandbox over SSH",
		Args: func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return errors.New("exec needs a sandbox and a command: `heyvm exec ID -- CMD...`")
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			argv, err := commandAfterID(c, args[1:])
			if errors.Is(err, errHelpShown) {
				return nil
			}
			if err != nil {
				return err
			}
			o.Ref, o.Argv = args[0], argv
			if len(o.Argv) == 0 {
				return fmt.Errorf("no command given: use `heyvm exec %s -- CMD...`", o.Ref)
			}
			code, err := RunExec(c.Context(), ios, o)
			if err != nil {
				return err
			}
			if code != 0 {
				return ExitError{Code: code}
			}
			return nil
		},
	}
	cmd.Flags().SetInterspersed(false)
	cmd.Flags().StringVar(&o.Cwd, "cwd", "", "working directory in the guest")
	cmd.Flags().StringArrayVar(&o.Env, "env", nil, "KEY=VALUE (repeatable)")
	cmd.Flags().StringVar(&o.User, "user", "", "guest user to run as (default root)")
	return cmd
}

// errHelpShown: --help came after the id, and the help is printed.
var errHelpShown = errors.New("help shown")

// commandAfterID takes heyvm's own flags off the front of what follows
// the sandbox id (the usage puts them there; cobra stops parsing at the
// id so that the command's own flags stay the command's) and returns the
// command: everything after `--`, or from its first word that is not a
// flag.
func commandAfterID(c *cobra.Command, rest []string) ([]string, error) {
	if len(rest) == 0 || rest[0] == "--" || !strings.HasPrefix(rest[0], "-") {
		if len(rest) > 0 && rest[0] == "--" {
			rest = rest[1:]
		}
		return rest, nil
	}
	if err := c.Flags().Parse(rest); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			c.Help()
			return nil, errHelpShown
		}
		return nil, fmt.Errorf("%v: see `%s --help`", err, c.CommandPath())
	}
	return c.Flags().Args(), nil
}

// RunExec runs the command and returns its exit status.
func RunExec(ctx context.Context, ios IO, o *ExecOptions) (int, error) {
	if err := validateEnv(o.Env); err != nil {
		return -1, err
	}
	e, err := openEnv()
	if err != nil {
		return -1, err
	}
	sb, err := e.lookup(o.Ref)
	if err != nil {
		return -1, err
	}
	c, err := connect(ctx, e, sb)
	if err != nil {
		return -1, err
	}
	defer c.Close()
	envs := append(append([]string(nil), sb.Config.Env...), o.Env...)
	return c.outcome(sshclient.Exec(ctx, c.Client, sshclient.ExecOptions{
		Command: sshclient.CommandLine(o.Argv, o.Cwd, o.User, envs),
		Stdin:   ios.In, Stdout: ios.Out, Stderr: ios.ErrOut, ForwardSignals: true,
	}))
}

func newShCmd(ios IO) *cobra.Command {
	return &cobra.Command{
		Use: "sh ID", Short: "Open an interactive shell in a sandbox", Args: cobra.ExactArgs(1),
		Annotations: map[string]string{annTTY: "yes"},
		RunE: func(c *cobra.Command, args []string) error {
			e, sb, err := openSandbox(args[0])
			if err != nil {
				return err
			}
			cl, err := connect(c.Context(), e, sb)
			if err != nil {
				return err
			}
			defer cl.Close()
			code, err := runShell(c.Context(), ios, cl, sb, "")
			if err != nil {
				return err
			}
			if code != 0 {
				return ExitError{Code: code}
			}
			return nil
		},
	}
}

// runShell opens a login shell (in dir, if given) with the sandbox's env.
func runShell(ctx context.Context, ios IO, c *liveConn, sb *sandbox.Sandbox, dir string) (int, error) {
	in, ok := ios.In.(*os.File)
	if !ok {
		in = os.Stdin
	}
	command := ""
	if dir != "" || len(sb.Config.Env) > 0 {
		command = sshclient.CommandLine([]string{"sh", "-c", `exec "${SHELL:-/bin/sh}" -l`}, dir, "", sb.Config.Env)
	}
	return c.outcome(sshclient.Shell(ctx, c.Client, sshclient.ShellOptions{Command: command, Stdin: in, Stdout: ios.Out, Stderr: ios.ErrOut}))
}
