package applevirt

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"github.com/heyvm/heyvm/internal/backend"
	"github.com/heyvm/heyvm/internal/fsutil"
	"github.com/heyvm/heyvm/internal/version"
)

// Plan is a VM described in neutral terms, one field per
// Virtualization.framework object. Building it holds all the decisions;
// vz_darwin.go only maps it onto vz calls, so the logic is tested on any
// host.
type Plan struct {
	Kernel      string // an uncompressed arm64 Image
	Initrd      string
	Cmdline     string
	CPUs        uint
	MemoryBytes uint64
	Disk        DiskPlan
	MAC         net.HardwareAddr
	Shares      []SharePlan
	// MachineIdentifierPath holds the VZ generic machine identifier,
	// created on first boot and reused after.
	MachineIdentifierPath string
	// Vsock adds the virtio socket device (VZVirtioSocketDeviceConfiguration)
	// the owner reaches the guest's sshd through (SSHVsockPort). Always set.
	Vsock bool
}

// The device set is one for boot, save and restore, since a restore needs
// the configuration the state was saved with: console (a virtio console
// serial port), disk, NAT network, the virtio socket device, and the
// shares (a VM with shares is never saved). Left out: the entropy device
// (Tart drops it from every VM it may suspend; the guest kernel seeds its
// RNG itself, and heyvm's restore step reseeds it from the host) and the
// memory balloon (no evidence that VZ saves one, Tart leaves it out of
// suspendable VMs, and heyvm never set a target on it, so it did
// nothing).

// DiskPlan is the root disk. Cached caching with fsync synchronisation:
// lima saw guest file system corruption on Apple silicon with the
// defaults (lima issue 1957).
type DiskPlan struct {
	Path      string
	ReadOnly  bool
	Cached    bool
	SyncFsync bool
}

// SharePlan is one virtio-fs device.
type SharePlan struct {
	Tag      string
	Path     string
	ReadOnly bool
}

// BuildPlan checks a spec against what VZ accepts and turns it into a Plan.
// Boot is Linux direct boot (VZLinuxBootLoader) rather than EFI: the image
// already has a kernel, initrd and command line, direct boot needs no
// firmware, ESP or variable store, and it boots the same way as QEMU.
func BuildPlan(spec backend.Spec, kernel string) (*Plan, error) {
	if spec.Arch != "arm64" {
		return nil, fmt.Errorf("the apple_virt backend boots arm64 guests; image is %s: build one with `heyvm images build-default --arch arm64`", spec.Arch)
	}
	if spec.CPUs < 1 {
		return nil, errors.New("at least one CPU is needed")
	}
	if spec.MemoryMiB < 128 {
		return nil, fmt.Errorf("%d MiB of memory is too little: give at least 128", spec.MemoryMiB)
	}
	if !strings.Contains(spec.Cmdline, "console=hvc0") {
		return nil, errors.New("the kernel command line must use console=hvc0 (VZ has no other console)")
	}
	if err := checkSpec(spec); err != nil {
		return nil, err
	}
	mac, err := net.ParseMAC(spec.MAC)
	if err != nil {
		return nil, fmt.Errorf("sandbox MAC %q: %w", spec.MAC, err)
	}
	p := &Plan{
		Kernel: kernel, Initrd: spec.Initrd, Cmdline: spec.Cmdline,
		CPUs: uint(spec.CPUs), MemoryBytes: uint64(spec.MemoryMiB) << 20,
		Disk: DiskPlan{Path: spec.Disk, Cached: true, SyncFsync: true},
		MAC:  mac, Vsock: true,
		MachineIdentifierPath: spec.MachineIdentifier,
	}
	for _, m := range spec.Mounts {
		p.Shares = append(p.Shares, SharePlan{Tag: m.Tag, Path: m.HostPath, ReadOnly: m.ReadOnly})
	}
	return p, nil
}

// checkSpec refuses what the backend cannot do, before anything is made.
// (Ports are forwarded by the owner over SSH on every backend.)
func checkSpec(spec backend.Spec) error {
	if err := checkRestoreSource(spec); err != nil {
		return err
	}
	if spec.HostLoopback {
		return errors.New("--host-loopback is not available on apple_virt: Virtualization.framework's NAT never routes a guest to the Mac's 127.0.0.1; listen on another address, or forward the guest's ports to the host instead")
	}
	return nil
}

// KernelFormat is what a kernel file holds.
type KernelFormat int

const (
	KernelUnknown    KernelFormat = iota
	KernelArm64Image              // uncompressed arm64 Image ("ARMd" at 0x38)
	KernelGzip                    // gzip-compressed (Image.gz)
)

// DetectKernelFormat reads the head of a kernel file.
func DetectKernelFormat(head []byte) KernelFormat {
	switch {
	case len(head) >= 0x3c && bytes.Equal(head[0x38:0x3c], []byte("ARMd")):
		return KernelArm64Image
	case len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b:
		return KernelGzip
	}
	return KernelUnknown
}

// BootableKernel returns a kernel VZ can boot. VZ needs an uncompressed
// arm64 Image; a gzip-compressed kernel is decompressed once into
// rawPath (atomically) and reused after.
func BootableKernel(kernel, rawPath string) (string, error) {
	f, err := os.Open(kernel)
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, 64)
	n, _ := io.ReadFull(f, head)
	switch DetectKernelFormat(head[:n]) {
	case KernelArm64Image:
		return kernel, nil
	case KernelGzip:
	default:
		return "", fmt.Errorf("%s is neither an arm64 Image nor gzip-compressed: rebuild the image with `heyvm images build-default --arch arm64 --force`", kernel)
	}
	if raw, err := os.Open(rawPath); err == nil {
		rh := make([]byte, 64)
		rn, _ := io.ReadFull(raw, rh)
		raw.Close()
		if DetectKernelFormat(rh[:rn]) == KernelArm64Image {
			return rawPath, nil
		}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		return "", fmt.Errorf("decompress %s: %w", kernel, err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		return "", fmt.Errorf("decompress %s: %w", kernel, err)
	}
	if DetectKernelFormat(data) != KernelArm64Image {
		return "", fmt.Errorf("%s does not hold an arm64 kernel Image", kernel)
	}
	if err := fsutil.WriteFileAtomic(rawPath, data, 0o644); err != nil {
		return "", err
	}
	return rawPath, nil
}

// LoadOrCreate returns the bytes stored at path, or makes them with
// create and stores them (0600) for next time.
func LoadOrCreate(path string, create func() ([]byte, error)) ([]byte, error) {
	if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
		return b, nil
	}
	b, err := create()
	if err != nil {
		return nil, err
	}
	return b, fsutil.WriteFileAtomic(path, b, 0o600)
}

// MinMacOSMajor is the oldest macOS the backend supports.
const MinMacOSMajor = 13

// CheckMacOSVersion checks a product version such as "13.4.1".
func CheckMacOSVersion(product string) error {
	major, err := macOSMajor(product)
	if err != nil {
		return err
	}
	if major < MinMacOSMajor {
		return fmt.Errorf("macOS %s is too old: the apple_virt backend needs macOS %d or newer", product, MinMacOSMajor)
	}
	return nil
}

// EntitlementHint rewords the framework's complaint about a missing
// entitlement into what to do.
func EntitlementHint(err error) error {
	if err == nil {
		return nil
	}
	if strings.Contains(err.Error(), "entitlement") || strings.Contains(err.Error(), "com.apple.security.virtualization") {
		return fmt.Errorf("this heyvm binary is not signed with the virtualization entitlement: build it with `make` (or sign a debug build with `make sign-debug`)%s: %w", goInstallSignHint(), err)
	}
	return err
}

// goInstallSignHint is the command that signs a `go install`ed heyvm (its
// module, in the module cache, holds the entitlements file); empty for
// other builds (release builds set their version with -ldflags).
func goInstallSignHint() string {
	in := version.Get()
	exe, err := os.Executable()
	if in.Source != "buildinfo" || !strings.HasPrefix(in.Version, "v") || strings.Contains(in.Version, "+") || err != nil {
		return ""
	}
	v := in.Version
	return fmt.Sprintf("; a `go install`ed heyvm: codesign --force --sign - --entitlements \"$(go list -m -f '{{.Dir}}' github.com/heyvm/heyvm@%s)/build/heyvm.entitlements\" %s", v, exe)
}
