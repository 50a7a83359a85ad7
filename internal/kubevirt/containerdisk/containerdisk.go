// Package containerdisk turns a heyvm image into what a KubeVirt cluster
// pulls: a standard OCI image (application/vnd.oci.image.config.v1+json,
// gzip tar layers) holding
//
//	/boot/vmlinuz       the image's kernel  (spec.domain.firmware.kernelBoot.container.kernelPath)
//	/boot/initrd        the image's initrd  (kernelBoot.container.initrdPath)
//	/disk/rootfs.qcow2  the root disk       (a containerDisk volume, or CDI's registry import)
//
// each file owned 107:107 (qemu in virt-launcher) and readable by all. It
// is built with go-containerregistry, without a Docker engine; the root
// disk is converted with `qemu-img convert -O qcow2`, which skips the raw
// image's holes. The kernel command line is not in the image: it goes into
// the VirtualMachine's kernelArgs (package kubevirt), and is recorded in
// the manifest's annotations for reference.
//
// The package imports nothing of Kubernetes, so `heyvm images push
// --format kubevirt` does not carry the cluster client's weight.
package containerdisk

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"

	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/layout"
	"github.com/heyvm/heyvm/internal/ociimage"
)

// Paths in the image, and the owner KubeVirt's qemu runs as.
const (
	KernelPath = "boot/vmlinuz"
	InitrdPath = "boot/initrd"
	DiskPath   = "disk/rootfs.qcow2"
	QemuUID    = 107
	QemuGID    = 107
)

// Annotations on the manifest.
const (
	AnnotationImage   = "org.heyvm.image.name"
	AnnotationCmdline = "org.heyvm.kernel-cmdline"
	AnnotationArch    = "org.heyvm.arch"
)

// Options tune Build and Push.
type Options struct {
	// WorkDir holds the qcow2 and the compressed layers while the image
	// lives ("" makes a temporary directory; Build's caller removes it with
	// the returned cleanup).
	WorkDir string
	// QemuImg is the qemu-img binary ("" looks it up in PATH).
	QemuImg string
	// Registry says how to reach registries (credentials from Docker's
	// config and helpers, TLS only but for --insecure on loopback).
	Registry ociimage.Registry
}

// Image is a built containerDisk image.
type Image struct {
	v1.Image
	Meta *image.Metadata
	dir  string
	tmp  bool
}

// Close removes the work files (the image can no longer be read).
func (im *Image) Close() error {
	if im.tmp {
		return os.RemoveAll(im.dir)
	}
	return nil
}

// epoch is every file's time in the image, so building the same heyvm
// image twice gives the same blobs and digest, and a second push uploads
// nothing.
var epoch = time.Unix(0, 0).UTC()

// Build makes the containerDisk image of the heyvm image in imageDir
// (image.yaml, vmlinuz, initrd, rootfs.img).
func Build(ctx context.Context, imageDir string, o Options) (*Image, error) {
	meta, err := image.ReadMetadata(imageDir)
	if err != nil {
		return nil, err
	}
	qemuImg := o.QemuImg
	if qemuImg == "" {
		if qemuImg, err = exec.LookPath("qemu-img"); err != nil {
			return nil, fmt.Errorf("the KubeVirt format needs qemu-img to write the qcow2 disk: install it (Debian: `apt-get install qemu-utils`; macOS: `brew install qemu`)")
		}
	}
	im := &Image{Meta: meta, dir: o.WorkDir}
	if im.dir == "" {
		if im.dir, err = os.MkdirTemp("", "heyvm-containerdisk-"); err != nil {
			return nil, err
		}
		im.tmp = true
	}
	ok := false
	defer func() {
		if !ok {
			im.Close()
		}
	}()
	qcow := filepath.Join(im.dir, "rootfs.qcow2")
	os.Remove(qcow)
	cmd := exec.CommandContext(ctx, qemuImg, "convert", "-q", "-f", "raw", "-O", "qcow2", filepath.Join(imageDir, layout.ImageRootfs), qcow)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("qemu-img convert of %s to qcow2: %v: %s", layout.ImageRootfs, err, strings.TrimSpace(string(out)))
	}

	// Two layers: the small boot files change with the kernel only, and a
	// push after a disk change re-sends the disk alone.
	boot, err := writeLayer(ctx, filepath.Join(im.dir, "boot.tar.gz"), "boot", []file{
		{KernelPath, filepath.Join(imageDir, layout.ImageKernel)},
		{InitrdPath, filepath.Join(imageDir, layout.ImageInitrd)},
	})
	if err != nil {
		return nil, err
	}
	disk, err := writeLayer(ctx, filepath.Join(im.dir, "disk.tar.gz"), "disk", []file{{DiskPath, qcow}})
	if err != nil {
		return nil, err
	}
	os.Remove(qcow)

	img, err := mutate.AppendLayers(empty.Image, boot, disk)
	if err != nil {
		return nil, err
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", meta.Arch
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Labels = map[string]string{AnnotationImage: meta.Name}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, err
	}
	img = mutate.Annotations(img, map[string]string{
		AnnotationImage:   meta.Name,
		AnnotationCmdline: meta.KernelCmdline,
		AnnotationArch:    meta.Arch,
	}).(v1.Image)
	im.Image = img
	ok = true
	return im, nil
}

// Push builds the image and pushes it to ref; it returns the manifest's
// digest, for a ref by digest (REPO@sha256:...) in the VirtualMachine.
// Blobs the registry already has are not uploaded again.
func Push(ctx context.Context, imageDir, ref string, o Options) (v1.Hash, error) {
	parsed, err := o.Registry.ParseRef(ref)
	if err != nil {
		return v1.Hash{}, err
	}
	im, err := Build(ctx, imageDir, o)
	if err != nil {
		return v1.Hash{}, err
	}
	defer im.Close()
	if err := remote.Write(parsed, im, o.Registry.RemoteOptions(ctx)...); err != nil {
		return v1.Hash{}, ociimage.UserError(ref, err)
	}
	return im.Digest()
}

type file struct{ name, src string }

// writeLayer writes a gzip tar of files (with their parent directory
// entry) and opens it as an OCI layer.
func writeLayer(ctx context.Context, path, dir string, files []file) (v1.Layer, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	gz, err := gzip.NewWriterLevel(f, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	gz.Header.ModTime = time.Time{}
	tw := tar.NewWriter(gz)
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX,
	}); err != nil {
		return nil, err
	}
	for _, fl := range files {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		src, err := os.Open(fl.src)
		if err != nil {
			return nil, err
		}
		fi, err := src.Stat()
		if err != nil {
			src.Close()
			return nil, err
		}
		err = tw.WriteHeader(&tar.Header{
			Typeflag: tar.TypeReg, Name: fl.name, Size: fi.Size(), Mode: 0o444,
			Uid: QemuUID, Gid: QemuGID, ModTime: epoch, Format: tar.FormatPAX,
		})
		if err == nil {
			_, err = io.Copy(tw, src)
		}
		src.Close()
		if err != nil {
			return nil, fmt.Errorf("write %s into the layer: %w", fl.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return tarball.LayerFromFile(path, tarball.WithMediaType(types.OCILayer))
}
