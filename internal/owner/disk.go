package owner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/heyvm/heyvm/internal/diskclone"
	"github.com/heyvm/heyvm/internal/hostinfo"
	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/layout"
	"github.com/heyvm/heyvm/internal/sandbox"
	"github.com/heyvm/heyvm/internal/warm"
)

// MakeDisk lays out a new sandbox's disk in dir, from the image or from a
// ready snapshot of it, size bytes large, and returns the DiskFormat to
// record. On qemu (with qemu-img) it is a copy-on-write chain, made in
// constant time; elsewhere a clone (reflink or sparse copy).
func MakeDisk(ctx context.Context, backendName, dir string, im *image.Image, snap *warm.Snapshot, size int64) (string, error) {
	if err := linkBootFiles(dir, im); err != nil {
		return "", err
	}
	if backendName == "qemu" && diskclone.ChainAvailable() && (snap == nil || snap.Meta.DiskFormat == "qcow2") {
		layers := []diskclone.Layer{{Src: im.Rootfs(), Name: layout.BaseName, Format: "raw"}}
		if snap != nil {
			layers = []diskclone.Layer{
				{Src: snap.Files.Base(), Name: layout.BaseName, Format: "raw"},
				{Src: snap.Files.Overlay(), Name: layout.WarmLayerName, Format: "qcow2"},
			}
		}
		if _, err := diskclone.Chain(ctx, dir, layers, layout.OverlayName, size); err != nil {
			return "", err
		}
		return "qcow2", nil
	}
	src := im.Rootfs()
	if snap != nil {
		src = snap.Files.Rootfs()
	}
	_, err := diskclone.Clone(src, layout.Sandbox{Dir: dir}.Rootfs(), size)
	return "", err
}

// overlayReserve is what a new qcow2 overlay takes at once, with room to
// spare: its header and tables, about 300 KiB for a 4 GiB disk.
const overlayReserve = 4 << 20

// DiskSpaceNeeded is what MakeDisk will write for a new sandbox of im in
// dir's file system: an overlay where the image's (and a snapshot's)
// layers are hard-linked in, as on qemu within one file system; a full
// clone where they are cloned or copied (another file system, or
// apple_virt's raw disk).
func DiskSpaceNeeded(backendName, dir string, im *image.Image, snap *warm.Snapshot) int64 {
	if backendName == "qemu" && diskclone.ChainAvailable() && hostinfo.SameFileSystem(dir, im.Dir) &&
		(snap == nil || hostinfo.SameFileSystem(dir, snap.Files.Dir)) {
		return overlayReserve
	}
	return image.DiskUsage(im.Dir)
}

// linkBootFiles gives the sandbox its own links to the image's kernel,
// initrd and image.yaml: it boots the kernel whose modules its disk holds
// even after the image is rebuilt with another, or removed.
func linkBootFiles(dir string, im *image.Image) error {
	for _, f := range []string{layout.ImageKernel, layout.ImageInitrd, layout.ImageMetadata} {
		src, dst := filepath.Join(im.Dir, f), filepath.Join(dir, f)
		if err := os.Link(src, dst); err != nil {
			if _, cerr := diskclone.Clone(src, dst, 0); cerr != nil {
				return fmt.Errorf("link the image's %s: %v; copy: %w", f, err, cerr)
			}
		}
	}
	return nil
}

// sandboxImage is the image a sandbox boots: the boot files linked into
// its directory at creation, or (for a sandbox made before that) the
// image in the store.
func sandboxImage(root layout.Root, cfg *sandbox.Config, files layout.Sandbox) (*image.Image, error) {
	if meta, err := image.ReadMetadata(files.Dir); err == nil {
		return &image.Image{Name: image.Canonical(cfg.Image), Dir: files.Dir, Meta: meta}, nil
	}
	return image.Store{Root: root, Backend: cfg.Backend}.Resolve(cfg.Image)
}

// checkDisk says, in one line, that a sandbox's disk files are gone (removed
// outside heyvm), instead of the hypervisor's words for it.
func checkDisk(cfg *sandbox.Config, files layout.Sandbox) error {
	disk, format := cfg.Disk(files)
	need := []string{disk}
	if format == "qcow2" {
		need = append(need, files.Base())
	}
	for _, f := range need {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("sandbox %s cannot start: its disk file %s is missing (%v); its disk is lost: remove the sandbox with `heyvm rm --force %s`", cfg.Name, f, errors.Unwrap(err), cfg.Name)
		}
	}
	return nil
}
