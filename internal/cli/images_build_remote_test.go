package cli

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heyvm/heyvm/internal/builder"
)

// A build context sent to another heyvm arrives as it was, .dockerignore
// applied, with modes and symlinks kept.
func TestContextStreamRoundTrip(t *testing.T) {
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "app", "bin"), 0o755)
	os.WriteFile(filepath.Join(src, "app", "bin", "run"), []byte("#!/bin/sh\necho hi\n"), 0o755)
	os.WriteFile(filepath.Join(src, "app", "secret.key"), []byte("no"), 0o600)
	os.WriteFile(filepath.Join(src, ".dockerignore"), []byte("**/*.key\n"), 0o644)
	os.Symlink("bin/run", filepath.Join(src, "app", "start"))
	var buf bytes.Buffer
	if err := builder.ContextTar(src, []byte("FROM default\n"), &buf); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	if err := unpackContext(&buf, dst); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "Dockerfile")); string(b) != "FROM default\n" {
		t.Errorf("Dockerfile: %q", b)
	}
	fi, err := os.Stat(filepath.Join(dst, "context", "app", "bin", "run"))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("app/bin/run: %v %v", fi, err)
	}
	if l, err := os.Readlink(filepath.Join(dst, "context", "app", "start")); err != nil || l != "bin/run" {
		t.Errorf("app/start: %q %v", l, err)
	}
	if _, err := os.Stat(filepath.Join(dst, "context", "app", "secret.key")); !os.IsNotExist(err) {
		t.Errorf(".dockerignore was not applied: %v", err)
	}
}

// A crafted stream cannot write outside the folder it is unpacked in.
func TestContextStreamRefusesEscapes(t *testing.T) {
	type entry struct {
		name, link string
		typ        byte
	}
	cases := map[string][]entry{
		"dot-dot":          {{name: "context/../../evil", typ: tar.TypeReg}},
		"absolute":         {{name: "/etc/evil", typ: tar.TypeReg}},
		"outside context":  {{name: "elsewhere/file", typ: tar.TypeReg}},
		"through symlink":  {{name: "context/out", link: "/tmp", typ: tar.TypeSymlink}, {name: "context/out/evil", typ: tar.TypeReg}},
		"relative symlink": {{name: "context/up", link: "../..", typ: tar.TypeSymlink}, {name: "context/up/evil", typ: tar.TypeReg}},
		"device":           {{name: "context/dev", typ: tar.TypeChar}},
		"no Dockerfile":    {{name: "context/a", typ: tar.TypeReg}},
	}
	for name, entries := range cases {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			for _, e := range entries {
				tw.WriteHeader(&tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644})
			}
			tw.Close()
			parent := t.TempDir()
			dst := filepath.Join(parent, "in")
			os.Mkdir(dst, 0o700)
			err := unpackContext(&buf, dst)
			if err == nil {
				t.Fatal("accepted")
			}
			if _, serr := os.Stat(filepath.Join(parent, "evil")); serr == nil {
				t.Fatal("wrote outside")
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("not one line: %v", err)
			}
		})
	}
}
