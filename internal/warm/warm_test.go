package warm

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/layout"
	"github.com/heyvm/heyvm/internal/sandbox"
)

func TestShapeKey(t *testing.T) {
	s := Shape{Arch: "amd64", CPUs: 2, MemoryMiB: 1024}
	if s.Key() != "amd64-2cpu-1024m-c" {
		t.Fatalf("key %q", s.Key())
	}
	s.HostLoopback = true
	if s.Key() != "amd64-2cpu-1024m-l" {
		t.Fatalf("key %q", s.Key())
	}
	cfg := &sandbox.Config{Arch: "arm64", CPUs: 4, MemoryMiB: 512, HostLoopback: true}
	if got := ShapeOf(cfg); got != (Shape{Arch: "arm64", CPUs: 4, MemoryMiB: 512, HostLoopback: true}) {
		t.Fatalf("ShapeOf: %+v", got)
	}
}

// fakeSnapshot lays out a complete snapshot of im for shape.
func fakeSnapshot(t *testing.T, root layout.Root, im *image.Image, shape Shape, digest string) layout.Sandbox {
	t.Helper()
	files := Files(root, "qemu", im, shape)
	if err := os.MkdirAll(files.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(files.Rootfs(), []byte("disk"), 0o600)
	os.WriteFile(files.SuspendState(), make([]byte, 100), 0o600)
	if err := sandbox.WriteSuspendInfo(files, sandbox.SuspendInfo{StateBytes: 100, CPUs: shape.CPUs, MemoryMiB: shape.MemoryMiB}); err != nil {
		t.Fatal(err)
	}
	if err := WriteMeta(files, Meta{Format: Format, Image: im.Name, RootfsSHA256: digest, Shape: shape, DiskBytes: 4 << 30, HypervisorBuild: "qemu 1"}); err != nil {
		t.Fatal(err)
	}
	return files
}

// Find returns a snapshot only for the image version and shape it was
// made for, and removes one made from another version of the image or
// left incomplete.
func TestFindChecksDigestAndCompleteness(t *testing.T) {
	root := layout.Root{Dir: t.TempDir()}
	im := &image.Image{Name: "debian:12", Meta: &image.Metadata{SHA256: map[string]string{layout.ImageRootfs: "aaa"}}}
	shape := Shape{Arch: "amd64", CPUs: 2, MemoryMiB: 512}

	if Find(root, "qemu", "qemu 1", im, shape) != nil {
		t.Fatal("found a snapshot in an empty home")
	}
	files := fakeSnapshot(t, root, im, shape, "aaa")
	snap := Find(root, "qemu", "qemu 1", im, shape)
	if snap == nil || snap.Files != files || snap.State() != files.SuspendState() || snap.DiskBytes() != 4<<30 {
		t.Fatalf("complete snapshot: %+v", snap)
	}
	other := shape
	other.MemoryMiB = 1024
	if Find(root, "qemu", "qemu 1", im, other) != nil {
		t.Fatal("a snapshot served another shape")
	}

	// A template readied the old way (no restore helper).
	m, _ := Load(files)
	m.Meta.Format = 1
	WriteMeta(files, m.Meta)
	if Find(root, "qemu", "qemu 1", im, shape) != nil {
		t.Fatal("a snapshot of an older format was used")
	}
	files = fakeSnapshot(t, root, im, shape, "aaa")

	// The hypervisor was upgraded.
	if Find(root, "qemu", "qemu 2", im, shape) != nil {
		t.Fatal("a snapshot of another hypervisor build was used")
	}
	if _, err := os.Stat(files.Dir); !os.IsNotExist(err) {
		t.Fatal("the snapshot of another hypervisor build was kept")
	}
	files = fakeSnapshot(t, root, im, shape, "aaa")

	// The image was rebuilt: its digest changed.
	im.Meta.SHA256[layout.ImageRootfs] = "bbb"
	if Find(root, "qemu", "qemu 1", im, shape) != nil {
		t.Fatal("a snapshot of another image version was used")
	}
	if _, err := os.Stat(files.Dir); !os.IsNotExist(err) {
		t.Fatal("the stale snapshot was kept")
	}

	// A state file cut short: not used, removed.
	files = fakeSnapshot(t, root, im, shape, "bbb")
	os.Truncate(files.SuspendState(), 10)
	if Find(root, "qemu", "qemu 1", im, shape) != nil {
		t.Fatal("an incomplete snapshot was used")
	}
	if _, err := os.Stat(files.Dir); !os.IsNotExist(err) {
		t.Fatal("the incomplete snapshot was kept")
	}

	// DropImage removes them all and leaves nothing aside.
	fakeSnapshot(t, root, im, shape, "bbb")
	if err := DropImage(root, "qemu", im.Name); err != nil {
		t.Fatal(err)
	}
	left, _ := filepath.Glob(filepath.Join(root.CacheDir(), "warm", "qemu", "*"))
	if len(left) != 0 {
		t.Fatalf("left after DropImage: %v", left)
	}
	if err := DropImage(root, "qemu", im.Name); err != nil {
		t.Fatalf("DropImage of nothing: %v", err)
	}
}
