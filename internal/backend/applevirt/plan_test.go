package applevirt

import (
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/heyvm/heyvm/internal/backend"
)

func armImage() []byte {
	b := make([]byte, 4096)
	copy(b[0x38:], "ARMd")
	return b
}

func TestKernelFormat(t *testing.T) {
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write(armImage())
	w.Close()
	if DetectKernelFormat(armImage()) != KernelArm64Image || DetectKernelFormat(gz.Bytes()) != KernelGzip || DetectKernelFormat([]byte("MZ....")) != KernelUnknown {
		t.Fatal("detection")
	}
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, armImage(), 0o644)
	if k, err := BootableKernel(plain, filepath.Join(dir, "raw")); err != nil || k != plain {
		t.Fatalf("plain: %s %v", k, err)
	}
	zipped := filepath.Join(dir, "vmlinuz")
	os.WriteFile(zipped, gz.Bytes(), 0o644)
	raw := filepath.Join(dir, "vmlinux")
	k, err := BootableKernel(zipped, raw)
	if err != nil || k != raw {
		t.Fatalf("gzip: %s %v", k, err)
	}
	if b, _ := os.ReadFile(raw); !bytes.Equal(b, armImage()) {
		t.Fatal("decompressed kernel differs")
	}
	// Made once: a second call reuses it.
	fi1, _ := os.Stat(raw)
	BootableKernel(zipped, raw)
	fi2, _ := os.Stat(raw)
	if !fi1.ModTime().Equal(fi2.ModTime()) {
		t.Fatal("decompressed again")
	}
	bad := filepath.Join(dir, "bzimage")
	os.WriteFile(bad, []byte("MZ not arm"), 0o644)
	if _, err := BootableKernel(bad, raw); err == nil {
		t.Fatal("x86 kernel accepted")
	}
}

func TestBuildPlan(t *testing.T) {
	spec := backend.Spec{Arch: "arm64", CPUs: 2, MemoryMiB: 1024, Initrd: "/i", Cmdline: "console=hvc0 root=/dev/vda", Disk: "/d/rootfs.img",
		MAC: "02:11:22:33:44:55", RunDir: "/d", MachineIdentifier: "/d/vz-machine-identifier", Mounts: []backend.Mount{{Tag: "workspace", HostPath: "/src", GuestPath: "/workspace", ReadOnly: true}}}
	p, err := BuildPlan(spec, "/k")
	if err != nil {
		t.Fatal(err)
	}
	if p.MemoryBytes != 1<<30 || p.CPUs != 2 || !p.Disk.Cached || !p.Disk.SyncFsync || p.MAC.String() != "02:11:22:33:44:55" ||
		len(p.Shares) != 1 || !p.Shares[0].ReadOnly || p.MachineIdentifierPath != "/d/vz-machine-identifier" || !p.Vsock {
		t.Fatalf("%+v", p)
	}
	// One device set for boot, save and restore: restoring the sandbox's
	// own state plans the very same VM.
	spec.Mounts = nil
	boot, err := BuildPlan(spec, "/k")
	if err != nil {
		t.Fatal(err)
	}
	spec.RestoreFrom = "/d/suspend.state"
	restore, err := BuildPlan(spec, "/k")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(boot, restore) {
		t.Fatalf("boot and restore plans differ:\n%+v\n%+v", boot, restore)
	}
	spec.RestoreFrom = ""
	for _, mod := range []func(*backend.Spec){
		func(s *backend.Spec) { s.Arch = "amd64" },
		func(s *backend.Spec) { s.MemoryMiB = 64 },
		func(s *backend.Spec) { s.MAC = "nope" },
		func(s *backend.Spec) { s.Cmdline = "console=ttyS0" },
	} {
		s := spec
		mod(&s)
		if _, err := BuildPlan(s, "/k"); err == nil {
			t.Errorf("accepted %+v", s)
		}
	}
}

func TestLoadOrCreate(t *testing.T) {
	p := filepath.Join(t.TempDir(), "id")
	calls := 0
	mk := func() ([]byte, error) { calls++; return []byte("ident"), nil }
	a, err := LoadOrCreate(p, mk)
	b, _ := LoadOrCreate(p, mk)
	if err != nil || string(a) != "ident" || string(b) != "ident" || calls != 1 {
		t.Fatalf("%q %q %d %v", a, b, calls, err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Fatal("mode")
	}
}

func TestVersionAndHints(t *testing.T) {
	if CheckMacOSVersion("13.4.1") != nil || CheckMacOSVersion("15.0") != nil || CheckMacOSVersion("12.6") == nil || CheckMacOSVersion("") == nil {
		t.Fatal("version check")
	}
	err := EntitlementHint(errors.New(`The process doesn't have the "com.apple.security.virtualization" entitlement.`))
	if !strings.Contains(err.Error(), "make sign-debug") {
		t.Fatal(err)
	}
	if r := unavailableReason("linux", "amd64"); !strings.Contains(r, "macOS 13") {
		t.Fatal(r)
	}
}

// VZ's NAT has no route to the Mac's loopback: --host-loopback is refused
// with the reason, everything else passes.
func TestCheckSpecHostLoopback(t *testing.T) {
	if err := checkSpec(backend.Spec{}); err != nil {
		t.Fatalf("plain spec: %v", err)
	}
	err := checkSpec(backend.Spec{HostLoopback: true})
	if err == nil || !strings.Contains(err.Error(), "--host-loopback is not available on apple_virt") {
		t.Fatalf("--host-loopback: %v", err)
	}
}
