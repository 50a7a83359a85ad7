package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/spf13/cobra"

	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/kubevirt/containerdisk"
	"github.com/heyvm/heyvm/internal/layout"
	"github.com/heyvm/heyvm/internal/ociimage"
	"github.com/heyvm/heyvm/internal/userconfig"
)

// The commands that move images between machines: push and pull through
// an OCI registry, export and import through an OCI image-layout tar.

// TransferOptions are the flags shared by push, pull, export and import.
type TransferOptions struct {
	Backend  string
	Name     string // pull/import: the name in the store
	Arch     string // pull/import: which architecture
	Insecure bool   // plain HTTP to a registry on this machine
	Force    bool   // pull/import: replace an image of the same name
	// Format is what push publishes: "heyvm" (heyvm's own artifact, for
	// pull) or "kubevirt" (a containerDisk image a KubeVirt cluster boots).
	Format string
}

func addTransferCommands(cmd *cobra.Command, ios IO, backendName *string) {
	var o TransferOptions
	opts := func() TransferOptions { o.Backend = *backendName; return o }

	push := &cobra.Command{
		Use:   "push NAME REF",
		Short: "Push an image to an OCI registry (for example ghcr.io/acme/heyvm-base:1)",
		Args:  cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			return RunImagesPush(c.Context(), ios, opts(), args[0], args[1])
		},
	}
	push.Flags().BoolVar(&o.Insecure, "insecure", false, "use plain HTTP (registries on this machine only)")
	push.Flags().StringVar(&o.Format, "format", "heyvm", "heyvm (for `images pull`) or kubevirt (a containerDisk image: /disk/rootfs.qcow2, /boot/vmlinuz, /boot/initrd)")

	pull := &cobra.Command{
		Use:   "pull REF",
		Short: "Pull an image from an OCI registry (`pull default` fetches the default image)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			_, err := RunImagesPull(c.Context(), ios, opts(), args[0])
			return err
		},
	}
	pull.Flags().BoolVar(&o.Insecure, "insecure", false, "use plain HTTP (registries on this machine only)")

	export := &cobra.Command{
		Use:   "export NAME FILE",
		Short: "Write an image to one OCI image-layout tar file (- for standard output)",
		Args:  cobra.ExactArgs(2), Annotations: map[string]string{annLocal: "yes"},
		RunE: func(c *cobra.Command, args []string) error {
			if t, ctxName, err := contextTargetOf(c); err != nil || t != nil {
				if err != nil {
					return err
				}
				return exportFrom(c.Context(), ios, t, ctxName, opts(), args[0], args[1])
			}
			return RunImagesExport(c.Context(), ios, opts(), args[0], args[1])
		},
	}

	imp := &cobra.Command{
		Use:   "import FILE",
		Short: "Add an image from a tar made by `heyvm images export` (- for standard input)",
		Args:  cobra.ExactArgs(1), Annotations: map[string]string{annLocal: "yes"},
		RunE: func(c *cobra.Command, args []string) error {
			if t, ctxName, err := contextTargetOf(c); err != nil || t != nil {
				if err != nil {
					return err
				}
				return importTo(c.Context(), ios, t, ctxName, opts(), args[0])
			}
			_, err := RunImagesImport(c.Context(), ios, opts(), args[0])
			return err
		},
	}
	for _, c := range []*cobra.Command{pull, imp} {
		c.Flags().StringVar(&o.Name, "name", "", "name of the image in the store")
		c.Flags().StringVar(&o.Arch, "arch", "", "architecture to take: amd64 or arm64 (default: the backend's)")
		c.Flags().BoolVar(&o.Force, "force", false, "replace an image of the same name")
	}
	cmd.AddCommand(push, pull, export, imp)
}

// registryFor applies --insecure and config.yaml's insecure_registries.
func registryFor(st image.Store, o TransferOptions, ref string) ociimage.Registry {
	r := ociimage.Registry{Insecure: o.Insecure}
	if cfg, err := userconfig.Load(st.Root); err == nil {
		if p, err := name.ParseReference(ref); err == nil && cfg.Insecure(p.Context().RegistryStr()) {
			r.Insecure = true
		}
	}
	return r
}

// storeImage finds the store of o.Backend and an image in it.
func storeImage(o TransferOptions, imageName string) (image.Store, *image.Image, error) {
	st, err := imageStore(o.Backend)
	if err != nil {
		return st, nil, err
	}
	im, err := st.Resolve(imageName)
	return st, im, err
}

// pack packs an image as an OCI artifact whose compressed layers live in
// a scratch directory; done removes them.
func pack(ctx context.Context, st image.Store, im *image.Image, what string, po ociimage.PackOptions) (a *ociimage.Artifact, done func(), err error) {
	if po.WorkDir, err = workDir(st, what); err != nil {
		return nil, nil, err
	}
	a, err = ociimage.Pack(ctx, im, po)
	if err != nil {
		os.RemoveAll(po.WorkDir)
		return nil, nil, err
	}
	return a, func() { a.Close(); os.RemoveAll(po.WorkDir) }, nil
}

// RunImagesPush packs an image and pushes it to ref.
func RunImagesPush(ctx context.Context, ios IO, o TransferOptions, imageName, ref string) error {
	st, im, err := storeImage(o, imageName)
	if err != nil {
		return err
	}
	reg := registryFor(st, o, ref)
	if _, err := reg.ParseRef(ref); err != nil {
		return err
	}
	switch o.Format {
	case "", "heyvm":
	case "kubevirt":
		digest, err := containerdisk.Push(ctx, im.Dir, ref, containerdisk.Options{Registry: reg})
		if err != nil {
			return fmt.Errorf("push %s: %w", imageName, err)
		}
		fmt.Fprintf(ios.Out, "pushed %s (%s) as a KubeVirt containerDisk image to %s@%s\n", im.Name, im.Meta.Arch, ref, digest)
		return nil
	default:
		return fmt.Errorf("--format %q: use heyvm or kubevirt", o.Format)
	}
	prog := newByteProgress(ios.Out)
	a, done, err := pack(ctx, st, im, "push", ociimage.PackOptions{CacheFile: st.Root.PushCache(st.Backend, im.Name), Progress: prog})
	if err != nil {
		return err
	}
	defer done()
	digest, err := reg.Push(ctx, a, ref, prog)
	if err != nil {
		return fmt.Errorf("push %s: %w", imageName, err)
	}
	fmt.Fprintf(ios.Out, "pushed %s (%s) to %s@%s\n", im.Name, im.Meta.Arch, ref, digest)
	return nil
}

// workDir is a fresh scratch directory on the store's file system (the
// compressed layers can be large; /tmp may be a small tmpfs).
func workDir(st image.Store, what string) (string, error) {
	if err := layout.EnsureDir(st.Root.CacheDir()); err != nil {
		return "", err
	}
	return os.MkdirTemp(st.Root.CacheDir(), what+"-")
}

// storeArch is the store of o.Backend and the architecture to take:
// --arch, or the one the backend runs.
func (o TransferOptions) storeArch() (image.Store, string, error) {
	st, err := imageStore(o.Backend)
	if err != nil {
		return st, "", err
	}
	if o.Arch == "" {
		return st, image.BackendArch(st.Backend), nil
	}
	arch, err := image.NormalizeArch(o.Arch)
	return st, arch, err
}

// RunImagesPull pulls ref into the store. "default" pulls the configured
// default image (or, on Linux with none configured, builds it).
func RunImagesPull(ctx context.Context, ios IO, o TransferOptions, ref string) (*image.Image, error) {
	st, arch, err := o.storeArch()
	if err != nil {
		return nil, err
	}
	if ref == "default" {
		return obtainDefault(ctx, ios, st, arch, o)
	}
	if o.Name == "" {
		if o.Name, err = nameFromRef(ref, arch, st.Backend); err != nil {
			return nil, err
		}
	}
	return pullInto(ctx, ios, st, o, ref, arch)
}

func pullInto(ctx context.Context, ios IO, st image.Store, o TransferOptions, ref, arch string) (*image.Image, error) {
	if err := image.ValidateName(o.Name); err != nil {
		return nil, err
	}
	reg := registryFor(st, o, ref)
	src, err := reg.Fetch(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	return install(ctx, ios, st, o, src, arch, "pull "+ref)
}

func install(ctx context.Context, ios IO, st image.Store, o TransferOptions, src ociimage.Source, arch, what string) (*image.Image, error) {
	im, installed, err := ociimage.Install(ctx, src, ociimage.InstallOptions{
		Store: st, Name: o.Name, Arch: arch, Replace: o.Force, Progress: newByteProgress(ios.Out), Verb: strings.Fields(what)[0],
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if installed {
		fmt.Fprintf(ios.Out, "image %s (%s) is ready: `heyvm create --image %s`\n", im.Name, im.Meta.Arch, im.Name)
	} else {
		fmt.Fprintf(ios.Out, "image %s is up to date (%s)\n", im.Name, im.Meta.Pulled.Digest)
	}
	return im, nil
}

// nameFromRef names a pulled image after the last part of its repository
// and its tag: ghcr.io/acme/heyvm-base:1 becomes heyvm-base:1. An image
// of a foreign architecture gets it as a suffix, as build-default does.
func nameFromRef(ref, arch, backendName string) (string, error) {
	p, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("%q is not a registry reference (%v): use a form like ghcr.io/acme/heyvm-base:1", ref, err)
	}
	repo := p.Context().RepositoryStr()
	n := repo[strings.LastIndex(repo, "/")+1:]
	switch r := p.(type) {
	case name.Tag:
		n += ":" + r.TagStr()
	case name.Digest:
		d := r.DigestStr()
		n += ":" + d[strings.Index(d, ":")+1:][:12]
	}
	if arch != image.BackendArch(backendName) {
		n += "-" + arch
	}
	if err := image.ValidateName(n); err != nil {
		return "", fmt.Errorf("cannot name the image after %s (%v): pass --name", ref, err)
	}
	return n, nil
}

// obtainDefault gets the default image: pulled from the configured ref,
// else built here (Linux), else an error that says how to get one.
func obtainDefault(ctx context.Context, ios IO, st image.Store, arch string, o TransferOptions) (*image.Image, error) {
	cfg, err := userconfig.Load(st.Root)
	if err != nil {
		return nil, err
	}
	ref := cfg.DefaultRef(st.Backend)
	if ref == "" {
		fmt.Fprintf(ios.ErrOut, "no default_image_ref is set for %s: building the default image here (once)\n", st.Backend)
		return RunBuildDefault(ctx, ios, BuildDefaultOptions{Backend: st.Backend, Arch: arch, Force: o.Force, auto: true})
	}
	o.Name = image.DefaultNameFor(st.Backend, arch)
	fmt.Fprintf(ios.ErrOut, "fetching the default image from %s\n", ref)
	return pullInto(ctx, ios, st, o, ref, arch)
}

// RunImagesExport writes an image to one OCI image-layout tar: a file,
// or standard output for "-" (to pipe it into `images import -`
// elsewhere, with no tar file on either side).
func RunImagesExport(ctx context.Context, ios IO, o TransferOptions, imageName, file string) error {
	st, im, err := storeImage(o, imageName)
	if err != nil {
		return err
	}
	toStdout := file == "-"
	switch {
	case toStdout && isTTY(ios.Out):
		return errors.New("images export NAME -: standard output is a terminal: pipe it (… | ssh host heyvm images import -) or give a file name")
	case toStdout:
	default:
		if fi, err := os.Stat(file); err == nil && fi.IsDir() {
			return fmt.Errorf("%s is a directory: give a file name, like %s", file, filepath.Join(file, "image.tar"))
		}
		if _, err := os.Stat(filepath.Dir(file)); err != nil {
			return fmt.Errorf("cannot write %s: %w", file, err)
		}
	}
	msgs := ios.Out
	if toStdout {
		msgs = ios.ErrOut
	}
	prog := newByteProgress(msgs)
	a, done, err := pack(ctx, st, im, "export", ociimage.PackOptions{KeepFiles: true, Progress: prog})
	if err != nil {
		return err
	}
	defer done()
	if toStdout {
		if err := ociimage.ExportTo(ctx, a, ios.Out, prog); err != nil {
			return fmt.Errorf("export %s: %w", imageName, err)
		}
		fmt.Fprintf(msgs, "exported %s (%s)\n", im.Name, im.Meta.Arch)
		return nil
	}
	if err := ociimage.Export(ctx, a, file, prog); err != nil {
		return fmt.Errorf("export %s: %w", imageName, err)
	}
	fmt.Fprintf(ios.Out, "exported %s (%s) to %s: `heyvm images import %s` on the other machine\n", im.Name, im.Meta.Arch, file, filepath.Base(file))
	return nil
}

// RunImagesImport adds the image in an exported tar to the store.
func RunImagesImport(ctx context.Context, ios IO, o TransferOptions, file string) (*image.Image, error) {
	st, arch, err := o.storeArch()
	if err != nil {
		return nil, err
	}
	if o.Name != "" {
		if err := image.ValidateName(o.Name); err != nil {
			return nil, err
		}
	}
	fromStdin := file == "-"
	if fromStdin && isTTY(ios.In) {
		return nil, errors.New("images import -: standard input is a terminal: pipe an image into it (heyvm images export NAME - | …) or give a file")
	}
	if !fromStdin {
		if _, err := os.Stat(file); err != nil {
			return nil, fmt.Errorf("import: %w", err)
		}
	}
	dir, err := workDir(st, "import")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	var src ociimage.Source
	if fromStdin {
		src, err = ociimage.ExtractLayoutFrom(ctx, ios.In, "standard input", -1, dir, newByteProgress(ios.ErrOut))
	} else {
		src, err = ociimage.ExtractLayout(ctx, file, dir, newByteProgress(ios.Out))
	}
	if err != nil {
		return nil, err
	}
	what := "import " + file
	if fromStdin {
		what = "import (standard input)"
	}
	return install(ctx, ios, st, o, src, arch, what)
}
