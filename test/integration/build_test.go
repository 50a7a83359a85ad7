package integration

import (
	"compress/gzip"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/imagebuild"
	"github.com/heyvm/heyvm/internal/ociimage/ocitest"
)

// The build tests share one HEYO_HOME, so one builder VM (and its step
// cache) serves them all, as it would a user. Its builder image lives in
// the image cache, like the default image.
var (
	buildOnce sync.Once
	buildEnv  []string
	buildErr  error
)

func buildHome(t *testing.T) []string {
	t.Helper()
	needVM(t)
	buildOnce.Do(func() {
		buildEnv = newHome(sharedDir)
		buildErr = ensureBuilderImageInVM()
	})
	if buildErr != nil {
		t.Fatalf("the builder image: %v", buildErr)
	}
	return buildEnv
}

// ensureBuilderImageInVM makes the cached builder image the way a Mac
// gets it: built in a VM from Debian's archive (images build-default
// --builder --in-vm), so every build test runs Dockerfile builds in a
// builder VM of that image. It is remade when the recipe changed or when
// the cached one was built on the host.
func ensureBuilderImageInVM() error {
	dir := filepath.Join(cacheHome, "images", "qemu", "heyvm-builder")
	m, err := image.ReadMetadata(dir)
	if err == nil && m.Build.RecipeHash == imagebuild.RecipeHashWith(imagebuild.BuilderPackages) && strings.HasPrefix(m.Build.BuiltIn, "vm ") {
		return nil
	}
	start := time.Now()
	fmt.Println("integration: building the builder image in a VM (images build-default --builder --in-vm)")
	out, errOut, code := runWithin(30*time.Minute, append(os.Environ(), "HEYO_HOME="+cacheHome), "", "images", "build-default", "--builder", "--in-vm", "--force")
	if code != 0 {
		return fmt.Errorf("images build-default --builder --in-vm: exit %d\n%s\n%s", code, out, errOut)
	}
	fmt.Printf("integration: the builder image was built in a VM in %s\n", time.Since(start).Round(time.Second))
	return nil
}

// build runs `heyvm images build` (which may first make the builder
// image and VM: minutes under TCG) and returns stdout, stderr and the
// exit code.
func build(env []string, args ...string) (string, string, int) {
	return runWithin(25*time.Minute, env, "", append([]string{"images", "build"}, args...)...)
}

// removesImages removes the test's images when it ends: test homes share
// the cached image store.
func removesImages(t *testing.T, env []string, names ...string) {
	t.Cleanup(func() {
		for _, n := range names {
			runIn(env, "", "images", "rm", "--force", n)
		}
	})
}

func mustBuild(t *testing.T, env []string, args ...string) string {
	t.Helper()
	out, errOut, code := build(env, args...)
	if code != 0 {
		t.Fatalf("images build %s: exit %d\n%s\n%s", strings.Join(args, " "), code, out, errOut)
	}
	return errOut
}

// writeFiles writes a build context.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for n, body := range files {
		p := filepath.Join(dir, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

type inspectJSON struct {
	SHA256     map[string]string     `json:"sha256"`
	ColdOnly   bool                  `json:"cold_only"`
	Dockerfile *image.DockerfileInfo `json:"dockerfile"`
	KernelVer  string                `json:"kernel_version"`
	Features   []string              `json:"guest_features"`
}

func inspectImage(t *testing.T, env []string, name string) inspectJSON {
	t.Helper()
	var m inspectJSON
	if err := json.Unmarshal([]byte(must(t, env, "images", "inspect", "--json", name)), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// Two first builds at once (no builder VM yet): the second waits for the
// first to make the builder, and both succeed. It runs first of the build
// tests, so the builder it makes serves the others.
func TestImagesBuildTwoFirstBuilds(t *testing.T) {
	env := buildHome(t)
	if out := must(t, env, "list", "--all"); strings.Contains(out, "heyvm-builder-") {
		must(t, env, "images", "prune") // another test ran first: start without a builder
	}
	removesImages(t, env, "first-a", "first-b")
	var wg sync.WaitGroup
	results := make([]string, 2)
	for i, n := range []string{"first-a", "first-b"} {
		dir := t.TempDir()
		writeFiles(t, dir, map[string]string{"Dockerfile": "FROM default\nRUN echo " + n + " > /etc/which\n"})
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, errOut, code := build(env, "--file", filepath.Join(dir, "Dockerfile"), "--name", n, "--size-mb", "2048")
			if code != 0 {
				results[i] = "exit " + strings.TrimSpace(out+"\n"+errOut)
			}
		}()
	}
	wg.Wait()
	for i, r := range results {
		if r != "" {
			t.Errorf("build %d of two at once: %s", i, r)
		}
	}
	if n := strings.Count(must(t, env, "list", "--all"), "heyvm-builder-"); n != 1 {
		t.Errorf("%d builder VMs after two first builds", n)
	}
	// The builder VM that ran them is of the builder image built in a VM
	// from Debian's archive, as a Mac makes it.
	var meta struct {
		Build struct {
			BuiltIn string `json:"built_in"`
		} `json:"build"`
	}
	if err := json.Unmarshal([]byte(must(t, env, "images", "inspect", "--json", "heyvm-builder")), &meta); err != nil || !strings.HasPrefix(meta.Build.BuiltIn, "vm (qemu") {
		t.Errorf("the builder image was not built in a VM: %v %+v", err, meta)
	}
}

// An image of 100 layers (past a page of overlayfs lowerdir paths)
// converts and boots.
func TestImagesBuildManyLayers(t *testing.T) {
	env := buildHome(t)
	removesImages(t, env, "layers")
	dir := t.TempDir()
	files := map[string]string{}
	var df strings.Builder
	df.WriteString("FROM default\n")
	for i := 0; i < 100; i++ {
		n := fmt.Sprintf("f%03d", i)
		files["files/"+n] = n + "\n"
		fmt.Fprintf(&df, "COPY files/%s /opt/layers/%s\n", n, n)
	}
	files["Dockerfile"] = df.String()
	writeFiles(t, dir, files)
	mustBuild(t, env, "--file", filepath.Join(dir, "Dockerfile"), "--name", "layers", "--size-mb", "2048")
	must(t, env, "create", "--name", "lay", "--image", "layers", "--memory", "384")
	if out := must(t, env, "exec", "lay", "--", "sh", "-c", "ls /opt/layers | wc -l; cat /opt/layers/f000 /opt/layers/f099"); out != "100\nf000\nf099\n" {
		t.Errorf("the 100-layer image's files: %q", out)
	}
	must(t, env, "rm", "--force", "--yes", "lay")
}

func TestImagesBuildFromDefault(t *testing.T) {
	env := buildHome(t)
	removesImages(t, env, "built")
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"Dockerfile": `FROM default AS base
ARG GREETING=hello
ENV APP_HOME=/srv/app
WORKDIR /srv/app
RUN useradd -m -s /bin/bash alice && echo "$GREETING from $APP_HOME" > note.txt
COPY --chown=alice:alice app/ ./app/
USER alice
RUN whoami > /home/alice/who && pwd > /home/alice/where
USER root
FROM base
COPY --from=base /srv/app/note.txt /opt/note-copied.txt
RUN echo "stage two" > /opt/stage2
EXPOSE 8080/tcp
LABEL org.heyvm.test=yes
CMD ["/usr/bin/env"]
`,
		"app/run.sh":    "#!/bin/sh\necho run\n",
		"app/secret.tx": "must not be sent",
		".dockerignore": "app/*.tx\n",
	})
	errOut := mustBuild(t, env, "--file", filepath.Join(dir, "Dockerfile"), "--name", "built", "--build-arg", "GREETING=hi", "--size-mb", "2048")
	for _, want := range []string{"RUN useradd", "built image built"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("build output lacks %q:\n%s", want, errOut)
		}
	}
	// The builder VM is heyvm's own: hidden from list, shown by list --all.
	if l := must(t, env, "list"); strings.Contains(l, "heyvm-builder") {
		t.Errorf("list shows the builder VM:\n%s", l)
	}
	if l := must(t, env, "list", "--all"); !strings.Contains(l, "heyvm-builder-amd64") {
		t.Errorf("list --all does not show the builder VM:\n%s", l)
	}

	m := inspectImage(t, env, "built")
	d := m.Dockerfile
	if d == nil || d.Init != "heyvm" || d.Kernel != "default" || strings.Join(d.Cmd, " ") != "/usr/bin/env" ||
		strings.Join(d.Expose, " ") != "8080/tcp" || d.Labels["org.heyvm.test"] != "yes" || d.WorkingDir != "/srv/app" {
		t.Errorf("image.yaml's dockerfile record: %+v", d)
	}
	if m.ColdOnly || len(m.Features) == 0 {
		t.Errorf("an image FROM default should keep warm start and the host link: cold_only %v, features %v", m.ColdOnly, m.Features)
	}
	if text := must(t, env, "images", "inspect", "built"); !strings.Contains(text, "Expose:     8080/tcp") || !strings.Contains(text, "Label:      org.heyvm.test=yes") {
		t.Errorf("images inspect does not show EXPOSE and LABEL:\n%s", text)
	}

	must(t, env, "create", "--name", "from-built", "--image", "built", "--memory", "512")
	out := must(t, env, "exec", "from-built", "--", "bash", "-c",
		`cat /srv/app/note.txt /opt/note-copied.txt /opt/stage2 /home/alice/who /home/alice/where; stat -c '%U:%G %a' /srv/app/app/run.sh; ls /srv/app/app; id -u alice; ls /etc/ssh/ssh_host_* | wc -l; hostname`)
	want := "hi from /srv/app\nhi from /srv/app\nstage two\nalice\n/srv/app\nalice:alice 644\nrun.sh\n1000\n2\nfrom-built\n"
	if out != want {
		t.Errorf("the booted image shows:\n%s\nwant:\n%s", out, want)
	}
	must(t, env, "rm", "-f", "-y", "from-built")

	// Unchanged: every step comes from the builder's cache, and the
	// image in the store is kept as it is.
	errOut = mustBuild(t, env, "--file", filepath.Join(dir, "Dockerfile"), "--name", "built", "--build-arg", "GREETING=hi", "--size-mb", "2048")
	if strings.Count(errOut, "CACHED") < 5 || !strings.Contains(errOut, "image built is up to date") {
		t.Errorf("an unchanged rebuild did not use the step cache:\n%s", errOut)
	}
	if again := inspectImage(t, env, "built"); again.SHA256["rootfs.img"] != m.SHA256["rootfs.img"] {
		t.Errorf("an unchanged rebuild rewrote the image")
	}
}

func TestImagesBuildFailures(t *testing.T) {
	env := buildHome(t)
	removesImages(t, env, "keepme")
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"ok.Dockerfile":      "FROM default\nRUN echo first > /etc/version-marker\n",
		"nosshd.Dockerfile":  "FROM default\nRUN rm /usr/sbin/sshd\n",
		"badline.Dockerfile": "FROM default\nRUN true\nBOGUS instruction\n",
		"nocopy.Dockerfile":  "FROM default\nCOPY not-there.txt /x\n",
		"failrun.Dockerfile": "FROM default\nRUN echo second > /etc/version-marker\nRUN exit 7\n",
	})
	mustBuild(t, env, "--file", filepath.Join(dir, "ok.Dockerfile"), "--name", "keepme", "--size-mb", "2048")
	before := inspectImage(t, env, "keepme").SHA256

	for _, c := range []struct{ file, want string }{
		{"nosshd.Dockerfile", "apt-get install -y openssh-server"},
		{"badline.Dockerfile", "line 3"},
		{"nocopy.Dockerfile", "not-there.txt"},
		{"failrun.Dockerfile", "exit code: 7"},
	} {
		out, errOut, code := build(env, "--file", filepath.Join(dir, c.file), "--name", "keepme", "--size-mb", "2048")
		if code == 0 {
			t.Errorf("%s built: %s", c.file, out)
			continue
		}
		last := errOut[strings.LastIndex(errOut, "heyvm: "):]
		if !strings.Contains(last, c.want) {
			t.Errorf("%s: error %q does not contain %q", c.file, last, c.want)
		}
	}
	if after := inspectImage(t, env, "keepme").SHA256; after["rootfs.img"] != before["rootfs.img"] {
		t.Errorf("a failed build replaced the image of the same name")
	}
	if l := must(t, env, "images", "list"); strings.Contains(l, ".dockerbuild") {
		t.Errorf("a failed build left a staging folder in the list:\n%s", l)
	}
	fails(t, env, "--size-mb 10 is out of range", "images", "build", "--file", filepath.Join(dir, "ok.Dockerfile"), "--name", "x", "--size-mb", "10")
}

// pushNoInitBase pushes the default image's files without heyvm's init,
// busybox and kernel modules (a root like debian:12-slim plus sshd) to a
// registry on this host's loopback, as REG/team/noinit:1. The files come
// from the cached image's rootfs.img, mounted read-only here.
func pushNoInitBase(t *testing.T, reg *ocitest.Registry) {
	t.Helper()
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop,ro,noload", filepath.Join(defaultImageDir(), "rootfs.img"), mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount the default image's root: %v %s", err, out)
	}
	defer exec.Command("umount", mnt).Run()
	layerTar := filepath.Join(t.TempDir(), "root.tar")
	if out, err := exec.Command("tar", "-C", mnt, "--one-file-system", "--numeric-owner", "-cf", layerTar,
		"--exclude=./etc/heyvm", "--exclude=./etc/inittab", "--exclude=./etc/fstab", "--exclude=./sbin/init", "--exclude=./usr/sbin/init",
		"--exclude=./usr/bin/busybox", "--exclude=./usr/lib/modules", "--exclude=./lost+found",
		"--exclude=./root/.ssh", "--exclude=./etc/ssh/ssh_host_*", "--exclude=./tmp/*", "--exclude=./var/log/*", ".").CombinedOutput(); err != nil {
		t.Fatalf("tar the default image's files: %v %s", err, out)
	}
	layer, err := tarball.LayerFromFile(layerTar, tarball.WithCompressionLevel(gzip.BestSpeed))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf.OS, cf.Architecture = "linux", "amd64"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(reg.Host+"/team/noinit:1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
}

// Images FROM a base in a registry on the host's loopback (served by the
// test, pulled once by the builder for all of them): one with no init at
// all (heyvm's is injected, as for debian:12-slim), and roots with an init
// of their own that must boot: systemd (as Debian and Ubuntu bases with
// systemd-sysv have it, with and without the user's own autologin
// console) and sysvinit, without --host-loopback, with what the conversion
// adds recorded and shown. It is also the test that reaches the Debian
// archive, by apt-get in a RUN.
func TestImagesBuildFromRegistry(t *testing.T) {
	env := buildHome(t)
	removesImages(t, env, "from-reg", "sysd", "sysd-plain", "sysv")
	reg := ocitest.Start(t)
	pushNoInitBase(t, reg)
	from := "FROM " + reg.Host + "/team/noinit:1\n"

	// Plain HTTP to a loopback registry only with --insecure-registry.
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"Dockerfile": from + "RUN echo from-the-registry > /etc/marker\n"})
	_, errOut, code := build(env, "--file", filepath.Join(dir, "Dockerfile"), "--name", "from-reg", "--size-mb", "2048")
	if code == 0 || !strings.Contains(errOut, "HTTP") {
		t.Errorf("a plain-HTTP registry without --insecure-registry: exit %d\n%s", code, errOut)
	}
	mustBuild(t, env, "--file", filepath.Join(dir, "Dockerfile"), "--name", "from-reg", "--size-mb", "2048", "--insecure-registry")
	if d := inspectImage(t, env, "from-reg").Dockerfile; d == nil || d.Init != "injected" {
		t.Errorf("a root with no init should get heyvm's: %+v", d)
	}

	// One apt step for the three with an init of their own (BuildKit
	// keeps it): systemd-sysv as on a Debian or Ubuntu base, and
	// sysvinit-core put in its place the way Debian documents the switch.
	apt := from + "RUN apt-get update && apt-get install -y --no-install-recommends systemd-sysv openssh-server\n"
	const noLists = "rm -rf /var/lib/apt/lists/*"
	builds := []struct{ name, dockerfile, comm string }{
		{"sysd", apt + "RUN " + noLists + ` && systemctl enable ssh && mkdir -p /etc/systemd/system/serial-getty@hvc0.service.d && \
    printf '[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root --noclear %%I linux\n' \
    > /etc/systemd/system/serial-getty@hvc0.service.d/autologin.conf
`, "systemd"},
		{"sysd-plain", apt + "RUN " + noLists + "\n", "systemd"},
		{"sysv", apt + "RUN apt-get install -y --no-install-recommends sysvinit-core && " + noLists + "\n", "init"},
	}
	for _, b := range builds {
		dir := t.TempDir()
		writeFiles(t, dir, map[string]string{"Dockerfile": b.dockerfile})
		mustBuild(t, env, "--file", filepath.Join(dir, "Dockerfile"), "--name", b.name, "--size-mb", "2048", "--insecure-registry")
		m := inspectImage(t, env, b.name)
		if m.Dockerfile == nil || len(m.Dockerfile.Added) == 0 {
			t.Fatalf("%s: image.yaml does not record what was added: %+v", b.name, m.Dockerfile)
		}
		if text := must(t, env, "images", "inspect", b.name); !strings.Contains(text, "Added:") || !strings.Contains(text, "Warm start: no: it runs its own init") {
			t.Errorf("%s: images inspect:\n%s", b.name, text)
		}
		fails(t, env, "it runs its own init", "images", "warm", b.name)
	}

	// The sandboxes boot side by side (as many at once as -parallel, the
	// cores), each a guest of one vCPU.
	t.Run("boot", func(t *testing.T) {
		t.Run("from-reg", func(t *testing.T) {
			t.Parallel()
			must(t, env, "create", "--name", "from-reg", "--image", "from-reg", "--memory", "512")
			out := must(t, env, "exec", "from-reg", "--", "sh", "-c", "cat /etc/marker; readlink /sbin/init; test -x /etc/heyvm/rc.sysinit && echo layer; test -d /lib/modules/$(uname -r) && echo modules")
			if out != "from-the-registry\n/bin/busybox\nlayer\nmodules\n" {
				t.Errorf("the image from the registry shows %q", out)
			}
			must(t, env, "rm", "-f", "-y", "from-reg")
		})
		for _, b := range builds {
			t.Run(b.name, func(t *testing.T) {
				t.Parallel()
				bootsForeignInit(t, env, b.name, b.comm)
			})
		}
	})
}

// bootsForeignInit creates a sandbox of a root with its own init, without
// --host-loopback, and checks PID 1, OpenSSH through ssh-config, systemd's
// state and a clean poweroff on stop.
func bootsForeignInit(t *testing.T, env []string, name, comm string) {
	// No --host-loopback: heyvm's host link comes up like on any image.
	must(t, env, "create", "--name", name, "--image", name, "--memory", "512")
	if out := must(t, env, "exec", name, "--", "cat", "/proc/1/comm"); out != comm+"\n" {
		t.Errorf("%s: PID 1 is %q", name, out)
	}
	cfg := filepath.Join(t.TempDir(), "config")
	os.WriteFile(cfg, []byte(must(t, env, "ssh-config", name)), 0o600)
	if out, err := exec.Command("ssh", "-F", cfg, name, "hostname").CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != name {
		t.Errorf("%s: OpenSSH through ssh-config: %v %s", name, err, out)
	}
	if comm == "systemd" {
		state := strings.TrimSpace(must(t, env, "exec", name, "--", "sh", "-c", "systemctl is-system-running --wait 2>/dev/null || true"))
		failed := must(t, env, "exec", name, "--", "systemctl", "--failed", "--no-legend", "--plain")
		if state != "running" && state != "degraded" || strings.Contains(failed, "heyvm") {
			t.Errorf("%s: systemd is %q, failed units:\n%s", name, state, failed)
		}
	}
	// stop powers it off through its own init.
	must(t, env, "stop", name)
	if ol := must(t, env, "logs", "--owner", name); !strings.Contains(ol, "guest powered off") {
		t.Errorf("%s: stop did not power the guest off cleanly:\n%s", name, ol)
	}
	must(t, env, "rm", "--yes", name)
}

// A root that brings its own kernel in /boot, which heyvm boots with an
// initramfs of that root's modules. The last of the build tests: prune
// then empties the step cache, and the builder VM goes.
func TestImagesBuildOwnKernel(t *testing.T) {
	env := buildHome(t)
	removesImages(t, env, "own-kernel")
	dir := t.TempDir()
	def, err := image.ReadMetadata(defaultImageDir())
	if err != nil {
		t.Fatal(err)
	}
	kernel, err := os.ReadFile(filepath.Join(defaultImageDir(), "vmlinuz"))
	if err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, map[string]string{
		"vmlinuz":    string(kernel),
		"Dockerfile": "FROM default\nCOPY vmlinuz /boot/vmlinuz-" + def.KernelVersion + "\n",
	})
	mustBuild(t, env, "--file", filepath.Join(dir, "Dockerfile"), "--name", "own-kernel", "--size-mb", "2048")
	m := inspectImage(t, env, "own-kernel")
	if m.Dockerfile == nil || m.Dockerfile.Kernel != "own" || m.KernelVer != def.KernelVersion {
		t.Errorf("the root's own kernel was not used: %+v kernel %s", m.Dockerfile, m.KernelVer)
	}
	must(t, env, "create", "--name", "own-kernel", "--image", "own-kernel", "--memory", "512")
	if out := must(t, env, "exec", "own-kernel", "--", "sh", "-c", "uname -r; ls /boot"); out != def.KernelVersion+"\n" {
		t.Errorf("the own-kernel image shows %q", out)
	}
	must(t, env, "rm", "-f", "-y", "own-kernel")

	// prune empties the step cache: the builder VM goes.
	must(t, env, "images", "prune")
	if l := must(t, env, "list", "--all"); strings.Contains(l, "heyvm-builder") {
		t.Errorf("prune left the builder VM:\n%s", l)
	}
}
