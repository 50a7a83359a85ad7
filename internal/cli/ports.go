package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/heyvm/heyvm/internal/backend"
	"github.com/heyvm/heyvm/internal/owner"
	"github.com/heyvm/heyvm/internal/portfwd"
	"github.com/heyvm/heyvm/internal/sandbox"
)

func newPortCmd(ios IO) *cobra.Command {
	cmd := &cobra.Command{Use: "port", Short: "Add, remove and list port forwards (127.0.0.1 only), also while a sandbox runs"}
	var once bool
	add := &cobra.Command{
		Use: "add ID [HOST:]GUEST", Short: "Forward 127.0.0.1:HOST to the guest's GUEST port (kept in sandbox.yaml unless --once)", Args: cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			return runPortAdd(c.Context(), ios, args[0], args[1], once)
		},
	}
	add.Flags().BoolVar(&once, "once", false, "only until the sandbox stops (a running sandbox only)")
	rm := &cobra.Command{
		Use: "rm ID HOST", Short: "Stop forwarding a host port", Args: cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			return runPortRm(c.Context(), ios, args[0], args[1])
		},
	}
	list := &cobra.Command{
		Use: "list ID", Aliases: []string{"ls"}, Short: "List a sandbox's forwards", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return runPortList(c.Context(), ios, args[0])
		},
	}
	fwd := &cobra.Command{
		Use: "forward ID [LOCAL:]PORT", Short: "On another host's context: carry this machine's 127.0.0.1:LOCAL to a port the sandbox forwards there, until Ctrl-C",
		Args: cobra.ExactArgs(2), Annotations: map[string]string{annLocal: "yes"},
		RunE: func(c *cobra.Command, args []string) error {
			name, _ := c.Flags().GetString("context")
			return runPortForward(c.Context(), ios, name, args[0], args[1])
		},
	}
	cmd.AddCommand(add, rm, list, fwd)
	requireSubcommand(cmd)
	return cmd
}

func runPortAdd(ctx context.Context, ios IO, ref, spec string, once bool) error {
	e, sb, err := openSandbox(ref)
	if err != nil {
		return err
	}
	p, err := sandbox.ParsePort(spec)
	if err != nil {
		return err
	}
	st, err := sandbox.ReadState(sb.Files)
	if err != nil {
		return err
	}
	if st.Owner != nil {
		p.Once = once
		if _, err := owner.Control(ctx, sb, owner.ControlRequest{Op: "port-add", Port: p}); err != nil {
			return fmt.Errorf("port add: %w", err)
		}
	} else if once {
		return fmt.Errorf("sandbox %s is %s: --once forwards live only while it runs; start it first, or leave out --once", sb.Config.Name, st.Status)
	} else if err := checkConfigPort(sb.Config, p); err != nil {
		return err
	}
	if !once {
		if _, err := e.store.Update(ctx, sb.Config.ID, func(c *sandbox.Config) {
			c.Ports = append(withoutHostPort(c.Ports, p.HostPort), backend.PortForward{HostPort: p.HostPort, GuestPort: p.GuestPort})
		}); err != nil {
			return err
		}
	}
	when := "now"
	if st.Owner == nil {
		when = "from the next start"
	}
	fmt.Fprintf(ios.Out, "forwarding 127.0.0.1:%d to %s port %d %s\n", p.HostPort, sb.Config.Name, p.GuestPort, when)
	return nil
}

// checkConfigPort refuses a host port that sandbox.yaml forwards already
// to another guest port.
func checkConfigPort(cfg *sandbox.Config, p backend.PortForward) error {
	for _, q := range cfg.Ports {
		if q.HostPort == p.HostPort && q.GuestPort != p.GuestPort {
			return fmt.Errorf("host port %d already forwards to guest port %d: remove it first with `heyvm port rm %s %d`", p.HostPort, q.GuestPort, cfg.Name, p.HostPort)
		}
	}
	// A port in use now may be free at the next start; a privileged one
	// never will be.
	if err := portfwd.CheckFree(p.HostPort); errors.Is(err, portfwd.ErrPortPrivileged) {
		return err
	}
	return nil
}

func withoutHostPort(ports []backend.PortForward, host int) []backend.PortForward {
	var out []backend.PortForward
	for _, q := range ports {
		if q.HostPort != host {
			out = append(out, q)
		}
	}
	return out
}

func runPortRm(ctx context.Context, ios IO, ref, hostStr string) error {
	e, sb, err := openSandbox(ref)
	if err != nil {
		return err
	}
	host, err := strconv.Atoi(hostStr)
	if err != nil || host < 1 || host > 65535 {
		return fmt.Errorf("%q is not a host port: give the HOST number that `heyvm port list %s` shows", hostStr, sb.Config.Name)
	}
	inConfig := len(withoutHostPort(sb.Config.Ports, host)) != len(sb.Config.Ports)
	live := false
	if _, err := owner.Control(ctx, sb, owner.ControlRequest{Op: "port-rm", Port: backend.PortForward{HostPort: host}}); err == nil {
		live = true
	}
	if !live && !inConfig {
		return fmt.Errorf("sandbox %s forwards no host port %d: see `heyvm port list %s`", sb.Config.Name, host, sb.Config.Name)
	}
	if inConfig {
		if _, err := e.store.Update(ctx, sb.Config.ID, func(c *sandbox.Config) { c.Ports = withoutHostPort(c.Ports, host) }); err != nil {
			return err
		}
	}
	fmt.Fprintf(ios.Out, "stopped forwarding 127.0.0.1:%d\n", host)
	return nil
}

func runPortList(ctx context.Context, ios IO, ref string) error {
	_, sb, err := openSandbox(ref)
	if err != nil {
		return err
	}
	ports := sb.Config.Ports
	running := false
	if reply, err := owner.Control(ctx, sb, owner.ControlRequest{Op: "port-list"}); err == nil {
		ports, running = reply.Ports, true
	}
	if len(ports) == 0 {
		fmt.Fprintf(ios.Out, "%s forwards no ports: `heyvm port add %s [HOST:]GUEST`\n", sb.Config.Name, sb.Config.Name)
		return nil
	}
	tw := tabwriter.NewWriter(ios.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tGUEST\tKIND")
	for _, p := range ports {
		kind := "kept"
		switch {
		case p.Auto:
			kind = "auto"
		case p.Once:
			kind = "once"
		case !running:
			kind = "kept (starts with the sandbox)"
		}
		fmt.Fprintf(tw, "127.0.0.1:%d\t%d\t%s\n", p.HostPort, p.GuestPort, kind)
	}
	return tw.Flush()
}

// runPortForward is `port forward ID [LOCAL:]PORT` on another host's
// context: PORT is the sandbox's host port there (see `port list`).
func runPortForward(ctx context.Context, ios IO, ctxName, ref, spec string) error {
	t, name, err := resolveTarget(ctxName)
	if err != nil {
		return err
	}
	rt, ok := t.(remoteTarget)
	if !ok {
		return fmt.Errorf("context %s is this machine, where a sandbox's forwards are on 127.0.0.1 already: see `heyvm port list %s`", name, ref)
	}
	p, err := sandbox.ParsePort(spec)
	if err != nil {
		return err
	}
	local, there := p.HostPort, p.GuestPort
	b, err := rt.h.Output(ctx, "get", "--json", ref)
	if err != nil {
		return err
	}
	var v struct {
		Name  string `json:"name"`
		Owner *struct {
			Ports []backend.PortForward `json:"ports"`
		} `json:"owner"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	if v.Owner == nil {
		return fmt.Errorf("sandbox %s on %s is not running: start it with `heyvm --context %s start %s`", v.Name, name, name, v.Name)
	}
	found := false
	for _, f := range v.Owner.Ports {
		found = found || f.HostPort == there
	}
	if !found {
		return fmt.Errorf("sandbox %s on %s forwards no host port %d there: add it with `heyvm --context %s port add %s %d:GUEST`", v.Name, name, there, name, v.Name, there)
	}
	if err := portfwd.CheckFree(local); err != nil {
		return err
	}
	fmt.Fprintf(ios.ErrOut, "forwarding 127.0.0.1:%d here to %s's port %d on %s; Ctrl-C ends it\n", local, v.Name, there, name)
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	return rt.h.Forward(ctx, local, there)
}
