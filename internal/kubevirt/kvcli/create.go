package kvcli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/heyvm/heyvm/internal/console"
	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/kubevirt"
	"github.com/heyvm/heyvm/internal/kubevirt/containerdisk"
	"github.com/heyvm/heyvm/internal/ociimage"
	"github.com/heyvm/heyvm/internal/owner"
	"github.com/heyvm/heyvm/internal/sandbox"
	"github.com/heyvm/heyvm/internal/sshclient"
)

// createOptions are create's flags (heyvm's, for what a cluster can do).
type createOptions struct {
	name, image, arch  string
	cpus, memory, disk int
	ephemeral, printID bool
	storageClass       string
}

// StartTimeout bounds the wait for a new sandbox: scheduling, a first
// import of its disk, the boot.
var StartTimeout = 15 * time.Minute

func newCreateCmd(ios IO) *cobra.Command {
	o := &createOptions{}
	cmd := &cobra.Command{
		Use: "create", Short: "Create a sandbox on the cluster and start it", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			e, err := open(c)
			if err != nil {
				return err
			}
			return runCreate(c.Context(), ios, e, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.name, "name", "", "sandbox name (default: generated)")
	f.StringVar(&o.image, "image", "default", "image name or alias (from this machine's store; pushed to the context's registry)")
	f.StringVar(&o.arch, "arch", "amd64", "the cluster nodes' architecture: amd64 or arm64")
	f.IntVar(&o.cpus, "cpus", 2, "virtual CPUs")
	f.IntVar(&o.memory, "memory", 1024, "memory in MiB")
	f.IntVar(&o.disk, "disk-size", 0, "disk size in MiB (default: the image's)")
	f.BoolVar(&o.ephemeral, "ephemeral", false, "boot the image's containerDisk directly: no persistent volume (no CDI); the disk is lost when it stops")
	f.StringVar(&o.storageClass, "storage-class", "", "the persistent volume's StorageClass (default: the cluster's)")
	f.BoolVar(&o.printID, "print-id", false, "print only the id")
	return cmd
}

func runCreate(ctx context.Context, ios IO, e *env, o *createOptions) error {
	id := newID()
	if o.name == "" {
		o.name = "sb-" + id[:6]
	}
	if err := sandbox.ValidateName(o.name); err != nil {
		return err
	}
	arch, err := image.NormalizeArch(o.arch)
	if err != nil {
		return err
	}
	im, err := (image.Store{Root: e.root, Backend: "qemu"}).Resolve(imageNameFor(o.image, arch))
	if err != nil {
		return fmt.Errorf("image %s for %s: %w (a cluster boots images of this machine's store, pushed to the context's registry: build or pull it first)", o.image, arch, err)
	}
	if o.disk != 0 && int64(o.disk)<<20 < im.Meta.RootfsSize {
		return fmt.Errorf("--disk-size %d MiB is smaller than image %s's disk (%d MiB)", o.disk, im.Name, im.Meta.RootfsSize>>20)
	}
	// The image, as a containerDisk in the context's registry: tagged by
	// its content, so a second create pushes nothing.
	ref := PushRef(e.ctx.Registry, im)
	fmt.Fprintf(ios.ErrOut, "pushing image %s to %s (what the cluster pulls)\n", im.Name, ref)
	digest, err := containerdisk.Push(ctx, im.Dir, ref, containerdisk.Options{Registry: ociimage.Registry{}})
	if err != nil {
		return err
	}
	set, err := kubevirt.Objects(kubevirt.Options{
		ID: id, Name: o.name, Image: im.Name, ImageRef: repoOf(ref) + "@" + digest.String(), Arch: arch,
		KernelCmdline: im.Meta.KernelCmdline, CPUs: o.cpus, MemoryMiB: o.memory, DiskSizeMiB: o.disk,
		RootfsSize: im.Meta.RootfsSize, Ephemeral: o.ephemeral, Running: true, StorageClass: o.storageClass,
	})
	if err != nil {
		return err
	}
	if err := e.cluster.Create(ctx, set); err != nil {
		return err
	}
	fmt.Fprintf(ios.ErrOut, "created VirtualMachine %s in namespace %s; waiting for it to run\n", o.name, e.cluster.Namespace)
	if err := e.provision(ctx, o.name, id); err != nil {
		// A sandbox that never came up is not kept.
		e.cluster.Delete(context.WithoutCancel(ctx), o.name)
		return fmt.Errorf("sandbox %s did not come up (it was removed): %w", o.name, err)
	}
	fmt.Fprintln(ios.Out, id)
	if !o.printID {
		fmt.Fprintf(ios.ErrOut, "sandbox %s is running: `heyvm --context %s sh %s` for a shell\n", o.name, e.ctx.Name, o.name)
	}
	return nil
}

// provision waits for the VM to run, then installs heyvm's key over the
// serial console and pins the host key the guest reports.
func (e *env) provision(ctx context.Context, name, id string) error {
	wctx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	if _, err := e.cluster.Wait(wctx, name, 2*time.Second, func(s *kubevirt.Sandbox) bool { return s.Phase == "Running" }); err != nil {
		return err
	}
	con, err := e.cluster.Console(wctx, name)
	if err != nil {
		return err
	}
	defer con.Close()
	d := console.New(con, nil)
	_, pubLine, err := sshclient.ManagedKey(e.root)
	if err != nil {
		return err
	}
	// The console's shell may still be starting: the command is sent
	// again until it answers (it is safe to run twice).
	for {
		rctx, rcancel := context.WithTimeout(wctx, 10*time.Second)
		out, status, err := d.Run(rctx, owner.ProvisionScript(pubLine))
		rcancel()
		if err == nil && status == 0 {
			_, hostKey, err := owner.ParseProvisionOutput(out)
			if err != nil {
				return err
			}
			return e.pin(id, hostKey)
		}
		if wctx.Err() != nil {
			return fmt.Errorf("no answer on the serial console: %w", wctx.Err())
		}
	}
}

// PushRef is where an image's containerDisk goes in a registry: named
// after the image, tagged with its rootfs digest.
func PushRef(registry string, im *image.Image) string {
	n := strings.NewReplacer(":", "-", "/", "-").Replace(im.Name)
	sum := im.Meta.SHA256["rootfs.img"]
	if len(sum) > 16 {
		sum = sum[:16]
	}
	return strings.TrimSuffix(registry, "/") + "/heyvm-" + n + ":" + sum
}

// repoOf drops a ref's tag.
func repoOf(ref string) string {
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[:i]
	}
	return ref
}

// imageNameFor is the store's name of an image for arch.
func imageNameFor(name, arch string) string {
	if image.Canonical(name) == image.DefaultName {
		return image.DefaultNameFor("qemu", arch)
	}
	return name
}

func newID() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
