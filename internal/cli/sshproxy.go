package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

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
		RunE: func(c *cobra.Command, args []string) error {
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
