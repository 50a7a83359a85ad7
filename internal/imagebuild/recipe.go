// Package imagebuild builds heyvm's default guest image from Debian
// packages alone: mmdebstrap for the root file system, Debian's cloud
// kernel, and an initramfs that heyvm writes itself. No step needs root:
// as an ordinary user, mmdebstrap runs in its unshare mode and the root
// file system is assembled inside a user namespace (see internal/userns),
// so owners and setuid bits in the image are real.
package imagebuild

import (
	"bufio"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/heyvm/heyvm/internal/fsutil"
	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/layout"
	"github.com/heyvm/heyvm/internal/userns"
)

//go:embed guest/*
var guestFiles embed.FS

// GuestFile returns one of the files the builder installs in the guest.
func GuestFile(name string) []byte {
	b, err := guestFiles.ReadFile("guest/" + name)
	if err != nil {
		panic(err) // embedded at compile time: a missing file is a build bug
	}
	return b
}

// Packages are installed on top of mmdebstrap's minbase variant: what
// heyvm needs (sshd, busybox for its init, e2fsprogs to grow the root),
// git because `heyvm wt` sandboxes work on a mounted git worktree, and
// what a developer's shell expects to find: TLS roots, curl, rsync (so
// `rsync -e ssh` into a sandbox works), a pager, an editor, ip, ps, xz,
// unzip and sudo.
var Packages = []string{
	"openssh-server", "busybox-static", "e2fsprogs", "git",
	"ca-certificates", "curl", "rsync", "less", "vim-tiny", "iproute2", "procps", "xz-utils", "unzip", "sudo",
}

// BuilderPackages turn the default recipe into the builder image's, the
// VM that runs BuildKit for `heyvm images build`: Docker's engine, kmod
// so overlay2 (not vfs) is used, and zstd for layers compressed with it.
var BuilderPackages = []string{"docker.io", "kmod", "zstd"}

// RecipeHash identifies this recipe: the guest files, the packages, the
// initramfs modules and the kernel command line. image.yaml records it,
// so an image built by an older recipe can be told apart.
func RecipeHash() string { return RecipeHashWith(nil) }

// RecipeHashWith is RecipeHash for the recipe plus extra packages.
func RecipeHashWith(extra []string) string {
	h := sha256.New()
	names, _ := fs.Glob(guestFiles, "guest/*")
	sort.Strings(names)
	for _, n := range names {
		b, _ := guestFiles.ReadFile(n)
		fmt.Fprintf(h, "%s %d\n", n, len(b))
		h.Write(b)
	}
	fmt.Fprintf(h, "%v %v %s %s", Packages, InitramfsModules, KernelCmdline, kernelHook)
	if len(extra) > 0 {
		fmt.Fprintf(h, " +%v", extra)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// DefaultMirror is Debian's own redirector; HEYVM_DEBIAN_MIRROR overrides it.
const DefaultMirror = "http://deb.debian.org/debian"

// DefaultRootfsSize is the apparent size of rootfs.img (sparse).
const DefaultRootfsSize = 4 << 30

// KernelCmdline boots from the first virtio disk with the console on
// hvc0. panic=-1 turns a guest panic into a reboot, which heyvm's
// hypervisors are told to treat as an exit, so a dead guest never hangs.
const KernelCmdline = "console=hvc0 root=/dev/vda rw quiet panic=-1"

// Progress receives what the build is doing.
type Progress interface {
	Stage(n, total int, what string)
	Detail(line string)
}

type nopProgress struct{}

func (nopProgress) Stage(int, int, string) {}
func (nopProgress) Detail(string)          {}

// Options says what to build.
type Options struct {
	Store      image.Store
	Arch       string // Debian architecture, e.g. amd64 or arm64
	Name       string // image name; empty means the default name for Arch
	Force      bool
	Mirror     string
	Suite      string
	RootfsSize int64
	// ExtraPackages are installed on top of Packages (the builder image).
	ExtraPackages []string
	Progress      Progress
	// SelfExec is how to run this binary's hidden assemble command
	// (argv before the spec file), used to assemble the root file system
	// inside a user namespace when not running as root.
	SelfExec []string
}

const totalStages = 7

// Build builds the image and moves it into place atomically. With the
// image present and Force unset it does nothing and returns the image.
func Build(ctx context.Context, o Options) (*image.Image, error) {
	arch, err := image.NormalizeArch(o.Arch)
	if err != nil {
		return nil, err
	}
	if o.Name == "" {
		o.Name = image.DefaultNameFor(o.Store.Backend, arch)
	}
	if o.Progress == nil {
		o.Progress = nopProgress{}
	}
	if o.Mirror == "" {
		o.Mirror = os.Getenv("HEYVM_DEBIAN_MIRROR")
	}
	if o.Mirror == "" {
		o.Mirror = DefaultMirror
	}
	if o.Suite == "" {
		o.Suite = image.DefaultSuite
	}
	if o.RootfsSize == 0 {
		o.RootfsSize = DefaultRootfsSize
	}
	if !o.Force {
		if im, err := o.Store.Resolve(o.Name); err == nil {
			return im, nil
		}
	}
	if err := CheckHost(arch); err != nil {
		return nil, err
	}
	start := time.Now()
	b, err := o.Store.BeginBuild(o.Name)
	if err != nil {
		return nil, err
	}
	committed := false
	defer func() {
		if !committed {
			b.Abort()
		}
	}()
	meta, err := buildInto(ctx, o, arch, b.Dir)
	if err != nil {
		return nil, err
	}
	meta.Build.Duration = time.Since(start).Round(time.Second)
	if err := image.WriteMetadata(b.Dir, meta); err != nil {
		return nil, err
	}
	committed = true
	if err := b.Commit(o.Force); err != nil {
		return nil, err
	}
	return o.Store.Resolve(o.Name)
}

// CheckHost fails early, with what to install, when the host lacks a tool.
func CheckHost(arch string) error {
	if runtime.GOOS != "linux" {
		return errors.New("images are built on Linux (mmdebstrap needs it): on a Linux machine run `heyvm images build-default --backend apple_virt`, then `heyvm images push` it to a registry (or `heyvm images export` it to a file) and pull or import it here")
	}
	var missing []string
	for _, tool := range []string{"mmdebstrap", "mkfs.ext4", "depmod", "dpkg-deb", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s: run `sudo apt-get install mmdebstrap e2fsprogs kmod dpkg tar`", strings.Join(missing, ", "))
	}
	if userns.Rootless() {
		if _, err := userns.ThisHost().Check(); err != nil {
			return err
		}
	}
	if arch != image.NativeArch() {
		return ensureBinfmt(arch)
	}
	return nil
}

// qemuUserName is qemu-user's name for a Debian architecture.
func qemuUserName(arch string) string {
	switch arch {
	case "arm64":
		return "aarch64"
	case "amd64":
		return "x86_64"
	}
	return arch
}

// ensureBinfmt checks that foreign binaries run through qemu-user-static
// (mmdebstrap runs the guest's maintainer scripts). As root it mounts
// binfmt_misc and enables the handler if installed but inactive (common in
// containers); an ordinary user is told the command.
func ensureBinfmt(arch string) error {
	q := qemuUserName(arch)
	entry := "/proc/sys/fs/binfmt_misc/qemu-" + q
	for _, need := range []string{"/usr/bin/qemu-" + q + "-static", "/usr/bin/arch-test"} {
		if _, err := os.Stat(need); err != nil {
			return fmt.Errorf("building an %s image on this host needs qemu-user-static and arch-test: run `sudo apt-get install qemu-user-static binfmt-support arch-test`", arch)
		}
	}
	if _, err := os.Stat(entry); err == nil {
		return nil
	}
	if !userns.Rootless() {
		if _, err := os.Stat("/proc/sys/fs/binfmt_misc/status"); err != nil {
			_ = exec.Command("mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc").Run()
		}
		_ = exec.Command("update-binfmts", "--enable", "qemu-"+q).Run()
	}
	if _, err := os.Stat(entry); err != nil {
		return fmt.Errorf("binfmt handler qemu-%s is not active: run `sudo update-binfmts --enable qemu-%s`", q, q)
	}
	return nil
}

// kernelHook runs in mmdebstrap's customize phase, inside its namespace,
// where the guest's apt knows the right architecture: it downloads the
// cloud kernel package (not installing it, which would run
// initramfs-tools for an initramfs heyvm does not use) into a directory
// mmdebstrap's cleanup leaves alone. $1 is the root; $arch is set in
// front of it. It is passed inline, not as a file: in unshare mode the
// hook runs as a subordinate uid that cannot read the user's 0700 dirs.
const kernelHook = `set -e
root="$1"
pkg=$(chroot "$root" apt-cache depends "linux-image-cloud-$arch" | sed -n 's/^ *Depends: \(linux-image-[^ ]*\).*/\1/p' | head -n 1)
[ -n "$pkg" ] || { echo "linux-image-cloud-$arch names no kernel package" >&2; exit 1; }
mkdir -p "$root/var/lib/heyvm-kernel"
chroot "$root" sh -c "cd /var/lib/heyvm-kernel && apt-get download -q $pkg"
`

// kernelDebDir is where kernelHook leaves the kernel package in the root.
const kernelDebDir = "var/lib/heyvm-kernel"

func buildInto(ctx context.Context, o Options, arch, out string) (*image.Metadata, error) {
	p := o.Progress
	p.Stage(1, totalStages, "mmdebstrap "+o.Suite+" ("+arch+")")
	tarPath := filepath.Join(out, "root.tar")
	mode := "root"
	if userns.Rootless() {
		mode = "unshare"
	}
	if err := run(ctx, p, "mmdebstrap", "--mode="+mode, "--variant=minbase", "--architectures="+arch,
		"--include="+strings.Join(append(append([]string(nil), Packages...), o.ExtraPackages...), ","), "--customize-hook=arch="+arch+"\n"+kernelHook,
		o.Suite, tarPath, o.Mirror); err != nil {
		return nil, err
	}

	spec := AssembleSpec{Out: out, Tar: tarPath, RootfsSize: o.RootfsSize}
	var res *AssembleResult
	var err error
	if userns.Rootless() {
		res, err = assembleInNamespace(ctx, o, spec)
	} else {
		res, err = Assemble(ctx, spec, p)
	}
	if err != nil {
		return nil, err
	}

	p.Stage(totalStages, totalStages, "checksums")
	sums, err := image.FileSums(out)
	if err != nil {
		return nil, err
	}
	return &image.Metadata{
		Name:          o.Name,
		Backend:       o.Store.Backend,
		Arch:          arch,
		KernelCmdline: KernelCmdline,
		KernelVersion: res.KernelVersion,
		RootfsSize:    o.RootfsSize,
		GuestFeatures: []string{image.FeatureHostLink},
		Created:       time.Now().UTC().Truncate(time.Second),
		Build: image.BuildInfo{
			Recipe:     "mmdebstrap --variant=minbase",
			Suite:      o.Suite,
			Mirror:     o.Mirror,
			Packages:   append(append([]string(nil), Packages...), o.ExtraPackages...),
			Kernel:     res.KernelPackage,
			Modules:    res.Modules,
			Tool:       "heyvm images build-default",
			RecipeHash: RecipeHashWith(o.ExtraPackages),
			BuiltIn:    "host (mmdebstrap)",
		},
		SHA256: sums,
	}, nil
}

// AssembleSpec is what the assemble step works on; it crosses into the
// user namespace as a JSON file.
type AssembleSpec struct {
	Out        string `json:"out"`
	Tar        string `json:"tar"`
	RootfsSize int64  `json:"rootfs_size"`
}

// AssembleResult is what the assemble step learned.
type AssembleResult struct {
	KernelPackage string   `json:"kernel_package"`
	KernelVersion string   `json:"kernel_version"`
	Modules       []string `json:"modules"`
}

// Assemble turns mmdebstrap's tar into vmlinuz, initrd and rootfs.img in
// spec.Out. It must run as root: real root, or root of a user namespace
// that maps the subordinate ids, so the tar's owners survive into the
// ext4 image.
func Assemble(ctx context.Context, spec AssembleSpec, p Progress) (*AssembleResult, error) {
	root := filepath.Join(spec.Out, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		return nil, err
	}
	defer removeStaging(root)
	p.Stage(2, totalStages, "unpack the root file system")
	// ./dev is left empty: the guest mounts devtmpfs, and mknod is not
	// allowed in a user namespace.
	if err := run(ctx, p, "tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", spec.Tar, "-C", root, "--exclude=./dev/*"); err != nil {
		return nil, err
	}
	os.Remove(spec.Tar)

	p.Stage(3, totalStages, "kernel")
	kpkg, kver, err := installKernel(ctx, p, root, filepath.Join(spec.Out, "kernel"))
	if err != nil {
		return nil, err
	}

	p.Stage(4, totalStages, "guest configuration")
	if err := configureGuest(root); err != nil {
		return nil, err
	}

	p.Stage(5, totalStages, "initramfs")
	modules, err := writeInitramfs(root, kver, filepath.Join(spec.Out, layout.ImageInitrd))
	if err != nil {
		return nil, err
	}
	if err := os.Rename(filepath.Join(root, "boot", "vmlinuz-"+kver), filepath.Join(spec.Out, layout.ImageKernel)); err != nil {
		return nil, fmt.Errorf("kernel image: %w", err)
	}
	if err := os.RemoveAll(filepath.Join(root, "boot")); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(root, "boot"), 0o755); err != nil {
		return nil, err
	}

	p.Stage(6, totalStages, "ext4 root file system")
	rootfs := filepath.Join(spec.Out, layout.ImageRootfs)
	if err := run(ctx, p, "mkfs.ext4", "-q", "-F", "-L", "heyvm-root", "-m", "0",
		"-E", "root_owner=0:0", "-d", root, rootfs, fmt.Sprintf("%dk", spec.RootfsSize/1024)); err != nil {
		return nil, err
	}
	return &AssembleResult{KernelPackage: kpkg, KernelVersion: kver, Modules: modules}, nil
}

func removeStaging(root string) {
	if err := fsutil.RemoveAllSafely(root); err != nil {
		fmt.Fprintf(os.Stderr, "heyvm: could not remove build directory %s: %v\n", root, err)
	}
}

// installKernel unpacks the cloud kernel package that kernelHook left in
// the root with dpkg-deb: modules into /lib/modules, the kernel into
// /boot; then depmod -b.
func installKernel(ctx context.Context, p Progress, root, work string) (pkg, kver string, err error) {
	debs, _ := filepath.Glob(filepath.Join(root, kernelDebDir, "linux-image-*.deb"))
	if len(debs) != 1 {
		return "", "", fmt.Errorf("the root file system holds %d kernel packages in /%s, want 1", len(debs), kernelDebDir)
	}
	base := filepath.Base(debs[0])
	pkg = base[:strings.Index(base, "_")]
	kver = strings.TrimPrefix(pkg, "linux-image-")
	if err := run(ctx, p, "dpkg-deb", "-x", debs[0], work); err != nil {
		return "", "", err
	}
	if err := os.RemoveAll(filepath.Join(root, kernelDebDir)); err != nil {
		return "", "", err
	}
	// Move the pieces in by rename so the rootfs's merged-/usr symlinks
	// (/lib -> usr/lib) are followed, never replaced.
	modDst := filepath.Join(root, "lib", "modules")
	if err := os.MkdirAll(modDst, 0o755); err != nil {
		return "", "", err
	}
	if err := os.Rename(filepath.Join(work, "lib", "modules", kver), filepath.Join(modDst, kver)); err != nil {
		return "", "", fmt.Errorf("install kernel modules: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(root, "boot"), 0o755); err != nil {
		return "", "", err
	}
	if err := os.Rename(filepath.Join(work, "boot", "vmlinuz-"+kver), filepath.Join(root, "boot", "vmlinuz-"+kver)); err != nil {
		return "", "", fmt.Errorf("install kernel: %w", err)
	}
	os.RemoveAll(work)
	if err := run(ctx, p, "depmod", "-b", root, kver); err != nil {
		return "", "", err
	}
	return pkg, kver, nil
}

// configureGuest installs heyvm's init, sshd and console setup, and strips
// what a sandbox never needs.
func configureGuest(root string) error { return ApplyEdits(root, GuestEdits()) }

func writeInitramfs(root, kver, out string) ([]string, error) {
	idx, err := readModuleIndex(filepath.Join(root, "lib", "modules", kver))
	if err != nil {
		return nil, err
	}
	mods, err := idx.ResolveModules(InitramfsModules)
	if err != nil {
		return nil, err
	}
	return mods, writeInitramfsFile(root, kver, mods, out)
}

// writeInitramfsFile writes the initramfs with root's busybox and the
// given modules of root's kernel kver.
func writeInitramfsFile(root, kver string, mods []string, out string) error {
	modDir := filepath.Join(root, "lib", "modules", kver)
	busybox, err := os.ReadFile(filepath.Join(root, "bin", "busybox"))
	if err != nil {
		return fmt.Errorf("busybox-static is missing from the root file system: %w", err)
	}
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if err := WriteInitramfs(f, busybox, GuestFile("init"), modDir, kver, mods); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// run runs a build tool in its own process group, so cancelling the build
// stops the tool and all its children, and streams its output to p.
func run(ctx context.Context, p Progress, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	cmd.Stderr = pw
	var tail []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			p.Detail(line)
			tail = append(tail, line)
			if len(tail) > 15 {
				tail = tail[1:]
			}
		}
	}()
	if err := cmd.Start(); err != nil {
		pw.Close()
		<-done
		return fmt.Errorf("%s: %w", name, err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	var err error
	select {
	case err = <-waitErr:
	case <-ctx.Done():
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-waitErr
		err = ctx.Err()
	}
	pw.Close()
	<-done
	if err != nil {
		return fmt.Errorf("%s failed: %w\n%s", name, err, strings.Join(tail, "\n"))
	}
	return nil
}
