// Package contexts is where heyvm runs sandboxes: this machine (the
// "default" context), a host reached over SSH that runs heyvm itself, or
// a Kubernetes cluster with KubeVirt. Contexts are kept in
// ~/.heyo/contexts.yaml with the current one; `--context NAME` and
// HEYVM_CONTEXT choose another for one command, as Docker's contexts do.
package contexts

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/heyvm/heyvm/internal/fsutil"
	"github.com/heyvm/heyvm/internal/layout"
)

// Kind is how a context's sandboxes are reached.
type Kind string

const (
	Local    Kind = "local"    // this machine
	SSH      Kind = "ssh"      // a host that runs heyvm, over SSH
	KubeVirt Kind = "kubevirt" // a cluster with KubeVirt and CDI
)

// DefaultName is this machine's context: always there, never stored.
const DefaultName = "default"

// Env chooses the context for one command, over the current one.
const Env = "HEYVM_CONTEXT"

// Context is one place sandboxes run.
type Context struct {
	Name string `yaml:"-" json:"name"`
	Kind Kind   `yaml:"kind" json:"kind"`
	// SSH: ssh://[user@]host[:port], and where heyvm is on that host
	// ("" for its PATH).
	Host  string `yaml:"host,omitempty" json:"host,omitempty"`
	Heyvm string `yaml:"heyvm,omitempty" json:"heyvm,omitempty"`
	// Registry: where images for this context are pushed (SSH: optional;
	// KubeVirt: required, the nodes pull from it).
	Registry string `yaml:"registry,omitempty" json:"registry,omitempty"`
	// KubeVirt: the kubeconfig (""  for KUBECONFIG or ~/.kube/config),
	// its context and the namespace.
	Kubeconfig  string `yaml:"kubeconfig,omitempty" json:"kubeconfig,omitempty"`
	KubeContext string `yaml:"kube_context,omitempty" json:"kube_context,omitempty"`
	Namespace   string `yaml:"namespace,omitempty" json:"namespace,omitempty"`
}

// Describe is the context's address as `context ls` shows it.
func (c *Context) Describe() string {
	switch c.Kind {
	case SSH:
		return c.Host
	case KubeVirt:
		d := "kubevirt"
		if c.KubeContext != "" {
			d += " " + c.KubeContext
		}
		if c.Namespace != "" {
			d += "/" + c.Namespace
		}
		return d
	}
	return "this machine"
}

// Store is contexts.yaml.
type Store struct {
	Current  string              `yaml:"current,omitempty"`
	Contexts map[string]*Context `yaml:"contexts,omitempty"`
}

// Load reads a state root's contexts; a missing file is none but the
// default. A damaged one is an error naming the file.
func Load(root layout.Root) (*Store, error) {
	s := &Store{Contexts: map[string]*Context{}}
	b, err := os.ReadFile(root.ContextsFile())
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(s); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s is damaged (%v): fix it, or remove it to keep only the default context", root.ContextsFile(), err)
	}
	if s.Contexts == nil {
		s.Contexts = map[string]*Context{}
	}
	for n, c := range s.Contexts {
		c.Name = n
	}
	return s, nil
}

// Save writes contexts.yaml atomically, 0600.
func (s *Store) Save(root layout.Root) error {
	if err := layout.EnsureDir(root.Dir); err != nil {
		return err
	}
	b, err := yaml.Marshal(s)
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(root.ContextsFile(), b, 0o600)
}

// Get returns a context by name; DefaultName is this machine.
func (s *Store) Get(name string) (*Context, error) {
	if name == DefaultName || name == "" {
		return &Context{Name: DefaultName, Kind: Local}, nil
	}
	c, ok := s.Contexts[name]
	if !ok {
		return nil, fmt.Errorf("no context named %q: see `heyvm context ls`", name)
	}
	return c, nil
}

// List returns every context, the default first, then by name.
func (s *Store) List() []*Context {
	out := []*Context{{Name: DefaultName, Kind: Local}}
	var names []string
	for n := range s.Contexts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		out = append(out, s.Contexts[n])
	}
	return out
}

// Add stores a new context.
func (s *Store) Add(c *Context) error {
	if err := ValidateName(c.Name); err != nil {
		return err
	}
	if c.Name == DefaultName {
		return fmt.Errorf("%q is this machine's context and cannot be made: pick another name", DefaultName)
	}
	if _, ok := s.Contexts[c.Name]; ok {
		return fmt.Errorf("a context named %q exists: remove it first with `heyvm context rm %s`", c.Name, c.Name)
	}
	s.Contexts[c.Name] = c
	return nil
}

// Remove deletes a context; the current one falls back to the default.
func (s *Store) Remove(name string) error {
	if name == DefaultName {
		return fmt.Errorf("the %q context is this machine and cannot be removed", DefaultName)
	}
	if _, ok := s.Contexts[name]; !ok {
		return fmt.Errorf("no context named %q: see `heyvm context ls`", name)
	}
	delete(s.Contexts, name)
	if s.Current == name {
		s.Current = ""
	}
	return nil
}

// Use makes a context the current one.
func (s *Store) Use(name string) error {
	if _, err := s.Get(name); err != nil {
		return err
	}
	if name == DefaultName {
		name = ""
	}
	s.Current = name
	return nil
}

// CurrentName is the current context's name.
func (s *Store) CurrentName() string {
	if s.Current == "" {
		return DefaultName
	}
	return s.Current
}

// Resolve picks the context a command runs against: flag (--context),
// else HEYVM_CONTEXT, else the current one.
func Resolve(root layout.Root, flag string) (*Context, error) {
	s, err := Load(root)
	if err != nil {
		return nil, err
	}
	name := flag
	if name == "" {
		name = os.Getenv(Env)
	}
	if name == "" {
		name = s.CurrentName()
	}
	return s.Get(name)
}

// ValidateName checks a context name: what a sandbox name may be.
func ValidateName(name string) error {
	if name == "" || len(name) > 63 {
		return fmt.Errorf("context name %q: give 1 to 63 characters", name)
	}
	for i, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || (r == '-' || r == '_' || r == '.') && i > 0) {
			return fmt.Errorf("invalid context name %q: use lowercase letters, digits, '-', '_' and '.'", name)
		}
	}
	return nil
}

// SSHTarget is an ssh://[user@]host[:port] address.
type SSHTarget struct {
	User string // "" for OpenSSH's choice (~/.ssh/config, then the local user)
	Host string
	Port int // 0 for OpenSSH's choice
}

// ParseSSH parses --host. A bare host (or user@host) is taken too.
func ParseSSH(s string) (SSHTarget, error) {
	if !strings.Contains(s, "://") {
		s = "ssh://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "ssh" || u.Hostname() == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return SSHTarget{}, fmt.Errorf("--host %q: give ssh://[user@]host[:port], like ssh://me@build-box", strings.TrimPrefix(s, "ssh://"))
	}
	if _, ok := u.User.Password(); ok {
		return SSHTarget{}, errors.New("--host must not hold a password: heyvm uses your SSH keys and agent")
	}
	t := SSHTarget{User: u.User.Username(), Host: u.Hostname()}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return SSHTarget{}, fmt.Errorf("--host %q: the port must be 1 to 65535", s)
		}
		t.Port = n
	}
	return t, nil
}

// String is the target as ssh://.
func (t SSHTarget) String() string {
	h := t.Host
	if t.Port != 0 {
		h = net.JoinHostPort(t.Host, strconv.Itoa(t.Port))
	} else if strings.Contains(h, ":") {
		h = "[" + h + "]"
	}
	if t.User != "" {
		h = t.User + "@" + h
	}
	return "ssh://" + h
}
