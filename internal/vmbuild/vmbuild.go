// Package vmbuild builds heyvm's default image (and the builder image)
// inside a VM of this host's own backend, from Debian's archive, with
// nothing on the host but heyvm: no root, no mmdebstrap, no e2fsprogs, no
// Linux. A Mac gets its image this way.
//
// The host does what needs no Linux, in Go: it fetches the suite's signed
// InRelease and Packages from the mirror and verifies them against
// Debian's archive keys (internal/debarchive), resolves the recipe's
// packages as mmdebstrap's minbase variant does, downloads them (verified,
// cached by digest), takes the kernel and heyvm's initramfs from the
// kernel package, and hands everything to a build VM in its initramfs.
// The build VM (guest/build.sh, on busybox) does what needs Linux and
// root: it installs the packages into a fresh root as mmdebstrap does,
// applies heyvm's edits to it (the same list the host build applies,
// internal/imagebuild), and writes it as ext4 onto its disk, which is the
// new image's rootfs.img. The image is assembled in the store's staging
// folder and renamed into place at the end, as every build is.
package vmbuild

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/rand"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/heyvm/heyvm/internal/backend"
	"github.com/heyvm/heyvm/internal/debarchive"
	"github.com/heyvm/heyvm/internal/hostinfo"
	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/imagebuild"
	"github.com/heyvm/heyvm/internal/layout"
)

//go:embed guest/build.sh
var buildScript []byte

// Progress is what a build reports: its stages, a line of detail, and
// download bytes; Note is a line worth keeping in any log.
type Progress interface {
	imagebuild.Progress
	Bytes(done, total int64)
	Note(line string)
}

// Options say what to build.
type Options struct {
	Store      image.Store
	Backend    backend.Backend
	Arch       string // Debian architecture: amd64 or arm64
	Name       string // "" for the default image's name for Arch
	Force      bool
	Mirror     string // "" for HEYVM_DEBIAN_MIRROR, else Debian's redirector
	Suite      string
	RootfsSize int64
	// ExtraPackages are installed on top of the recipe's (the builder).
	ExtraPackages []string
	// CacheDir keeps the downloaded packages, by digest.
	CacheDir string
	// MemoryMiB and CPUs shape the build VM (0: heyvm's choice).
	MemoryMiB, CPUs int
	Progress        Progress
	Log             io.Writer // the build VM's console and backend lines
	HTTPClient      *http.Client
}

// Stages of a build, as the progress shows them: three on the host, then
// the build VM's own (guest/build.sh).
const (
	hostStages  = 3
	guestStages = 6
	// TotalStages is every stage a build reports.
	TotalStages = hostStages + guestStages + 1
)

// ErrBuildVM marks a failure inside the build VM (its console log says
// more), as against one on the host (the archive, the disk).
var ErrBuildVM = errors.New("the image build in a VM failed")

// BuildTimeout bounds the build VM's work. Under KVM or VZ it takes a
// minute or two; under TCG on two cores about ten.
var BuildTimeout = 45 * time.Minute

// Build builds the image in a VM and moves it into place atomically. With
// the image present and Force unset it does nothing and returns it.
func Build(ctx context.Context, o Options) (*image.Image, error) {
	arch, err := image.NormalizeArch(o.Arch)
	if err != nil {
		return nil, err
	}
	o.Arch = arch
	if o.Name == "" {
		o.Name = image.DefaultNameFor(o.Store.Backend, arch)
	}
	if o.Mirror == "" {
		o.Mirror = os.Getenv("HEYVM_DEBIAN_MIRROR")
	}
	if o.Mirror == "" {
		o.Mirror = imagebuild.DefaultMirror
	}
	if o.Suite == "" {
		o.Suite = image.DefaultSuite
	}
	if o.RootfsSize == 0 {
		o.RootfsSize = imagebuild.DefaultRootfsSize
	}
	if o.Progress == nil {
		o.Progress = nopProgress{}
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if !o.Force {
		if im, err := o.Store.Resolve(o.Name); err == nil {
			return im, nil
		}
	}
	start := time.Now()
	p := o.Progress

	p.Stage(1, TotalStages, "reading Debian's archive ("+o.Mirror+", "+o.Suite+", "+arch+")")
	plan, err := resolve(ctx, o)
	if err != nil {
		return nil, err
	}
	// Room for the packages, the image and the build VM's files.
	if err := hostinfo.NeedSpace(o.Store.Dir(), plan.downloadBytes()+imageSpace, "an image build in a VM (its packages and the image)"); err != nil {
		return nil, err
	}

	p.Stage(2, TotalStages, fmt.Sprintf("downloading %d packages", len(plan.all())))
	if err := layout.EnsureDir(o.CacheDir); err != nil {
		return nil, err
	}
	res, err := plan.client.Download(ctx, plan.all(), debarchive.DownloadOptions{
		CacheDir: o.CacheDir,
		Progress: func(pr debarchive.Progress) { p.Bytes(pr.Done, pr.Total) },
	})
	if err != nil {
		return nil, err
	}
	p.Note(fmt.Sprintf("packages: %d fetched (%d MB), %d from the cache", res.Fetched, res.BytesFetched>>20, res.Reused))

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
	p.Stage(3, TotalStages, "the kernel and initramfs ("+plan.kernel.Name+")")
	work, err := os.MkdirTemp(b.Dir, ".work-")
	if err != nil {
		return nil, err
	}
	kernel, err := prepareBoot(plan, o.CacheDir, b.Dir, work)
	if err != nil {
		return nil, err
	}
	buildInitrd := filepath.Join(work, "build-initrd")
	if err := writeBuildInitrd(buildInitrd, filepath.Join(b.Dir, layout.ImageInitrd), plan, kernel, o); err != nil {
		return nil, err
	}
	rootfs := filepath.Join(b.Dir, layout.ImageRootfs)
	f, err := os.OpenFile(rootfs, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	err = f.Truncate(o.RootfsSize)
	f.Close()
	if err != nil {
		return nil, err
	}

	accel, used, err := runBuildVM(ctx, o, filepath.Join(b.Dir, layout.ImageKernel), buildInitrd, rootfs, work)
	if err != nil {
		if ctx.Err() == nil {
			err = fmt.Errorf("%w: %w", ErrBuildVM, err)
		}
		return nil, err
	}
	p.Note(fmt.Sprintf("the root file system holds %d MB", used>>20))
	if err := os.RemoveAll(work); err != nil {
		return nil, err
	}
	p.Stage(TotalStages, TotalStages, "checksums")
	sums, err := image.FileSums(b.Dir)
	if err != nil {
		return nil, err
	}
	meta := &image.Metadata{
		Name:          o.Name,
		Backend:       o.Store.Backend,
		Arch:          arch,
		KernelCmdline: imagebuild.KernelCmdline,
		KernelVersion: kernel.version,
		RootfsSize:    o.RootfsSize,
		GuestFeatures: []string{image.FeatureHostLink},
		Created:       time.Now().UTC().Truncate(time.Second),
		Build: image.BuildInfo{
			Recipe:     "Debian " + o.Suite + " minbase, installed in a build VM",
			Suite:      o.Suite,
			Mirror:     o.Mirror,
			Packages:   plan.requested,
			Kernel:     plan.kernel.Name,
			Modules:    kernel.modules,
			Tool:       "heyvm images build-default --in-vm",
			RecipeHash: imagebuild.RecipeHashWith(o.ExtraPackages),
			Duration:   time.Since(start).Round(time.Second),
			BuiltIn:    fmt.Sprintf("vm (%s, %s)", o.Backend.Name(), accel),
		},
		SHA256: sums,
	}
	if err := image.WriteMetadata(b.Dir, meta); err != nil {
		return nil, err
	}
	committed = true
	if err := b.Commit(o.Force); err != nil {
		return nil, err
	}
	return o.Store.Resolve(o.Name)
}

// imageSpace is what the image takes besides its packages: its root file
// system (about 400 MB) and the build VM's initramfs, with a margin.
const imageSpace = 1024 * hostinfo.MiB

type nopProgress struct{}

func (nopProgress) Stage(int, int, string) {}
func (nopProgress) Detail(string)          {}
func (nopProgress) Bytes(int64, int64)     {}
func (nopProgress) Note(string)            {}

// prepareBoot writes the image's kernel and initramfs into dir, from the
// kernel and busybox-static packages, and returns the kernel's files.
func prepareBoot(plan *plan, cacheDir, dir, work string) (*kernelFiles, error) {
	k, err := readKernel(debarchive.CachePath(cacheDir, plan.kernel), work)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, layout.ImageKernel), k.vmlinuz, 0o644); err != nil {
		return nil, err
	}
	k.vmlinuz = nil
	busybox, err := readFile(debarchive.CachePath(cacheDir, plan.busybox), "bin/busybox")
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, layout.ImageInitrd), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	if err := imagebuild.WriteInitramfs(f, busybox, imagebuild.GuestFile("init"), k.modDir, k.version, k.modules); err != nil {
		f.Close()
		return nil, err
	}
	return k, f.Close()
}

// readFile reads one file of a package's data.
func readFile(deb, name string) ([]byte, error) {
	var out []byte
	err := debarchive.WalkDeb(deb, func(n string, _ *tar.Header, r io.Reader) error {
		if n != name {
			return nil
		}
		b, err := io.ReadAll(r)
		out = b
		return err
	})
	if err == nil && out == nil {
		err = fmt.Errorf("%s holds no %s", filepath.Base(deb), name)
	}
	return out, err
}

// runBuildVM boots the build VM and follows its console until it powers
// off; it returns the accelerator and the root's size.
func runBuildVM(ctx context.Context, o Options, kernel, initrd, rootfs, work string) (accel string, used int64, err error) {
	cpus := o.CPUs
	if cpus == 0 {
		cpus = min(runtime.NumCPU(), 4)
	}
	mem := o.MemoryMiB
	if mem == 0 {
		mem = DefaultMemoryMiB(len(o.ExtraPackages) > 0)
	}
	ctx, cancel := context.WithTimeout(ctx, BuildTimeout)
	defer cancel()
	spec := backend.Spec{
		Name: "heyvm-imagebuild", Arch: o.Arch, CPUs: cpus, MemoryMiB: mem,
		Kernel: kernel, Initrd: initrd, Cmdline: "console=hvc0 panic=-1 quiet",
		Disk: rootfs, DiskFormat: "raw",
		MAC: randomMAC(), MachineIdentifier: filepath.Join(work, "machine-identifier"), RunDir: work,
		GuestHostLink: true, Log: o.Log,
	}
	m, err := o.Backend.Start(ctx, spec)
	if err != nil {
		return "", 0, fmt.Errorf("start the build VM: %w", err)
	}
	defer func() {
		m.Kill()
		<-m.Done()
	}()
	accel = m.Accelerator()
	var tail []string
	result := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(m.Console())
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			fmt.Fprintln(o.Log, line)
			switch {
			case strings.HasPrefix(line, "HEYVM-BUILD-STEP "):
				f := strings.SplitN(strings.TrimPrefix(line, "HEYVM-BUILD-STEP "), " ", 3)
				if len(f) == 3 {
					n, _ := strconv.Atoi(f[0])
					o.Progress.Stage(hostStages+n, TotalStages, f[2])
				}
			case strings.HasPrefix(line, "HEYVM-BUILD-DONE "):
				used, _ = strconv.ParseInt(strings.TrimSpace(strings.TrimPrefix(line, "HEYVM-BUILD-DONE ")), 10, 64)
				result <- nil
				return
			case strings.HasPrefix(line, "HEYVM-BUILD-FAILED "):
				result <- fmt.Errorf("the build VM failed: %s", strings.TrimPrefix(line, "HEYVM-BUILD-FAILED "))
				return
			default:
				if l := strings.TrimSpace(line); l != "" {
					o.Progress.Detail(l)
					tail = append(tail, l)
					if len(tail) > 8 {
						tail = tail[1:]
					}
				}
			}
		}
		result <- fmt.Errorf("the build VM stopped before it finished; its last console lines: %s", strings.Join(tail, " | "))
	}()
	select {
	case err = <-result:
	case <-m.Done():
		select {
		case err = <-result:
		case <-time.After(2 * time.Second):
			err = fmt.Errorf("the build VM stopped before it finished (%v); its last console lines: %s", m.Err(), strings.Join(tail, " | "))
		}
	case <-ctx.Done():
		err = ctx.Err()
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("the build VM did not finish within %s; its last console lines: %s", BuildTimeout, strings.Join(tail, " | "))
		}
	}
	if err != nil {
		return accel, 0, err
	}
	// It powers itself off once the disk is written and synced.
	select {
	case <-m.Done():
	case <-time.After(30 * time.Second):
	}
	return accel, used, nil
}

// DefaultMemoryMiB is the build VM's memory: the root and its ext4 image
// are both built in it.
func DefaultMemoryMiB(builder bool) int {
	if builder {
		return 4096
	}
	return 3072
}

func randomMAC() string {
	var b [6]byte
	rand.Read(b[:])
	b[0] = (b[0] | 0x02) &^ 0x01
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4], b[5])
}
