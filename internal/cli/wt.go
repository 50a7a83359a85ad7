package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"

	"github.com/spf13/cobra"

	"github.com/heyvm/heyvm/internal/backend"
	"github.com/heyvm/heyvm/internal/owner"
	"github.com/heyvm/heyvm/internal/sandbox"
	"github.com/heyvm/heyvm/internal/sshclient"
	"github.com/heyvm/heyvm/internal/worktree"
)

// WorkspacePath is where the worktree appears in the guest.
const WorkspacePath = "/workspace"

// WtOptions are the flags of `heyvm wt`.
type WtOptions struct {
	Branch string
	Repo   string
	Create CreateOptions
	Detach bool
	// Deploy sends the worktree to a sandbox of the context (another
	// host); Pull brings its commits back.
	Deploy, Pull bool
	Context      string
	// PublishImage sends --image to the context's host before a deploy.
	PublishImage bool
}

func newWtCmd(ios IO) *cobra.Command {
	o := &WtOptions{}
	var ttl func() error
	cmd := &cobra.Command{
		Use:   "wt BRANCH",
		Short: "Open a shell in a VM on BRANCH's git worktree (mounted at /workspace)",
		Long: "wt finds the git repository around the current directory (or --repo), creates or reuses a worktree\n" +
			"for BRANCH beside it (<repo>.worktrees/BRANCH; the branch is created from HEAD if it is new),\n" +
			"and opens a shell in a sandbox named after the repository and branch, with the worktree at /workspace.\n" +
			"Leaving the shell shuts the VM down; the worktree and the sandbox disk stay for the next `heyvm wt`.",
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			o.Branch = args[0]
			if err := ttl(); err != nil {
				return err
			}
			o.Context, _ = c.Flags().GetString("context")
			if o.Deploy || o.Pull || o.PublishImage {
				return RunDeploy(c.Context(), ios, c, o)
			}
			if t, name, err := resolveTarget(o.Context); err != nil {
				return err
			} else if t != nil {
				return fmt.Errorf("context %s runs sandboxes elsewhere, and wt shares this machine's worktree: use `heyvm wt %s --deploy` to send it there", name, o.Branch)
			}
			return RunWt(c.Context(), ios, o)
		},
	}
	cmd.Annotations = map[string]string{annLocal: "yes"}
	cmd.Flags().StringVar(&o.Repo, "repo", "", "the git repository (default: the one around the current directory)")
	cmd.Flags().BoolVar(&o.Deploy, "deploy", false, "send the worktree (the branch's history and its uncommitted files) to a sandbox of the context, running detached there")
	cmd.Flags().BoolVar(&o.Pull, "pull", false, "with --deploy: bring the commits made in that sandbox back (a fetch; the branch only moves forward)")
	cmd.Flags().BoolVar(&o.PublishImage, "publish-image", false, "with --deploy: send the image named by --image to the context's host first (through its registry if it has one, else streamed over SSH)")
	cmd.Flags().BoolVar(&o.Detach, "detach", false, "keep the VM running in the background and return once it is ready")
	addCreateFlags(cmd, &o.Create)
	ttl = addTTLFlags(cmd, &o.Create.TTL)
	cmd.Flags().StringArrayVar(&o.Create.PortSpecs, "port", nil, "forward 127.0.0.1:HOST to the guest: GUEST or HOST:GUEST (repeatable)")
	cmd.Flags().BoolVar(&o.Create.Autostart, "autostart", false, "start this sandbox again when the host boots (see `heyvm autostart`)")
	cmd.Flags().BoolVar(&o.Create.AutoPorts, "auto-ports", false, "forward each TCP port the guest listens on (same host port if free)")
	return cmd
}

// RunWt is the body of `heyvm wt`.
func RunWt(ctx context.Context, ios IO, o *WtOptions) error {
	dir := o.Repo
	if dir == "" {
		dir = "."
	}
	repo, err := worktree.Find(ctx, dir)
	if err != nil {
		return err
	}
	if err := repo.ValidateBranch(ctx, o.Branch); err != nil {
		return err
	}
	e, err := openEnv()
	if err != nil {
		return err
	}
	name := sandbox.SanitizeName(repo.Name + "-" + o.Branch)
	sb, err := e.store.ByName(name)
	if err != nil {
		return err
	}
	if sb == nil {
		// Validate everything before touching git, so a bad flag leaves
		// no worktree behind.
		co := o.Create
		co.Name = name
		if err := co.validate(); err != nil {
			return err
		}
		b, err := backend.Get(co.Backend)
		if err != nil {
			return err
		}
		// The worktree is a share: check shares work before touching git.
		probe := co
		probe.Mounts = []backend.Mount{{Tag: "workspace", HostPath: repo.Top, GuestPath: WorkspacePath}}
		if err := probe.preflight(b, nil); err != nil {
			return err
		}
		path, created, err := repo.Ensure(ctx, o.Branch)
		if err != nil {
			return err
		}
		if created {
			fmt.Fprintf(ios.ErrOut, "created worktree %s for branch %s\n", path, o.Branch)
		}
		co.Mounts = append(co.Mounts, backend.Mount{Tag: "workspace", HostPath: path, GuestPath: WorkspacePath})
		// A linked worktree's .git file points at the repository's .git
		// by absolute path; share it at the same path so git works inside.
		if !isInside(path, repo.CommonDir) {
			co.Mounts = append(co.Mounts, backend.Mount{Tag: "gitdir", HostPath: repo.CommonDir, GuestPath: repo.CommonDir})
		}
		co.Workspace = &sandbox.Workspace{Repo: repo.Top, Branch: o.Branch, Worktree: path}
		sb, err = createSandbox(ctx, ios, e, &co)
		if err != nil {
			return err
		}
	} else if sb.Config.Workspace == nil || sb.Config.Workspace.Repo != repo.Top || sb.Config.Workspace.Branch != o.Branch {
		return fmt.Errorf("sandbox %s already exists and is not the wt sandbox of %s branch %s: remove it with `heyvm rm %s`", name, repo.Top, o.Branch, name)
	} else if o.Create.Autostart && !sb.Config.Autostart {
		if sb.Config, err = e.store.Update(ctx, sb.Config.ID, func(c *sandbox.Config) { c.Autostart = true }); err != nil {
			return err
		}
		if err := syncAutostartUnit(e, ios); err != nil {
			return err
		}
	}

	st, err := sandbox.ReadState(sb.Files)
	if err != nil {
		return err
	}
	if st.Status == sandbox.Running {
		// Someone keeps it running (a detached owner): just get in.
		if o.Detach {
			fmt.Fprintf(ios.Out, "%s is already running: `%s` to get in\n", name, heyvmHint("sh "+name))
			return nil
		}
		c, err := connect(ctx, e, sb)
		if err != nil {
			return err
		}
		defer c.Close()
		return shellExit(runShell(ctx, ios, c, sb, WorkspacePath))
	}
	if o.Detach {
		if _, err := owner.Start(ctx, e.root, sb); err != nil {
			return fmt.Errorf("start %s: %w (see `heyvm logs %s`)", name, err, name)
		}
		noteWarmth(ios, e, sb, o.Create.Cold)
		fmt.Fprintf(ios.Out, "%s is running with %s at %s: `%s` to get in, `%s` to stop it\n",
			name, sb.Config.Workspace.Worktree, WorkspacePath, heyvmHint("sh "+name), heyvmHint("stop "+name))
		return nil
	}
	fmt.Fprintf(ios.ErrOut, "booting %s (leaving the shell shuts it down)...\n", name)
	// Ctrl-C while booting cancels the boot; in the shell it belongs to
	// the guest (raw terminal).
	bctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	var code int
	err = RunForeground(ctx, bctx, e, sb, func(s *owner.Session) error {
		noteWarmth(ios, e, sb, o.Create.Cold)
		c, err := sshclient.Dial(ctx, s.Target())
		if err != nil {
			return err
		}
		defer c.Close()
		lc := &liveConn{Client: c, sb: sb, dead: sshclient.KeepAlive(c, keepaliveInterval, keepaliveMisses)}
		code, err = runShell(ctx, ios, lc, sb, WorkspacePath)
		return err
	})
	if err != nil {
		return err
	}
	if code != 0 {
		return ExitError{Code: code}
	}
	return nil
}

func shellExit(code int, err error) error {
	if err != nil {
		return err
	}
	if code != 0 {
		return ExitError{Code: code}
	}
	return nil
}

// isInside reports whether p is base or below it.
func isInside(base, p string) bool {
	return p == base || strings.HasPrefix(p, base+"/")
}
