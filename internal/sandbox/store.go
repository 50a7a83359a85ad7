package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/heyvm/heyvm/internal/fsutil"
	"github.com/heyvm/heyvm/internal/layout"
)

// ErrNotFound means no sandbox matches a reference.
var ErrNotFound = errors.New("no such sandbox")

// Store is the set of sandboxes under a state root.
type Store struct{ Root layout.Root }

// Sandbox is one sandbox on disk.
type Sandbox struct {
	Config *Config
	Files  layout.Sandbox
}

// Broken is a sandbox directory whose sandbox.yaml cannot be read.
type Broken struct {
	ID  string
	Dir string
	Err error
}

// List returns every readable sandbox, sorted by creation, and the broken
// ones separately: one bad sandbox.yaml never hides the others.
func (s Store) List() ([]*Sandbox, []Broken, error) {
	des, err := os.ReadDir(s.Root.SandboxesDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	var out []*Sandbox
	var broken []Broken
	for _, de := range des {
		if !de.IsDir() || strings.HasPrefix(de.Name(), ".") {
			continue
		}
		files := s.Root.Sandbox(de.Name())
		c, err := ReadConfig(files.Config())
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				err = fmt.Errorf("%s is missing: remove that sandbox with `heyvm rm --force %s`", files.Config(), de.Name())
			}
			broken = append(broken, Broken{ID: de.Name(), Dir: files.Dir, Err: err})
			continue
		}
		out = append(out, &Sandbox{Config: c, Files: files})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Config.Created.Before(out[j].Config.Created) })
	return out, broken, nil
}

// Lookup finds a sandbox by exact id, exact name, or unique id prefix.
func (s Store) Lookup(ref string) (*Sandbox, error) {
	if ref == "" {
		return nil, errors.New("no sandbox given: name one (see `heyvm list`)")
	}
	all, broken, err := s.List()
	if err != nil {
		return nil, err
	}
	for _, sb := range all {
		if sb.Config.ID == ref || sb.Config.Name == ref {
			return sb, nil
		}
	}
	for _, b := range broken {
		if b.ID == ref {
			return nil, b.Err
		}
	}
	var matches []*Sandbox
	for _, sb := range all {
		if strings.HasPrefix(sb.Config.ID, ref) {
			matches = append(matches, sb)
		}
	}
	switch len(matches) {
	case 1:
		return matches[0], nil
	case 0:
		return nil, fmt.Errorf("%w %q: see `heyvm list`", ErrNotFound, ref)
	}
	var names []string
	for _, m := range matches {
		names = append(names, m.Config.ID+" ("+m.Config.Name+")")
	}
	return nil, fmt.Errorf("%q is ambiguous: it prefixes %s; type more of the id", ref, strings.Join(names, ", "))
}

// ByName finds a sandbox by exact name (no prefixes); nil if none.
func (s Store) ByName(name string) (*Sandbox, error) {
	all, _, err := s.List()
	if err != nil {
		return nil, err
	}
	for _, sb := range all {
		if sb.Config.Name == name {
			return sb, nil
		}
	}
	return nil, nil
}

// Create makes a new sandbox directory holding cfg and a disk made by
// makeDisk. It is all or nothing: the sandbox is assembled in a hidden
// staging directory and renamed into place, under the store lock that
// also makes names unique across concurrent creates.
func (s Store) Create(ctx context.Context, cfg *Config, makeDisk func(rootfs string) error) (*Sandbox, error) {
	if cfg.Name != "" {
		if err := ValidateName(cfg.Name); err != nil {
			return nil, err
		}
	}
	if err := layout.EnsureDir(s.Root.SandboxesDir()); err != nil {
		return nil, err
	}
	lock, err := fsutil.LockContext(ctx, s.Root.SandboxStoreLock())
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	s.cleanStaging()
	all, _, err := s.List()
	if err != nil {
		return nil, err
	}
	if cfg.ID == "" {
		cfg.ID = newUnshadowedID(all)
	}
	if cfg.MAC == "" {
		cfg.MAC = s.takeMAC(all)
	}
	if cfg.Name == "" {
		cfg.Name = "sb-" + cfg.ID[:6]
	}
	if err := checkUnique(all, cfg); err != nil {
		return nil, err
	}
	if cfg.Created.IsZero() {
		cfg.Created = time.Now().UTC().Truncate(time.Second)
	}
	staging := filepath.Join(s.Root.SandboxesDir(), ".new-"+cfg.ID)
	if err := os.Mkdir(staging, 0o700); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(staging)
		}
	}()
	tmp := layout.Sandbox{Dir: staging}
	if err := makeDisk(tmp.Rootfs()); err != nil {
		return nil, err
	}
	if err := WriteConfig(tmp.Config(), cfg); err != nil {
		return nil, err
	}
	files := s.Root.Sandbox(cfg.ID)
	if err := os.Rename(staging, files.Dir); err != nil {
		return nil, fmt.Errorf("create sandbox: %w", err)
	}
	ok = true
	fsutil.SyncDir(s.Root.SandboxesDir())
	return &Sandbox{Config: cfg, Files: files}, nil
}

// checkUnique refuses a name or id that would make a reference to another
// sandbox reach this one: a name taken, a name that is (or begins) the
// id of another (`heyvm rm <that id>` would then remove this one), an id
// taken as a name or an id.
func checkUnique(all []*Sandbox, cfg *Config) error {
	for _, sb := range all {
		o := sb.Config
		switch {
		case o.Name == cfg.Name:
			return fmt.Errorf("a sandbox named %q already exists (%s): pick another --name or remove it with `heyvm rm %s`", cfg.Name, o.ID, cfg.Name)
		case strings.HasPrefix(o.ID, cfg.Name):
			return fmt.Errorf("the name %q is the start of the id of sandbox %s (%s), and would shadow it: pick another --name", cfg.Name, o.Name, o.ID)
		case o.ID == cfg.ID || o.Name == cfg.ID:
			return fmt.Errorf("the id %s is taken by sandbox %s", cfg.ID, o.Name)
		}
	}
	return nil
}

// newUnshadowedID returns a new id that no existing name begins: a
// prefix typed for it must not be taken for that other sandbox's name.
// (Should names of one hex digit each cover every start, it settles for
// an id that no name equals.)
func newUnshadowedID(all []*Sandbox) string {
	for try := 0; ; try++ {
		id := NewID()
		ok := true
		for _, sb := range all {
			if sb.Config.ID == id || sb.Config.Name == id || try < 64 && strings.HasPrefix(id, sb.Config.Name) {
				ok = false
				break
			}
		}
		if ok {
			return id
		}
	}
}

// cleanStaging removes what interrupted creates and removals left. It
// runs under the store lock, so no live create owns them.
func (s Store) cleanStaging() {
	des, _ := os.ReadDir(s.Root.SandboxesDir())
	for _, de := range des {
		if strings.HasPrefix(de.Name(), ".new-") || strings.HasPrefix(de.Name(), ".rm-") {
			os.RemoveAll(filepath.Join(s.Root.SandboxesDir(), de.Name()))
		}
	}
}

// Remove deletes a stopped sandbox's directory. The caller has made sure
// it is stopped and holds its owner lock.
func (s Store) Remove(ctx context.Context, id string) error {
	lock, err := fsutil.LockContext(ctx, s.Root.SandboxStoreLock())
	if err != nil {
		return err
	}
	defer lock.Unlock()
	dir := s.Root.Sandbox(id).Dir
	cfg, _ := ReadConfig(filepath.Join(dir, "sandbox.yaml"))
	trash := filepath.Join(s.Root.SandboxesDir(), ".rm-"+id)
	if err := os.Rename(dir, trash); err != nil {
		return fmt.Errorf("remove sandbox %s: %w", id, err)
	}
	if cfg != nil && cfg.MAC != "" {
		s.giveMAC(cfg.MAC)
	}
	return os.RemoveAll(trash)
}

// MAC addresses of removed sandboxes are kept in a small pool and given
// to new ones: a hypervisor's NAT (Virtualization.framework's) leases an
// address to each MAC for a day from one /24, so new random MACs for
// every sandbox of an agent or a CI job that churns them would exhaust it
// (about 250 a day). A MAC is reused only once its sandbox is gone.

// macPoolSize bounds the pool: enough for the sandboxes one person or job
// has at a time.
const macPoolSize = 64

func (s Store) macPool() string { return filepath.Join(s.Root.SandboxesDir(), ".mac-pool") }

func (s Store) readMACPool() []string {
	b, _ := os.ReadFile(s.macPool())
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func (s Store) writeMACPool(macs []string) {
	if len(macs) > macPoolSize {
		macs = macs[len(macs)-macPoolSize:]
	}
	fsutil.WriteFileAtomic(s.macPool(), []byte(strings.Join(macs, "\n")+"\n"), 0o600)
}

// takeMAC takes the pool's oldest MAC that no sandbox uses, or makes a
// new one. The caller holds the store lock.
func (s Store) takeMAC(all []*Sandbox) string {
	used := map[string]bool{}
	for _, sb := range all {
		used[sb.Config.MAC] = true
	}
	pool := s.readMACPool()
	for i, m := range pool {
		if !used[m] {
			s.writeMACPool(append(pool[:i:i], pool[i+1:]...))
			return m
		}
	}
	return NewMAC()
}

// giveMAC returns a removed sandbox's MAC to the pool. The caller holds
// the store lock.
func (s Store) giveMAC(mac string) {
	pool := s.readMACPool()
	for _, m := range pool {
		if m == mac {
			return
		}
	}
	s.writeMACPool(append(pool, mac))
}

// Update applies change to a sandbox's config and writes sandbox.yaml
// atomically, under the store lock so two updates never lose each other.
func (s Store) Update(ctx context.Context, id string, change func(*Config)) (*Config, error) {
	lock, err := fsutil.LockContext(ctx, s.Root.SandboxStoreLock())
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	files := s.Root.Sandbox(id)
	cfg, err := ReadConfig(files.Config())
	if err != nil {
		return nil, err
	}
	change(cfg)
	if err := WriteConfig(files.Config(), cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// UsersOfImage lists the sandboxes (by name) created from an image.
func (s Store) UsersOfImage(backendName, imageName string) ([]string, error) {
	all, _, err := s.List()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, sb := range all {
		if sb.Config.Backend == backendName && sb.Config.Image == imageName {
			names = append(names, sb.Config.Name)
		}
	}
	return names, nil
}
