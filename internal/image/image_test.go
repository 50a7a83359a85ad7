package image

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heyvm/heyvm/internal/layout"
)

func TestValidateName(t *testing.T) {
	good := []string{"debian:12", "my-base", "a", "Ubuntu_24.04", "x:y:z", strings.Repeat("a", 128)}
	bad := map[string]string{
		"":                       "empty",
		"a/b":                    "'/'",
		"..":                     `".."`,
		"a..b":                   `".."`,
		"with space":             "whitespace",
		"tab\tname":              "control",
		"nl\nname":               "control",
		"del\x7f":                "control",
		strings.Repeat("a", 129): "129 bytes",
		".hidden":                "must start",
		"-flag":                  "must start",
		"ünï":                    "non-ASCII",
		"a$b":                    "contains",
	}
	for _, n := range good {
		if err := ValidateName(n); err != nil {
			t.Errorf("ValidateName(%q) = %v, want ok", n, err)
		}
	}
	for n, want := range bad {
		err := ValidateName(n)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ValidateName(%q) = %v, want error containing %q", n, err, want)
		}
	}
}

func TestNormalizeArch(t *testing.T) {
	for in, want := range map[string]string{"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64", "": NativeArch()} {
		if got, err := NormalizeArch(in); err != nil || got != want {
			t.Errorf("NormalizeArch(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := NormalizeArch("mips"); err == nil {
		t.Error("mips accepted")
	}
	if DefaultNameFor("qemu", NativeArch()) != DefaultName || DefaultNameFor("apple_virt", "arm64") != DefaultName {
		t.Error("native default name should be plain")
	}
	foreign := "arm64"
	if NativeArch() == "arm64" {
		foreign = "amd64"
	}
	if got := DefaultNameFor("qemu", foreign); got != DefaultName+"-"+foreign {
		t.Errorf("DefaultNameFor(qemu, %s) = %s", foreign, got)
	}
	if got := DefaultNameFor("apple_virt", "amd64"); got != DefaultName+"-amd64" {
		t.Errorf("DefaultNameFor(apple_virt, amd64) = %s", got)
	}
}

// fakeImage writes a minimal valid image directory.
func fakeImage(t *testing.T, s Store, name string) string {
	t.Helper()
	dir := s.Root.ImageDir(s.Backend, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	sums := map[string]string{}
	for _, f := range Files {
		p := filepath.Join(dir, f)
		if err := os.WriteFile(p, []byte("content of "+f), 0o644); err != nil {
			t.Fatal(err)
		}
		sums[f], _ = FileSHA256(p)
	}
	m := &Metadata{Name: name, Backend: s.Backend, Arch: "amd64", KernelCmdline: "console=hvc0", RootfsSize: 4 << 30,
		Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), SHA256: sums,
		Build: BuildInfo{Recipe: "test", Suite: "bookworm", Packages: []string{"a", "b"}, Duration: 42 * time.Second}}
	if err := WriteMetadata(dir, m); err != nil {
		t.Fatal(err)
	}
	return dir
}

func testStore(t *testing.T) Store {
	return Store{Root: layout.Root{Dir: t.TempDir()}, Backend: "qemu"}
}

func TestMetadataRoundTripAndVerify(t *testing.T) {
	s := testStore(t)
	dir := fakeImage(t, s, "debian:12")
	m, err := ReadMetadata(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "debian:12" || m.Arch != "amd64" || m.RootfsSize != 4<<30 || m.Build.Duration != 42*time.Second ||
		!m.Created.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) || len(m.Build.Packages) != 2 {
		t.Fatalf("round trip lost data: %+v", m)
	}
	if err := Verify(dir); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "initrd"), []byte("tampered"), 0o644)
	if err := Verify(dir); err == nil || !strings.Contains(err.Error(), "initrd") {
		t.Fatalf("Verify after tampering = %v", err)
	}
	os.WriteFile(filepath.Join(dir, layout.ImageMetadata), []byte("name: [unclosed"), 0o644)
	if _, err := ReadMetadata(dir); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt yaml: %v", err)
	}
}

func TestAliases(t *testing.T) {
	s := testStore(t)
	if _, err := s.Resolve("default"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "build-default") {
		t.Fatalf("missing default: %v", err)
	}
	// An older install's bare default/ directory serves the aliases.
	fakeImage(t, s, "default")
	for _, n := range []string{"default", "ubuntu:24.04", "debian:12"} {
		im, err := s.Resolve(n)
		if err != nil || im.Name != "default" {
			t.Fatalf("Resolve(%q) with legacy dir = %v, %v", n, im, err)
		}
	}
	// Once the canonical image exists, it wins.
	fakeImage(t, s, DefaultName)
	for _, n := range []string{"default", "ubuntu:24.04", "debian:12"} {
		im, err := s.Resolve(n)
		if err != nil || im.Name != DefaultName {
			t.Fatalf("Resolve(%q) = %v, %v", n, im, err)
		}
	}
	entries, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var canon *Entry
	for i := range entries {
		if entries[i].Name == DefaultName {
			canon = &entries[i]
		}
	}
	if canon == nil || strings.Join(canon.Aliases, ",") != "default,ubuntu:24.04" {
		t.Fatalf("aliases in list: %+v", entries)
	}
	if _, err := s.Resolve("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown image: %v", err)
	}
	if _, err := s.Resolve("../etc"); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("bad name should fail validation: %v", err)
	}
}

func TestInterruptedBuildIsNeverAnImage(t *testing.T) {
	s := testStore(t)
	// A build that died half way: staging dir with some files and even an image.yaml.
	b, err := s.BeginBuild(DefaultName)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(b.Dir, "rootfs.img"), []byte("half"), 0o644)
	os.WriteFile(filepath.Join(b.Dir, layout.ImageMetadata), []byte("name: debian:12\narch: amd64\n"), 0o644)
	b.lock.Unlock() // the process died: the kernel drops its lock

	if _, err := s.Resolve(DefaultName); !errors.Is(err, ErrNotFound) {
		t.Fatalf("half build resolved: %v", err)
	}
	if entries, _ := s.List(); len(entries) != 0 {
		t.Fatalf("half build listed: %+v", entries)
	}
	// A second build may not run while one holds the lock...
	b2, err := s.BeginBuild(DefaultName)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.BeginBuild(DefaultName); err == nil {
		t.Fatal("two builds at once")
	}
	// ...and starting it cleaned the leftover.
	if _, err := os.Stat(b.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("leftover not cleaned: %v", err)
	}
	for _, f := range Files {
		os.WriteFile(filepath.Join(b2.Dir, f), []byte(f), 0o644)
	}
	WriteMetadata(b2.Dir, &Metadata{Name: DefaultName, Arch: "amd64"})
	if err := b2.Commit(false); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Resolve("default"); err != nil {
		t.Fatalf("committed image: %v", err)
	}
	b3, _ := s.BeginBuild(DefaultName)
	if err := b3.Commit(false); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("commit over existing without force: %v", err)
	}
}

func TestRemove(t *testing.T) {
	s := testStore(t)
	fakeImage(t, s, DefaultName)
	if err := s.Remove("default"); err == nil || !strings.Contains(err.Error(), "alias") {
		t.Fatalf("removing an alias: %v", err)
	}
	if err := s.Remove("missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removing missing: %v", err)
	}
	if err := s.Remove(DefaultName); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Resolve(DefaultName); !errors.Is(err, ErrNotFound) {
		t.Fatal("still there")
	}
}
