package vmbuild

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heyvm/heyvm/internal/imagebuild"
)

// module compiles an object file whose .modinfo says it depends on deps,
// as a kernel module's does.
func module(t *testing.T, dir, name, deps string) string {
	t.Helper()
	src := filepath.Join(dir, name+".c")
	os.WriteFile(src, []byte(`__attribute__((section(".modinfo"), used)) static const char a[] = "license=GPL";
__attribute__((section(".modinfo"), used)) static const char b[] = "depends=`+deps+`";
__attribute__((section(".modinfo"), used)) static const char c[] = "name=`+name+`";
`), 0o644)
	out := filepath.Join(dir, name+".ko")
	if b, err := exec.Command("gcc", "-c", "-o", out, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v %s", err, b)
	}
	return out
}

// A kernel package read on the host: its kernel, and the initramfs's
// modules in load order, from each module's own .modinfo (no depmod).
func TestReadKernelResolvesFromModinfo(t *testing.T) {
	for _, tool := range []string{"gcc", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	dir := t.TempDir()
	pkg := filepath.Join(dir, "pkg")
	kver := "6.1.0-99-cloud-amd64"
	mods := filepath.Join(pkg, "lib/modules", kver, "kernel")
	for _, m := range []struct{ dir, name, deps string }{
		{"drivers/virtio", "virtio", ""},
		{"drivers/virtio", "virtio_ring", "virtio"},
		{"drivers/block", "virtio_blk", "virtio,virtio_ring"},
		{"drivers/net", "unrelated", "virtio"},
	} {
		d := filepath.Join(mods, m.dir)
		os.MkdirAll(d, 0o755)
		o := module(t, t.TempDir(), m.name, m.deps)
		b, _ := os.ReadFile(o)
		os.WriteFile(filepath.Join(d, m.name+".ko"), b, 0o644)
	}
	var builtin []string
	for _, m := range imagebuild.InitramfsModules {
		if m != "virtio" && m != "virtio_ring" && m != "virtio_blk" {
			builtin = append(builtin, "kernel/x/"+m+".ko")
		}
	}
	os.WriteFile(filepath.Join(pkg, "lib/modules", kver, "modules.builtin"), []byte(strings.Join(builtin, "\n")+"\n"), 0o644)
	os.MkdirAll(filepath.Join(pkg, "boot"), 0o755)
	os.WriteFile(filepath.Join(pkg, "boot/vmlinuz-"+kver), []byte("a kernel"), 0o644)
	os.MkdirAll(filepath.Join(pkg, "DEBIAN"), 0o755)
	os.WriteFile(filepath.Join(pkg, "DEBIAN/control"), []byte("Package: linux-image-"+kver+"\nVersion: 1\nArchitecture: amd64\nMaintainer: x <x@x>\nDescription: test\n"), 0o644)
	deb := filepath.Join(dir, "k.deb")
	if b, err := exec.Command("dpkg-deb", "-Zxz", "--root-owner-group", "--build", pkg, deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb: %v %s", err, b)
	}
	k, err := readKernel(deb, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if k.version != kver || string(k.vmlinuz) != "a kernel" {
		t.Errorf("kernel: %q %q", k.version, k.vmlinuz)
	}
	want := "kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/block/virtio_blk.ko"
	if got := strings.Join(k.modules, " "); got != want {
		t.Errorf("modules: %s\nwant:    %s", got, want)
	}
	for _, m := range k.modules {
		if _, err := os.Stat(filepath.Join(k.modDir, m)); err != nil {
			t.Errorf("module not written: %v", err)
		}
	}
}

// Where an image is built: on the host when it can, else in a VM.
func TestChooseBuild(t *testing.T) {
	hostErr := os.ErrNotExist
	for _, c := range []struct {
		goos    string
		inVM    bool
		hostErr error
		want    bool
	}{
		{"darwin", false, nil, true},    // a Mac builds in a VM, always
		{"darwin", true, nil, true},     //
		{"linux", false, nil, false},    // Linux with mmdebstrap: on the host
		{"linux", true, nil, true},      // ... unless asked
		{"linux", false, hostErr, true}, // no mmdebstrap (or no user namespaces): in a VM
	} {
		if got, why := ChooseVM(c.goos, c.inVM, c.hostErr); got != c.want || why == "" {
			t.Errorf("ChooseVM(%s, %v, %v) = %v %q", c.goos, c.inVM, c.hostErr, got, why)
		}
	}
}
