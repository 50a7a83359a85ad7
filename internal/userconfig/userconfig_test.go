package userconfig

import (
	"os"
	"strings"
	"testing"

	"github.com/heyvm/heyvm/internal/layout"
)

func TestLoad(t *testing.T) {
	root := layout.Root{Dir: t.TempDir()}
	c, err := Load(root)
	if err != nil || c.DefaultRef("qemu") != "" {
		t.Fatalf("missing file: %+v %v", c, err)
	}
	os.WriteFile(root.ConfigFile(), nil, 0o600)
	if _, err := Load(root); err != nil {
		t.Fatalf("empty file: %v", err)
	}
	os.WriteFile(root.ConfigFile(), []byte("default_image_ref:\n  qemu: 127.0.0.1:5000/heyvm/debian:12\ninsecure_registries: [\"127.0.0.1:5000\"]\n"), 0o600)
	c, err = Load(root)
	if err != nil || c.DefaultRef("qemu") != "127.0.0.1:5000/heyvm/debian:12" || c.DefaultRef("apple_virt") != "" || !c.Insecure("127.0.0.1:5000") || c.Insecure("ghcr.io") {
		t.Fatalf("config: %+v %v", c, err)
	}
	t.Setenv(EnvDefaultImageRef, "ghcr.io/x/y:1")
	if c.DefaultRef("apple_virt") != "ghcr.io/x/y:1" {
		t.Fatal("env override ignored")
	}
	os.WriteFile(root.ConfigFile(), []byte("default_image_refs: x\n"), 0o600)
	if _, err := Load(root); err == nil || !strings.Contains(err.Error(), "config.yaml") {
		t.Fatalf("unknown key: %v", err)
	}
}
