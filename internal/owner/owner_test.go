package owner

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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

// The identity step: a short script that is valid shell and wakes the
// restore helper, and a line for the helper (under a terminal's 4095
// bytes) with fresh secrets, the files, and the arch's clock_settime;
// hot-plugged shares are mounted with a retry.
func TestIdentityScript(t *testing.T) {
	a, line, key, err := identityScript("box", "amd64", "ssh-ed25519 AAAA heyvm", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(key, "ssh-ed25519 ") || !strings.Contains(line, strings.ReplaceAll(key, " ", "%20")) {
		t.Errorf("the line does not install its host key %q", key)
	}
	b, line2, _, _ := identityScript("box", "arm64", "ssh-ed25519 AAAA heyvm", true, []backend.Mount{{Tag: "m0", GuestPath: "/work space", ReadOnly: true}})
	if len(line) >= 4095 || strings.Contains(line, "\n") || strings.Contains(line, "'") {
		t.Errorf("the helper's line (%d bytes) is not one plain terminal line", len(line))
	}
	if len(a) > 600 {
		t.Errorf("the script is %d bytes: bash reads it a byte at a time", len(a))
	}
	if line == line2 {
		t.Error("two identities are the same")
	}
	for _, want := range []string{" 227 /etc/ssh/ssh_host_ed25519_key:0600:-----BEGIN%20OPENSSH%20PRIVATE%20KEY-----%0A",
		" /proc/sys/kernel/hostname:-:box ", " /etc/hosts:0644:127.0.0.1%20localhost%0A127.0.1.1%20box%0A", " /root/.ssh/authorized_keys:0600:ssh-ed25519%20AAAA%20heyvm%0A"} {
		if !strings.Contains(line, want) {
			t.Errorf("line lacks %q", want)
		}
	}
	for _, want := range []string{restoreHelperPID, restoreFIFO, restoredFIFO, "read -r _", "HOSTKEY", `PS1=${PS1//\\h/box}`, "unset HEYVM_PLAIN"} {
		if !strings.Contains(a, want) {
			t.Errorf("script lacks %q", want)
		}
	}
	if strings.Contains(a, "resize2fs") || !strings.Contains(b, "resize2fs") {
		t.Error("resize2fs should run only when the disk grew")
	}
	if !strings.Contains(b, "mount -t virtiofs -o ro m0 '/work space'") || !strings.Contains(b, "modprobe virtiofs") || !strings.Contains(line2, " 112 /etc/ssh/") {
		t.Errorf("share mount or arm64's clock_settime missing:\n%s\n%s", b, line2)
	}
	if _, err := exec.LookPath("bash"); err == nil {
		for _, script := range []string{a, b, templatePrep()} {
			if out, err := exec.Command("bash", "-n", "-c", script).CombinedOutput(); err != nil {
				t.Errorf("bash -n: %v: %s\n%s", err, out, script)
			}
		}
	}
}

// The restore helper, run here on files in a temporary folder: it leaves
// its pid, waits to be woken, reads its line from fd 3 (the console in a
// guest; a pipe here), writes each file with its mode, and says what
// failed. clock_settime's number is getpid's, so it fails (and the host's
// clock is left alone), and sshd is then not started; no DHCP client is
// signalled.
func TestRestoreHelper(t *testing.T) {
	if _, err := exec.LookPath("perl"); err != nil {
		t.Skip("perl is not installed")
	}
	getpid := map[string]int{"amd64": 39, "arm64": 172}[runtime.GOARCH]
	if getpid == 0 {
		t.Skipf("no getpid number known for %s", runtime.GOARCH)
	}
	dir := t.TempDir()
	in, out, pidFile := filepath.Join(dir, "in"), filepath.Join(dir, "out"), filepath.Join(dir, "pid")
	for _, p := range []string{in, out} {
		if err := unix.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	helper := exec.Command("perl", "-MPOSIX", "-e", restoreHelper(in, out, pidFile, ""))
	helper.ExtraFiles = []*os.File{r}
	if err := helper.Run(); err != nil { // it forks: the first process ends at once
		t.Fatal(err)
	}
	r.Close()
	var pid int
	for i := 0; i < 500 && pid == 0; i++ {
		b, _ := os.ReadFile(pidFile)
		fmt.Sscanf(string(b), "%d", &pid)
		time.Sleep(10 * time.Millisecond)
	}
	if pid == 0 {
		t.Fatal("the helper left no pid")
	}
	defer unix.Kill(pid, unix.SIGKILL)
	key, pub := filepath.Join(dir, "key"), filepath.Join(dir, "key.pub")
	line := helperLine(time.Now(), []byte{1, 2, 3}, getpid, []helperFile{{key, "0600", "PRIVATE KEY: 100%\n"}, {pub, "0644", "ssh-ed25519 AAAA\n"}})
	if _, err := w.Write([]byte(line + "\n")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(in, []byte("\n"), 0); err != nil {
		t.Fatal(err)
	}
	reply, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(reply), "clock_settime: ") || strings.Contains(string(reply), dir) {
		t.Errorf("reply %q: want only clock_settime to fail", reply)
	}
	for p, want := range map[string]struct {
		data string
		mode os.FileMode
	}{key: {"PRIVATE KEY: 100%\n", 0o600}, pub: {"ssh-ed25519 AAAA\n", 0o644}} {
		b, err := os.ReadFile(p)
		fi, _ := os.Stat(p)
		if err != nil || string(b) != want.data || fi.Mode().Perm() != want.mode {
			t.Errorf("%s: %q, %v (%v); want %q, %v", p, b, fi.Mode().Perm(), err, want.data, want.mode)
		}
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
