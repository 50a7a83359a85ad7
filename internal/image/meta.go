package image

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/heyvm/heyvm/internal/fsutil"
	"github.com/heyvm/heyvm/internal/layout"
)

// Metadata is image.yaml: what the image is and how it was made.
type Metadata struct {
	Name          string            `yaml:"name" json:"name"`
	Backend       string            `yaml:"backend" json:"backend"`
	Arch          string            `yaml:"arch" json:"arch"`
	KernelCmdline string            `yaml:"kernel_cmdline" json:"kernel_cmdline"`
	KernelVersion string            `yaml:"kernel_version" json:"kernel_version"`
	RootfsSize    int64             `yaml:"rootfs_size_bytes" json:"rootfs_size_bytes"`
	Created       time.Time         `yaml:"created" json:"created"`
	Build         BuildInfo         `yaml:"build" json:"build"`
	SHA256        map[string]string `yaml:"sha256" json:"sha256"`
	// Pulled says where a pulled or imported image came from.
	Pulled *PullInfo `yaml:"pulled,omitempty" json:"pulled,omitempty"`
	// GuestFeatures lists what the image's init can do beyond the first
	// release's, so heyvm never asks an older image for more.
	GuestFeatures []string `yaml:"guest_features,omitempty" json:"guest_features,omitempty"`
	// ColdOnly: the image's sandboxes always boot cold, for ColdWhy (the
	// guest lacks what a warm start's identity step runs, bash and perl,
	// or it runs an init of its own).
	ColdOnly bool   `yaml:"cold_only,omitempty" json:"cold_only,omitempty"`
	ColdWhy  string `yaml:"cold_why,omitempty" json:"cold_why,omitempty"`
	// Dockerfile records how `heyvm images build` made the image.
	Dockerfile *DockerfileInfo `yaml:"dockerfile,omitempty" json:"dockerfile,omitempty"`
}

// DockerfileInfo is an image built from a Dockerfile: where from, and
// what the image says about running it (CMD, ENTRYPOINT, EXPOSE, LABEL).
type DockerfileInfo struct {
	File      string   `yaml:"file" json:"file"`
	Context   string   `yaml:"context" json:"context"`
	BuildArgs []string `yaml:"build_args,omitempty" json:"build_args,omitempty"`
	Engine    string   `yaml:"engine" json:"engine"`
	Bases     []string `yaml:"bases,omitempty" json:"bases,omitempty"`
	Kernel    string   `yaml:"kernel" json:"kernel"` // "own" (from the root's /boot) or "default"
	Init      string   `yaml:"init" json:"init"`     // heyvm, injected, systemd or inittab
	// Added lists what the conversion put into the root for heyvm
	// (units, inittab lines, scripts), for `images inspect`.
	Added      []string          `yaml:"heyvm_added,omitempty" json:"heyvm_added,omitempty"`
	Cmd        []string          `yaml:"cmd,omitempty" json:"cmd,omitempty"`
	Entrypoint []string          `yaml:"entrypoint,omitempty" json:"entrypoint,omitempty"`
	Env        []string          `yaml:"env,omitempty" json:"env,omitempty"`
	WorkingDir string            `yaml:"working_dir,omitempty" json:"working_dir,omitempty"`
	User       string            `yaml:"user,omitempty" json:"user,omitempty"`
	Expose     []string          `yaml:"expose,omitempty" json:"expose,omitempty"`
	Labels     map[string]string `yaml:"labels,omitempty" json:"labels,omitempty"`
	// ImageID (the engine's id of the built image) and ConvertKey (what
	// else made the disk) let an unchanged rebuild skip the conversion.
	ImageID    string `yaml:"image_id,omitempty" json:"image_id,omitempty"`
	ConvertKey string `yaml:"convert_key,omitempty" json:"convert_key,omitempty"`
}

// FeatureHostLink: the init brings up the host-only SSH link named by
// heyvm.hostlink= on the kernel command line.
const FeatureHostLink = "hostlink"

// HasFeature says whether the image's init has a guest feature.
func (m *Metadata) HasFeature(f string) bool {
	for _, g := range m.GuestFeatures {
		if g == f {
			return true
		}
	}
	return false
}

// PullInfo records the source of a pulled or imported image.
type PullInfo struct {
	From   string    `yaml:"from" json:"from"`     // registry ref or file
	Digest string    `yaml:"digest" json:"digest"` // manifest digest
	At     time.Time `yaml:"at" json:"at"`
}

// BuildInfo records how an image was built, so it can be built again.
type BuildInfo struct {
	Recipe   string        `yaml:"recipe" json:"recipe"`
	Suite    string        `yaml:"suite" json:"suite"`
	Mirror   string        `yaml:"mirror" json:"mirror"`
	Packages []string      `yaml:"packages" json:"packages"`
	Kernel   string        `yaml:"kernel_package" json:"kernel_package"`
	Modules  []string      `yaml:"initramfs_modules" json:"initramfs_modules"`
	Duration time.Duration `yaml:"duration" json:"duration"`
	Tool     string        `yaml:"tool" json:"tool"`
	// RecipeHash identifies the recipe version that built the image.
	RecipeHash string `yaml:"recipe_hash" json:"recipe_hash"`
	// BuiltIn says where: "host (mmdebstrap)", or "vm (qemu, tcg)" for a
	// build inside a VM of that backend and accelerator.
	BuiltIn string `yaml:"built_in,omitempty" json:"built_in,omitempty"`
}

// Files are the files every image holds besides image.yaml.
var Files = []string{layout.ImageKernel, layout.ImageInitrd, layout.ImageRootfs}

// ReadMetadata parses dir/image.yaml.
func ReadMetadata(dir string) (*Metadata, error) {
	p := filepath.Join(dir, layout.ImageMetadata)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var m Metadata
	if err := yaml.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s is corrupt (%v): rebuild the image or remove it with `heyvm images rm --force`", p, err)
	}
	if m.Name == "" || m.Arch == "" {
		return nil, fmt.Errorf("%s is incomplete (no name or arch): rebuild the image", p)
	}
	return &m, nil
}

// WriteMetadata writes dir/image.yaml atomically.
func WriteMetadata(dir string, m *Metadata) error {
	b, err := yaml.Marshal(m)
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(filepath.Join(dir, layout.ImageMetadata), b, 0o644)
}

// FileSHA256 hashes one file.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// FileSums hashes each of an image's Files in dir, for its image.yaml.
func FileSums(dir string) (map[string]string, error) {
	sums := map[string]string{}
	for _, f := range Files {
		s, err := FileSHA256(filepath.Join(dir, f))
		if err != nil {
			return nil, err
		}
		sums[f] = s
	}
	return sums, nil
}

// Verify recomputes each file's sha256 and compares it with image.yaml.
// It reads every byte, so callers use it in checks, not on every boot.
func Verify(dir string) error {
	m, err := ReadMetadata(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, f := range Files {
		want := m.SHA256[f]
		got, err := FileSHA256(filepath.Join(dir, f))
		switch {
		case err != nil:
			errs = append(errs, err)
		case want != got:
			errs = append(errs, fmt.Errorf("%s: sha256 %s, image.yaml says %s", f, got, want))
		}
	}
	return errors.Join(errs...)
}

// DiskUsage is the space the files under dir really take (sparse files
// count only their allocated blocks).
func DiskUsage(dir string) int64 {
	var total int64
	filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			total += fsutil.AllocatedBytes(fi)
		}
		return nil
	})
	return total
}

// WhyCold says why the image's sandboxes always boot cold ("" if they
// need not).
func (m *Metadata) WhyCold() string {
	switch {
	case !m.ColdOnly:
		return ""
	case m.ColdWhy != "":
		return m.ColdWhy
	}
	return "its root lacks bash or perl, which a warm start's identity step runs"
}
