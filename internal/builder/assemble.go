package builder

import (
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/heyvm/heyvm/internal/diskclone"
	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/imagebuild"
	"github.com/heyvm/heyvm/internal/layout"
)

// Image says what the built image is, for its image.yaml.
type Image struct {
	Name, Backend, Arch string
	SizeMB              int
	Info                image.DockerfileInfo
	Duration            time.Duration
}

// Assemble makes the image folder dir from a finished build whose files
// are in xfer (the host side of GuestXferDir/ID): the root file system,
// and the root's own kernel with a heyvm initramfs for it, or the kernel
// and initrd of def, the default image whose modules went into the root.
func Assemble(xfer, dir string, def *image.Image, res *Result, want Image) (*image.Metadata, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := moveFile(filepath.Join(xfer, "rootfs.img"), filepath.Join(dir, layout.ImageRootfs)); err != nil {
		return nil, err
	}
	kver := res.Facts["kver"]
	var modules []string
	if res.Facts["kernel"] == "own" {
		if err := moveFile(filepath.Join(xfer, "vmlinuz"), filepath.Join(dir, layout.ImageKernel)); err != nil {
			return nil, err
		}
		mods, err := imagebuild.WriteOwnKernelInitramfs(filepath.Join(xfer, "kroot"), kver, filepath.Join(dir, layout.ImageInitrd))
		if err != nil {
			return nil, err
		}
		modules = mods
	} else {
		for _, f := range []string{layout.ImageKernel, layout.ImageInitrd} {
			if err := linkOrCopy(filepath.Join(def.Dir, f), filepath.Join(dir, f)); err != nil {
				return nil, err
			}
		}
		modules = def.Meta.Build.Modules
	}
	sums, err := image.FileSums(dir)
	if err != nil {
		return nil, err
	}
	info := want.Info
	info.Kernel, info.Init = res.Facts["kernel"], res.Facts["init"]
	if a := res.Facts["added"]; a != "" {
		info.Added = strings.Split(a, ";")
	}
	c := res.Config
	info.Cmd, info.Entrypoint, info.Env, info.WorkingDir, info.User, info.Expose, info.Labels =
		c.Cmd, c.Entrypoint, c.Env, c.WorkingDir, c.User, c.Expose, c.Labels
	m := &image.Metadata{
		Name: want.Name, Backend: want.Backend, Arch: want.Arch,
		KernelCmdline: imagebuild.KernelCmdline,
		KernelVersion: kver,
		RootfsSize:    int64(want.SizeMB) << 20,
		Created:       time.Now().UTC().Truncate(time.Second),
		Build: image.BuildInfo{
			Recipe:   "Dockerfile " + want.Info.File,
			Modules:  modules,
			Duration: want.Duration.Round(time.Second),
			Tool:     "heyvm images build",
		},
		SHA256:     sums,
		ColdOnly:   res.Facts["warm"] != "yes",
		ColdWhy:    res.Facts["cold_why"],
		Dockerfile: &info,
	}
	if res.Facts["hostlink"] == "yes" {
		m.GuestFeatures = []string{image.FeatureHostLink}
	}
	return m, image.WriteMetadata(dir, m)
}

// moveFile renames, or copies sparsely when src is on another file system.
func moveFile(src, dst string) error {
	if err := os.Rename(src, dst); err == nil {
		return nil
	}
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	if _, err := diskclone.Clone(src, dst, fi.Size()); err != nil {
		return err
	}
	return os.Remove(src)
}

// linkOrCopy shares an image's immutable file by a hard link when it can.
func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	_, err := diskclone.Clone(src, dst, 0)
	return err
}
