package diskclone

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestCloneSparseAndGrow(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	f, _ := os.Create(src)
	f.WriteAt([]byte("head"), 0)
	f.WriteAt([]byte("tail"), 64<<20)
	f.Close()
	dst := filepath.Join(dir, "dst.img")
	m, err := Clone(src, dst, 128<<20)
	if err != nil {
		t.Fatal(err)
	}
	if m != Reflink && m != Clonefile && m != SparseCopy {
		t.Fatalf("method %s", m)
	}
	fi, _ := os.Stat(dst)
	if fi.Size() != 128<<20 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("size %d mode %v", fi.Size(), fi.Mode())
	}
	b := make([]byte, 4)
	g, _ := os.Open(dst)
	g.ReadAt(b, 64<<20)
	g.Close()
	if string(b) != "tail" {
		t.Fatalf("data lost: %q", b)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Blocks*512 > 8<<20 {
		t.Fatalf("clone is not sparse: %d bytes allocated", st.Blocks*512)
	}
	if _, err := Clone(src, dst, 0); err == nil {
		t.Fatal("clone over an existing file")
	}
	if _, err := Clone(src, filepath.Join(dir, "small"), 1<<20); err == nil || !strings.Contains(err.Error(), "smaller") {
		t.Fatalf("shrink accepted: %v", err)
	}
}

// TestCloneFullDisk clones onto a tiny tmpfs: the error must say so and
// no partial file may remain. It needs root to mount the tmpfs.
func TestCloneFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	small := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", small).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs: %v %s", err, out)
	}
	defer exec.Command("umount", small).Run()
	src := filepath.Join(t.TempDir(), "src.img")
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i)
	}
	os.WriteFile(src, data, 0o600)
	dst := filepath.Join(small, "rootfs.img")
	_, err := Clone(src, dst, 0)
	if err == nil || !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "free some space") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("partial clone left behind")
	}
}

// A chain is two links and an overlay: the base shares the image's inode,
// the overlay reads through to it, and nothing is left after a failure.
func TestChain(t *testing.T) {
	if !ChainAvailable() {
		t.Skip("qemu-img is not installed (apt-get install qemu-utils)")
	}
	src := t.TempDir()
	base := filepath.Join(src, "rootfs.img")
	data := bytes.Repeat([]byte("heyvm"), 1<<16)
	if err := os.WriteFile(base, data, 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c, err := Chain(context.Background(), dir, []Layer{{Src: base, Name: "base.img", Format: "raw"}}, "rootfs.qcow2", 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := os.Stat(base)
	b, _ := os.Stat(filepath.Join(dir, "base.img"))
	if !c.Linked || !os.SameFile(a, b) {
		t.Fatalf("base is not a hard link of the image: %+v", c)
	}
	out, err := exec.Command(QemuImg, "info", "--output=json", filepath.Join(dir, "rootfs.qcow2")).Output()
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Format      string `json:"format"`
		VirtualSize int64  `json:"virtual-size"`
		Backing     string `json:"backing-filename"`
	}
	json.Unmarshal(out, &info)
	if info.Format != "qcow2" || info.VirtualSize != 1<<30 || info.Backing != "base.img" {
		t.Fatalf("overlay: %s", out)
	}
	// Reading through the overlay gives the base's bytes.
	raw := filepath.Join(t.TempDir(), "flat.img")
	if b, err := exec.Command(QemuImg, "convert", "-O", "raw", filepath.Join(dir, "rootfs.qcow2"), raw).CombinedOutput(); err != nil {
		t.Fatalf("convert: %v %s", err, b)
	}
	got, _ := os.ReadFile(raw)
	if !bytes.Equal(got[:len(data)], data) {
		t.Fatal("the overlay does not read through to its base")
	}
	// A second level: the first overlay as a read-only middle layer.
	dir2 := t.TempDir()
	if _, err := Chain(context.Background(), dir2, []Layer{
		{Src: filepath.Join(dir, "base.img"), Name: "base.img", Format: "raw"},
		{Src: filepath.Join(dir, "rootfs.qcow2"), Name: "warm.qcow2", Format: "qcow2"},
	}, "rootfs.qcow2", 2<<30); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command(QemuImg, "info", "--backing-chain", filepath.Join(dir2, "rootfs.qcow2")).CombinedOutput(); err != nil || !strings.Contains(string(b), "warm.qcow2") {
		t.Fatalf("two-level chain: %v %s", err, b)
	}
	// A failure leaves nothing behind.
	dir3 := t.TempDir()
	if _, err := Chain(context.Background(), dir3, []Layer{{Src: filepath.Join(src, "missing"), Name: "base.img", Format: "raw"}}, "rootfs.qcow2", 1<<30); err == nil {
		t.Fatal("a chain on a missing base")
	}
	if left, _ := os.ReadDir(dir3); len(left) != 0 {
		t.Fatalf("left after a failed chain: %v", left)
	}
}
