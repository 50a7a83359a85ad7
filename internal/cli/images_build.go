package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/heyvm/heyvm/internal/backend"
	"github.com/heyvm/heyvm/internal/builder"
	"github.com/heyvm/heyvm/internal/fsutil"
	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/imagebuild"
	"github.com/heyvm/heyvm/internal/layout"
	"github.com/heyvm/heyvm/internal/owner"
	"github.com/heyvm/heyvm/internal/sandbox"
)

// ImagesBuildOptions are the flags of `heyvm images build`.
type ImagesBuildOptions struct {
	File        string
	Name        string
	Context     string
	SizeMB      int
	Backend     string
	BackendType string // the seed's spelling of --backend
	Arch        string
	BuildArgs   []string
	NoCache     bool
	Engine      string
	// InsecureRegistry lets the builder reach registries on the host's
	// loopback over plain HTTP.
	InsecureRegistry bool
	// ContextStream "-": the Dockerfile and build context come as a tar on
	// standard input (builder.ContextTar's), from a heyvm on another
	// machine whose context this host is; Origin is where they were there,
	// for image.yaml.
	ContextStream string
	Origin        string
}

// Builder VM sizing: BuildKit and the conversion want memory, and the
// step cache lives on its disk (sparse: it takes what it holds).
const (
	builderMemoryMiB = 2048
	builderDiskMiB   = 32 << 10
	builderIdleStop  = 10 * time.Minute
	defaultSizeMB    = 4096
)

func newImagesBuildCmd(ios IO, backendName *string) *cobra.Command {
	o := &ImagesBuildOptions{}
	cmd := &cobra.Command{
		Use:   "build --file DOCKERFILE --name NAME [CONTEXT-FOLDER]",
		Short: "Build a bootable image from a Dockerfile (BuildKit runs in a builder VM: no Docker or root needed here)",
		Long: "Build a bootable image from a Dockerfile. The build context is CONTEXT-FOLDER (default: the Dockerfile's folder); " +
			"its .dockerignore is honoured. On a context elsewhere (--context NAME) the Dockerfile and the build context are sent there and built by its heyvm.",
		Args:        cobra.MaximumNArgs(1),
		Annotations: map[string]string{annLocal: "yes"},
		RunE: func(c *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			o.Backend = *backendName
			if len(args) == 1 {
				o.Context = args[0]
			}
			t, ctxName, err := contextTargetOf(c)
			if err != nil {
				if name, _ := c.Flags().GetString("context"); name != "" {
					if fi, serr := os.Stat(name); (serr == nil && fi.IsDir()) || strings.ContainsRune(name, filepath.Separator) {
						return fmt.Errorf("--context names where sandboxes run (see `heyvm context ls`); give the build context folder as the last argument: heyvm images build --file %s --name %s %s", o.File, o.Name, name)
					}
				}
				return err
			}
			if t != nil {
				return buildElsewhere(ctx, ios, t, ctxName, o)
			}
			_, err = RunImagesBuild(ctx, ios, o)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.File, "file", "f", "", "the Dockerfile (required)")
	f.StringVar(&o.Name, "name", "", "name of the image to make (required; an image of that name is replaced only once the build succeeds)")
	f.StringVar(&o.ContextStream, "context-stream", "", "")
	f.StringVar(&o.Origin, "origin", "", "")
	f.MarkHidden("context-stream")
	f.MarkHidden("origin")
	f.IntVar(&o.SizeMB, "size-mb", defaultSizeMB, "size of the image's root file system in MiB (sparse)")
	f.StringVar(&o.BackendType, "backend-type", "", "backend the image is for (same as --backend)")
	f.StringVar(&o.Arch, "arch", "", "guest architecture: amd64 or arm64 (default: the backend's)")
	f.StringArrayVar(&o.BuildArgs, "build-arg", nil, "KEY=VALUE for an ARG (repeatable)")
	f.BoolVar(&o.NoCache, "no-cache", false, "build every step again")
	f.StringVar(&o.Engine, "engine", "vm", "vm (BuildKit in heyvm's builder VM) or docker (a Docker engine on this host builds; the builder VM converts)")
	f.BoolVar(&o.InsecureRegistry, "insecure-registry", false, "let the builder pull over plain HTTP from registries on this host's loopback (FROM 127.0.0.1:PORT/...)")
	return cmd
}

// validate checks the options before anything is started.
func (o *ImagesBuildOptions) validate() error {
	if o.File == "" {
		return errors.New("--file is required: give the Dockerfile to build")
	}
	if o.Name == "" {
		return errors.New("--name is required: give the name of the image to make")
	}
	if err := image.ValidateName(o.Name); err != nil {
		return err
	}
	if image.Canonical(o.Name) == image.DefaultName {
		return fmt.Errorf("--name %s is the default image's name: choose another name", o.Name)
	}
	if strings.HasPrefix(o.Name, builderImagePrefix) {
		return fmt.Errorf("--name %s: names starting with %s are heyvm's own: choose another name", o.Name, builderImagePrefix)
	}
	if o.BackendType != "" {
		if o.Backend != "" && o.Backend != o.BackendType {
			return fmt.Errorf("--backend %s and --backend-type %s disagree: give one", o.Backend, o.BackendType)
		}
		o.Backend = o.BackendType
	}
	if o.SizeMB < 256 || o.SizeMB > 2<<20 {
		return fmt.Errorf("--size-mb %d is out of range: give 256 to 2097152 (MiB)", o.SizeMB)
	}
	if o.Engine != "vm" && o.Engine != "docker" {
		return fmt.Errorf("--engine %q: use vm (the default) or docker", o.Engine)
	}
	for _, a := range o.BuildArgs {
		if k, _, _ := strings.Cut(a, "="); k == "" {
			return fmt.Errorf("--build-arg %q is not KEY=VALUE", a)
		}
	}
	abs, err := filepath.Abs(o.File)
	if err != nil {
		return err
	}
	fi, err := os.Stat(abs)
	if err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("--file %s: no such Dockerfile", o.File)
	}
	o.File = abs
	if o.Context == "" {
		o.Context = filepath.Dir(abs)
	}
	if o.Context, err = filepath.Abs(o.Context); err != nil {
		return err
	}
	if fi, err := os.Stat(o.Context); err != nil || !fi.IsDir() {
		return fmt.Errorf("the build context %s is not a folder", o.Context)
	}
	return nil
}

// builderImagePrefix names the builder images (one per arch).
const builderImagePrefix = "heyvm-builder"

func builderImageName(hostBackend, arch string) string {
	if arch == image.BackendArch(hostBackend) {
		return builderImagePrefix
	}
	return builderImagePrefix + "-" + arch
}

// builderSandboxName is the builder VM of an arch.
func builderSandboxName(arch string) string { return "heyvm-builder-" + arch }

// RunImagesBuild builds the image and returns it.
func RunImagesBuild(ctx context.Context, ios IO, o *ImagesBuildOptions) (*image.Image, error) {
	began := time.Now()
	if o.ContextStream != "" {
		done, err := o.receiveContext(ios)
		if err != nil {
			return nil, err
		}
		defer done()
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	st, arch, err := imageStoreForArch(o.Backend, o.Arch)
	if err != nil {
		return nil, err
	}
	dockerfile, err := os.ReadFile(o.File)
	if err != nil {
		return nil, err
	}
	e, err := openEnv()
	if err != nil {
		return nil, err
	}
	hostBackend, err := backend.Get("")
	if err != nil {
		return nil, err
	}
	errOut := IO{In: ios.In, Out: ios.ErrOut, ErrOut: ios.ErrOut}

	plan, err := planBases(ctx, errOut, e, st, arch, dockerfile, o.InsecureRegistry, hostBackend.Name())
	if err != nil {
		return nil, err
	}
	// The kernel a root without its own boots: the default image's.
	def, err := resolveImage(ctx, errOut, e, st.Backend, image.DefaultNameFor(st.Backend, arch))
	if err != nil {
		return nil, fmt.Errorf("the default image (whose kernel a built root without one boots): %w", err)
	}

	var saved io.Reader
	var savedTag string
	if o.Engine == "docker" {
		r, tag, wait, err := buildWithHostDocker(ctx, ios, o, arch)
		if err != nil {
			return nil, err
		}
		defer wait()
		saved, savedTag = r, tag
	}

	sb, err := ensureBuilder(ctx, errOut, e, hostBackend, arch, plan.needLoopback)
	if err != nil {
		return nil, err
	}
	busy, err := fsutil.TryLock(sb.Files.BusyLock())
	if errors.Is(err, fsutil.ErrLocked) {
		fmt.Fprintf(ios.ErrOut, "waiting for another build in the builder VM to finish\n")
		busy, err = fsutil.LockContext(ctx, sb.Files.BusyLock())
	}
	if err != nil {
		return nil, err
	}
	defer func() {
		now := time.Now()
		os.Chtimes(sb.Files.BusyLock(), now, now) // the idle clock starts now
		busy.Unlock()
	}()
	// Under the busy lock, what a killed build of this arch left is
	// garbage: its output folder and its staging folder in the store.
	leftovers, _ := filepath.Glob(filepath.Join(e.root.BuilderXfer(arch), "*"))
	staged, _ := filepath.Glob(filepath.Join(st.Dir(), ".dockerbuild-"+arch+"-*"))
	for _, d := range append(leftovers, staged...) {
		os.RemoveAll(d)
	}
	if err := setBuilderLoopback(ctx, errOut, e, sb, plan.needLoopback); err != nil {
		return nil, err
	}
	if err := startBuilder(ctx, errOut, e, sb); err != nil {
		return nil, err
	}
	conn, err := connect(ctx, e, sb)
	if err != nil {
		return nil, fmt.Errorf("reach the builder VM: %w", err)
	}
	defer conn.Close()

	id := newBuildID()
	xfer := filepath.Join(e.root.BuilderXfer(arch), id)
	if err := os.MkdirAll(xfer, 0o700); err != nil {
		return nil, err
	}
	defer os.RemoveAll(xfer)

	convertKey := builder.ConvertKey(o.SizeMB, def.Meta.SHA256[layout.ImageRootfs], def.Meta.KernelVersion, imagebuild.OwnKernelModules)
	var current *image.Image
	unchanged := func(imageID string) bool {
		im, err := st.Resolve(o.Name)
		if err != nil || im.Meta.Dockerfile == nil || im.Meta.Dockerfile.ImageID != imageID || im.Meta.Dockerfile.ConvertKey != convertKey {
			return false
		}
		current = im
		return true
	}
	fmt.Fprintf(ios.ErrOut, "building %s in the builder VM %s\n", o.File, sb.Config.Name)
	res, err := builder.Run(ctx, conn.Client, builder.Request{
		ID: id, Tag: strings.ToLower(sandbox.SanitizeName(o.Name)), HostOut: xfer,
		Dockerfile: plan.dockerfile, DockerfileName: o.File, ContextDir: o.Context,
		BuildArgs: o.BuildArgs, NoCache: o.NoCache, SizeMB: o.SizeMB, Bases: plan.bases,
		InsecureRegistries: plan.insecure, Pulls: plan.pulls, Arch: arch,
		DefaultImageGuestDir: guestImageDir(def),
		DefaultKernelVersion: def.Meta.KernelVersion,
		InitramfsModules:     imagebuild.OwnKernelModules,
		Saved:                saved, SavedTag: savedTag, Unchanged: unchanged,
		Out: ios.ErrOut,
	})
	if err != nil {
		if _, lost := conn.outcome(-1, err); lost != err && lost != nil {
			return nil, lost
		}
		if strings.Contains(err.Error(), "HTTP response to HTTPS client") && !o.InsecureRegistry {
			return nil, fmt.Errorf("%w; for a plain-HTTP registry on this host's loopback, add --insecure-registry", err)
		}
		return nil, err
	}

	if res.Unchanged {
		fmt.Fprintf(ios.ErrOut, "image %s is up to date (the build's result is unchanged) in %s\n", current.Name, time.Since(began).Round(100*time.Millisecond))
		fmt.Fprintln(ios.Out, current.Name)
		return current, nil
	}
	staging, err := os.MkdirTemp(st.Dir(), ".dockerbuild-"+arch+"-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(staging)
	file, context := o.File, o.Context
	if o.Origin != "" {
		file, context, _ = strings.Cut(o.Origin, "\n")
	}
	info := image.DockerfileInfo{File: file, Context: context, BuildArgs: o.BuildArgs, Engine: o.Engine, Bases: plan.names,
		ImageID: res.ImageID, ConvertKey: convertKey}
	if _, err := builder.Assemble(xfer, staging, def, res, builder.Image{
		Name: o.Name, Backend: st.Backend, Arch: arch, SizeMB: o.SizeMB, Info: info, Duration: time.Since(began),
	}); err != nil {
		return nil, fmt.Errorf("assemble the image: %w", err)
	}
	if err := st.Install(ctx, staging, o.Name, true); err != nil {
		return nil, err
	}
	im, err := st.Resolve(o.Name)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(ios.ErrOut, "built image %s (%s, %s kernel) in %s: BuildKit %s, conversion %s\n",
		im.Name, arch, res.Facts["kernel"], time.Since(began).Round(time.Second), res.BuildTime.Round(time.Second), res.ConvertTime.Round(time.Second))
	fmt.Fprintln(ios.Out, im.Name)
	return im, nil
}

func newBuildID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// guestImageDir is an image's folder as the builder VM sees it.
func guestImageDir(im *image.Image) string {
	return builder.GuestImagesDir + "/" + im.Meta.Backend + "/" + filepath.Base(im.Dir)
}

// basePlan is what the Dockerfile's FROMs need from heyvm.
type basePlan struct {
	dockerfile   []byte // with heyvm images and loopback registries rewritten
	bases        []builder.Base
	names        []string // every base, as written
	insecure     []string
	pulls        []builder.Pull
	needLoopback bool
}

// planBases finds the FROMs that name heyvm images (served from the
// store) or registries on the host's loopback (reached through QEMU's
// gateway), and rewrites them for the builder's engine.
func planBases(ctx context.Context, ios IO, e env, st image.Store, arch string, dockerfile []byte, insecure bool, hostBackend string) (*basePlan, error) {
	p := &basePlan{}
	rewrite := map[int]string{}
	for _, f := range builder.Froms(dockerfile) {
		if f.IsStage {
			continue
		}
		p.names = append(p.names, f.Ref)
		if im, err := st.Resolve(f.Ref); err == nil || image.Canonical(f.Ref) == image.DefaultName {
			if err != nil {
				if im, err = resolveImage(ctx, ios, e, st.Backend, f.Ref); err != nil {
					return nil, err
				}
			}
			if im.Meta.Arch != arch {
				return nil, fmt.Errorf("line %d: FROM %s is an %s image, but this build is for %s: give --arch %s or another base", f.Line, f.Ref, im.Meta.Arch, arch, im.Meta.Arch)
			}
			tag := "heyvm-image/" + strings.ToLower(sandbox.SanitizeName(im.Name)) + ":" + im.Meta.SHA256[layout.ImageRootfs][:16]
			p.bases = append(p.bases, builder.Base{GuestDir: guestImageDir(im), Tag: tag})
			rewrite[f.Line] = tag
			continue
		}
		if reg, ok := builder.LoopbackRegistry(f.Ref); ok {
			if hostBackend != "qemu" {
				return nil, fmt.Errorf("line %d: FROM %s is on this host's loopback, which the %s builder cannot reach: push the image to a registry it can reach", f.Line, f.Ref, hostBackend)
			}
			guest := builder.GuestRegistry(reg, "10.0.2.2")
			pull := builder.RewriteRegistry(f.Ref, guest)
			rewrite[f.Line] = builder.PulledTag(pull)
			p.pulls = append(p.pulls, builder.Pull{Ref: pull, Tag: rewrite[f.Line]})
			p.needLoopback = true
			if insecure {
				p.insecure = append(p.insecure, guest)
			}
		}
	}
	var err error
	if p.dockerfile, err = builder.RewriteFroms(dockerfile, rewrite); err != nil {
		return nil, err
	}
	return p, nil
}

// ensureBuilder finds or makes the builder sandbox of arch (and its
// image), with the host's loopback open only when a build needs it.
func ensureBuilder(ctx context.Context, ios IO, e env, hb backend.Backend, arch string, loopback bool) (*sandbox.Sandbox, error) {
	// Two first builds at once: the second waits for the first to make
	// the builder, then finds it.
	lockPath := e.root.BuilderSetupLock(arch)
	if err := layout.EnsureDir(filepath.Dir(lockPath)); err != nil {
		return nil, err
	}
	setup, err := fsutil.TryLock(lockPath)
	if errors.Is(err, fsutil.ErrLocked) {
		fmt.Fprintf(ios.ErrOut, "waiting for another build to make the builder VM\n")
		setup, err = fsutil.LockContext(ctx, lockPath)
	}
	if err != nil {
		return nil, err
	}
	defer setup.Unlock()
	imName := builderImageName(hb.Name(), arch)
	hostStore := image.Store{Root: e.root, Backend: hb.Name()}
	rebuilt := false
	im, err := hostStore.Resolve(imName)
	switch {
	case err != nil || im.Meta.Build.RecipeHash != imagebuild.RecipeHashWith(imagebuild.BuilderPackages) && im.Meta.Pulled == nil:
		// Missing, or made by another heyvm version's recipe: (re)made
		// here (in a VM where the host cannot). One pulled is kept.
		if _, err := buildBuilderImage(ctx, ios, hostStore, arch, false); err != nil {
			return nil, err
		}
		rebuilt = true
	}
	name := builderSandboxName(arch)
	sb, err := e.store.ByName(name)
	if err != nil {
		return nil, err
	}
	if sb != nil && rebuilt {
		// Its disk is of the old builder image: start afresh.
		if err := runRm(ctx, IO{Out: io.Discard, ErrOut: ios.ErrOut}, e, sb.Config.ID, true, true); err != nil {
			return nil, err
		}
		sb = nil
	}
	if sb != nil {
		return sb, nil
	}
	images, err := filepath.EvalSymlinks(e.root.ImagesDir())
	if err != nil {
		return nil, err
	}
	xfer := e.root.BuilderXfer(arch)
	if err := layout.EnsureDir(xfer); err != nil {
		return nil, err
	}
	fmt.Fprintf(ios.ErrOut, "creating the builder VM %s (hidden from `heyvm list`; it stops after %s idle)\n", name, builderIdleStop)
	return createSandbox(ctx, ios, e, &CreateOptions{
		Name: name, Image: imName, Backend: hb.Name(), CPUs: min(runtime.NumCPU(), 4),
		MemoryMiB: builderMemoryMiB, DiskSizeMiB: builderDiskMiB, Cold: true, HostLoopback: loopback,
		Role: sandbox.RoleBuilder, IdleStop: builderIdleStop,
		Mounts: []backend.Mount{
			{Tag: "heyvm-images", HostPath: images, GuestPath: builder.GuestImagesDir, ReadOnly: true},
			{Tag: "heyvm-xfer", HostPath: xfer, GuestPath: builder.GuestXferDir},
		},
	})
}

// buildBuilderImage (re)makes the builder image of arch in st.
func buildBuilderImage(ctx context.Context, ios IO, st image.Store, arch string, inVM bool) (*image.Image, error) {
	name := builderImageName(st.Backend, arch)
	fmt.Fprintf(ios.ErrOut, "making the builder image %s (once per arch and heyvm version)\n", name)
	im, err := buildRecipe(ctx, ios, recipeBuild{store: st, arch: arch, name: name, extra: imagebuild.BuilderPackages, force: true, inVM: inVM, auto: true})
	if err != nil {
		return nil, fmt.Errorf("make the builder image: %w", err)
	}
	return im, nil
}

// setBuilderLoopback restarts the builder VM with the host's loopback
// opened or closed, if it is not so already. The caller holds its busy
// lock, so no build is cut short.
func setBuilderLoopback(ctx context.Context, ios IO, e env, sb *sandbox.Sandbox, loopback bool) error {
	if sb.Config.HostLoopback == loopback {
		return nil
	}
	what := "closing"
	if loopback {
		what = "opening"
	}
	fmt.Fprintf(ios.ErrOut, "restarting the builder VM, %s the host's loopback to it\n", what)
	if _, err := owner.Stop(ctx, sb, time.Minute); err != nil {
		return err
	}
	cfg, err := e.store.Update(ctx, sb.Config.ID, func(c *sandbox.Config) { c.HostLoopback = loopback })
	if err != nil {
		return err
	}
	sb.Config = cfg
	return nil
}

// startBuilder starts the builder VM if it is not running and waits
// until it answers.
func startBuilder(ctx context.Context, ios IO, e env, sb *sandbox.Sandbox) error {
	for {
		st, err := sandbox.ReadState(sb.Files)
		if err != nil {
			return err
		}
		switch st.Status {
		case sandbox.Running:
			return nil
		case sandbox.Stopped, sandbox.Suspended:
			fmt.Fprintf(ios.ErrOut, "starting the builder VM %s\n", sb.Config.Name)
			if _, err := owner.Start(ctx, e.root, sb); err != nil {
				return fmt.Errorf("start the builder VM: %w; see `heyvm logs %s`", err, sb.Config.Name)
			}
			continue
		case sandbox.Paused:
			return fmt.Errorf("the builder VM %s is paused (%s): make room on this disk, then `heyvm start %s`", sb.Config.Name, st.Owner.Paused.Reason, sb.Config.Name)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// hostDockerBuild is the `docker buildx build` command the docker engine
// runs on this host.
func hostDockerBuild(o *ImagesBuildOptions, arch, tag string) []string {
	args := []string{"buildx", "build", "--platform", "linux/" + arch, "-f", o.File, "-t", tag, "--load"}
	for _, a := range o.BuildArgs {
		args = append(args, "--build-arg", a)
	}
	if o.NoCache {
		args = append(args, "--no-cache")
	}
	return append(args, o.Context)
}

// buildWithHostDocker builds with this host's Docker engine and streams
// the result (`docker save`) for the builder VM to convert.
func buildWithHostDocker(ctx context.Context, ios IO, o *ImagesBuildOptions, arch string) (io.Reader, string, func(), error) {
	if _, err := exec.LookPath("docker"); err != nil {
		return nil, "", nil, errors.New("--engine docker: no docker command on this host: install Docker, or use --engine vm (the default), which needs no Docker here")
	}
	info := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}")
	if out, err := info.CombinedOutput(); err != nil {
		return nil, "", nil, fmt.Errorf("--engine docker: no Docker engine is reachable (%s): start one, or use --engine vm (the default), which needs no Docker here", strings.TrimSpace(lastLine(string(out))))
	}
	tag := "heyvm-build/" + newBuildID()
	build := exec.CommandContext(ctx, "docker", hostDockerBuild(o, arch, tag)...)
	build.Stdout, build.Stderr = ios.ErrOut, ios.ErrOut
	if err := build.Run(); err != nil {
		return nil, "", nil, fmt.Errorf("docker buildx build failed (no image was made): %w", err)
	}
	save := exec.CommandContext(ctx, "docker", "save", tag)
	r, err := save.StdoutPipe()
	if err != nil {
		return nil, "", nil, err
	}
	if err := save.Start(); err != nil {
		return nil, "", nil, err
	}
	return r, tag, func() {
		// Closed first: a save nobody read (the builder failed to
		// start) ends on a broken pipe instead of blocking.
		r.Close()
		save.Wait()
		exec.Command("docker", "rmi", tag).Run()
	}, nil
}

func lastLine(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return l[len(l)-1]
}

// runImagesPrune empties the builders' step cache: each builder VM, whose
// disk holds it, is removed (the next build makes a fresh one).
func runImagesPrune(ctx context.Context, ios IO) error {
	e, err := openEnv()
	if err != nil {
		return err
	}
	all, _, err := e.store.List()
	if err != nil {
		return err
	}
	n := 0
	for _, sb := range all {
		if sb.Config.Role != sandbox.RoleBuilder {
			continue
		}
		if held, _, _ := fsutil.HolderPID(sb.Files.BusyLock()); held {
			return fmt.Errorf("the builder VM %s is building an image: prune once it is done", sb.Config.Name)
		}
		if err := runRm(ctx, IO{Out: io.Discard, ErrOut: ios.ErrOut}, e, sb.Config.ID, true, true); err != nil {
			return err
		}
		fmt.Fprintf(ios.ErrOut, "removed the builder VM %s and its build cache\n", sb.Config.Name)
		n++
	}
	os.RemoveAll(filepath.Join(e.root.Dir, "builder"))
	if n == 0 {
		fmt.Fprintln(ios.ErrOut, "no build cache to remove")
	}
	return nil
}
