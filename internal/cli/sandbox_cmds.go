package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

	"github.com/heyvm/heyvm/internal/backend"
	"github.com/heyvm/heyvm/internal/backend/qemu"
	"github.com/heyvm/heyvm/internal/hostinfo"
	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/layout"
	"github.com/heyvm/heyvm/internal/owner"
	"github.com/heyvm/heyvm/internal/sandbox"
	"github.com/heyvm/heyvm/internal/sshclient"
	"github.com/heyvm/heyvm/internal/sshmux"
	"github.com/heyvm/heyvm/internal/warm"
)

func addSandboxCommands(root *cobra.Command, ios IO) {
	root.AddCommand(
		newCreateCmd(ios), newStartCmd(ios), newStopCmd(ios), newRestartCmd(ios), newRmCmd(ios),
		newListCmd(ios), newGetCmd(ios), newExecCmd(ios), newShCmd(ios), newSSHConfigCmd(ios),
		newTestVMCmd(ios, "test-vm", ""), newTestVMCmd(ios, "test-apple-virt", "apple_virt"), newBackendsCmd(ios), newOwnerCmd(),
		newWtCmd(ios), newConsoleCmd(ios), newLogsCmd(ios), newAutostartCmd(ios), newPortCmd(ios),
	)
}

// env is what every sandbox command needs.
type env struct {
	root  layout.Root
	store sandbox.Store
}

func openEnv() (env, error) {
	root, err := layout.Open()
	if err != nil {
		return env{}, err
	}
	return env{root: root, store: sandbox.Store{Root: root}}, nil
}

func (e env) lookup(ref string) (*sandbox.Sandbox, error) { return e.store.Lookup(ref) }

// openSandbox opens the state root and finds the sandbox ref names.
func openSandbox(ref string) (env, *sandbox.Sandbox, error) {
	e, err := openEnv()
	if err != nil {
		return env{}, nil, err
	}
	sb, err := e.lookup(ref)
	return e, sb, err
}

// CreateOptions are the flags of `heyvm create`.
type CreateOptions struct {
	Name        string
	Image       string
	Backend     string
	CPUs        int
	MemoryMiB   int
	DiskSizeMiB int
	Env         []string
	Mounts      []backend.Mount
	Ports       []backend.PortForward
	TTL         time.Duration
	PrintID     bool
	Workspace   *sandbox.Workspace
	MountSpecs  []string // --mount, parsed into Mounts by validate
	PortSpecs   []string // --port, parsed into Ports by validate
	Autostart   bool     // start it again when the host boots
	AutoPorts   bool     // forward what the guest listens on
	// HostLoopback opens the host's 127.0.0.1 to the guest (qemu only).
	HostLoopback bool
	// Cold boots from scratch even if the image has a ready snapshot.
	Cold bool
	// Role and IdleStop are for heyvm's own sandboxes (the builder).
	Role     string
	IdleStop time.Duration
}

// preflight asks the backend whether it can run what o asks for. Before
// the image is known (im nil) its init is assumed able to do what heyvm
// needs; createSandbox asks again once it has the image.
func (o *CreateOptions) preflight(b backend.Backend, im *image.Image) error {
	spec := backend.Spec{Mounts: o.Mounts, HostLoopback: o.HostLoopback, GuestHostLink: true}
	if im != nil {
		spec.GuestHostLink = im.Meta.HasFeature(image.FeatureHostLink)
	}
	return b.Preflight(spec)
}

func (o *CreateOptions) validate() error {
	if o.CPUs < 1 || o.CPUs > 64 {
		return fmt.Errorf("--cpus %d is out of range: use 1 to 64", o.CPUs)
	}
	if o.MemoryMiB < 128 {
		return fmt.Errorf("--memory %d is too small: give at least 128 (MiB)", o.MemoryMiB)
	}
	if total, err := hostinfo.TotalMemory(); err == nil && int64(o.MemoryMiB)*hostinfo.MiB > total {
		return fmt.Errorf("--memory %d MiB is more than this host has (%d MiB of physical memory): give at most %d", o.MemoryMiB, total/hostinfo.MiB, total/hostinfo.MiB/2)
	}
	if o.DiskSizeMiB < 0 {
		return fmt.Errorf("--disk-size %d is negative: give a size in MiB, or leave it out for the image's size", o.DiskSizeMiB)
	}
	if o.TTL < 0 {
		return fmt.Errorf("--ttl must be positive")
	}
	if err := validateEnv(o.Env); err != nil {
		return err
	}
	for _, spec := range o.MountSpecs {
		m, err := sandbox.ParseMount(spec, len(o.Mounts))
		if err != nil {
			return err
		}
		o.Mounts = append(o.Mounts, m)
	}
	o.MountSpecs = nil
	seen := map[int]bool{}
	for _, spec := range o.PortSpecs {
		p, err := sandbox.ParsePort(spec)
		if err != nil {
			return err
		}
		if seen[p.HostPort] {
			return fmt.Errorf("--port: host port %d is given twice", p.HostPort)
		}
		seen[p.HostPort] = true
		o.Ports = append(o.Ports, p)
	}
	o.PortSpecs = nil
	if o.Name != "" {
		return sandbox.ValidateName(o.Name)
	}
	return nil
}

func addCreateFlags(cmd *cobra.Command, o *CreateOptions) {
	cmd.Flags().StringVar(&o.Image, "image", "default", "image name or alias")
	cmd.Flags().StringVar(&o.Backend, "backend", "", "hypervisor backend (default: "+backend.DefaultName()+")")
	cmd.Flags().IntVar(&o.CPUs, "cpus", 2, "virtual CPUs")
	cmd.Flags().IntVar(&o.MemoryMiB, "memory", 1024, "memory in MiB")
	cmd.Flags().BoolVar(&o.HostLoopback, "host-loopback", false, "let the guest reach services on the host's 127.0.0.1 (qemu: at 10.0.2.2); off by default")
	cmd.Flags().BoolVar(&o.Cold, "cold", false, "boot from scratch even if the image has a ready snapshot")
}

func newCreateCmd(ios IO) *cobra.Command {
	o := &CreateOptions{}
	var ttlSeconds int
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a sandbox and start it in the background",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if ttlSeconds > 0 {
				o.TTL = time.Duration(ttlSeconds) * time.Second
			}
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			_, err := RunCreate(ctx, ios, o)
			return err
		},
	}
	cmd.Flags().StringVar(&o.Name, "name", "", "sandbox name (default: generated)")
	addCreateFlags(cmd, o)
	cmd.Flags().IntVar(&o.DiskSizeMiB, "disk-size", 0, "disk size in MiB (default: the image's)")
	cmd.Flags().StringArrayVar(&o.Env, "env", nil, "KEY=VALUE set for every exec and shell (repeatable)")
	cmd.Flags().DurationVar(&o.TTL, "ttl", 0, "stop the sandbox after this long (e.g. 90m)")
	cmd.Flags().IntVar(&ttlSeconds, "ttl-seconds", 0, "like --ttl, in seconds")
	cmd.Flags().BoolVar(&o.PrintID, "print-id", false, "print only the id")
	cmd.Flags().StringArrayVar(&o.MountSpecs, "mount", nil, "share a host directory: HOST:GUEST[:ro] (repeatable)")
	cmd.Flags().StringArrayVar(&o.PortSpecs, "port", nil, "forward 127.0.0.1:HOST to the guest: GUEST or HOST:GUEST (repeatable)")
	cmd.Flags().BoolVar(&o.Autostart, "autostart", false, "start this sandbox again when the host boots (see `heyvm autostart`)")
	cmd.Flags().BoolVar(&o.AutoPorts, "auto-ports", false, "forward each TCP port the guest listens on (same host port if free)")
	return cmd
}

// RunCreate creates the sandbox and starts it detached.
func RunCreate(ctx context.Context, ios IO, o *CreateOptions) (*sandbox.Sandbox, error) {
	e, err := openEnv()
	if err != nil {
		return nil, err
	}
	sb, err := createSandbox(ctx, ios, e, o)
	if err != nil {
		return nil, err
	}
	if _, err := owner.Start(ctx, e.root, sb); err != nil {
		return sb, fmt.Errorf("sandbox %s was created but did not start: %v; see `heyvm logs %s`, retry with `heyvm start %s`, or remove it with `heyvm rm %s`", sb.Config.Name, err, sb.Config.Name, sb.Config.Name, sb.Config.Name)
	}
	noteWarmth(ios, e, sb, o.Cold)
	if o.PrintID {
		fmt.Fprintln(ios.Out, sb.Config.ID)
	} else {
		fmt.Fprintf(ios.Out, "%s\n", sb.Config.ID)
		fmt.Fprintf(ios.ErrOut, "sandbox %s is running: `heyvm sh %s` for a shell, `heyvm exec %s -- CMD` to run a command\n", sb.Config.Name, sb.Config.Name, sb.Config.Name)
	}
	return sb, nil
}

// noteWarmth says how the sandbox started when it matters, and starts
// making the ready snapshot its image lacks for this shape (unless the
// user asked for a cold boot).
func noteWarmth(ios IO, e env, sb *sandbox.Sandbox, cold bool) {
	st, err := sandbox.ReadState(sb.Files)
	if err != nil || st.Owner == nil {
		return
	}
	switch {
	case st.Owner.ColdWhy != "":
		fmt.Fprintf(ios.ErrOut, "note: %s booted cold: %s\n", sb.Config.Name, st.Owner.ColdWhy)
	case st.Owner.Boot == "cold" && !cold:
		if im, err := (image.Store{Root: e.root, Backend: sb.Config.Backend}).Resolve(sb.Config.Image); err == nil {
			warmInBackground(e, sb.Config.Backend, im, warm.ShapeOf(sb.Config))
		}
	}
}

// createSandbox validates the options, finds (or first builds) the image,
// and writes the sandbox with its cloned disk. It does not start it.
func createSandbox(ctx context.Context, ios IO, e env, o *CreateOptions) (*sandbox.Sandbox, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	b, err := backend.Get(o.Backend)
	if err != nil {
		return nil, err
	}
	if err := o.preflight(b, nil); err != nil {
		return nil, err
	}
	im, err := resolveImage(ctx, ios, e, b.Name(), o.Image)
	if err != nil {
		return nil, err
	}
	if err := o.preflight(b, im); err != nil {
		return nil, err
	}
	if b.Name() == "qemu" {
		noteKVMOnce(ios, e.root)
	}
	if total, err := hostinfo.TotalMemory(); err == nil && int64(o.MemoryMiB)*hostinfo.MiB > total/2 {
		fmt.Fprintf(ios.ErrOut, "warning: --memory %d MiB is more than half of this host's %d MiB; the host may start swapping\n", o.MemoryMiB, total/hostinfo.MiB)
	}
	// The clone takes what the image's disk holds; the guest needs room
	// to write on top. Check before anything is written.
	if err := hostinfo.NeedSpace(e.root.SandboxesDir(), image.DiskUsage(im.Dir)+createMargin, "a new sandbox (the disk clone and a working margin)"); err != nil {
		return nil, err
	}
	id := sandbox.NewID()
	name := o.Name
	if name == "" {
		name = "sb-" + id[:6]
	}
	diskSize := int64(o.DiskSizeMiB) << 20
	if diskSize == 0 {
		diskSize = im.Meta.RootfsSize
	}
	cfg := &sandbox.Config{
		ID: id, Name: name, Image: im.Name, Backend: b.Name(), Arch: im.Meta.Arch,
		CPUs: o.CPUs, MemoryMiB: o.MemoryMiB, DiskSizeMiB: int(diskSize >> 20),
		Env: o.Env, Mounts: o.Mounts, Ports: o.Ports, TTL: sandbox.Duration(o.TTL),
		MAC: sandbox.NewMAC(), Workspace: o.Workspace, Autostart: o.Autostart, AutoPorts: o.AutoPorts,
		HostLoopback: o.HostLoopback, Role: o.Role, IdleStop: sandbox.Duration(o.IdleStop),
	}
	// A ready snapshot of this image and shape: the sandbox's disk is
	// layered on the snapshot's (the image plus what its boot wrote), and
	// its first start restores the snapshot's VM. Shares are not in a
	// snapshot's machine: the owner adds them.
	var snap *warm.Snapshot
	if !o.Cold {
		if snap = warm.Find(e.root, b.Name(), b.HypervisorBuild(im.Meta.Arch), im, warm.ShapeOf(cfg)); snap != nil {
			cfg.WarmFrom = snap.Files.Dir
		}
	}
	sb, err := e.store.Create(ctx, cfg, func(rootfs string) error {
		dir := filepath.Dir(rootfs)
		format, err := owner.MakeDisk(ctx, b.Name(), dir, im, snap, diskSize)
		if err != nil && snap != nil {
			// The snapshot went away under us (remade, or its image
			// removed): this sandbox boots cold instead.
			clearDir(dir)
			snap, cfg.WarmFrom = nil, ""
			format, err = owner.MakeDisk(ctx, b.Name(), dir, im, nil, diskSize)
		}
		if err != nil {
			return fmt.Errorf("make the sandbox disk: %w", err)
		}
		cfg.DiskFormat = format
		return nil
	})
	if err == nil && o.Autostart {
		if uerr := syncAutostartUnit(e, ios); uerr != nil {
			fmt.Fprintf(ios.ErrOut, "warning: %s is marked for autostart, but the boot-time unit could not be installed: %v\n", sb.Config.Name, uerr)
		}
	}
	return sb, err
}

// clearDir empties a directory being assembled.
func clearDir(dir string) {
	des, _ := os.ReadDir(dir)
	for _, de := range des {
		os.RemoveAll(filepath.Join(dir, de.Name()))
	}
}

// resolveImage finds an image; the default one is pulled (or built) on
// first use.
func resolveImage(ctx context.Context, ios IO, e env, backendName, name string) (*image.Image, error) {
	st := image.Store{Root: e.root, Backend: backendName}
	im, err := st.Resolve(name)
	if errors.Is(err, image.ErrNotFound) && image.Canonical(name) == image.DefaultName {
		fmt.Fprintf(ios.ErrOut, "the default image is not here yet: getting it now (once)\n")
		// Progress goes to stderr here: create's stdout is the sandbox id.
		toErr := IO{In: ios.In, Out: ios.ErrOut, ErrOut: ios.ErrOut}
		return obtainDefault(ctx, toErr, st, image.BackendArch(backendName), TransferOptions{Backend: backendName})
	}
	return im, err
}

// createMargin is the free space a new sandbox needs beyond its disk clone.
const createMargin = 256 * hostinfo.MiB

func newRmCmd(ios IO) *cobra.Command {
	var yes, force bool
	cmd := &cobra.Command{
		Use: "rm ID...", Short: "Remove sandboxes and their disks", Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			e, err := openEnv()
			if err != nil {
				return err
			}
			return runRmAll(c.Context(), ios, e, args, yes, force)
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	cmd.Flags().BoolVarP(&force, "force", "f", false, "stop it first if it runs; remove it even if its sandbox.yaml is damaged")
	return cmd
}

// runRmAll removes each sandbox named. A name that matches nothing
// stops it before anything is removed (a typo must not cost the others);
// a sandbox that cannot be removed is reported and the rest still go.
func runRmAll(ctx context.Context, ios IO, e env, refs []string, yes, force bool) error {
	for _, ref := range refs {
		if _, err := e.lookup(ref); err != nil && !(force && !errors.Is(err, sandbox.ErrNotFound) && isSandboxDir(e, ref)) {
			if len(refs) > 1 {
				return fmt.Errorf("%w (nothing was removed)", err)
			}
			return err
		}
	}
	if len(refs) == 1 {
		return runRm(ctx, ios, e, refs[0], yes, force)
	}
	var failed []string
	for _, ref := range refs {
		if err := runRm(ctx, ios, e, ref, yes, force); err != nil {
			fmt.Fprintf(ios.ErrOut, "heyvm: %v\n", err)
			failed = append(failed, ref)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d sandboxes were not removed: %s", len(failed), len(refs), strings.Join(failed, ", "))
	}
	return nil
}

func runRm(ctx context.Context, ios IO, e env, ref string, yes, force bool) error {
	sb, err := e.lookup(ref)
	var id, name string
	switch {
	case err == nil:
		id, name = sb.Config.ID, sb.Config.Name
	case force && !errors.Is(err, sandbox.ErrNotFound) && isSandboxDir(e, ref):
		// A damaged sandbox: only its exact id (the directory) is accepted.
		id, name = ref, ref
		sb = &sandbox.Sandbox{Config: &sandbox.Config{ID: ref, Name: ref}, Files: e.root.Sandbox(ref)}
	default:
		return err
	}
	st, err := sandbox.ReadState(sb.Files)
	if err != nil {
		return err
	}
	if st.Status != sandbox.Stopped && st.Status != sandbox.Suspended {
		if !force {
			return fmt.Errorf("sandbox %s is %s: stop it with `heyvm stop %s`, or use `heyvm rm --force %s`", name, st.Status, name, name)
		}
		if _, err := owner.Stop(ctx, sb, stopTimeout); err != nil {
			return err
		}
	}
	if !yes {
		if !isTerminal(ios.In) {
			return fmt.Errorf("removing %s deletes its disk: pass --yes to confirm", name)
		}
		fmt.Fprintf(ios.ErrOut, "Remove sandbox %s (%s) and its disk? [y/N] ", name, id)
		var answer string
		fmt.Fscanln(ios.In, &answer)
		if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
			return errors.New("not removed")
		}
	}
	if err := e.store.Remove(ctx, id); err != nil {
		return err
	}
	fmt.Fprintf(ios.Out, "removed %s\n", name)
	if sb.Config.Autostart {
		return syncAutostartUnit(e, ios)
	}
	return nil
}

func isSandboxDir(e env, id string) bool {
	if strings.ContainsAny(id, "/.") {
		return false
	}
	fi, err := os.Stat(e.root.Sandbox(id).Dir)
	return err == nil && fi.IsDir()
}

func isTerminal(r any) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// connect opens an SSH client to a running sandbox.
// liveConn is an SSH connection to a sandbox watched by keepalives, so a
// frozen or vanished VM ends every command on it within about 15 s.
type liveConn struct {
	*ssh.Client
	sb   *sandbox.Sandbox
	dead func() bool
}

// Keepalive timing: a probe every 5 s, given up after 3 unanswered.
const keepaliveInterval, keepaliveMisses = 5 * time.Second, 3

// outcome turns a remote command's end into heyvm's: a lost connection
// says what state the sandbox is in; a command heyvm gave up on after a
// signal exits 130 or 143 with a line saying it may still run.
func (c *liveConn) outcome(code int, err error) (int, error) {
	var ab *sshclient.AbandonedError
	switch {
	case errors.As(err, &ab):
		return -1, ExitError{Code: ab.ExitCode(), Msg: ab.Error() + " in sandbox " + c.sb.Config.Name}
	case err != nil && c.dead():
		state := "in an unknown state"
		if st, serr := sandbox.ReadState(c.sb.Files); serr == nil {
			state = "now " + stateWithReason(st)
		}
		return -1, fmt.Errorf("lost the connection to sandbox %s: no answer for %s; it is %s", c.sb.Config.Name, keepaliveInterval*keepaliveMisses, state)
	}
	return code, err
}

// stateWithReason is a state as list shows it.
func stateWithReason(st sandbox.State) string {
	return sandboxView{State: st.Status, Owner: st.Owner, LastStop: st.LastStop}.stateText()
}

func connect(ctx context.Context, e env, sb *sandbox.Sandbox) (*liveConn, error) {
	st, err := sandbox.ReadState(sb.Files)
	if err != nil {
		return nil, err
	}
	switch st.Status {
	case sandbox.Stopped:
		return nil, fmt.Errorf("sandbox %s is stopped: start it with `heyvm start %s`", sb.Config.Name, sb.Config.Name)
	case sandbox.Suspended:
		return nil, fmt.Errorf("sandbox %s is suspended: `heyvm start %s` resumes it", sb.Config.Name, sb.Config.Name)
	case sandbox.Starting:
		return nil, fmt.Errorf("sandbox %s is still starting: try again in a moment", sb.Config.Name)
	case sandbox.Paused:
		return nil, fmt.Errorf("sandbox %s is paused (%s): make room if its disk is full, then `heyvm start %s` resumes it", sb.Config.Name, st.Owner.Paused.Reason, sb.Config.Name)
	}
	signer, _, err := sshclient.ManagedKey(e.root)
	if err != nil {
		return nil, err
	}
	c, err := dialShared(ctx, sb, st.Owner, signer)
	if err != nil {
		key, kerr := sshclient.PinnedHostKey(sb.Files.KnownHosts())
		if kerr != nil {
			return nil, kerr
		}
		if c, err = sshclient.Dial(ctx, sshclient.Target{Host: st.Owner.SSHHost, Port: st.Owner.SSHPort, User: "root", Signer: signer, HostKey: key}); err != nil {
			return nil, err
		}
	}
	return &liveConn{Client: c, sb: sb, dead: sshclient.KeepAlive(c, keepaliveInterval, keepaliveMisses)}, nil
}

// dialShared connects through the owner's shared guest connection
// (ssh.sock), which spares the guest a handshake; an owner without one
// (an older heyvm's) gives an error, and the caller dials the guest.
func dialShared(ctx context.Context, sb *sandbox.Sandbox, oi *sandbox.OwnerInfo, signer ssh.Signer) (*ssh.Client, error) {
	if oi == nil || oi.SSHSockKey == "" {
		return nil, errors.New("the owner shares no connection")
	}
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(oi.SSHSockKey))
	if err != nil {
		return nil, err
	}
	return sshmux.Dial(ctx, sb.Files.SSHSock(), key, signer)
}

// validateEnv checks --env values (create, wt and exec share it).
func validateEnv(env []string) error {
	for _, e := range env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return fmt.Errorf("--env %q is not KEY=VALUE", e)
		}
	}
	return nil
}

// ExecOptions are the flags of `heyvm exec`.
type ExecOptions struct {
	Ref  string
	Argv []string
	Cwd  string
	Env  []string
	User string
}

func newExecCmd(ios IO) *cobra.Command {
	o := &ExecOptions{}
	cmd := &cobra.Command{
		Use:   "exec ID [--cwd DIR] [--env K=V]... [--user U] -- CMD...",
		Short: "Run a command in a sandbox over SSH",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			o.Ref, o.Argv = args[0], args[1:]
			// Flags stop at the sandbox id, so cobra keeps the "--" that
			// separates the command; it is not part of the command.
			if len(o.Argv) > 0 && o.Argv[0] == "--" {
				o.Argv = o.Argv[1:]
			}
			if len(o.Argv) == 0 {
				return fmt.Errorf("no command given: use `heyvm exec %s -- CMD...`", o.Ref)
			}
			code, err := RunExec(c.Context(), ios, o)
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
	cmd.Flags().StringVar(&o.Cwd, "cwd", "", "working directory in the guest")
	cmd.Flags().StringArrayVar(&o.Env, "env", nil, "KEY=VALUE (repeatable)")
	cmd.Flags().StringVar(&o.User, "user", "", "guest user to run as (default root)")
	return cmd
}

// RunExec runs the command and returns its exit status.
func RunExec(ctx context.Context, ios IO, o *ExecOptions) (int, error) {
	if err := validateEnv(o.Env); err != nil {
		return -1, err
	}
	e, err := openEnv()
	if err != nil {
		return -1, err
	}
	sb, err := e.lookup(o.Ref)
	if err != nil {
		return -1, err
	}
	c, err := connect(ctx, e, sb)
	if err != nil {
		return -1, err
	}
	defer c.Close()
	envs := append(append([]string(nil), sb.Config.Env...), o.Env...)
	return c.outcome(sshclient.Exec(ctx, c.Client, sshclient.ExecOptions{
		Command: sshclient.CommandLine(o.Argv, o.Cwd, o.User, envs),
		Stdin:   ios.In, Stdout: ios.Out, Stderr: ios.ErrOut, ForwardSignals: true,
	}))
}

func newShCmd(ios IO) *cobra.Command {
	return &cobra.Command{
		Use: "sh ID", Short: "Open an interactive shell in a sandbox", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			e, sb, err := openSandbox(args[0])
			if err != nil {
				return err
			}
			cl, err := connect(c.Context(), e, sb)
			if err != nil {
				return err
			}
			defer cl.Close()
			code, err := runShell(c.Context(), ios, cl, sb, "")
			if err != nil {
				return err
			}
			if code != 0 {
				return ExitError{Code: code}
			}
			return nil
		},
	}
}

// runShell opens a login shell (in dir, if given) with the sandbox's env.
func runShell(ctx context.Context, ios IO, c *liveConn, sb *sandbox.Sandbox, dir string) (int, error) {
	in, ok := ios.In.(*os.File)
	if !ok {
		in = os.Stdin
	}
	command := ""
	if dir != "" || len(sb.Config.Env) > 0 {
		command = sshclient.CommandLine([]string{"sh", "-c", `exec "${SHELL:-/bin/sh}" -l`}, dir, "", sb.Config.Env)
	}
	return c.outcome(sshclient.Shell(ctx, c.Client, sshclient.ShellOptions{Command: command, Stdin: in, Stdout: ios.Out, Stderr: ios.ErrOut}))
}

func newSSHConfigCmd(ios IO) *cobra.Command {
	return &cobra.Command{
		Use: "ssh-config ID", Short: "Print an OpenSSH Host block for a running sandbox", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			e, sb, err := openSandbox(args[0])
			if err != nil {
				return err
			}
			st, err := sandbox.ReadState(sb.Files)
			if err != nil {
				return err
			}
			if st.Owner == nil {
				return fmt.Errorf("sandbox %s is %s: start it with `heyvm start %s` (its SSH port is chosen at boot)", sb.Config.Name, st.Status, sb.Config.Name)
			}
			fmt.Fprint(ios.Out, SSHConfig(e.root, sb, st.Owner))
			return nil
		},
	}
}

// SSHConfig renders the Host block. HostKeyAlias keeps the pinned key
// valid whatever port the sandbox gets.
func SSHConfig(root layout.Root, sb *sandbox.Sandbox, oi *sandbox.OwnerInfo) string {
	return fmt.Sprintf(`Host %s
  HostName %s
  Port %d
  User root
  IdentityFile %s
  IdentitiesOnly yes
  UserKnownHostsFile %s
  HostKeyAlias %s
  StrictHostKeyChecking yes
  ServerAliveInterval 5
  ServerAliveCountMax 3
  LogLevel ERROR
`, sb.Config.Name, oi.SSHHost, oi.SSHPort, root.PrivateKey(), sb.Files.KnownHosts(), sshclient.HostAlias(sb.Config.ID))
}

func newBackendsCmd(ios IO) *cobra.Command {
	return &cobra.Command{
		Use: "backends", Short: "List hypervisor backends and whether they run here", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			for _, s := range backend.Statuses() {
				mark := "available"
				if !s.Available {
					mark = "unavailable: " + s.Reason
				}
				def := ""
				if s.Default {
					def = " (default)"
				}
				fmt.Fprintf(ios.Out, "%-12s %s%s\n", s.Name, mark, def)
			}
			return nil
		},
	}
}

func newOwnerCmd() *cobra.Command {
	return &cobra.Command{
		Use: owner.OwnerCommand + " ID", Hidden: true, Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			root, err := layout.Open()
			if err != nil {
				return err
			}
			if code := owner.RunDetached(root, args[0]); code != 0 {
				return ExitError{Code: code}
			}
			return nil
		},
	}
}

// consoleTail returns the last lines of a sandbox's console log, for
// failure reports.
func consoleTail(sb *sandbox.Sandbox, n int) string {
	b, err := os.ReadFile(sb.Files.ConsoleLog())
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// noteKVMOnce tells a user once (per state root) that joining the kvm
// group would make their VMs fast.
func noteKVMOnce(ios IO, root layout.Root) {
	if _, err := os.Stat(root.KVMNoteShown()); err == nil {
		return
	}
	if note := qemu.KVMNoteHere(); note != "" {
		fmt.Fprintln(ios.ErrOut, note)
		os.WriteFile(root.KVMNoteShown(), nil, 0o600)
	}
}
