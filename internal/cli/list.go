package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

	"github.com/heyvm/heyvm/internal/sandbox"
	"github.com/heyvm/heyvm/internal/sshclient"
)

// sandboxView is one sandbox as list and get show it.
type sandboxView struct {
	*sandbox.Config
	State    sandbox.Status     `json:"state"`
	SSH      string             `json:"ssh,omitempty"`
	Owner    *sandbox.OwnerInfo `json:"owner,omitempty"`
	LastStop *sandbox.StopInfo  `json:"last_stop,omitempty"`
	TTLLeft  string             `json:"ttl_left,omitempty"`
	Dir      string             `json:"dir"`
	// OwnerDamaged: running, but its owner.json is damaged (see State).
	OwnerDamaged string `json:"owner_damaged,omitempty"`
	// Error: why a damaged sandbox (State "damaged") cannot be read.
	Error string `json:"error,omitempty"`
	// HostKey is the guest's SSH host key pinned at its boot, for a client
	// elsewhere to check it by (ssh-config on another host's context).
	HostKey string `json:"host_key,omitempty"`
}

func viewOf(sb *sandbox.Sandbox) (sandboxView, error) {
	st, err := sandbox.ReadState(sb.Files)
	if err != nil {
		return sandboxView{}, err
	}
	v := sandboxView{Config: sb.Config, State: st.Status, Owner: st.Owner, LastStop: st.LastStop, Dir: sb.Files.Dir, OwnerDamaged: st.OwnerDamaged}
	if k, err := sshclient.PinnedHostKey(sb.Files.KnownHosts()); err == nil {
		v.HostKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
	}
	if st.Owner != nil {
		v.SSH = "through its owner"
		if st.Owner.SSHPort != 0 {
			v.SSH = fmt.Sprintf("%s:%d", st.Owner.SSHHost, st.Owner.SSHPort)
		}
		if st.Owner.ExpiresAt != nil {
			// Between expiry and the owner's stop, nothing is left.
			v.TTLLeft = max(time.Until(*st.Owner.ExpiresAt), 0).Round(time.Second).String()
		}
	}
	return v, nil
}

// brokenView is a sandbox whose sandbox.yaml cannot be read: a row of
// its own, so that scripts reading `list --json` see it.
func brokenView(b sandbox.Broken) sandboxView {
	return sandboxView{Config: &sandbox.Config{ID: b.ID}, State: sandbox.Damaged, Dir: b.Dir, Error: b.Err.Error()}
}

func (v sandboxView) stateText() string {
	return stateText(sandbox.State{Status: v.State, Owner: v.Owner, LastStop: v.LastStop, OwnerDamaged: v.OwnerDamaged}, v.Error)
}

// stateText is a state as list and get show it, with why it is so.
// damaged is the error of a sandbox whose sandbox.yaml is unreadable.
func stateText(st sandbox.State, damaged string) string {
	s := string(st.Status)
	switch {
	case st.Status == sandbox.Damaged:
		s += ": " + damaged
	case st.Status == sandbox.Stopped && st.LastStop != nil && st.LastStop.Reason != sandbox.StopRequested:
		s += " (" + st.LastStop.Reason + ")"
	case st.OwnerDamaged != "":
		s += " (owner file damaged: " + st.OwnerDamaged + "; `heyvm stop` and `heyvm start` it)"
	case st.Owner != nil && st.Owner.Paused != nil:
		s += " (" + st.Owner.Paused.Reason + ")"
	case st.Owner != nil && len(st.Owner.BrokenShares) > 0:
		s += " (shared folder broken: " + strings.Join(st.Owner.BrokenShares, "; ") + ")"
	}
	return s
}

func newListCmd(ios IO) *cobra.Command {
	var asJSON, showAll bool
	cmd := &cobra.Command{
		Use: "list", Aliases: []string{"ls"}, Short: "List sandboxes", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			e, err := openEnv()
			if err != nil {
				return err
			}
			all, broken, err := e.store.List()
			if err != nil {
				return err
			}
			views := []sandboxView{}
			for _, sb := range all {
				if sb.Config.Role != "" && !showAll {
					continue // heyvm's own (the image builder)
				}
				v, err := viewOf(sb)
				if err != nil {
					return err
				}
				views = append(views, v)
			}
			for _, b := range broken {
				views = append(views, brokenView(b))
			}
			if asJSON {
				return writeJSON(ios, views)
			}
			tw := tabwriter.NewWriter(ios.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tIMAGE\tBACKEND\tSTATE\tSSH\tTTL\tPORTS\tAGE")
			for _, v := range views {
				age := "-"
				if !v.Created.IsZero() {
					age = humanAge(v.Created)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.ID, dash(v.Name), dash(v.Image), dash(v.Backend), v.stateText(),
					dash(v.SSH), dash(v.TTLLeft), dash(v.portsText()), age)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVarP(&showAll, "all", "a", false, "also show heyvm's own sandboxes (the image builder)")
	return cmd
}

// portsText lists the forwards: a running sandbox's as its owner has
// them (--once and --auto-ports ones too, marked), else sandbox.yaml's.
func (v sandboxView) portsText() string {
	ports := v.Config.Ports
	if v.Owner != nil {
		ports = v.Owner.Ports
	}
	var p []string
	for _, f := range ports {
		mark := ""
		switch {
		case f.Auto:
			mark = " (auto)"
		case f.Once:
			mark = " (once)"
		}
		p = append(p, fmt.Sprintf("127.0.0.1:%d->%d%s", f.HostPort, f.GuestPort, mark))
	}
	return strings.Join(p, ",")
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
			_, sb, err := openSandbox(args[0])
			if err != nil {
				return err
			}
			v, err := viewOf(sb)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(ios, v)
			}
			w := ios.Out
			fmt.Fprintf(w, "ID:        %s\nName:      %s\nState:     %s\nImage:     %s\nBackend:   %s\nArch:      %s\nCPUs:      %d\nMemory:    %d MiB\nDisk:      %d MiB\nCreated:   %s\nDir:       %s\n",
				v.ID, v.Name, v.stateText(), v.Image, v.Backend, v.Arch, v.CPUs, v.MemoryMiB, v.DiskSizeMiB, v.Created.Format(time.RFC3339), v.Dir)
			if v.Owner != nil {
				fmt.Fprintf(w, "Owner PID: %d (detached: %v)\nAccel:     %s\nSSH:       %s (guest %s)\nStarted:   %s\n",
					v.Owner.PID, v.Owner.Detached, v.Owner.Accelerator, v.SSH, v.Owner.GuestIP, v.Owner.StartedAt.Format(time.RFC3339))
			}
			if v.TTL > 0 {
				fmt.Fprintf(w, "TTL:       %s (left: %s)\n", time.Duration(v.TTL), dash(v.TTLLeft))
			}
			if p := v.portsText(); p != "" {
				fmt.Fprintf(w, "Ports:     %s\n", p)
			}
			if v.HostLoopback {
				fmt.Fprintf(w, "Network:   --host-loopback: the host's 127.0.0.1 is open to the guest at 10.0.2.2\n")
			}
			for _, m := range v.Mounts {
				ro := ""
				if m.ReadOnly {
					ro = " (read-only)"
				}
				fmt.Fprintf(w, "Mount:     %s -> %s%s\n", m.HostPath, m.GuestPath, ro)
			}
			if len(v.Env) > 0 {
				fmt.Fprintf(w, "Env:       %s\n", strings.Join(v.Env, " "))
			}
			if v.LastStop != nil && v.State == sandbox.Stopped {
				fmt.Fprintf(w, "Stopped:   %s at %s %s\n", v.LastStop.Reason, v.LastStop.At.Format(time.RFC3339), v.LastStop.Detail)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
