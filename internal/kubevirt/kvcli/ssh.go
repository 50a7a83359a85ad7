package kvcli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/heyvm/heyvm/internal/sandbox"
	"github.com/heyvm/heyvm/internal/sshclient"
	"github.com/heyvm/heyvm/internal/sshmux"
)

func newExecCmd(ios IO) *cobra.Command {
	var cwd, user string
	var envs []string
	cmd := &cobra.Command{
		Use: "exec ID [--cwd DIR] [--env K=V]... [--user U] -- CMD...", Short: "Run a command in a sandbox over SSH",
		Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			rest := args[1:]
			if len(rest) > 0 && rest[0] != "--" && strings.HasPrefix(rest[0], "-") {
				if err := c.Flags().Parse(rest); err != nil {
					return err
				}
				rest = c.Flags().Args()
			} else if len(rest) > 0 && rest[0] == "--" {
				rest = rest[1:]
			}
			if len(rest) == 0 {
				return fmt.Errorf("no command given: use `heyvm exec %s -- CMD...`", args[0])
			}
			e, err := open(c)
			if err != nil {
				return err
			}
			s, err := e.lookup(c.Context(), args[0])
			if err != nil {
				return err
			}
			cl, err := e.dialSSH(c.Context(), s)
			if err != nil {
				return err
			}
			defer cl.Close()
			code, err := sshclient.Exec(c.Context(), cl, sshclient.ExecOptions{
				Command: sshclient.CommandLine(rest, cwd, user, envs),
				Stdin:   ios.In, Stdout: ios.Out, Stderr: ios.ErrOut, ForwardSignals: true,
			})
			return exitOf(code, err)
		},
	}
	cmd.Flags().SetInterspersed(false)
	cmd.Flags().StringVar(&cwd, "cwd", "", "working directory in the guest")
	cmd.Flags().StringArrayVar(&envs, "env", nil, "KEY=VALUE (repeatable)")
	cmd.Flags().StringVar(&user, "user", "", "guest user to run as (default root)")
	return cmd
}

func exitOf(code int, err error) error {
	var ab *sshclient.AbandonedError
	switch {
	case errors.As(err, &ab):
		return fmt.Errorf("%s", ab.Error())
	case err != nil:
		return err
	case code != 0:
		return exitError{code}
	}
	return nil
}

func newShCmd(ios IO) *cobra.Command {
	return &cobra.Command{
		Use: "sh ID", Short: "Open an interactive shell in a sandbox", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			e, err := open(c)
			if err != nil {
				return err
			}
			s, err := e.lookup(c.Context(), args[0])
			if err != nil {
				return err
			}
			cl, err := e.dialSSH(c.Context(), s)
			if err != nil {
				return err
			}
			defer cl.Close()
			in, ok := ios.In.(*os.File)
			if !ok {
				in = os.Stdin
			}
			return exitOf(sshclient.Shell(c.Context(), cl, sshclient.ShellOptions{Stdin: in, Stdout: ios.Out, Stderr: ios.ErrOut}))
		},
	}
}

// newSSHProxyCmd is OpenSSH's ProxyCommand for a sandbox of the cluster:
// stdin and stdout joined to its sshd, through the portforward.
func newSSHProxyCmd(ios IO) *cobra.Command {
	return &cobra.Command{
		Use: "ssh-proxy ID", Short: "Join stdin and stdout to a sandbox's sshd (OpenSSH's ProxyCommand)", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			e, err := open(c)
			if err != nil {
				return err
			}
			s, err := e.lookup(c.Context(), args[0])
			if err != nil {
				return err
			}
			conn, err := e.cluster.PortForward(c.Context(), s.Name, 22)
			if err != nil {
				return err
			}
			sshmux.Join(conn, stdio{ios.In, ios.Out})
			return nil
		},
	}
}

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

func (stdio) Close() error { return nil }

// newConsoleCmd attaches the terminal to the sandbox's serial console;
// Ctrl-] detaches.
func newConsoleCmd(ios IO) *cobra.Command {
	return &cobra.Command{
		Use: "console ID", Short: "Attach to a sandbox's serial console (Ctrl-] detaches)", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			e, err := open(c)
			if err != nil {
				return err
			}
			s, err := e.lookup(c.Context(), args[0])
			if err != nil {
				return err
			}
			con, err := e.cluster.Console(c.Context(), s.Name)
			if err != nil {
				return err
			}
			defer con.Close()
			if f, ok := ios.In.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
				old, err := term.MakeRaw(int(f.Fd()))
				if err == nil {
					defer term.Restore(int(f.Fd()), old)
				}
			}
			fmt.Fprintf(ios.ErrOut, "attached to %s's console; Ctrl-] detaches\r\n", s.Name)
			done := make(chan struct{}, 2)
			go func() { io.Copy(ios.Out, con); done <- struct{}{} }()
			go func() {
				buf := make([]byte, 256)
				for {
					n, err := ios.In.Read(buf)
					if i := bytes.IndexByte(buf[:n], 0x1d); i >= 0 {
						con.Write(buf[:i])
						break
					}
					if n > 0 {
						con.Write(buf[:n])
					}
					if err != nil {
						break
					}
				}
				done <- struct{}{}
			}()
			<-done
			fmt.Fprint(ios.ErrOut, "\r\nDetached.\r\n")
			return nil
		},
	}
}

// newLogsCmd is the sandbox's serial console as KubeVirt logs it (the
// launcher pod's guest-console-log container).
func newLogsCmd(ios IO) *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use: "logs ID [--follow]", Short: "Show a sandbox's console log", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			e, err := open(c)
			if err != nil {
				return err
			}
			s, err := e.lookup(c.Context(), args[0])
			if err != nil {
				return err
			}
			r, err := e.cluster.ConsoleLog(c.Context(), s.Name, follow)
			if err != nil {
				return err
			}
			defer r.Close()
			_, err = io.Copy(ios.Out, r)
			return err
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing as the console writes")
	cmd.Flags().Bool("owner", false, "(no owner runs for a cluster's sandbox)")
	return cmd
}

// newPortCmd: on a cluster no process of heyvm's stays to hold a
// forward, so a forward lives while `port forward` runs, through the
// VMI's portforward.
func newPortCmd(ios IO) *cobra.Command {
	cmd := &cobra.Command{Use: "port", Short: "Forward this machine's 127.0.0.1 ports to a sandbox's"}
	fwd := &cobra.Command{
		Use: "forward ID [LOCAL:]GUEST...", Short: "Carry 127.0.0.1:LOCAL here to the sandbox's GUEST port, until Ctrl-C", Args: cobra.MinimumNArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			e, err := open(c)
			if err != nil {
				return err
			}
			s, err := e.lookup(c.Context(), args[0])
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			errs := make(chan error, len(args))
			for _, spec := range args[1:] {
				p, err := sandbox.ParsePort(spec)
				if err != nil {
					return err
				}
				ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p.HostPort)))
				if err != nil {
					return fmt.Errorf("127.0.0.1:%d here: %v: pick another with LOCAL:GUEST", p.HostPort, err)
				}
				defer ln.Close()
				fmt.Fprintf(ios.ErrOut, "forwarding 127.0.0.1:%d to %s's port %d; Ctrl-C ends it\n", p.HostPort, s.Name, p.GuestPort)
				go func(ln net.Listener, guest int) {
					for {
						conn, err := ln.Accept()
						if err != nil {
							errs <- nil
							return
						}
						go func() {
							up, err := e.cluster.PortForward(ctx, s.Name, guest)
							if err != nil {
								fmt.Fprintf(ios.ErrOut, "heyvm: %v\n", err)
								conn.Close()
								return
							}
							sshmux.Join(conn, up)
						}()
					}
				}(ln, p.GuestPort)
			}
			<-ctx.Done()
			return nil
		},
	}
	other := &cobra.Command{
		Use: "add", Hidden: true, DisableFlagParsing: true,
		RunE: func(c *cobra.Command, _ []string) error {
			return errors.New("on a KubeVirt context, forwards run in the foreground: `heyvm port forward ID [LOCAL:]GUEST`")
		},
	}
	cmd.AddCommand(fwd, other)
	return cmd
}
