package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

	"github.com/heyvm/heyvm/internal/fsutil"
	"github.com/heyvm/heyvm/internal/layout"
	"github.com/heyvm/heyvm/internal/sandbox"
	"github.com/heyvm/heyvm/internal/sshclient"
	"github.com/heyvm/heyvm/internal/sshmux"
)

// OpenSSH (and whatever runs it: rsync, git, VS Code) reaches a sandbox
// through `heyvm ssh-proxy ID` as its ProxyCommand: the proxy asks the
// sandbox's owner for a raw stream to the guest's sshd (sshmux's
// SSHDChannel), which the owner opens through its backend, a TCP port or a
// vsock stream alike. OpenSSH then speaks SSH to the guest itself, with the
// host key heyvm pinned. No port is in the config, so it stays right
// across restarts.

func newSSHConfigCmd(ios IO) *cobra.Command {
	return &cobra.Command{
		Use: "ssh-config ID", Short: "Print an OpenSSH Host block for a sandbox (ProxyCommand through heyvm)", Args: cobra.ExactArgs(1),
		Annotations: map[string]string{annLocal: "yes"},
		RunE: func(c *cobra.Command, args []string) error {
			name, _ := c.Flags().GetString("context")
			if t, ctxName, err := resolveTarget(name); err != nil {
				return err
			} else if t != nil {
				return remoteSSHConfig(c.Context(), ios, t, ctxName, args[0])
			}
			e, sb, err := openSandbox(args[0])
			if err != nil {
				return err
			}
			if _, err := os.Stat(sb.Files.KnownHosts()); err != nil {
				return fmt.Errorf("sandbox %s has never booted, so its host key is not known yet: start it with `heyvm start %s` first", sb.Config.Name, sb.Config.Name)
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			fmt.Fprint(ios.Out, SSHConfig(e.root, sb, exe))
			return nil
		},
	}
}

// SSHConfig renders the Host block: the proxy is this heyvm (with this
// state root), the key heyvm's own, the host key the one pinned at boot.
func SSHConfig(root layout.Root, sb *sandbox.Sandbox, exe string) string {
	proxy := sshclient.ShellQuote(exe) + " ssh-proxy " + sb.Config.ID
	if os.Getenv(layout.EnvHome) != "" {
		proxy = "env " + layout.EnvHome + "=" + sshclient.ShellQuote(root.Dir) + " " + proxy
	}
	return fmt.Sprintf(`Host %s
  HostName %s
  User root
  ProxyCommand %s
  IdentityFile %s
  IdentitiesOnly yes
  UserKnownHostsFile %s
  HostKeyAlias %s
  StrictHostKeyChecking yes
  ServerAliveInterval 5
  ServerAliveCountMax 3
  LogLevel ERROR
`, sb.Config.Name, sshclient.HostAlias(sb.Config.ID), proxy, root.PrivateKey(), sb.Files.KnownHosts(), sshclient.HostAlias(sb.Config.ID))
}

func newSSHProxyCmd(ios IO) *cobra.Command {
	return &cobra.Command{
		Use: "ssh-proxy ID", Short: "Join stdin and stdout to a sandbox's sshd (OpenSSH's ProxyCommand; see ssh-config)", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			e, sb, err := openSandbox(args[0])
			if err != nil {
				return err
			}
			stream, err := dialSSHD(c.Context(), e, sb)
			if err != nil {
				return err
			}
			sshmux.Join(stream, stdio{ios.In, ios.Out})
			return nil
		},
	}
}

// dialSSHD opens a raw stream to a running sandbox's sshd: through its
// owner, or (an owner of an older heyvm) at its forwarded port.
func dialSSHD(ctx context.Context, e env, sb *sandbox.Sandbox) (io.ReadWriteCloser, error) {
	st, err := sandbox.ReadState(sb.Files)
	if err != nil {
		return nil, err
	}
	if st.Owner == nil {
		return nil, fmt.Errorf("sandbox %s is %s: start it with `heyvm start %s`", sb.Config.Name, stateWithReason(st), sb.Config.Name)
	}
	if st.Owner.SSHSockKey != "" {
		signer, _, err := sshclient.ManagedKey(e.root)
		if err != nil {
			return nil, err
		}
		key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(st.Owner.SSHSockKey))
		if err != nil {
			return nil, err
		}
		return sshmux.DialSSHD(ctx, sb.Files.SSHSock(), key, signer)
	}
	if st.Owner.SSHPort == 0 {
		return nil, errors.New("its owner offers no stream to the guest's sshd: restart the sandbox with this heyvm")
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", net.JoinHostPort(st.Owner.SSHHost, strconv.Itoa(st.Owner.SSHPort)))
}

// stdio is the process's stdin and stdout as one stream; its half close
// closes stdout.
type stdio struct {
	io.Reader
	io.Writer
}

func (s stdio) CloseWrite() error {
	if c, ok := s.Writer.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

func (s stdio) Close() error { return nil }

// remoteSSHConfig is ssh-config for a sandbox of another host's context:
// OpenSSH here reaches the guest's sshd through `heyvm --context C
// ssh-proxy ID` (the host's heyvm joins it to the guest), signs in with
// this heyvm's key (authorized in the guest now), and checks the host
// key the host pinned at the guest's boot.
func remoteSSHConfig(ctx context.Context, ios IO, t target, ctxName, ref string) error {
	e, err := openEnv()
	if err != nil {
		return err
	}
	var out, errb bytes.Buffer
	code, err := t.run(ctx, IO{In: strings.NewReader(""), Out: &out, ErrOut: &errb}, []string{"get", "--json", ref}, false)
	if err != nil {
		return err
	}
	if code != 0 {
		return errors.New(strings.TrimPrefix(strings.TrimSpace(errb.String()), "heyvm: "))
	}
	var v struct {
		ID      string `json:"id"`
		Name    string `json:"name"`
		HostKey string `json:"host_key"`
	}
	if err := json.Unmarshal(out.Bytes(), &v); err != nil || v.ID == "" {
		return fmt.Errorf("context %s's answer about %s: %v", ctxName, ref, err)
	}
	if v.HostKey == "" {
		return fmt.Errorf("sandbox %s on %s has never booted, so its host key is not known yet: start it first", v.Name, ctxName)
	}
	_, pubLine, err := sshclient.ManagedKey(e.root)
	if err != nil {
		return err
	}
	add := "umask 077; mkdir -p /root/.ssh; grep -qxF " + sshclient.ShellQuote(pubLine) + " /root/.ssh/authorized_keys 2>/dev/null || echo " + sshclient.ShellQuote(pubLine) + " >>/root/.ssh/authorized_keys"
	errb.Reset()
	if code, err := t.run(ctx, IO{In: strings.NewReader(""), Out: io.Discard, ErrOut: &errb}, []string{"exec", v.ID, "--", "sh", "-c", add}, false); err != nil || code != 0 {
		if err == nil {
			err = errors.New(strings.TrimSpace(errb.String()))
		}
		return fmt.Errorf("authorize this heyvm's key in %s: %w", v.Name, err)
	}
	alias := "heyvm-" + ctxName + "-" + v.ID
	kh := filepath.Join(e.root.Dir, "contexts", ctxName, "known_hosts")
	if err := layout.EnsureDir(filepath.Dir(kh)); err != nil {
		return err
	}
	if err := setKnownHost(kh, alias, v.HostKey); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	proxy := sshclient.ShellQuote(exe) + " --context " + sshclient.ShellQuote(ctxName) + " ssh-proxy " + v.ID
	if os.Getenv(layout.EnvHome) != "" {
		proxy = "env " + layout.EnvHome + "=" + sshclient.ShellQuote(e.root.Dir) + " " + proxy
	}
	fmt.Fprintf(ios.Out, `Host %s
  HostName %s
  User root
  ProxyCommand %s
  IdentityFile %s
  IdentitiesOnly yes
  UserKnownHostsFile %s
  HostKeyAlias %s
  StrictHostKeyChecking yes
  ServerAliveInterval 5
  ServerAliveCountMax 3
  LogLevel ERROR
`, v.Name, alias, proxy, e.root.PrivateKey(), kh, alias)
	return nil
}

// setKnownHost records alias's key in a known_hosts file of heyvm's own,
// replacing an older one for that alias.
func setKnownHost(file, alias, key string) error {
	b, _ := os.ReadFile(file)
	var keep []string
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" && !strings.HasPrefix(l, alias+" ") {
			keep = append(keep, l)
		}
	}
	keep = append(keep, alias+" "+key)
	return fsutil.WriteFileAtomic(file, []byte(strings.Join(keep, "\n")+"\n"), 0o600)
}
