package layout

import (
	"os"
	"path/filepath"
	"testing"
)

func TestHomeFromEnv(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(EnvHome, filepath.Join(dir, "state"))
	r, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	if r.Dir != filepath.Join(dir, "state") {
		t.Fatalf("Dir = %s", r.Dir)
	}
	fi, err := os.Stat(r.Dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state dir mode: %v %v", fi.Mode(), err)
	}
	// A relative HEYO_HOME is made absolute.
	t.Chdir(dir)
	t.Setenv(EnvHome, "rel")
	h, err := Home()
	if err != nil || h != filepath.Join(dir, "rel") {
		t.Fatalf("relative home = %q, %v", h, err)
	}
}

func TestHomeDefault(t *testing.T) {
	t.Setenv(EnvHome, "")
	t.Setenv("HOME", "/home/someone")
	h, err := Home()
	if err != nil || h != "/home/someone/.heyo" {
		t.Fatalf("Home() = %q, %v", h, err)
	}
}

func TestEnsureDirTightens(t *testing.T) {
	d := filepath.Join(t.TempDir(), "x")
	os.Mkdir(d, 0o755)
	if err := EnsureDir(d); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(d)
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("mode %v", fi.Mode())
	}
}

func TestSandboxFiles(t *testing.T) {
	r := Root{Dir: "/h"}
	s := r.Sandbox("abc")
	if s.Config() != "/h/sandboxes/abc/sandbox.yaml" || s.OwnerState() != "/h/sandboxes/abc/owner.json" || r.ImageDir("qemu", "debian:12") != "/h/images/qemu/debian:12" {
		t.Fatal("layout changed")
	}
}
