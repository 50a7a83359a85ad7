package builder

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

const multiStage = `# syntax=docker/dockerfile:1
FROM default AS base
RUN echo hi \
  FROM not-an-instruction
from --platform=linux/amd64 127.0.0.1:5000/team/base:1 as Build
COPY --from=base /x /y
FROM base
FROM build AS final
  FROM debian:12-slim
`

func TestFroms(t *testing.T) {
	got := Froms([]byte(multiStage))
	want := []From{
		{Line: 2, Ref: "default", Stage: "base"},
		{Line: 5, Ref: "127.0.0.1:5000/team/base:1", Stage: "build"},
		{Line: 7, Ref: "base", IsStage: true},
		{Line: 8, Ref: "build", Stage: "final", IsStage: true},
		{Line: 9, Ref: "debian:12-slim"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Froms:\n got %+v\nwant %+v", got, want)
	}
}

func TestRewriteFromsKeepsLines(t *testing.T) {
	out, err := RewriteFroms([]byte(multiStage), map[int]string{2: "heyvm-image/debian-12:abc", 5: "10.0.2.2:5000/team/base:1", 9: "x"})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(out), "\n")
	if len(lines) != len(strings.Split(multiStage, "\n")) {
		t.Fatalf("line count changed:\n%s", out)
	}
	for i, want := range map[int]string{1: "FROM heyvm-image/debian-12:abc AS base", 4: "from --platform=linux/amd64 10.0.2.2:5000/team/base:1 as Build", 8: "  FROM x", 6: "FROM base"} {
		if lines[i] != want {
			t.Errorf("line %d = %q, want %q", i+1, lines[i], want)
		}
	}
}

func TestLoopbackRegistry(t *testing.T) {
	for ref, want := range map[string]string{
		"127.0.0.1:5000/a/b:1":  "127.0.0.1:5000",
		"localhost:5000/a":      "localhost:5000",
		"[::1]:5000/a":          "[::1]:5000",
		"ghcr.io/acme/x:1":      "",
		"debian:12":             "",
		"10.0.2.2:5000/a":       "",
		"127.0.0.1.nip.io:80/a": "",
	} {
		got, ok := LoopbackRegistry(ref)
		if got != want || ok != (want != "") {
			t.Errorf("LoopbackRegistry(%q) = %q, %v; want %q", ref, got, ok, want)
		}
	}
	if g := GuestRegistry("127.0.0.1:5000", "10.0.2.2"); g != "10.0.2.2:5000" {
		t.Errorf("GuestRegistry = %q", g)
	}
	if g := GuestRegistry("[::1]:5000", "10.0.2.2"); g != "10.0.2.2:5000" {
		t.Errorf("GuestRegistry v6 = %q", g)
	}
	if r := RewriteRegistry("localhost:5000/a/b:1", "10.0.2.2:5000"); r != "10.0.2.2:5000/a/b:1" {
		t.Errorf("RewriteRegistry = %q", r)
	}
}

func TestParseFacts(t *testing.T) {
	f := ParseFacts("init=injected\nkernel=default\nkver=6.1.0-1-cloud-amd64\nwarm=yes\ndone\n")
	if f["init"] != "injected" || f["kver"] != "6.1.0-1-cloud-amd64" || f["done"] != "yes" {
		t.Fatalf("facts %v", f)
	}
	if ParseFacts("init=x\n")["done"] == "yes" {
		t.Fatal("unfinished facts read as done")
	}
}

func TestContextTarHonoursDockerignore(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"Dockerfile": "FROM default\n", "app/main.go": "package main\n", "app/main_test.go": "x",
		"node_modules/big/index.js": "x", "secret.env": "TOKEN=1", "keep.env": "A=1",
		".dockerignore": "node_modules\n*.env\n!keep.env\n**/*_test.go\n",
	} {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	os.Symlink("app/main.go", filepath.Join(dir, "link"))
	var buf bytes.Buffer
	if err := ContextTar(dir, []byte("FROM x\n"), &buf); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&buf)
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s owned by %d:%d, want root", h.Name, h.Uid, h.Gid)
		}
		if h.Name == "context/link" && h.Linkname != "app/main.go" {
			t.Errorf("symlink target %q", h.Linkname)
		}
		if h.Name == "context/app/main.go" && h.Mode&0o777 != 0o640 {
			t.Errorf("mode %o, want 640", h.Mode)
		}
		names = append(names, strings.TrimPrefix(h.Name, "context/"))
	}
	sort.Strings(names)
	// The context's own Dockerfile, and the one heyvm sends after it.
	want := []string{".dockerignore", "Dockerfile", "Dockerfile", "app/", "app/main.go", "keep.env", "link"}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("context holds %v, want %v", names, want)
	}
}

func TestErrorsNameTheFix(t *testing.T) {
	err := buildError("/src/Dockerfile", []string{
		"#1 [internal] load build definition from Dockerfile",
		"failed to solve with frontend dockerfile.v0: failed to create LLB definition: dockerfile parse error line 3: unknown instruction: BOGUS",
	}, errors.New("exit status 1"))
	if !strings.Contains(err.Error(), "line 3") || !strings.Contains(err.Error(), "no image was made") {
		t.Errorf("build error %q", err)
	}
	err = convertError([]string{"HEYVM-STEP x", "HEYVM-MISSING an SSH server (/usr/sbin/sshd): add RUN apt-get install -y openssh-server"}, 4096, errors.New("exit status 3"))
	var me *MissingError
	if !errors.As(err, &me) || len(me.Missing) != 1 || !strings.Contains(err.Error(), "openssh-server") {
		t.Errorf("missing error %v", err)
	}
	err = convertError([]string{"HEYVM-TOO-SMALL 900"}, 512, errors.New("exit status 4"))
	if !strings.Contains(err.Error(), "--size-mb 1253") {
		t.Errorf("too-small error %v", err)
	}
}

func TestPulledTag(t *testing.T) {
	for ref, want := range map[string]string{
		"10.0.2.2:5000/team/NoInit:1": "heyvm-pulled/10-0-2-2-5000/team/noinit:1",
		"10.0.2.2:5000/base":          "heyvm-pulled/10-0-2-2-5000/base:latest",
	} {
		if got := PulledTag(ref); got != want {
			t.Errorf("PulledTag(%q) = %q, want %q", ref, got, want)
		}
	}
}
