package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/heyvm/heyvm/internal/backend"
	"github.com/heyvm/heyvm/internal/hostinfo"
	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/owner"
	"github.com/heyvm/heyvm/internal/portfwd"
	"github.com/heyvm/heyvm/internal/sandbox"
	"github.com/heyvm/heyvm/internal/warm"
)

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
	if o.DiskSizeMiB > maxDiskMiB {
		return fmt.Errorf("--disk-size %d MiB is more than heyvm supports: give at most %d (16 TiB)", o.DiskSizeMiB, maxDiskMiB)
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

// addTTLFlags adds --ttl and --ttl-seconds. The function it returns,
// called before the command runs, sets *ttl from whichever was given, and
// refuses both at once or a TTL that is not positive (leaving the flags
// out is how to have none).
func addTTLFlags(cmd *cobra.Command, ttl *time.Duration) func() error {
	var secs int
	cmd.Flags().DurationVar(ttl, "ttl", 0, "stop the sandbox after this long (e.g. 90m)")
	cmd.Flags().IntVar(&secs, "ttl-seconds", 0, "like --ttl, in seconds")
	return func() error {
		f := cmd.Flags()
		switch {
		case f.Changed("ttl") && f.Changed("ttl-seconds"):
			return errors.New("give --ttl or --ttl-seconds, not both")
		case f.Changed("ttl-seconds") && secs <= 0:
			return fmt.Errorf("--ttl-seconds %d: give a positive number of seconds, or leave it out for no TTL", secs)
		case f.Changed("ttl-seconds"):
			*ttl = time.Duration(secs) * time.Second
		case f.Changed("ttl") && *ttl <= 0:
			return fmt.Errorf("--ttl %s: give a positive duration such as 90m, or leave it out for no TTL", *ttl)
		}
		return nil
	}
}

func newCreateCmd(ios IO) *cobra.Command {
	o := &CreateOptions{}
	var ttl func() error
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a sandbox and start it in the background",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := ttl(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
			defer stop()
			_, err := RunCreate(ctx, ios, o)
			return err
		},
	}
	cmd.Flags().StringVar(&o.Name, "name", "", "sandbox name (default: generated)")
	addCreateFlags(cmd, o)
	cmd.Flags().IntVar(&o.DiskSizeMiB, "disk-size", 0, "disk size in MiB (default: the image's)")
	cmd.Flags().StringArrayVar(&o.Env, "env", nil, "KEY=VALUE set for every exec and shell (repeatable)")
	ttl = addTTLFlags(cmd, &o.TTL)
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
		if ctx.Err() != nil {
			// Cancelled (Ctrl-C, or the SSH session of a remote create
			// ended): a sandbox that never came up is not kept.
			sctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
			defer cancel()
			owner.Stop(sctx, sb, stopTimeout)
			if rerr := e.store.Remove(sctx, sb.Config.ID); rerr == nil {
				return nil, fmt.Errorf("create of %s was cancelled before it started; nothing was kept", sb.Config.Name)
			}
		}
		return sb, fmt.Errorf("sandbox %s was created but did not start: %v; see `heyvm logs %s`, retry with `heyvm start %s`, or remove it with `heyvm rm %s`", sb.Config.Name, err, sb.Config.Name, sb.Config.Name, sb.Config.Name)
	}
	noteWarmth(ios, e, sb, o.Cold)
	if o.PrintID {
		fmt.Fprintln(ios.Out, sb.Config.ID)
	} else {
		fmt.Fprintf(ios.Out, "%s\n", sb.Config.ID)
		fmt.Fprintf(ios.ErrOut, "sandbox %s is running: `%s` for a shell, `%s` to run a command\n", sb.Config.Name, heyvmHint("sh "+sb.Config.Name), heyvmHint("exec "+sb.Config.Name+" -- CMD"))
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
	// A port the VM could not forward would leave a sandbox that cannot
	// start: say so before anything is made.
	for _, p := range o.Ports {
		if err := portfwd.CheckFree(p.HostPort); err != nil {
			return nil, fmt.Errorf("--port %d:%d: %v", p.HostPort, p.GuestPort, err)
		}
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
	if n := runtime.NumCPU(); o.CPUs > n {
		fmt.Fprintf(ios.ErrOut, "warning: --cpus %d is more than this host's %d CPUs; the guest's CPUs will share them and run no faster\n", o.CPUs, n)
	}
	diskSize := int64(o.DiskSizeMiB) << 20
	if diskSize == 0 {
		diskSize = im.Meta.RootfsSize
	}
	if diskSize < im.Meta.RootfsSize {
		// The guest's file system fills the image's disk: a smaller one
		// cuts it off.
		return nil, fmt.Errorf("--disk-size %d MiB is smaller than image %s's disk (%d MiB): give at least %d, or leave it out", o.DiskSizeMiB, im.Name, im.Meta.RootfsSize>>20, (im.Meta.RootfsSize+(1<<20)-1)>>20)
	}
	cfg := &sandbox.Config{
		Name: o.Name, Image: im.Name, Backend: b.Name(), Arch: im.Meta.Arch,
		CPUs: o.CPUs, MemoryMiB: o.MemoryMiB, DiskSizeMiB: int(diskSize >> 20),
		Env: o.Env, Mounts: o.Mounts, Ports: o.Ports, TTL: sandbox.Duration(o.TTL),
		Workspace: o.Workspace, Autostart: o.Autostart, AutoPorts: o.AutoPorts,
		HostLoopback: o.HostLoopback, Role: o.Role, IdleStop: sandbox.Duration(o.IdleStop),
	}
	// A ready snapshot of this image and shape: the sandbox's disk is
	// layered on the snapshot's (the image plus what its boot wrote), and
	// its first start restores the snapshot's VM. Shares are not in a
	// snapshot's machine: the owner adds them.
	var snap *warm.Snapshot
	if !o.Cold && backend.CanWarmStart(b) == nil {
		if snap = warm.Find(e.root, b.Name(), b.HypervisorBuild(im.Meta.Arch), im, warm.ShapeOf(cfg)); snap != nil {
			cfg.WarmFrom = snap.Files.Dir
		}
	}
	// Room for what this create writes (an overlay where the image's
	// layers are linked, a whole clone where they are copied) and for the
	// guest to write on top. Checked before anything is written.
	if err := hostinfo.NeedSpace(e.root.SandboxesDir(), owner.DiskSpaceNeeded(b.Name(), e.root.SandboxesDir(), im, snap)+createMargin, "a new sandbox (its disk and a working margin)"); err != nil {
		return nil, err
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

// maxDiskMiB bounds --disk-size: 16 TiB, within what qcow2, ext4 and
// APFS take for one disk.
const maxDiskMiB = 16 << 20

// createMargin is the free space a new sandbox needs beyond its disk clone.
const createMargin = 256 * hostinfo.MiB
