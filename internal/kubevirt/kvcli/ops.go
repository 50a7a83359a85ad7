package kvcli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/heyvm/heyvm/internal/kubevirt"
)

// view is a sandbox as list and get show it.
type view struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Image     string `json:"image"`
	Backend   string `json:"backend"`
	State     string `json:"state"`
	Phase     string `json:"phase,omitempty"`
	IP        string `json:"ip,omitempty"`
	Node      string `json:"node,omitempty"`
	Namespace string `json:"namespace"`
	Ephemeral bool   `json:"ephemeral,omitempty"`
	Created   string `json:"created"`
	Problem   string `json:"problem,omitempty"`
	HostKey   string `json:"host_key,omitempty"`
}

// state is heyvm's word for the VM's state: running, stopped, starting,
// and KubeVirt's own otherwise.
func state(s *kubevirt.Sandbox) string {
	switch {
	case s.Ready:
		return "running"
	case !s.Running && (s.State == "Stopped" || s.State == ""):
		return "stopped"
	case s.Problem != nil:
		return "failed (" + s.State + ")"
	}
	return strings.ToLower(s.State)
}

func (e *env) view(s *kubevirt.Sandbox) view {
	v := view{ID: s.ID, Name: s.Name, Image: s.Image, Backend: "kubevirt", State: state(s), Phase: s.Phase, IP: s.IP,
		Node: s.Node, Namespace: s.Namespace, Ephemeral: s.Ephemeral, Created: s.Created.UTC().Format(time.RFC3339), HostKey: e.pinned(s.ID)}
	if s.Problem != nil {
		v.Problem = s.Problem.Error()
	}
	return v
}

func writeJSON(ios IO, v any) error {
	enc := json.NewEncoder(ios.Out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newListCmd(ios IO) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List the context's sandboxes", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			e, err := open(c)
			if err != nil {
				return err
			}
			all, err := e.cluster.List(c.Context())
			if err != nil {
				return err
			}
			views := []view{}
			for _, s := range all {
				views = append(views, e.view(s))
			}
			if asJSON {
				return writeJSON(ios, views)
			}
			tw := tabwriter.NewWriter(ios.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tIMAGE\tBACKEND\tSTATE\tNODE\tIP\tCREATED")
			for _, v := range views {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.ID, v.Name, v.Image, v.Backend, v.State, dash(v.Node), dash(v.IP), v.Created)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolP("all", "a", false, "(every sandbox of a cluster is shown)")
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newGetCmd(ios IO) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use: "get ID", Short: "Show one sandbox", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			e, err := open(c)
			if err != nil {
				return err
			}
			s, err := e.lookup(c.Context(), args[0])
			if err != nil {
				return err
			}
			if s, err = e.cluster.Get(c.Context(), s.Name); err != nil {
				return err
			}
			v := e.view(s)
			if asJSON {
				return writeJSON(ios, v)
			}
			fmt.Fprintf(ios.Out, "ID:        %s\nName:      %s\nState:     %s\nImage:     %s\nBackend:   kubevirt (namespace %s)\nNode:      %s\nIP:        %s\nCreated:   %s\n",
				v.ID, v.Name, v.State, v.Image, v.Namespace, dash(v.Node), dash(v.IP), v.Created)
			if v.Problem != "" {
				fmt.Fprintf(ios.Out, "Problem:   %s\n", v.Problem)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// lifecycle makes stop, start and rm: each takes sandboxes and acts on
// each one.
func lifecycle(ios IO, use, short string, act func(ctx context.Context, e *env, s *kubevirt.Sandbox) (string, error)) *cobra.Command {
	return &cobra.Command{
		Use: use, Short: short, Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			e, err := open(c)
			if err != nil {
				return err
			}
			for _, ref := range args {
				s, err := e.lookup(c.Context(), ref)
				if err != nil {
					return err
				}
				msg, err := act(c.Context(), e, s)
				if err != nil {
					return err
				}
				fmt.Fprintln(ios.Out, msg)
			}
			return nil
		},
	}
}

func newStopCmd(ios IO) *cobra.Command {
	cmd := lifecycle(ios, "stop ID...", "Stop sandboxes (runStrategy Halted; the disk is kept)", func(ctx context.Context, e *env, s *kubevirt.Sandbox) (string, error) {
		if !s.Running {
			return s.Name + " is already stopped", nil
		}
		// A clean poweroff first: KubeVirt's own stop would kill the
		// guest after its grace period.
		if c, err := e.dialSSH(ctx, s); err == nil {
			if sess, err := c.NewSession(); err == nil {
				sess.Run("nohup poweroff >/dev/null 2>&1 &")
			}
			c.Close()
		}
		if err := e.cluster.Stop(ctx, s.Name); err != nil {
			return "", err
		}
		return "stopped " + s.Name, nil
	})
	cmd.Flags().Bool("suspend", false, "(not on a cluster)")
	return cmd
}

func newStartCmd(ios IO) *cobra.Command {
	return lifecycle(ios, "start ID...", "Start sandboxes (runStrategy Always)", func(ctx context.Context, e *env, s *kubevirt.Sandbox) (string, error) {
		if s.Ready {
			return s.Name + " is already running", nil
		}
		if err := e.cluster.Start(ctx, s.Name); err != nil {
			return "", err
		}
		wctx, cancel := context.WithTimeout(ctx, StartTimeout)
		defer cancel()
		if _, err := e.cluster.Wait(wctx, s.Name, 2*time.Second, func(x *kubevirt.Sandbox) bool { return x.Ready }); err != nil {
			return "", err
		}
		return "started " + s.Name, nil
	})
}

func newRmCmd(ios IO) *cobra.Command {
	var yes bool
	cmd := lifecycle(ios, "rm ID...", "Remove sandboxes: the VM, its disk (DataVolume and PVC) and its Secret", func(ctx context.Context, e *env, s *kubevirt.Sandbox) (string, error) {
		if !yes {
			return "", fmt.Errorf("removing %s deletes its disk: pass --yes to confirm", s.Name)
		}
		if err := e.cluster.Delete(ctx, s.Name); err != nil {
			return "", err
		}
		return "removed " + s.Name, nil
	})
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "confirm")
	cmd.Flags().BoolP("force", "f", false, "remove it even if it runs")
	return cmd
}
