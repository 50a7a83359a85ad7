// Package kvcli is heyvm-kubevirt: heyvm's commands for a KubeVirt
// context (create, list, get, exec, sh, console, stop, start, rm, logs,
// port, ssh-proxy), which heyvm runs when the context it is given is a
// cluster. It is a program of its own because the cluster client would
// double heyvm's size; its flags and output are heyvm's.
//
// A sandbox there is a VirtualMachine labelled heyvm.dev/sandbox (its
// id), booting heyvm's image: the kernel and initrd from the image's
// containerDisk (kernelBoot), the disk imported from it by CDI. heyvm
// provisions it over the serial console as it does any guest (its key
// goes in, its host key comes out and is pinned here), and every SSH
// session rides the VMI's portforward subresource to port 22. Nothing of
// heyvm's runs in the cluster, and nothing stays running here.
package kvcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

	"github.com/heyvm/heyvm/internal/contexts"
	"github.com/heyvm/heyvm/internal/fsutil"
	"github.com/heyvm/heyvm/internal/kubevirt"
	"github.com/heyvm/heyvm/internal/layout"
	"github.com/heyvm/heyvm/internal/sshclient"
)

// IO is where a command reads and writes.
type IO struct {
	In          io.Reader
	Out, ErrOut io.Writer
}

// exitError carries a remote command's exit status.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// Main runs heyvm-kubevirt and returns the exit status.
func Main(ctx context.Context, args []string) int {
	ios := IO{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	root := newRoot(ios)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	}
	fmt.Fprintf(ios.ErrOut, "heyvm: %v\n", err)
	return 1
}

func newRoot(ios IO) *cobra.Command {
	root := &cobra.Command{Use: "heyvm", SilenceUsage: true, SilenceErrors: true}
	root.PersistentFlags().String("context", "", "the KubeVirt context")
	root.SetIn(ios.In)
	root.SetOut(ios.Out)
	root.SetErr(ios.ErrOut)
	root.AddCommand(newCheckCmd(ios), newCreateCmd(ios), newListCmd(ios), newGetCmd(ios),
		newExecCmd(ios), newShCmd(ios), newConsoleCmd(ios), newSSHProxyCmd(ios),
		newStopCmd(ios), newStartCmd(ios), newRmCmd(ios), newLogsCmd(ios), newPortCmd(ios))
	return root
}

// env is a command's context: the cluster and where heyvm keeps what it
// knows of it here.
type env struct {
	root    layout.Root
	ctx     *contexts.Context
	cluster *kubevirt.Cluster
}

// open resolves the KubeVirt context (--context, or HEYVM_CONTEXT as heyvm
// sets it) and its cluster.
func open(c *cobra.Command) (*env, error) {
	root, err := layout.Open()
	if err != nil {
		return nil, err
	}
	name, _ := c.Flags().GetString("context")
	x, err := contexts.Resolve(root, name)
	if err != nil {
		return nil, err
	}
	if x.Kind != contexts.KubeVirt {
		return nil, fmt.Errorf("context %s is not a KubeVirt cluster (%s): use heyvm for it", x.Name, x.Kind)
	}
	cl, err := kubevirt.New(kubevirt.Config{Kubeconfig: x.Kubeconfig, Context: x.KubeContext, Namespace: x.Namespace})
	if err != nil {
		return nil, err
	}
	return &env{root: root, ctx: x, cluster: cl}, nil
}

// knownHosts is where the guests' host keys of this context are pinned.
func (e *env) knownHosts() string {
	return filepath.Join(e.root.Dir, "contexts", e.ctx.Name, "known_hosts")
}

// alias is a sandbox's name in the context's known_hosts.
func (e *env) alias(id string) string { return "heyvm-" + e.ctx.Name + "-" + id }

// pin records a guest's host key.
func (e *env) pin(id, key string) error {
	if err := layout.EnsureDir(filepath.Dir(e.knownHosts())); err != nil {
		return err
	}
	alias := e.alias(id)
	b, _ := os.ReadFile(e.knownHosts())
	var keep []string
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" && !strings.HasPrefix(l, alias+" ") {
			keep = append(keep, l)
		}
	}
	keep = append(keep, alias+" "+strings.TrimSpace(key))
	return fsutil.WriteFileAtomic(e.knownHosts(), []byte(strings.Join(keep, "\n")+"\n"), 0o600)
}

// pinned is a guest's host key as pinned, "" if none.
func (e *env) pinned(id string) string {
	b, _ := os.ReadFile(e.knownHosts())
	for _, l := range strings.Split(string(b), "\n") {
		if k, ok := strings.CutPrefix(l, e.alias(id)+" "); ok {
			return k
		}
	}
	return ""
}

// lookup finds a sandbox by name, id or unique id prefix.
func (e *env) lookup(ctx context.Context, ref string) (*kubevirt.Sandbox, error) {
	all, err := e.cluster.List(ctx)
	if err != nil {
		return nil, err
	}
	var prefix []*kubevirt.Sandbox
	for _, s := range all {
		if s.Name == ref || s.ID == ref {
			return s, nil
		}
		if strings.HasPrefix(s.ID, ref) {
			prefix = append(prefix, s)
		}
	}
	switch len(prefix) {
	case 1:
		return prefix[0], nil
	case 0:
		return nil, fmt.Errorf("no such sandbox %q in namespace %s of context %s: see `heyvm --context %s list`", ref, e.cluster.Namespace, e.ctx.Name, e.ctx.Name)
	}
	return nil, fmt.Errorf("%q is ambiguous: type more of the id", ref)
}

// dialSSH connects to a running sandbox's sshd over the VMI's
// portforward, checking the pinned host key.
func (e *env) dialSSH(ctx context.Context, s *kubevirt.Sandbox) (*ssh.Client, error) {
	if !s.Ready {
		return nil, fmt.Errorf("sandbox %s is %s: start it with `heyvm --context %s start %s`", s.Name, strings.ToLower(s.State), e.ctx.Name, s.Name)
	}
	keyLine := e.pinned(s.ID)
	if keyLine == "" {
		return nil, fmt.Errorf("sandbox %s's host key is not known here (it was made from another machine): remove it and create it again, or run `heyvm --context %s start %s` from the machine that made it", s.Name, e.ctx.Name, s.Name)
	}
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(keyLine))
	if err != nil {
		return nil, err
	}
	signer, _, err := sshclient.ManagedKey(e.root)
	if err != nil {
		return nil, err
	}
	return sshclient.Dial(ctx, sshclient.Target{User: "root", Signer: signer, HostKey: key,
		Dial: func(ctx context.Context) (net.Conn, error) { return e.cluster.PortForward(ctx, s.Name, 22) }})
}

func newCheckCmd(ios IO) *cobra.Command {
	var cfg kubevirt.Config
	var registry string
	cmd := &cobra.Command{
		Use: "__check-context", Hidden: true, Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := kubevirt.New(cfg)
			if err != nil {
				return err
			}
			if err := cl.Check(c.Context(), true); err != nil {
				return err
			}
			fmt.Fprintf(ios.ErrOut, "the cluster runs KubeVirt and CDI, and namespace %s takes sandboxes\n", cl.Namespace)
			return nil
		},
	}
	cmd.Flags().StringVar(&cfg.Kubeconfig, "kubeconfig", "", "")
	cmd.Flags().StringVar(&cfg.Context, "kube-context", "", "")
	cmd.Flags().StringVar(&cfg.Namespace, "namespace", "", "")
	cmd.Flags().StringVar(&registry, "registry", "", "")
	return cmd
}
