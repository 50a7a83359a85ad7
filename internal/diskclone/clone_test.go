package diskclone

import (
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
	if m != Reflink && m != SparseCopy {
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
