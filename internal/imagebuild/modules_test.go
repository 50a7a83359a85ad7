package imagebuild

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cavaliergopher/cpio"
)

const modulesDep = `kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/net/vmw_vsock/vsock.ko:
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko kernel/net/vmw_vsock/vsock.ko
kernel/fs/fuse/virtiofs.ko: kernel/fs/fuse/fuse.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/fs/fuse/fuse.ko:
`

func TestResolveModulesOrder(t *testing.T) {
	idx, err := ParseModuleIndex(strings.NewReader(modulesDep), strings.NewReader("kernel/drivers/char/hw_random/rng-core.ko\n"))
	if err != nil {
		t.Fatal(err)
	}
	order, err := idx.ResolveModules(InitramfsModules)
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, p := range order {
		if _, dup := pos[moduleKey(p)]; dup {
			t.Fatalf("%s listed twice", p)
		}
		pos[moduleKey(p)] = i
	}
	// Every module comes after its dependencies, virtio_ring before virtio
	// users, and the whole wanted set is there.
	for k, deps := range idx.deps {
		if _, in := pos[k]; !in {
			continue
		}
		for _, d := range deps {
			if pos[d] > pos[k] {
				t.Errorf("%s loaded before its dependency %s", k, d)
			}
		}
	}
	for _, w := range []string{"virtio_ring", "virtio", "virtio_pci", "virtio_mmio", "virtio_blk", "virtio_net", "virtio_console", "virtio_rng", "vsock", "vmw_vsock_virtio_transport", "fuse", "virtiofs", "failover"} {
		if _, ok := pos[w]; !ok {
			t.Errorf("%s missing from %v", w, order)
		}
	}
	if pos["virtio_ring"] > pos["virtio_blk"] {
		t.Error("virtio_ring after virtio_blk")
	}
}

func TestResolveModulesBuiltinAndMissing(t *testing.T) {
	idx, _ := ParseModuleIndex(strings.NewReader("kernel/a.ko: kernel/b.ko\n"), strings.NewReader("kernel/b.ko\nkernel/c.ko\n"))
	order, err := idx.ResolveModules([]string{"a", "c"})
	if err != nil || len(order) != 1 || order[0] != "kernel/a.ko" {
		t.Fatalf("builtins should be skipped: %v %v", order, err)
	}
	if _, err := idx.ResolveModules([]string{"zzz"}); err == nil {
		t.Fatal("missing module accepted")
	}
	idx, _ = ParseModuleIndex(strings.NewReader("kernel/x.ko.xz:\n"), nil)
	if _, err := idx.ResolveModules([]string{"x"}); err == nil || !strings.Contains(err.Error(), "compressed") {
		t.Fatalf("compressed module: %v", err)
	}
}

func TestWriteInitramfs(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "kernel"), 0o755)
	os.WriteFile(filepath.Join(dir, "kernel", "a.ko"), []byte("module-a"), 0o644)
	var buf bytes.Buffer
	if err := WriteInitramfs(&buf, []byte("BUSYBOX"), GuestFile("init"), dir, "6.1.0-test", []string{"kernel/a.ko"}); err != nil {
		t.Fatal(err)
	}
	gz, err := gzip.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	r := cpio.NewReader(gz)
	files := map[string]string{}
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r)
		if h.Linkname != "" {
			b = []byte(h.Linkname)
		}
		files[h.Name] = string(b)
	}
	if files["bin/busybox"] != "BUSYBOX" || files["lib/modules/6.1.0-test/kernel/a.ko"] != "module-a" ||
		files["etc/modules.order"] != "6.1.0-test/kernel/a.ko\n" || !strings.HasPrefix(files["init"], "#!/bin/busybox sh") ||
		files["bin/sh"] != "busybox" {
		t.Fatalf("unexpected archive: %v", keys(files))
	}
}

func keys(m map[string]string) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	return k
}

func TestGuestFiles(t *testing.T) {
	inittab := string(GuestFile("inittab"))
	for _, want := range []string{"::sysinit:/etc/heyvm/rc.sysinit", "hvc0::respawn:/bin/login -f root", "ttyS0::respawn:", "::shutdown:/etc/heyvm/rc.shutdown"} {
		if !strings.Contains(inittab, want) {
			t.Errorf("inittab lacks %q", want)
		}
	}
	sshd := string(GuestFile("sshd_config"))
	for _, want := range []string{"PasswordAuthentication no", "PermitRootLogin prohibit-password", "HostKey /etc/ssh/ssh_host_ed25519_key"} {
		if !strings.Contains(sshd, want) {
			t.Errorf("sshd_config lacks %q", want)
		}
	}
	if !strings.Contains(string(GuestFile("ready.sh")), "HEYVM-READY") {
		t.Error("ready line missing")
	}
}

// A root's own kernel: what it lacks is skipped unless heyvm cannot boot
// without it (ext4 built in counts as there).
func TestResolveAvailable(t *testing.T) {
	idx, err := ParseModuleIndex(strings.NewReader(modulesDep), strings.NewReader("kernel/fs/ext4/ext4.ko\n"))
	if err != nil {
		t.Fatal(err)
	}
	order, err := idx.ResolveAvailable(append(OwnKernelModules, "no_such_optional"), OwnKernelRequired)
	if err != nil {
		t.Fatal(err)
	}
	if len(order) == 0 || order[0] != "kernel/drivers/virtio/virtio_ring.ko" {
		t.Errorf("order %v", order)
	}
	seen := map[string]int{}
	for _, m := range order {
		seen[m]++
		if seen[m] > 1 {
			t.Errorf("%s listed twice", m)
		}
	}
	noExt4, _ := ParseModuleIndex(strings.NewReader(modulesDep), strings.NewReader(""))
	if _, err := noExt4.ResolveAvailable(OwnKernelModules, OwnKernelRequired); err == nil || !strings.Contains(err.Error(), "ext4") {
		t.Errorf("a kernel without ext4: %v", err)
	}
}
