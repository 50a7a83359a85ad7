package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/heyvm/heyvm/internal/backend"
	_ "github.com/heyvm/heyvm/internal/backend/all"
	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/imagebuild"
	"github.com/heyvm/heyvm/internal/layout"
	"github.com/heyvm/heyvm/internal/sandbox"
	"github.com/heyvm/heyvm/internal/warm"
)

func newImagesCmd(ios IO) *cobra.Command {
	cmd := &cobra.Command{Use: "images", Short: "List, inspect, build and remove guest images"}
	var backendName string
	cmd.PersistentFlags().StringVar(&backendName, "backend", "", "backend whose images to use (default: this host's)")

	var listJSON bool
	list := &cobra.Command{
		Use: "list", Short: "List images", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return runImagesList(ios, backendName, listJSON)
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print JSON")

	var inspectJSON bool
	inspect := &cobra.Command{
		Use: "inspect NAME", Short: "Show an image's metadata", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return runImagesInspect(ios, backendName, args[0], inspectJSON)
		},
	}
	inspect.Flags().BoolVar(&inspectJSON, "json", false, "print JSON")

	var rmForce bool
	rm := &cobra.Command{
		Use: "rm NAME", Short: "Remove an image", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return runImagesRm(ios, backendName, args[0], rmForce)
		},
	}
	rm.Flags().BoolVar(&rmForce, "force", false, "remove even if sandboxes use it")

	bo := BuildDefaultOptions{}
	build := &cobra.Command{
		Use: "build-default", Short: "Build the default Debian guest image (no root needed)", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			bo.Backend = backendName
			_, err := RunBuildDefault(ctx, ios, bo)
			return err
		},
	}
	build.Flags().StringVar(&bo.Arch, "arch", "", "guest architecture: amd64 or arm64 (default: this host's)")
	build.Flags().BoolVar(&bo.Force, "force", false, "rebuild even if the image exists")
	build.Flags().BoolVar(&bo.Builder, "builder", false, "build the image of `images build`'s builder VM (heyvm-builder) instead")
	build.Flags().BoolVar(&bo.InVM, "in-vm", false, "build inside a VM of this host's backend, from Debian's archive (what macOS always does, and Linux without mmdebstrap)")

	prune := &cobra.Command{
		Use: "prune", Short: "Empty the image builder's step cache (removes the builder VMs; the next build makes a fresh one)", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return runImagesPrune(c.Context(), ios) },
	}
	cmd.AddCommand(list, inspect, rm, build, newImagesBuildCmd(ios, &backendName), prune, newImagesWarmCmd(ios, &backendName), newAssembleCmd())
	addTransferCommands(cmd, ios, &backendName)
	requireSubcommand(cmd)
	return cmd
}

func imageStore(backendName string) (image.Store, error) {
	root, err := layout.Open()
	if err != nil {
		return image.Store{}, err
	}
	if backendName == "" {
		backendName = backend.DefaultName()
	}
	if _, err := backend.Get(backendName); err != nil {
		// Images of a backend that cannot run here may still be built and
		// listed (an arm64 image for a Mac, built on Linux).
		found := false
		for _, n := range backend.Names() {
			found = found || n == backendName
		}
		if !found {
			return image.Store{}, err
		}
	}
	return image.Store{Root: root, Backend: backendName}, nil
}

// imageStoreForArch is imageStore plus the architecture asked for (the
// backend's own when arch is empty).
func imageStoreForArch(backendName, arch string) (image.Store, string, error) {
	st, err := imageStore(backendName)
	if err != nil {
		return st, "", err
	}
	if arch == "" {
		return st, image.BackendArch(st.Backend), nil
	}
	arch, err = image.NormalizeArch(arch)
	return st, arch, err
}

func runImagesList(ios IO, backendName string, asJSON bool) error {
	st, err := imageStore(backendName)
	if err != nil {
		return err
	}
	entries, err := st.List()
	if err != nil {
		return err
	}
	if asJSON {
		type row struct {
			Name    string          `json:"name"`
			Backend string          `json:"backend"`
			Arch    string          `json:"arch,omitempty"`
			Size    int64           `json:"size_bytes"`
			Created *time.Time      `json:"created,omitempty"`
			Aliases []string        `json:"aliases"`
			Meta    *image.Metadata `json:"metadata,omitempty"`
			Error   string          `json:"error,omitempty"`
		}
		rows := []row{}
		for _, e := range entries {
			r := row{Name: e.Name, Backend: st.Backend, Size: e.Size, Aliases: e.Aliases, Meta: e.Meta}
			if r.Aliases == nil {
				r.Aliases = []string{}
			}
			if e.Meta != nil {
				r.Arch = e.Meta.Arch
				r.Created = &e.Meta.Created
			}
			if e.Err != nil {
				r.Error = e.Err.Error()
			}
			rows = append(rows, r)
		}
		return writeJSON(ios, rows)
	}
	if len(entries) == 0 {
		fmt.Fprintf(ios.Out, "no images for backend %s: run `heyvm images pull default` (or `heyvm images pull REF`, `heyvm images import FILE`)\n", st.Backend)
		return nil
	}
	tw := tabwriter.NewWriter(ios.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tBACKEND\tARCH\tSIZE\tCREATED\tALIASES")
	for _, e := range entries {
		arch, created := "?", "?"
		if e.Meta != nil {
			arch = e.Meta.Arch
			created = humanAge(e.Meta.Created) + " ago"
		}
		aliases := strings.Join(e.Aliases, ",")
		if e.Err != nil {
			aliases = "BROKEN: " + e.Err.Error()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Name, st.Backend, arch, humanBytes(e.Size), created, aliases)
	}
	return tw.Flush()
}

func runImagesInspect(ios IO, backendName, name string, asJSON bool) error {
	st, err := imageStore(backendName)
	if err != nil {
		return err
	}
	im, err := st.Resolve(name)
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(ios, struct {
			Dir string `json:"dir"`
			*image.Metadata
		}{im.Dir, im.Meta})
	}
	m := im.Meta
	kernel, built := m.KernelVersion, fmt.Sprintf("%s, %s %s in %s", m.Build.Tool, m.Build.Recipe, m.Build.Suite, m.Build.Duration)
	if m.Build.Kernel != "" {
		kernel += " (" + m.Build.Kernel + ")"
	}
	if m.Dockerfile != nil {
		built = fmt.Sprintf("%s in %s", m.Build.Tool, m.Build.Duration)
	}
	fmt.Fprintf(ios.Out, "Name:     %s\nDir:      %s\nBackend:  %s\nArch:     %s\nKernel:   %s\nCmdline:  %s\nRootfs:   %s apparent, %s on disk\nCreated:  %s\nBuilt by: %s\n",
		m.Name, im.Dir, m.Backend, m.Arch, kernel, m.KernelCmdline,
		humanBytes(m.RootfsSize), humanBytes(image.DiskUsage(im.Dir)), m.Created.Format(time.RFC3339), built)
	fmt.Fprintf(ios.Out, "Modules:  %s\n", strings.Join(m.Build.Modules, " "))
	for _, f := range image.Files {
		fmt.Fprintf(ios.Out, "sha256:   %s  %s\n", m.SHA256[f], f)
	}
	if d := m.Dockerfile; d != nil {
		fmt.Fprintf(ios.Out, "Dockerfile: %s (context %s, engine %s)\nBases:      %s\nKernel:     %s\nInit:       %s\n",
			d.File, d.Context, d.Engine, strings.Join(d.Bases, ", "), d.Kernel, d.Init)
		if len(d.Entrypoint) > 0 {
			fmt.Fprintf(ios.Out, "Entrypoint: %q\n", d.Entrypoint)
		}
		if len(d.Cmd) > 0 {
			fmt.Fprintf(ios.Out, "Cmd:        %q\n", d.Cmd)
		}
		if len(d.Expose) > 0 {
			fmt.Fprintf(ios.Out, "Expose:     %s\n", strings.Join(d.Expose, " "))
		}
		if d.WorkingDir != "" {
			fmt.Fprintf(ios.Out, "Workdir:    %s\n", d.WorkingDir)
		}
		if d.User != "" {
			fmt.Fprintf(ios.Out, "User:       %s\n", d.User)
		}
		for _, k := range slices.Sorted(maps.Keys(d.Labels)) {
			fmt.Fprintf(ios.Out, "Label:      %s=%s\n", k, d.Labels[k])
		}
	}
	if d := m.Dockerfile; d != nil && len(d.Added) > 0 {
		fmt.Fprintf(ios.Out, "Added:      %s\n", strings.Join(d.Added, "; "))
	}
	if why := m.WhyCold(); why != "" {
		fmt.Fprintf(ios.Out, "Warm start: no: %s\n", why)
	}
	return nil
}

func runImagesRm(ios IO, backendName, name string, force bool) error {
	st, err := imageStore(backendName)
	if err != nil {
		return err
	}
	if err := image.ValidateName(name); err != nil {
		return err
	}
	users, err := sandbox.Store{Root: st.Root}.UsersOfImage(st.Backend, image.Canonical(name))
	if err != nil {
		return err
	}
	if len(users) > 0 && !force {
		return fmt.Errorf("image %q is used by sandbox(es) %s: remove them first, or pass --force (their disks hold their own links to its files and keep working)", name, strings.Join(users, ", "))
	}
	if err := st.Remove(name); err != nil {
		return err
	}
	os.Remove(st.Root.PushCache(st.Backend, image.Canonical(name)))
	warm.DropImage(st.Root, st.Backend, image.Canonical(name))
	fmt.Fprintf(ios.Out, "removed image %s\n", name)
	return nil
}

// BuildDefaultOptions are the flags of `images build-default`.
type BuildDefaultOptions struct {
	Backend string
	Arch    string
	Force   bool
	// Builder builds the image builder's image (heyvm-builder) instead,
	// for a Mac to pull.
	Builder bool
	// InVM builds inside a VM of this host's backend, even where the host
	// could build it (mmdebstrap).
	InVM bool
	// auto: a create asked for the image it lacks.
	auto bool
}

// RunBuildDefault builds the default image (or returns it if present).
func RunBuildDefault(ctx context.Context, ios IO, o BuildDefaultOptions) (*image.Image, error) {
	st, arch, err := imageStoreForArch(o.Backend, o.Arch)
	if err != nil {
		return nil, err
	}
	if o.Builder {
		return buildBuilderImage(ctx, ios, st, arch, o.InVM)
	}
	if !o.Force {
		if im, err := st.Resolve(image.DefaultNameFor(st.Backend, arch)); err == nil {
			fmt.Fprintf(ios.ErrOut, "image %s is already built (%s); use --force to rebuild\n", im.Name, im.Dir)
			return im, nil
		}
	}
	start := time.Now()
	im, err := buildRecipe(ctx, ios, recipeBuild{store: st, arch: arch, force: o.Force, inVM: o.InVM, auto: o.auto})
	if err != nil {
		return nil, fmt.Errorf("build default image: %w", err)
	}
	fmt.Fprintf(ios.ErrOut, "built image %s (%s) in %s: %s\n", im.Name, im.Meta.Arch, time.Since(start).Round(time.Second), im.Dir)
	return im, nil
}

func writeJSON(ios IO, v any) error {
	enc := json.NewEncoder(ios.Out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func humanAge(t time.Time) string {
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

// assembleCmdName is the hidden command that assembles an image's root
// file system as root of a user namespace (see imagebuild).
const assembleCmdName = "__assemble"

func newAssembleCmd() *cobra.Command {
	return &cobra.Command{
		Use: assembleCmdName + " SPEC", Hidden: true, Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			return imagebuild.AssembleMain(c.Context(), args[0], c.OutOrStdout())
		},
	}
}

// selfExec is the argv that runs this binary's `images NAME`.
func selfExec(name string) []string {
	exe, err := os.Executable()
	if err != nil {
		return nil
	}
	return []string{exe, "images", name}
}
