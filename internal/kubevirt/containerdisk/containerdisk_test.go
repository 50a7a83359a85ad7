package containerdisk

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/ociimage"
	"github.com/heyvm/heyvm/internal/ociimage/ocitest"
)

// fakeImage is a small heyvm image: random kernel and initrd, and a 64 MiB
// sparse ext4 rootfs.img with one file in it.
func fakeImage(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"qemu-img", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s: install qemu-utils and e2fsprogs", tool)
		}
	}
	dir := t.TempDir()
	for f, n := range map[string]int{"vmlinuz": 96 << 10, "initrd": 48 << 10} {
		b := make([]byte, n)
		rand.Read(b)
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	root := filepath.Join(t.TempDir(), "root")
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc", "hostname"), []byte("heyvm\n"), 0o644)
	rootfs := filepath.Join(dir, "rootfs.img")
	if out, err := exec.Command("truncate", "-s", "64M", rootfs).CombinedOutput(); err != nil {
		t.Fatalf("truncate: %v %s", err, out)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", root, rootfs).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	if err := image.WriteMetadata(dir, &image.Metadata{
		Name: "tiny:1", Backend: "qemu", Arch: "amd64",
		KernelCmdline: "console=hvc0 root=/dev/vda rw quiet panic=-1", RootfsSize: 64 << 20,
	}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestContainerDiskImage(t *testing.T) {
	dir := fakeImage(t)
	ctx := context.Background()
	im, err := Build(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()

	// A standard OCI image, not a heyvm artifact: runtimes and CDI take it.
	mt, _ := im.MediaType()
	m, err := im.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if mt != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON || m.ArtifactType != "" {
		t.Fatalf("manifest %s, config %s, artifactType %q", mt, m.Config.MediaType, m.ArtifactType)
	}
	if m.Annotations[AnnotationCmdline] != "console=hvc0 root=/dev/vda rw quiet panic=-1" || m.Annotations[AnnotationImage] != "tiny:1" {
		t.Errorf("annotations %v", m.Annotations)
	}
	cf, _ := im.ConfigFile()
	if cf.OS != "linux" || cf.Architecture != "amd64" || len(cf.RootFS.DiffIDs) != 2 {
		t.Errorf("config %+v", cf)
	}

	layers, _ := im.Layers()
	type entry struct {
		hdr  *tar.Header
		data []byte
	}
	files := map[string]entry{}
	for _, l := range layers {
		if lmt, _ := l.MediaType(); lmt != types.OCILayer {
			t.Errorf("layer media type %s", lmt)
		}
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(tr)
			files[h.Name] = entry{h, b}
		}
		rc.Close()
	}
	if len(files) != 5 {
		t.Errorf("files %v", keys(files))
	}
	for _, d := range []string{"boot/", "disk/"} {
		if e, ok := files[d]; !ok || e.hdr.Typeflag != tar.TypeDir {
			t.Errorf("no directory %s", d)
		}
	}
	for _, f := range []string{KernelPath, InitrdPath, DiskPath} {
		e, ok := files[f]
		if !ok {
			t.Fatalf("no %s in the image", f)
		}
		if e.hdr.Uid != 107 || e.hdr.Gid != 107 || e.hdr.Mode&0o444 != 0o444 || e.hdr.Typeflag != tar.TypeReg {
			t.Errorf("%s: uid %d gid %d mode %o", f, e.hdr.Uid, e.hdr.Gid, e.hdr.Mode)
		}
	}
	for f, src := range map[string]string{KernelPath: "vmlinuz", InitrdPath: "initrd"} {
		want, _ := os.ReadFile(filepath.Join(dir, src))
		if !bytes.Equal(files[f].data, want) {
			t.Errorf("%s is not byte-identical to the image's %s", f, src)
		}
	}

	// The disk is a qcow2 that qemu-img reads, of the image's size, with
	// the same contents as rootfs.img.
	qcow := filepath.Join(t.TempDir(), "rootfs.qcow2")
	os.WriteFile(qcow, files[DiskPath].data, 0o644)
	out, err := exec.Command("qemu-img", "info", "--output=json", qcow).Output()
	if err != nil {
		t.Fatalf("qemu-img info: %v", err)
	}
	var info struct {
		Format      string `json:"format"`
		VirtualSize int64  `json:"virtual-size"`
	}
	json.Unmarshal(out, &info)
	if info.Format != "qcow2" || info.VirtualSize != 64<<20 {
		t.Errorf("qemu-img info: %s", out)
	}
	if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "qcow2", filepath.Join(dir, "rootfs.img"), qcow).CombinedOutput(); err != nil {
		t.Errorf("qemu-img compare: %v %s", err, out)
	}
	if len(files[DiskPath].data) > 16<<20 {
		t.Errorf("the qcow2 holds the raw image's holes: %d bytes", len(files[DiskPath].data))
	}
}

func TestPushIsReproducible(t *testing.T) {
	dir := fakeImage(t)
	reg := ocitest.Start(t)
	ref := reg.Host + "/heyvm/tiny:kubevirt"
	o := Options{Registry: ociimage.Registry{Insecure: true}}
	ctx := context.Background()
	d1, err := Push(ctx, dir, ref, o)
	if err != nil {
		t.Fatal(err)
	}
	uploads := reg.Uploads()
	d2, err := Push(ctx, dir, ref, o)
	if err != nil {
		t.Fatal(err)
	}
	if d1 != d2 {
		t.Errorf("pushing the same image twice gave %s and %s", d1, d2)
	}
	if reg.Uploads() != uploads {
		t.Errorf("the second push uploaded %d blobs", reg.Uploads()-uploads)
	}
	r, _ := name.ParseReference(ref, name.Insecure)
	desc, err := remote.Get(r)
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != d1 || desc.MediaType != types.OCIManifestSchema1 {
		t.Errorf("registry holds %s %s", desc.Digest, desc.MediaType)
	}

	if _, err := Push(ctx, dir, "registry.example/x:1", Options{Registry: ociimage.Registry{Insecure: true}}); err == nil {
		t.Error("--insecure accepted for a remote registry")
	}
	if _, err := Build(ctx, t.TempDir(), Options{}); err == nil {
		t.Error("built an image from an empty directory")
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
