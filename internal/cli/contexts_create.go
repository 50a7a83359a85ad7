package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/spf13/cobra"

	"github.com/heyvm/heyvm/internal/contexts"
	"github.com/heyvm/heyvm/internal/fsutil"
	"github.com/heyvm/heyvm/internal/layout"
	"github.com/heyvm/heyvm/internal/remote"
	"github.com/heyvm/heyvm/internal/version"
)

// ContextCreateOptions are the flags of `heyvm context create`.
type ContextCreateOptions struct {
	Name     string
	Host     string // --host ssh://[user@]host[:port]
	Install  bool   // copy this heyvm there
	Registry string
	// KubeVirt.
	KubeVirt    bool
	Kubeconfig  string
	KubeContext string
	Namespace   string
}

func newContextCreateCmd(ios IO) *cobra.Command {
	o := &ContextCreateOptions{}
	cmd := &cobra.Command{
		Use:   "create NAME (--host ssh://[user@]host[:port] [--install] | --kubevirt --registry REF [--kubeconfig F] [--kube-context C] [--namespace NS])",
		Short: "Add a context: a host that runs heyvm over SSH, or a KubeVirt cluster",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			o.Name = args[0]
			return RunContextCreate(c.Context(), ios, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Host, "host", "", "an SSH host that runs heyvm: ssh://[user@]host[:port] (your ~/.ssh/config, agent and known_hosts apply)")
	f.BoolVar(&o.Install, "install", false, "copy this heyvm to the host (~/.local/bin/heyvm) when it has none, or another version")
	f.StringVar(&o.Registry, "registry", "", "where images for this context are pushed (KubeVirt: required; nodes pull from it)")
	f.BoolVar(&o.KubeVirt, "kubevirt", false, "a Kubernetes cluster with KubeVirt and CDI")
	f.StringVar(&o.Kubeconfig, "kubeconfig", "", "the kubeconfig (default: $KUBECONFIG or ~/.kube/config)")
	f.StringVar(&o.KubeContext, "kube-context", "", "the kubeconfig's context (default: its current one)")
	f.StringVar(&o.Namespace, "namespace", "", "the namespace (default: the kubeconfig context's)")
	return cmd
}

// RunContextCreate checks the new context and stores it.
func RunContextCreate(ctx context.Context, ios IO, o *ContextCreateOptions) error {
	if err := contexts.ValidateName(o.Name); err != nil {
		return err
	}
	root, err := layout.Open()
	if err != nil {
		return err
	}
	var c *contexts.Context
	switch {
	case o.KubeVirt && o.Host != "":
		return errors.New("give --host (an SSH host) or --kubevirt (a cluster), not both")
	case o.KubeVirt:
		if o.Registry == "" {
			return errors.New("a KubeVirt context needs --registry REF: the registry the cluster's nodes pull sandbox images from, e.g. ghcr.io/acme/heyvm")
		}
		c = &contexts.Context{Name: o.Name, Kind: contexts.KubeVirt, Registry: o.Registry,
			Kubeconfig: o.Kubeconfig, KubeContext: o.KubeContext, Namespace: o.Namespace}
		// The plugin checks the cluster (KubeVirt and CDI there, the
		// rights the commands need) before the context is kept.
		t, err := pluginTarget(c)
		if err != nil {
			return err
		}
		args := []string{"__check-context", "--registry", o.Registry}
		for flag, v := range map[string]string{"--kubeconfig": o.Kubeconfig, "--kube-context": o.KubeContext, "--namespace": o.Namespace} {
			if v != "" {
				args = append(args, flag, v)
			}
		}
		if code, err := t.run(ctx, ios, args, false); err != nil || code != 0 {
			if err == nil {
				err = ExitError{Code: code}
			}
			return err
		}
	case o.Host != "":
		t, err := contexts.ParseSSH(o.Host)
		if err != nil {
			return err
		}
		c = &contexts.Context{Name: o.Name, Kind: contexts.SSH, Host: t.String(), Registry: o.Registry}
		if c.Heyvm, err = checkRemoteHeyvm(ctx, ios, root, c, o.Install); err != nil {
			return err
		}
	default:
		return errors.New("say where: --host ssh://[user@]host[:port] for a host that runs heyvm, or --kubevirt for a cluster")
	}
	return editContexts(func(s *contexts.Store) error { return s.Add(c) },
		func() {
			fmt.Fprintf(ios.Out, "context %s: %s (%s); use it with `heyvm --context %s ...` or make it the current one with `heyvm context use %s`\n",
				c.Name, c.Describe(), c.Kind, c.Name, c.Name)
		})
}

// remoteInstallPath is where --install puts heyvm on a host: the user's
// own, no root needed.
const remoteInstallPath = "~/.local/bin/heyvm"

// probeScript reports a host's OS and arch, and its heyvm and version:
// the one --install put there first, then one on its PATH.
const probeScript = `uname -sm; for h in "$HOME/.local/bin/heyvm" "$(command -v heyvm 2>/dev/null)"; do ` +
	`if [ -n "$h" ] && [ -x "$h" ]; then echo "HEYVM $h"; "$h" version --json 2>/dev/null | tr -d '\n'; echo; exit 0; fi; done; echo NOHEYVM`

// checkRemoteHeyvm makes sure the host runs the same heyvm as this one
// (copying it there with --install when it can), and returns its path.
func checkRemoteHeyvm(ctx context.Context, ios IO, root layout.Root, c *contexts.Context, install bool) (string, error) {
	h, err := remoteHost(root, c)
	if err != nil {
		return "", err
	}
	var out, errb bytes.Buffer
	code, err := h.Shell(ctx, remote.Streams{Out: &out, Err: &errb}, probeScript)
	if err != nil {
		return "", err
	}
	if code != 0 {
		return "", fmt.Errorf("checking heyvm on %s failed (exit %d): %s", c.Host, code, strings.TrimSpace(errb.String()))
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) < 2 {
		return "", fmt.Errorf("%s answered oddly: %q", c.Host, out.String())
	}
	osArch := strings.Fields(lines[0])
	mine := version.Get()
	var theirs version.Info
	path := ""
	if p, ok := strings.CutPrefix(lines[1], "HEYVM "); ok && len(lines) > 2 {
		path = p
		json.Unmarshal([]byte(lines[2]), &theirs)
	}
	if path != "" && theirs.Key() == mine.Key() {
		fmt.Fprintf(ios.ErrOut, "%s runs heyvm %s (%s), as this one\n", c.Host, theirs.Version, path)
		return installedPath(path), nil
	}
	matches := len(osArch) == 2 && strings.EqualFold(osArch[0], runtime.GOOS) && unameArch(osArch[1]) == runtime.GOARCH
	what := "has no heyvm"
	if path != "" {
		what = fmt.Sprintf("runs heyvm %s (%s) and this is %s (%s)", theirs.Version, shortCommit(theirs.Commit), mine.Version, shortCommit(mine.Commit))
	}
	switch {
	case !install && matches:
		return "", fmt.Errorf("%s %s: add --install to copy this heyvm there (%s), or install the same heyvm there yourself", c.Host, what, remoteInstallPath)
	case !matches:
		return "", fmt.Errorf("%s %s, and it runs %s, so this heyvm (%s/%s) cannot be copied there: install heyvm %s there (the .deb, or `go install github.com/heyvm/heyvm/cmd/heyvm@%s`)",
			c.Host, what, strings.Join(osArch, " "), runtime.GOOS, runtime.GOARCH, mine.Version, mine.Version)
	}
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	bin, err := os.Open(exe)
	if err != nil {
		return "", err
	}
	defer bin.Close()
	fmt.Fprintf(ios.ErrOut, "%s %s: copying this heyvm to %s\n", c.Host, what, remoteInstallPath)
	errb.Reset()
	copyIn := `mkdir -p "$HOME/.local/bin" && cat >"$HOME/.local/bin/.heyvm.new" && chmod 755 "$HOME/.local/bin/.heyvm.new" && mv -f "$HOME/.local/bin/.heyvm.new" "$HOME/.local/bin/heyvm"`
	if code, err := h.Shell(ctx, remote.Streams{In: bin, Out: &out, Err: &errb}, copyIn); err != nil || code != 0 {
		if err == nil {
			err = fmt.Errorf("exit %d: %s", code, strings.TrimSpace(errb.String()))
		}
		return "", fmt.Errorf("copy heyvm to %s: %w", c.Host, err)
	}
	// The copy runs there, and is this heyvm.
	h.Heyvm = remoteInstallPath
	b, err := h.Output(ctx, "version", "--json")
	if err != nil {
		return "", fmt.Errorf("heyvm copied to %s does not run there: %w", c.Host, err)
	}
	if json.Unmarshal(b, &theirs) != nil || theirs.Key() != mine.Key() {
		return "", fmt.Errorf("heyvm copied to %s reports another version: %s", c.Host, strings.TrimSpace(string(b)))
	}
	return remoteInstallPath, nil
}

// installedPath records the host's heyvm: ~/ for the one --install put
// in its home (the home may differ between hosts of one name), else as
// found.
func installedPath(p string) string {
	if strings.HasSuffix(p, "/.local/bin/heyvm") {
		return remoteInstallPath
	}
	return p
}

// unameArch is Go's name for `uname -m`.
func unameArch(m string) string {
	switch m {
	case "x86_64", "amd64":
		return "amd64"
	case "aarch64", "arm64":
		return "arm64"
	}
	return m
}

func shortCommit(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	if c == "" {
		return "no commit"
	}
	return c
}

// clientVersionKey is this heyvm's version, as a remote one checks it.
func clientVersionKey() string { return version.Get().Key() }

// lockContexts serialises changes to contexts.yaml.
func lockContexts(root layout.Root) (*fsutil.Lock, error) {
	return fsutil.LockContext(context.Background(), root.ContextsFile()+".lock")
}
