package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/heyvm/heyvm/internal/backend"
	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/imagebuild"
	"github.com/heyvm/heyvm/internal/layout"
	"github.com/heyvm/heyvm/internal/vmbuild"
)

// recipeBuild is one build of heyvm's own recipe: the default image, or
// (with extra packages) the builder's.
type recipeBuild struct {
	store image.Store
	arch  string
	name  string // "" for the default image's name
	extra []string
	force bool
	inVM  bool // --in-vm: in a VM even where the host could build
	// auto: heyvm decided to build by itself (a first create); a VM build
	// then says what it is about to do and how long it takes.
	auto bool
}

// buildRecipe builds the image on this host (mmdebstrap) where it can, and
// in a VM of this host's backend where it cannot (macOS; Linux without
// mmdebstrap, e2fsprogs or user namespaces) or when asked.
func buildRecipe(ctx context.Context, ios IO, r recipeBuild) (*image.Image, error) {
	useVM, why := vmbuild.ChooseVM(runtime.GOOS, r.inVM, imagebuild.CheckHost(r.arch))
	if !useVM {
		prog := newBuildProgress(ios.ErrOut)
		defer prog.Done()
		return imagebuild.Build(ctx, imagebuild.Options{
			Store: r.store, Arch: r.arch, Name: r.name, Force: r.force,
			ExtraPackages: r.extra, Progress: prog, SelfExec: selfExec(assembleCmdName),
		})
	}
	// The build VM runs on this host's backend, whichever store the image
	// is for (an arm64 image for a Mac, built on Linux, runs under qemu).
	b, err := backend.Get("")
	if err != nil {
		return nil, fmt.Errorf("an image build in a VM needs a backend: %w", err)
	}
	what := "the default image"
	if len(r.extra) > 0 {
		what = "the builder image"
	}
	if r.auto {
		fmt.Fprintf(ios.ErrOut, "building %s in a VM, once (%s): about 2 minutes with hardware virtualization, 10 without\n", what, why)
	} else {
		fmt.Fprintf(ios.ErrOut, "building %s in a %s VM (%s)\n", what, b.Name(), why)
	}
	e, err := openEnv()
	if err != nil {
		return nil, err
	}
	if err := layout.EnsureDir(e.root.CacheDir()); err != nil {
		return nil, err
	}
	log, err := os.OpenFile(e.root.VMBuildLog(), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	prog := newVMBuildProgress(ios.ErrOut)
	defer prog.Done()
	im, err := vmbuild.Build(ctx, vmbuild.Options{
		Store: r.store, Backend: b, Arch: r.arch, Name: r.name, Force: r.force,
		ExtraPackages: r.extra, CacheDir: e.root.DebCacheDir(), Progress: prog, Log: log,
	})
	if errors.Is(err, vmbuild.ErrBuildVM) {
		return nil, fmt.Errorf("%w (the build VM's console: %s)", err, e.root.VMBuildLog())
	}
	return im, err
}

// vmBuildProgress is a build's stages with a download bar between them.
type vmBuildProgress struct {
	*buildProgress
	bytes   *byteProgress
	started bool
	done    int64
}

func newVMBuildProgress(w io.Writer) *vmBuildProgress {
	return &vmBuildProgress{buildProgress: newBuildProgress(w), bytes: newByteProgress(w)}
}

func (p *vmBuildProgress) Stage(n, total int, what string) {
	p.endDownload()
	p.buildProgress.Stage(n, total, what)
}

func (p *vmBuildProgress) Bytes(done, total int64) {
	if !p.started {
		p.started = true
		p.bytes.Phase("download", total)
	}
	p.bytes.Add(done - p.done)
	p.done = done
}

func (p *vmBuildProgress) Note(line string) {
	p.endDownload()
	fmt.Fprintf(p.w, "building image: %s\n", line)
}

func (p *vmBuildProgress) endDownload() {
	if p.started {
		p.bytes.Done()
		p.started = false
	}
}

func (p *vmBuildProgress) Done() {
	p.endDownload()
	p.buildProgress.Done()
}
