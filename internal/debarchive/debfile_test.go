package debarchive

import (
	"archive/tar"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// writeDeb builds p's .deb in a temporary directory.
func writeDeb(t *testing.T, p fakePkg) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), p.Name+".deb")
	if err := os.WriteFile(path, buildDeb(t, p), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestWalkDebCompressions(t *testing.T) {
	for _, ext := range []string{".xz", ".gz", ".zst", "none"} {
		p := fakePkg{Name: "busybox-static", Version: "1:1.35.0-4", DataExt: ext, Files: map[string]string{
			"bin/busybox":                         "busybox " + ext,
			"usr/share/doc/busybox-static/README": "doc",
		}}
		path := writeDeb(t, p)
		var names []string
		var busybox string
		err := WalkDeb(path, func(name string, hdr *tar.Header, r io.Reader) error {
			names = append(names, name)
			if name == "bin/busybox" {
				b, err := io.ReadAll(r)
				busybox = string(b)
				return err
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", ext, err)
		}
		want := []string{"bin", "bin/busybox", "usr", "usr/share", "usr/share/doc", "usr/share/doc/busybox-static", "usr/share/doc/busybox-static/README"}
		if !slices.Equal(names, want) || busybox != "busybox "+ext {
			t.Errorf("%s: walked %v, bin/busybox = %q", ext, names, busybox)
		}

		ctrl, err := DebControl(path)
		if err != nil {
			t.Fatal(err)
		}
		if ctrl.Package != "busybox-static" || ctrl.Version.Epoch != 1 {
			t.Errorf("%s: control %s %s", ext, ctrl.Package, ctrl.Version)
		}
	}
}

func TestWalkDebSkipAll(t *testing.T) {
	path := writeDeb(t, fakePkg{Name: "a", Version: "1", Files: map[string]string{"a": "1", "b": "2", "c": "3"}})
	var seen []string
	err := WalkDeb(path, func(name string, _ *tar.Header, _ io.Reader) error {
		seen = append(seen, name)
		if name == "b" {
			return fs.SkipAll
		}
		return nil
	})
	if err != nil || !slices.Equal(seen, []string{"a", "b"}) {
		t.Errorf("WalkDeb = %v, saw %v", err, seen)
	}
}

func TestWalkDebNotADeb(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.deb")
	os.WriteFile(path, []byte("not an ar archive"), 0o644)
	if err := WalkDeb(path, func(string, *tar.Header, io.Reader) error { return nil }); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("WalkDeb = %v, want an error naming %s", err, path)
	}
}

func TestExtractKernel(t *testing.T) {
	var kernel fakePkg
	for _, p := range smallDistro() {
		if p.Name == "linux-image-6.1.0-9-cloud-amd64" {
			kernel = p
		}
	}
	dir := t.TempDir()
	names, err := ExtractDeb(writeDeb(t, kernel), dir, func(name string) bool {
		return strings.HasPrefix(name, "boot/vmlinuz-") || strings.HasPrefix(name, "lib/modules/")
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"boot/vmlinuz-6.1.0-9-cloud-amd64",
		"lib/modules/6.1.0-9-cloud-amd64",
		"lib/modules/6.1.0-9-cloud-amd64/build",
		"lib/modules/6.1.0-9-cloud-amd64/kernel",
		"lib/modules/6.1.0-9-cloud-amd64/kernel/fs",
		"lib/modules/6.1.0-9-cloud-amd64/kernel/fs/ext4",
		"lib/modules/6.1.0-9-cloud-amd64/kernel/fs/ext4/ext4.ko",
		"lib/modules/6.1.0-9-cloud-amd64/modules.order",
	}
	if !slices.Equal(names, want) {
		t.Errorf("extracted %v, want %v", names, want)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "boot/vmlinuz-6.1.0-9-cloud-amd64")); string(b) != "bzImage" {
		t.Errorf("vmlinuz = %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "lib/modules/6.1.0-9-cloud-amd64/kernel/fs/ext4/ext4.ko")); string(b) != "module" {
		t.Errorf("ext4.ko = %q", b)
	}
	if target, err := os.Readlink(filepath.Join(dir, "lib/modules/6.1.0-9-cloud-amd64/build")); err != nil || target != "/usr/src/linux-headers-6.1.0-9-cloud-amd64" {
		t.Errorf("build -> %q, %v", target, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "boot/config-6.1.0-9-cloud-amd64")); err == nil {
		t.Errorf("extracted a file match rejects")
	}
}

func TestExtractStaysInside(t *testing.T) {
	base := t.TempDir()
	dest := filepath.Join(base, "dest")
	outside := filepath.Join(base, "outside")
	os.Mkdir(dest, 0o755)
	os.Mkdir(outside, 0o755)
	evil := fakePkg{Name: "evil", Version: "1", Files: map[string]string{
		"lib/escape":      "symlink:../../outside",
		"lib/escape/pwn":  "written through a symlink",
		"lib/absolute":    "symlink:" + outside,
		"lib/absolute/x2": "written through an absolute symlink",
	}}
	_, err := ExtractDeb(writeDeb(t, evil), dest, func(string) bool { return true })
	if err == nil {
		t.Error("ExtractDeb followed a symlink out of its directory without an error")
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("ExtractDeb wrote %v outside its directory", entries)
	}
}
