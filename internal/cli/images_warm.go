package cli

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/heyvm/heyvm/internal/backend"
	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/owner"
	"github.com/heyvm/heyvm/internal/warm"
)

// WarmOptions are the flags of `heyvm images warm`.
type WarmOptions struct {
	Backend      string
	Name         string
	CPUs         int
	MemoryMiB    int
	HostLoopback bool
}

// EnvAutoWarm set to 0 stops `create` from making missing ready
// snapshots in the background.
const EnvAutoWarm = "HEYVM_AUTO_WARM"

func newImagesWarmCmd(ios IO, backendName *string) *cobra.Command {
	o := &WarmOptions{}
	cmd := &cobra.Command{
		Use:   "warm NAME",
		Short: "Make the image's ready snapshot now, so sandboxes of this shape start in about a second",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			o.Name, o.Backend = args[0], *backendName
			return RunImagesWarm(c.Context(), ios, o)
		},
	}
	cmd.Flags().IntVar(&o.CPUs, "cpus", 2, "virtual CPUs of the sandboxes it serves")
	cmd.Flags().IntVar(&o.MemoryMiB, "memory", 1024, "memory in MiB of the sandboxes it serves")
	cmd.Flags().BoolVar(&o.HostLoopback, "host-loopback", false, "for sandboxes created with --host-loopback")
	return cmd
}

// RunImagesWarm makes (or finds) the ready snapshot of an image and shape.
func RunImagesWarm(ctx context.Context, ios IO, o *WarmOptions) error {
	e, err := openEnv()
	if err != nil {
		return err
	}
	b, err := backend.Get(o.Backend)
	if err != nil {
		return err
	}
	co := CreateOptions{CPUs: o.CPUs, MemoryMiB: o.MemoryMiB, HostLoopback: o.HostLoopback}
	if err := co.validate(); err != nil {
		return err
	}
	im, err := resolveImage(ctx, ios, e, b.Name(), o.Name)
	if err != nil {
		return err
	}
	if err := co.preflight(b, im); err != nil {
		return err
	}
	if why := im.Meta.WhyCold(); why != "" {
		return fmt.Errorf("image %s cannot start warm: %s", im.Name, why)
	}
	if err := backend.CanWarmStart(b); err != nil {
		return err
	}
	shape := warm.Shape{Arch: im.Meta.Arch, CPUs: o.CPUs, MemoryMiB: o.MemoryMiB, HostLoopback: o.HostLoopback}
	if snap := warm.Find(e.root, b.Name(), b.HypervisorBuild(im.Meta.Arch), im, shape); snap != nil {
		fmt.Fprintf(ios.Out, "image %s already has a ready snapshot for %s (made %s)\n", im.Name, shape.Key(), snap.Meta.Created.Local().Format(time.DateTime))
		return nil
	}
	began := time.Now()
	snap, err := owner.MakeSnapshot(ctx, e.root, b.Name(), im, shape, nil)
	if err != nil {
		return fmt.Errorf("ready snapshot of %s: %w", im.Name, err)
	}
	fmt.Fprintf(ios.Out, "made the ready snapshot of %s for %s in %s (%s)\n", im.Name, shape.Key(), time.Since(began).Round(100*time.Millisecond), snap.Files.Dir)
	return nil
}

// warmInBackground starts a detached `heyvm images warm` for an image
// and shape that has no snapshot yet, so the next create of that shape
// starts warm. It never fails the create: the worst case is another cold
// boot next time.
func warmInBackground(e env, backendName string, im *image.Image, shape warm.Shape) {
	if os.Getenv(EnvAutoWarm) == "0" || im.Meta.ColdOnly {
		return
	}
	if b, err := backend.Get(backendName); err != nil || backend.CanWarmStart(b) != nil {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	dir := e.root.WarmDir(backendName, im.Name)
	if os.MkdirAll(dir, 0o700) != nil {
		return
	}
	logf, err := os.OpenFile(filepath.Join(dir, "warm.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return
	}
	defer logf.Close()
	args := []string{"images", "warm", "--backend", backendName, im.Name, "--cpus", strconv.Itoa(shape.CPUs), "--memory", strconv.Itoa(shape.MemoryMiB)}
	if shape.HostLoopback {
		args = append(args, "--host-loopback")
	}
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if cmd.Start() == nil {
		go cmd.Wait()
	}
}
