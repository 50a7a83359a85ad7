package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/heyvm/heyvm/internal/deploy"
	"github.com/heyvm/heyvm/internal/layout"
	"github.com/heyvm/heyvm/internal/sandbox"
	"github.com/heyvm/heyvm/internal/sshclient"
	"github.com/heyvm/heyvm/internal/worktree"
)

// RunDeploy is `heyvm wt BRANCH --deploy [--pull]`: the branch's worktree
// here, its sandbox on the context's host.
func RunDeploy(ctx context.Context, ios IO, c *cobra.Command, o *WtOptions) error {
	if o.Pull && !o.Deploy {
		return errors.New("--pull goes with --deploy: `heyvm wt BRANCH --deploy --pull`")
	}
	if o.PublishImage && (!o.Deploy || o.Pull) {
		return errors.New("--publish-image goes with --deploy: `heyvm wt BRANCH --deploy --publish-image --image NAME`")
	}
	if o.PublishImage && !c.Flags().Changed("image") {
		return fmt.Errorf("--publish-image sends the image given with --image: name it (`heyvm wt %s --deploy --publish-image --image NAME`); without --image the host uses its own default image", o.Branch)
	}
	root, err := layout.Open()
	if err != nil {
		return err
	}
	t, ctxName, err := resolveTarget(o.Context)
	if err != nil {
		return err
	}
	if t == nil {
		return fmt.Errorf("--deploy sends a worktree to a sandbox elsewhere: name an SSH or KubeVirt context with --context (this one, %s, is this machine; see `heyvm context ls`)", ctxName)
	}
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
	co := o.Create
	if err := co.validate(); err != nil {
		return err
	}
	path, created, err := repo.Ensure(ctx, o.Branch)
	if err != nil {
		return err
	}
	if created {
		fmt.Fprintf(ios.ErrOut, "created worktree %s for branch %s\n", path, o.Branch)
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	name := sandbox.SanitizeName(repo.Name + "-" + o.Branch)
	env := ""
	if os.Getenv(layout.EnvHome) != "" {
		env = "env " + layout.EnvHome + "=" + sshclient.ShellQuote(root.Dir) + " "
	}
	do := deploy.Options{
		Context: ctxName, Sandbox: name, Worktree: path, Branch: o.Branch,
		GitSSH:     env + sshclient.ShellQuote(exe) + " --context " + sshclient.ShellQuote(ctxName) + " " + gitSSHCommand + " " + name,
		CreateArgs: deployCreateArgs(c),
		Log:        ios.ErrOut,
	}
	if o.Pull {
		msg, err := deploy.Pull(ctx, do)
		if err != nil {
			return err
		}
		fmt.Fprintln(ios.Out, msg)
		return nil
	}
	if o.PublishImage {
		if err := publishImage(ctx, ios, t, ctxName, o); err != nil {
			return err
		}
	}
	run := func(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer, argv []string) (int, error) {
		return t.run(ctx, IO{In: stdin, Out: stdout, ErrOut: stderr}, argv, false)
	}
	res, err := deploy.Deploy(ctx, run, do)
	if err != nil {
		return err
	}
	how := "updated"
	if res.Created {
		how = "created"
	}
	fmt.Fprintf(ios.Out, "deployed %s (%.12s, %d uncommitted files, %d deleted) to %s on %s (%s): `heyvm --context %s sh %s`, then cd %s\n",
		o.Branch, res.Commit, res.Files, res.Deleted, name, ctxName, how, ctxName, name, deploy.Workspace)
	return nil
}

// deployCreateArgs are the create flags of wt given on the command line,
// for the sandbox made there.
func deployCreateArgs(c *cobra.Command) []string {
	var args []string
	for _, f := range []string{"image", "backend", "cpus", "memory", "host-loopback", "cold", "ttl", "ttl-seconds", "port", "auto-ports", "autostart"} {
		fl := c.Flags().Lookup(f)
		if fl == nil || !fl.Changed {
			continue
		}
		if sv, ok := fl.Value.(interface{ GetSlice() []string }); ok {
			for _, v := range sv.GetSlice() {
				args = append(args, "--"+f, v)
			}
			continue
		}
		args = append(args, "--"+f+"="+fl.Value.String())
	}
	return args
}

// gitSSHCommand is git's ssh for a deploy: `heyvm --context C __git-ssh
// SANDBOX [options] HOST COMMAND` runs git's remote half (COMMAND) in the
// sandbox with `heyvm exec` on the context.
const gitSSHCommand = "__git-ssh"

func newGitSSHCmd(ios IO) *cobra.Command {
	cmd := &cobra.Command{
		Use: gitSSHCommand + " SANDBOX [OPTIONS] HOST COMMAND", Hidden: true, Args: cobra.MinimumNArgs(3),
		RunE: func(c *cobra.Command, args []string) error {
			sb, command := args[0], args[len(args)-1]
			if !strings.HasPrefix(command, "git-receive-pack ") && !strings.HasPrefix(command, "git-upload-pack ") {
				return fmt.Errorf("%s runs only git's own commands, not %q", gitSSHCommand, command)
			}
			name, _ := c.Flags().GetString("context")
			t, ctxName, err := resolveTarget(name)
			if err != nil {
				return err
			}
			if t == nil {
				return fmt.Errorf("context %s is this machine: nothing to reach", ctxName)
			}
			code, err := t.run(c.Context(), ios, []string{"exec", sb, "--", "sh", "-c", command}, false)
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
	return cmd
}
