package integration

import (
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cavaliergopher/cpio"

	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/imagebuild"
)

func defaultImageDir() string {
	return filepath.Join(cacheHome, "images", "qemu", image.DefaultName)
}

func TestDefaultImageFiles(t *testing.T) {
	needVM(t)
	dir := defaultImageDir()
	if err := image.Verify(dir); err != nil {
		t.Fatalf("sha256s do not match image.yaml: %v", err)
	}
	m, err := image.ReadMetadata(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m.Arch != image.NativeArch() || m.RootfsSize != imagebuild.DefaultRootfsSize || !strings.Contains(m.KernelCmdline, "console=hvc0") {
		t.Fatalf("metadata: %+v", m)
	}
	if used := image.DiskUsage(dir); used > 400<<20 {
		t.Errorf("image takes %d MiB on disk, budget is 400", used>>20)
	}
	out, err := exec.Command("e2fsck", "-fn", filepath.Join(dir, "rootfs.img")).CombinedOutput()
	if err != nil {
		t.Fatalf("e2fsck -fn: %v\n%s", err, out)
	}
}

// debugfsCat reads a file out of the ext4 image without mounting it.
func debugfsCat(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "cat "+path, filepath.Join(defaultImageDir(), "rootfs.img")).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", path, err)
	}
	return string(out)
}

func TestDefaultImageGuestConfig(t *testing.T) {
	needVM(t)
	if got := debugfsCat(t, "/etc/inittab"); got != string(imagebuild.GuestFile("inittab")) {
		t.Fatalf("inittab in the image differs:\n%s", got)
	}
	sshd := debugfsCat(t, "/etc/ssh/sshd_config.d/heyvm.conf")
	for _, want := range []string{"PasswordAuthentication no", "PermitRootLogin prohibit-password"} {
		if !strings.Contains(sshd, want) {
			t.Errorf("sshd config lacks %q", want)
		}
	}
	if shadow := debugfsCat(t, "/etc/shadow"); !strings.HasPrefix(shadow, "root:*:") {
		t.Errorf("root has a password: %q", strings.SplitN(shadow, "\n", 2)[0])
	}
	// No host key is baked in: each sandbox makes its own.
	out, _ := exec.Command("debugfs", "-R", "ls /etc/ssh", filepath.Join(defaultImageDir(), "rootfs.img")).Output()
	if strings.Contains(string(out), "ssh_host_") {
		t.Errorf("image ships host keys: %s", out)
	}
}

func TestDefaultImageInitramfsModules(t *testing.T) {
	needVM(t)
	f, err := os.Open(filepath.Join(defaultImageDir(), "initrd"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	r := cpio.NewReader(gz)
	var order string
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == "etc/modules.order" {
			b, _ := io.ReadAll(r)
			order = string(b)
		}
	}
	var names []string
	for _, l := range strings.Fields(order) {
		n := strings.TrimSuffix(filepath.Base(l), ".ko")
		names = append(names, strings.ReplaceAll(n, "-", "_"))
	}
	pos := map[string]int{}
	for i, n := range names {
		pos[n] = i
	}
	for _, want := range []string{"virtio_ring", "virtio", "virtio_pci", "virtio_mmio", "virtio_blk", "virtio_net", "virtio_console", "virtio_rng", "vsock", "vmw_vsock_virtio_transport", "fuse", "virtiofs"} {
		if _, ok := pos[want]; !ok {
			t.Errorf("initramfs lacks %s (has %v)", want, names)
		}
	}
	for _, pair := range [][2]string{{"virtio_ring", "virtio_pci"}, {"virtio", "virtio_blk"}, {"virtio_pci_modern_dev", "virtio_pci"}, {"fuse", "virtiofs"}, {"vsock", "vmw_vsock_virtio_transport"}} {
		if pos[pair[0]] > pos[pair[1]] {
			t.Errorf("%s loads after %s", pair[0], pair[1])
		}
	}
}

func TestImagesCommands(t *testing.T) {
	env := testHome(t)
	out := must(t, env, "images", "list")
	if !strings.Contains(out, image.DefaultName) || !strings.Contains(out, "default,ubuntu:24.04") {
		t.Fatalf("images list:\n%s", out)
	}
	var rows []struct {
		Name    string
		Aliases []string
	}
	if err := json.Unmarshal([]byte(must(t, env, "images", "list", "--json")), &rows); err != nil || len(rows) == 0 {
		t.Fatalf("images list --json: %v", err)
	}
	insp := must(t, env, "images", "inspect", "default")
	if !strings.Contains(insp, "linux-image-") || !strings.Contains(insp, "sha256:") {
		t.Fatalf("inspect:\n%s", insp)
	}
	// build-default with the image present does nothing.
	_, errOut, code := runIn(env, "", "images", "build-default")
	if code != 0 || !strings.Contains(errOut, "already built") {
		t.Fatalf("build-default again: %d %s", code, errOut)
	}
	fails(t, env, "contains '/'", "images", "inspect", "a/b")
	fails(t, env, "not found", "images", "inspect", "nosuch:1")
	fails(t, env, "alias", "images", "rm", "default")
	// A sandbox made from the image protects it (no --force here: the
	// test home shares the cached image).
	writeFakeSandbox(t, env, "use000000000", "id: use000000000\nname: user\nimage: debian:12\nbackend: qemu\n")
	fails(t, env, "used by sandbox(es) user", "images", "rm", image.DefaultName)
}
