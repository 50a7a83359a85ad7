// Package warm keeps ready snapshots: a VM saved right after its guest
// came up, before anything sandbox-specific happened, and the disk as it
// was at that moment. A sandbox created from one starts by restoring it
// instead of booting.
//
// A snapshot is tied to the image's rootfs digest and to the machine
// shape its saved state depends on (arch, CPUs, memory, network devices);
// one made from another digest is dropped when found. One the hypervisor
// can no longer load is dropped by the owner that tried.
package warm

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/heyvm/heyvm/internal/fsutil"
	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/layout"
	"github.com/heyvm/heyvm/internal/sandbox"
)

// Shape is what of a machine a saved state depends on.
type Shape struct {
	Arch         string `json:"arch"`
	CPUs         int    `json:"cpus"`
	MemoryMiB    int    `json:"memory_mib"`
	HostLoopback bool   `json:"host_loopback,omitempty"`
}

// Key names the shape on disk.
func (s Shape) Key() string {
	net := "closed"
	if s.HostLoopback {
		net = "loopback"
	}
	return fmt.Sprintf("%s-%dcpu-%dm-%s", s.Arch, s.CPUs, s.MemoryMiB, net[:1])
}

// ShapeOf is the shape of a sandbox's machine.
func ShapeOf(cfg *sandbox.Config) Shape {
	return Shape{Arch: cfg.Arch, CPUs: cfg.CPUs, MemoryMiB: cfg.MemoryMiB, HostLoopback: cfg.HostLoopback}
}

// Meta is warm.json.
type Meta struct {
	// Format is how the template was readied (Format, below); a snapshot
	// of another is dropped.
	Format       int    `json:"format,omitempty"`
	Image        string `json:"image"`
	RootfsSHA256 string `json:"rootfs_sha256"`
	Shape        Shape  `json:"shape"`
	Hypervisor   string `json:"hypervisor"`
	// HypervisorBuild is backend.HypervisorBuild when it was made.
	HypervisorBuild string    `json:"hypervisor_build"`
	Created         time.Time `json:"created"`
	// DiskFormat: "qcow2", the snapshot's disk is base.img (a link of the
	// image) and rootfs.qcow2 (what the boot wrote); empty, rootfs.img.
	DiskFormat string `json:"disk_format,omitempty"`
	DiskBytes  int64  `json:"disk_bytes"` // the disk's virtual size
}

// Snapshot is a ready snapshot on disk.
type Snapshot struct {
	Files layout.Sandbox
	Meta  Meta
	Saved *sandbox.SuspendInfo // the saved VM's record (suspend.json)
}

// State is the saved VM a sandbox restores.
func (s *Snapshot) State() string { return s.Files.SuspendState() }

// DiskBytes is the virtual size of the snapshot's disk.
func (s *Snapshot) DiskBytes() int64 { return s.Meta.DiskBytes }

// Files is where the snapshot of an image and shape lives.
func Files(root layout.Root, backend string, im *image.Image, shape Shape) layout.Sandbox {
	return root.WarmSnapshot(backend, im.Name, shape.Key())
}

// Format is the current way templates are readied: 3 has the restore
// helper waiting in it, holding the console (owner), which a warm start
// needs; 4's helper starts sshd with the usual umask (022), not its own.
const Format = 4

// Find returns the image's ready snapshot for the shape, nil if there is
// none. One made from another version of the image, or by another build
// of the hypervisor (build, from backend.HypervisorBuild), is removed.
func Find(root layout.Root, backend, build string, im *image.Image, shape Shape) *Snapshot {
	if im.Meta.ColdOnly {
		return nil
	}
	files := Files(root, backend, im, shape)
	if _, err := os.Stat(files.WarmMeta()); err != nil {
		return nil
	}
	snap, err := Load(files)
	if err != nil || snap.Meta.Format != Format || snap.Meta.RootfsSHA256 != im.Meta.SHA256[layout.ImageRootfs] || snap.Meta.Shape != shape || snap.Meta.HypervisorBuild != build {
		Drop(files)
		return nil
	}
	return snap
}

// Load reads the snapshot in files, if it is complete.
func Load(files layout.Sandbox) (*Snapshot, error) {
	b, err := os.ReadFile(files.WarmMeta())
	if err != nil {
		return nil, err
	}
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", files.WarmMeta(), err)
	}
	si, err := sandbox.ReadSuspendInfo(files)
	if err != nil {
		return nil, err
	}
	if si == nil {
		return nil, errors.New("the snapshot has no saved VM")
	}
	return &Snapshot{Files: files, Meta: m, Saved: si}, nil
}

// Drop removes a snapshot. It is renamed aside first, so a sandbox being
// made from it at that moment either has it whole or does not find it.
func Drop(files layout.Sandbox) error { return removeAside(files.Dir) }

// DropImage removes every snapshot of an image (it was rebuilt or removed).
func DropImage(root layout.Root, backend, name string) error {
	return removeAside(root.WarmDir(backend, name))
}

// removeAside renames dir to a hidden sibling, then removes that: nobody
// looking dir up meanwhile finds it half gone. A missing dir is no error.
func removeAside(dir string) error {
	aside := filepath.Join(filepath.Dir(dir), fmt.Sprintf(".drop-%s-%d", filepath.Base(dir), time.Now().UnixNano()))
	if err := os.Rename(dir, aside); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	return os.RemoveAll(aside)
}

// WriteMeta records the snapshot (last: it is what Find looks for).
func WriteMeta(files layout.Sandbox, m Meta) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(files.WarmMeta(), append(b, '\n'), 0o600)
}

// LockPath serialises the making of one image's snapshot of one shape.
func LockPath(root layout.Root, backend, name string, shape Shape) string {
	return filepath.Join(root.WarmDir(backend, name), "."+shape.Key()+".lock")
}
