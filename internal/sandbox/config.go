// Package sandbox is the sandbox store: sandbox.yaml, lookup by id, name
// or prefix, creation and removal, and the state a sandbox is really in,
// derived from its owner's lock rather than from what a file claims.
package sandbox

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/heyvm/heyvm/internal/backend"
	"github.com/heyvm/heyvm/internal/fsutil"
	"github.com/heyvm/heyvm/internal/layout"
)

// Config is sandbox.yaml: what the user asked for. Only create (and wt
// reuse) and Store.Update (autostart marks) write it; the owner never does.
type Config struct {
	ID          string                `yaml:"id" json:"id"`
	Name        string                `yaml:"name" json:"name"`
	Image       string                `yaml:"image" json:"image"`
	Backend     string                `yaml:"backend" json:"backend"`
	Arch        string                `yaml:"arch" json:"arch"`
	CPUs        int                   `yaml:"cpus" json:"cpus"`
	MemoryMiB   int                   `yaml:"memory_mib" json:"memory_mib"`
	DiskSizeMiB int                   `yaml:"disk_size_mib" json:"disk_size_mib"`
	Env         []string              `yaml:"env,omitempty" json:"env,omitempty"`
	Mounts      []backend.Mount       `yaml:"mounts,omitempty" json:"mounts,omitempty"`
	Ports       []backend.PortForward `yaml:"ports,omitempty" json:"ports,omitempty"`
	TTL         Duration              `yaml:"ttl,omitempty" json:"ttl,omitempty"`
	MAC         string                `yaml:"mac" json:"mac"`
	Created     time.Time             `yaml:"created" json:"created"`
	Workspace   *Workspace            `yaml:"workspace,omitempty" json:"workspace,omitempty"`
	// Autostart marks a sandbox that `heyvm autostart run` (the boot-time
	// unit) starts.
	Autostart bool `yaml:"autostart,omitempty" json:"autostart"`
	// DiskFormat is how the disk is kept: "qcow2", a copy-on-write chain
	// (rootfs.qcow2 on base.img); empty, a raw clone (rootfs.img).
	DiskFormat string `yaml:"disk_format,omitempty" json:"disk_format,omitempty"`
	// WarmFrom is the ready snapshot the sandbox's first start restores
	// (its disk was cloned from the snapshot's); cleared once tried.
	WarmFrom string `yaml:"warm_from,omitempty" json:"warm_from,omitempty"`
	// HostLoopback opens the host's 127.0.0.1 to the guest (qemu only).
	HostLoopback bool `yaml:"host_loopback,omitempty" json:"host_loopback,omitempty"`
	// AutoPorts forwards every TCP port the guest listens on.
	AutoPorts bool `yaml:"auto_ports,omitempty" json:"auto_ports,omitempty"`
	// Role marks a sandbox heyvm keeps for itself ("builder": the VM
	// that runs BuildKit); list hides it unless asked for --all.
	Role string `yaml:"role,omitempty" json:"role,omitempty"`
	// IdleStop stops the sandbox once its busy lock has been free and
	// untouched for this long.
	IdleStop Duration `yaml:"idle_stop,omitempty" json:"idle_stop,omitempty"`
}

// RoleBuilder is the Role of an image builder sandbox.
const RoleBuilder = "builder"

// Workspace records the git worktree a `heyvm wt` sandbox serves.
type Workspace struct {
	Repo     string `yaml:"repo" json:"repo"`
	Branch   string `yaml:"branch" json:"branch"`
	Worktree string `yaml:"worktree" json:"worktree"`
}

// Duration is a time.Duration that reads and writes as "90m".
type Duration time.Duration

func (d Duration) MarshalYAML() (any, error) {
	if d == 0 {
		return "", nil
	}
	return time.Duration(d).String(), nil
}

func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Value == "" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(fmt.Sprintf("%q", time.Duration(d).String())), nil
}

// ReadConfig parses a sandbox.yaml. A damaged file yields an error that
// names it, so one bad sandbox never hides the others.
func ReadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, unreadable(err, path)
	}
	var c Config
	if err := yaml.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%s is corrupt (%v): fix or remove that sandbox with `heyvm rm --force`", path, firstLine(err.Error()))
	}
	if c.ID == "" || c.Name == "" || c.Image == "" || c.Backend == "" {
		return nil, fmt.Errorf("%s is incomplete (truncated?): it lacks id, name, image or backend; remove that sandbox with `heyvm rm --force`", path)
	}
	return &c, nil
}

// WriteConfig writes sandbox.yaml atomically.
func WriteConfig(path string, c *Config) error {
	b, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(path, b, 0o600)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// NewID returns a random 12-hex-digit sandbox id.
func NewID() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// NewMAC returns a random locally administered unicast MAC address.
func NewMAC() string {
	var b [6]byte
	rand.Read(b[:])
	b[0] = (b[0] | 0x02) &^ 0x01
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4], b[5])
}

// ValidateName checks a sandbox name. Names become the guest hostname,
// so they follow hostname rules.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("sandbox name is empty")
	}
	if len(name) > 63 {
		return fmt.Errorf("sandbox name %q is longer than 63 characters", name)
	}
	for i, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' && i > 0 && i < len(name)-1
		if !ok {
			return fmt.Errorf("invalid sandbox name %q: use lowercase letters, digits and inner '-' (like my-box-1)", name)
		}
	}
	return nil
}

// SanitizeName turns arbitrary text (a repo and branch) into a valid
// sandbox name.
func SanitizeName(s string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	out := strings.Trim(b.String(), "-")
	if len(out) > 63 {
		out = strings.TrimRight(out[:63], "-")
	}
	if out == "" {
		out = "sandbox"
	}
	return out
}

// unreadable words a permission error on a sandbox's files for the user:
// which file, and how to get out of it.
func unreadable(err error, path string) error {
	if !errors.Is(err, os.ErrPermission) {
		return err
	}
	dir := filepath.Dir(path)
	return fmt.Errorf("cannot read %s (permission denied): a sandbox's files must belong to the user who runs heyvm; fix them with `chown -R $(id -u):$(id -g) %s` (as root), or remove the sandbox with `heyvm rm --force %s`", path, dir, filepath.Base(dir))
}

// Disk is the file the sandbox's VM writes, and its format.
func (c *Config) Disk(files layout.Sandbox) (path, format string) {
	if c.DiskFormat == "qcow2" {
		return files.Overlay(), "qcow2"
	}
	return files.Rootfs(), "raw"
}
