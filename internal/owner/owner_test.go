package owner

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/heyvm/heyvm/internal/backend"
	"github.com/heyvm/heyvm/internal/fsutil"
	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/layout"
	"github.com/heyvm/heyvm/internal/sandbox"
)

func TestParseProvisionOutput(t *testing.T) {
	out := "IP 2: eth0    inet 10.0.2.15/24 scope global eth0\\       valid_lft forever\nHOSTKEY ssh-ed25519 AAAAC3Nz root@x\n"
	ip, key, err := ParseProvisionOutput(out)
	if err != nil || ip != "10.0.2.15" || key != "ssh-ed25519 AAAAC3Nz root@x" {
		t.Fatalf("%q %q %v", ip, key, err)
	}
	if _, _, err := ParseProvisionOutput("IP \nHOSTKEY ssh-ed25519 A"); err == nil || !strings.Contains(err.Error(), "DHCP") {
		t.Fatalf("no ip: %v", err)
	}
	if _, _, err := ParseProvisionOutput("IP inet 10.0.2.15/24\nHOSTKEY "); err == nil {
		t.Fatal("no key accepted")
	}
}

func TestSpec(t *testing.T) {
	cfg := &sandbox.Config{Name: "box", CPUs: 2, MemoryMiB: 512, TTL: sandbox.Duration(time.Minute),
		Mounts: []backend.Mount{{Tag: "ws", HostPath: "/h", GuestPath: "/workspace"}, {Tag: "m1", HostPath: "/r", GuestPath: "/ro", ReadOnly: true}}}
	im := &image.Image{Dir: "/img", Meta: &image.Metadata{Arch: "amd64", KernelCmdline: "console=hvc0 root=/dev/vda"}}
	s := Spec(cfg, im, layout.Root{Dir: "/h"}.Sandbox("id"))
	if s.Cmdline != "console=hvc0 root=/dev/vda heyvm.hostname=box heyvm.mounts=ws:/workspace,m1:/ro:ro" {
		t.Fatalf("cmdline %q", s.Cmdline)
	}
	if s.Disk != "/h/sandboxes/id/rootfs.img" || s.Kernel != "/img/vmlinuz" || s.Arch != "amd64" {
		t.Fatalf("spec %+v", s)
	}
}

// A saved VM is resumed only into the machine shape it was saved with;
// anything else says how to go on.
func TestSavedVM(t *testing.T) {
	files := layout.Sandbox{Dir: t.TempDir()}
	sb := &sandbox.Sandbox{Config: &sandbox.Config{Name: "box", CPUs: 2, MemoryMiB: 512}, Files: files}
	os.WriteFile(files.SuspendTemp(), []byte("half"), 0o600)
	if si, err := savedVM(sb); si != nil || err != nil {
		t.Fatalf("nothing saved: %v %v", si, err)
	}
	if _, err := os.Stat(files.SuspendTemp()); !os.IsNotExist(err) {
		t.Error("an unfinished save was kept")
	}
	os.WriteFile(files.SuspendState(), make([]byte, 10), 0o600)
	sandbox.WriteSuspendInfo(files, sandbox.SuspendInfo{Hypervisor: "QEMU 7.2.19", StateBytes: 10, CPUs: 2, MemoryMiB: 512})
	if si, err := savedVM(sb); si == nil || err != nil {
		t.Fatalf("saved: %v %v", si, err)
	}
	sb.Config.MemoryMiB = 1024
	_, err := savedVM(sb)
	if err == nil || !strings.Contains(err.Error(), "saved with 2 CPUs and 512 MiB") || !strings.Contains(err.Error(), "`heyvm start --cold box`") || !strings.Contains(err.Error(), "QEMU 7.2.19") {
		t.Fatalf("shape changed: %v", err)
	}
}

// The identity step is one line for the console, gives each call fresh
// secrets, and mounts hot-plugged shares with a retry.
func TestIdentityScript(t *testing.T) {
	a, err := identityScript("box", "ssh-ed25519 AAAA heyvm", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := identityScript("box", "ssh-ed25519 AAAA heyvm", true, []backend.Mount{{Tag: "m0", GuestPath: "/work space", ReadOnly: true}})
	if strings.Contains(a, "\n") {
		t.Error("the script spans lines")
	}
	if a == b {
		t.Error("two identities are the same")
	}
	for _, want := range []string{"date -u -s @", "0x5207", "/proc/sys/kernel/hostname", "ssh_host_ed25519_key", "sshd -r", " box ", "'ssh-ed25519 AAAA heyvm' >/root/.ssh/authorized_keys"} {
		if !strings.Contains(a, want) {
			t.Errorf("script lacks %q", want)
		}
	}
	if strings.Contains(a, "resize2fs") || !strings.Contains(b, "resize2fs") {
		t.Error("resize2fs should run only when the disk grew")
	}
	if !strings.Contains(b, "mount -t virtiofs -o ro m0 '/work space'") || !strings.Contains(b, "modprobe virtiofs") {
		t.Errorf("share mount missing:\n%s", b)
	}
}

func TestIdleLock(t *testing.T) {
	files := layout.Sandbox{Dir: t.TempDir()}
	// Never used: the first look starts the idle clock.
	if l := idleLock(files, time.Minute); l != nil {
		t.Fatal("a sandbox nobody has used yet counted as idle at once")
	}
	old := time.Now().Add(-2 * time.Minute)
	os.Chtimes(files.BusyLock(), old, old)
	held, err := fsutil.TryLock(files.BusyLock())
	if err != nil {
		t.Fatal(err)
	}
	if l := idleLock(files, time.Minute); l != nil {
		t.Fatal("a held busy lock counted as idle")
	}
	held.Unlock()
	l := idleLock(files, time.Minute)
	if l == nil {
		t.Fatal("unheld and untouched for twice the idle time: not idle")
	}
	// Held through the stop: a user arriving now waits.
	if _, err := fsutil.TryLock(files.BusyLock()); err == nil {
		t.Fatal("idleLock did not keep the lock")
	}
	l.Unlock()
	if d := idleCheckEvery(10 * time.Minute); d != 30*time.Second {
		t.Errorf("idleCheckEvery(10m) = %s", d)
	}
}
