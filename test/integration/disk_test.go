package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A qemu sandbox's disk is a copy-on-write chain: the image's rootfs hard
// linked in, and an overlay of its own. The image can then be removed (or
// rebuilt) under a sandbox that keeps working, stopped and started again.
func TestDiskChainOutlivesItsImage(t *testing.T) {
	needVM(t)
	home := t.TempDir()
	env := append(os.Environ(), "HEYO_HOME="+home)
	t.Cleanup(func() { cleanupHome(env) })
	// An image of this home's own (the shared one stays untouched).
	src := filepath.Join(cacheHome, "images", "qemu", "debian:12")
	dst := filepath.Join(home, "images", "qemu", "mine")
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"vmlinuz", "initrd", "rootfs.img", "image.yaml"} {
		if out, err := exec.Command("cp", "--sparse=always", filepath.Join(src, f), filepath.Join(dst, f)).CombinedOutput(); err != nil {
			t.Fatalf("cp %s: %v %s", f, err, out)
		}
	}
	b, _ := os.ReadFile(filepath.Join(dst, "image.yaml"))
	os.WriteFile(filepath.Join(dst, "image.yaml"), []byte(strings.Replace(string(b), "name: debian:12", "name: mine", 1)), 0o600)

	must(t, env, "create", "--name", "disk-c", "--image", "mine", "--memory", "384", "--cold")
	dir := get(t, env, "disk-c").Dir
	a, _ := os.Stat(filepath.Join(dst, "rootfs.img"))
	l, err := os.Stat(filepath.Join(dir, "base.img"))
	if err != nil || !os.SameFile(a, l) {
		t.Fatalf("base.img is not a hard link of the image's rootfs: %v", err)
	}
	if out := must(t, env, "get", "--json", "disk-c"); !strings.Contains(out, `"disk_format": "qcow2"`) {
		t.Errorf("disk format not recorded:\n%s", out)
	}
	must(t, env, "exec", "disk-c", "--", "sh", "-c", "echo kept > /root/note && sync")

	fails(t, env, "used by sandbox(es) disk-c", "images", "rm", "mine")
	must(t, env, "images", "rm", "--force", "mine")
	if _, err := os.Stat(dst); !os.IsNotExist(err) {
		t.Fatal("the image is still in the store")
	}
	must(t, env, "stop", "disk-c")
	must(t, env, "start", "disk-c")
	if got := strings.TrimSpace(must(t, env, "exec", "disk-c", "--", "cat", "/root/note")); got != "kept" {
		t.Fatalf("after its image was removed: %q", got)
	}
}
