package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/ociimage/ocitest"
)

// freshHome is a HEYO_HOME with no images at all (not even the cached
// ones), for pulls and imports.
func freshHome(t *testing.T) []string {
	t.Helper()
	needVM(t)
	home := t.TempDir()
	env := append(os.Environ(), "HEYO_HOME="+home)
	t.Cleanup(func() { cleanupHome(env) })
	return env
}

// pushDefault pushes the cached default image to reg and returns the ref.
func pushDefault(t *testing.T, reg *ocitest.Registry, repo string) string {
	t.Helper()
	ref := reg.Host + "/" + repo
	must(t, testHome(t), "images", "push", "--insecure", image.DefaultName, ref)
	return ref
}

func TestImagesPushPullRoundTrip(t *testing.T) {
	needVM(t)
	reg := ocitest.Start(t)
	src := testHome(t)
	ref := reg.Host + "/heyvm/debian:12"
	out := must(t, src, "images", "push", "--insecure", image.DefaultName, ref)
	if !strings.Contains(out, "pushed debian:12") {
		t.Fatalf("push: %s", out)
	}
	first := reg.Uploads()
	must(t, src, "images", "push", "--insecure", image.DefaultName, ref)
	if n := reg.Uploads() - first; n != 0 {
		t.Errorf("a second push of an unchanged image started %d blob uploads, want 0", n)
	}

	dst := freshHome(t)
	out = must(t, dst, "images", "pull", "--insecure", ref)
	if !strings.Contains(out, "image debian:12 (") {
		t.Fatalf("pull: %s", out)
	}
	want, _ := image.ReadMetadata(defaultImageDir())
	pulledDir := filepath.Join(homeOf(dst), "images", "qemu", image.DefaultName)
	for _, f := range image.Files {
		got, err := image.FileSHA256(filepath.Join(pulledDir, f))
		if err != nil || got != want.SHA256[f] {
			t.Errorf("%s after push and pull: sha256 %s, want %s (%v)", f, got, want.SHA256[f], err)
		}
	}
	srcUse, gotUse := image.DiskUsage(defaultImageDir()), image.DiskUsage(pulledDir)
	t.Logf("disk usage: source %d MiB, pulled %d MiB", srcUse>>20, gotUse>>20)
	if gotUse > srcUse*11/10 {
		t.Errorf("pulled image takes %d MiB on disk, the source %d MiB: holes were filled", gotUse>>20, srcUse>>20)
	}
	out = must(t, dst, "images", "pull", "--insecure", ref)
	if !strings.Contains(out, "up to date") {
		t.Errorf("second pull: %s", out)
	}
	var rows []struct{ Name string }
	json.Unmarshal([]byte(must(t, dst, "images", "list", "--json")), &rows)
	if len(rows) != 1 || rows[0].Name != image.DefaultName {
		t.Errorf("images list after pull: %+v", rows)
	}

	// One-line errors that name the fix.
	fails(t, dst, "no image at", "images", "pull", "--insecure", reg.Host+"/heyvm/nosuch:1")
	fails(t, dst, "has no arm64 image (it has amd64)", "images", "pull", "--insecure", "--arch", "arm64", ref)
	fails(t, dst, "pass --insecure", "images", "pull", ref)
	fails(t, dst, "only for a registry on this machine", "images", "pull", "--insecure", "registry.example.com/x:1")
	reg.Private("locked/")
	fails(t, dst, "docker login", "images", "pull", "--insecure", reg.Host+"/locked/debian:12")
	fails(t, dst, "unknown command \"frobnicate\"", "images", "frobnicate")
}

// manifestLayers reads the layer digests of the pushed amd64 manifest
// straight from the registry.
func manifestLayers(t *testing.T, reg *ocitest.Registry, repo, tag string) []string {
	t.Helper()
	get := func(url, accept string) []byte {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Accept", accept)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return b
	}
	var idx struct{ Manifests []struct{ Digest string } }
	json.Unmarshal(get("http://"+reg.Host+"/v2/"+repo+"/manifests/"+tag, "application/vnd.oci.image.index.v1+json"), &idx)
	if len(idx.Manifests) == 0 {
		t.Fatal("no manifest in the index")
	}
	var m struct{ Layers []struct{ Digest string } }
	json.Unmarshal(get("http://"+reg.Host+"/v2/"+repo+"/manifests/"+idx.Manifests[0].Digest, "application/vnd.oci.image.manifest.v1+json"), &m)
	var out []string
	for _, l := range m.Layers {
		out = append(out, strings.TrimPrefix(l.Digest, "sha256:"))
	}
	return out
}

func TestImagesPullInterruptedResumesAndCorruptFails(t *testing.T) {
	needVM(t)
	reg := ocitest.Start(t)
	ref := pushDefault(t, reg, "heyvm/resume:1")
	layers := manifestLayers(t, reg, "heyvm/resume", "1")
	held := layers[0] // the kernel: small, so the others finish first
	reg.Hold(held)

	dst := freshHome(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, heyvmBin, "images", "pull", "--insecure", ref)
	cmd.Env = dst
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until every other layer is verified, then kill the pull hard.
	staging := filepath.Join(homeOf(dst), "images", "qemu")
	distinct := map[string]bool{}
	for _, l := range layers {
		distinct[l] = true
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		n := 0
		if recs, _ := filepath.Glob(filepath.Join(staging, ".pull-*", "verified")); len(recs) == 1 {
			f, _ := os.Open(recs[0])
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if !strings.HasPrefix(sc.Text(), "boot ") { // the record's boot id
					n++
				}
			}
			f.Close()
		}
		if n == len(layers)-1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pull did not verify the other layers in time (%d of %d): %s", n, len(layers)-1, errb.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	reg.Release(held)
	if out := must(t, dst, "images", "list"); strings.Contains(out, "debian") {
		t.Fatalf("an interrupted pull is listed:\n%s", out)
	}

	// A corrupted blob is rejected and nothing appears.
	reg.ResetGets()
	reg.Corrupt(held, true)
	fails(t, dst, "corrupt", "images", "pull", "--insecure", ref)
	if out := must(t, dst, "images", "list"); strings.Contains(out, "debian") {
		t.Fatalf("a corrupt pull is listed:\n%s", out)
	}
	for _, l := range layers[1:] {
		if reg.Gets(l) != 0 && l != held {
			t.Errorf("the resumed pull downloaded the verified layer %s again", l[:12])
		}
	}
	reg.Corrupt(held, false)
	must(t, dst, "images", "pull", "--insecure", ref)
	want, _ := image.ReadMetadata(defaultImageDir())
	got, err := image.FileSHA256(filepath.Join(staging, "resume:1", "rootfs.img"))
	if err != nil || got != want.SHA256["rootfs.img"] {
		t.Fatalf("resumed rootfs sha256 %s, want %s (%v)", got, want.SHA256["rootfs.img"], err)
	}
	if left, _ := filepath.Glob(filepath.Join(staging, ".pull-*")); len(left) != 0 {
		t.Errorf("staging left after a complete pull: %v", left)
	}
}

func TestImagesExportImportBoots(t *testing.T) {
	src := testHome(t)
	tarPath := filepath.Join(t.TempDir(), "debian.tar")
	must(t, src, "images", "export", image.DefaultName, tarPath)
	dst := freshHome(t)
	out := must(t, dst, "images", "import", tarPath, "--name", "imported")
	if !strings.Contains(out, "image imported (") {
		t.Fatalf("import: %s", out)
	}
	must(t, dst, "create", "--name", "imp", "--image", "imported", "--memory", "512")
	if got := strings.TrimSpace(must(t, dst, "exec", "imp", "--", "cat", "/etc/debian_version")); !strings.HasPrefix(got, "12") {
		t.Fatalf("sandbox from an imported image answered %q", got)
	}
	if out := must(t, dst, "images", "import", tarPath, "--name", "imported"); !strings.Contains(out, "up to date") {
		t.Errorf("importing the same file again: %s", out)
	}
	junk := filepath.Join(t.TempDir(), "junk.tar")
	os.WriteFile(junk, []byte("not a tar at all"), 0o600)
	fails(t, dst, "heyvm images export", "images", "import", junk)
}

func TestDefaultImagePulledOnFirstUse(t *testing.T) {
	needVM(t)
	reg := ocitest.Start(t)
	ref := pushDefault(t, reg, "heyvm/default:1")
	dst := freshHome(t)
	cfg := "default_image_ref:\n  qemu: " + ref + "\ninsecure_registries: [\"" + reg.Host + "\"]\n"
	if err := os.WriteFile(filepath.Join(homeOf(dst), "config.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runIn(dst, "", "create", "--name", "first", "--memory", "512")
	if code != 0 {
		t.Fatalf("create with a configured default ref: %d\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "fetching the default image from "+ref) || strings.Contains(errOut, "building") {
		t.Fatalf("create did not pull the default image:\n%s", errOut)
	}
	if got := strings.TrimSpace(must(t, dst, "exec", "first", "--", "echo", "pulled-ok")); got != "pulled-ok" {
		t.Fatalf("exec: %q", got)
	}
	if des, _ := filepath.Glob(filepath.Join(homeOf(dst), "images", "qemu", ".build-*")); len(des) > 0 {
		t.Error("a local build ran")
	}
}
