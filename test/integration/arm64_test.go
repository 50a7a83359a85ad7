package integration

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heyvm/heyvm/internal/backend/applevirt"
	"github.com/heyvm/heyvm/internal/image"
)

// TestArm64Guest builds the arm64 default image the macOS backend needs
// (foreign debootstrap through qemu-user-static), checks that its kernel
// is one Virtualization.framework can boot, and boots it once under
// qemu-system-aarch64 -M virt with TCG up to an SSH command.
func TestArm64Guest(t *testing.T) {
	needVM(t)
	for _, tool := range []string{"qemu-system-aarch64", "qemu-aarch64-static"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (apt-get install qemu-system-arm qemu-user-static)", tool)
		}
	}
	name := image.DefaultName + "-arm64"
	dir := filepath.Join(cacheHome, "images", "qemu", name)
	start := time.Now()
	var out bytes.Buffer
	if err := ensureImage("arm64", &out); err != nil {
		t.Fatalf("build arm64 image: %v\n%s", err, out.String())
	}
	t.Logf("arm64 image ready in %s", time.Since(start).Round(time.Second))
	m, err := image.ReadMetadata(dir)
	if err != nil || m.Arch != "arm64" || !strings.Contains(m.Build.Kernel, "cloud-arm64") {
		t.Fatalf("arm64 metadata: %+v %v", m, err)
	}
	if _, err := applevirt.BootableKernel(filepath.Join(dir, "vmlinuz"), filepath.Join(t.TempDir(), "vmlinux")); err != nil {
		t.Fatalf("kernel is not bootable by VZ: %v", err)
	}

	env := testHome(t)
	must(t, env, "create", "--name", "arm", "--image", name, "--memory", "1024", "--cpus", "2")
	if out := must(t, env, "exec", "arm", "--", "uname", "-m"); out != "aarch64\n" {
		t.Fatalf("uname -m: %q", out)
	}
	if s := get(t, env, "arm"); s.Owner == nil || s.Owner.Accelerator != "tcg" {
		t.Fatalf("arm64 guest on an amd64 host must run under tcg: %+v", s)
	}
}
