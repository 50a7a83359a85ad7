// Package backend is the seam between heyvm and a hypervisor. Everything
// above it (owner, console driver, SSH) is shared; each hypervisor lives
// in its own package below it and registers itself here.
package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sort"
	"strings"
)

// Mount is a host directory shared into the guest over virtio-fs.
type Mount struct {
	Tag       string `yaml:"tag" json:"tag"`
	HostPath  string `yaml:"host_path" json:"host_path"`
	GuestPath string `yaml:"guest_path" json:"guest_path"`
	ReadOnly  bool   `yaml:"read_only,omitempty" json:"read_only,omitempty"`
}

// PortForward forwards 127.0.0.1:HostPort to the guest's GuestPort (TCP).
// The owner carries it over SSH (internal/portfwd); backends never see it.
type PortForward struct {
	HostPort  int `yaml:"host_port" json:"host_port"`
	GuestPort int `yaml:"guest_port" json:"guest_port"`
	// Once: added to a running sandbox with --once, not kept in
	// sandbox.yaml. Auto: found by --auto-ports.
	Once bool `yaml:"-" json:"once,omitempty"`
	Auto bool `yaml:"-" json:"auto,omitempty"`
}

// Spec is everything a backend needs to boot one machine.
type Spec struct {
	Name      string // used for process names and logs
	Arch      string // Debian arch of the guest: amd64 or arm64
	CPUs      int
	MemoryMiB int
	Kernel    string
	Initrd    string
	Cmdline   string
	Disk      string // the sandbox's own disk
	// DiskFormat is "raw" (the default) or "qcow2" (qemu only: an overlay
	// whose read-only backing layers sit beside it).
	DiskFormat string
	Mounts     []Mount
	MAC        string // stable per sandbox
	// HostLoopback lets the guest reach services that listen only on the
	// host's 127.0.0.1. Off, the guest reaches the outside world but not
	// the host's loopback, as under apple_virt's NAT.
	HostLoopback bool
	// GuestHostLink says the image's init can bring up a second, host-only
	// network link named on the kernel command line (image feature
	// "hostlink"); the qemu backend needs it to keep the loopback closed.
	GuestHostLink bool
	// MachineIdentifier is the file holding the sandbox's stable VZ
	// generic machine identifier (made on first boot).
	MachineIdentifier string
	RunDir            string // a private directory the backend may put sockets in
	Log               io.Writer
	// RestoreFrom is a state file written by Machine.Save: the machine
	// is restored from it instead of booted, and Start returns it paused,
	// for the caller to Resume. The rest of the spec must be as it was,
	// except Mounts: shares the saved machine lacks are added to it (the
	// guest still has to mount them), or Start fails with
	// ErrRestoreUnsupported before anything runs.
	RestoreFrom string
}

// ErrDiskBusy: another process still holds the sandbox's disk (the VM of
// a killed owner, still exiting). Starting again shortly may work.
var ErrDiskBusy = errors.New("the sandbox's disk is in use by another process")

// ErrRestoreUnsupported: this backend cannot restore a saved machine with
// what the spec asks for; boot it instead.
var ErrRestoreUnsupported = errors.New("cannot restore a saved machine with these devices")

// ErrSavedState: the saved machine state itself could not be loaded
// (damaged, cut short, or made by another hypervisor build). Only this
// condemns a saved state; anything else that stops a restore (a shared
// folder's server, a port) is the sandbox's own trouble.
var ErrSavedState = errors.New("the saved machine state cannot be loaded")

// SavedStateError marks err as a fault of the saved state.
func SavedStateError(err error) error {
	if err == nil || errors.Is(err, ErrSavedState) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrSavedState, err)
}

// Machine is a running VM.
type Machine interface {
	// Console is the guest's console (hvc0) as a byte stream.
	Console() io.ReadWriter
	// DialSSH opens a stream to the guest's sshd, given the guest address
	// learned on the console: a TCP connection to the port the hypervisor
	// forwards (qemu), or a virtio-vsock stream (apple_virt). Everything
	// that speaks SSH to the guest dials through it: the owner's check,
	// its shared connection (sshmux) and its port forwards.
	DialSSH(ctx context.Context, guestIP string) (net.Conn, error)
	// SSHAddress is a TCP address on this host that reaches the guest's
	// sshd too, for a heyvm command that connects by itself; port 0 where
	// there is none (a vsock stream is the owner's alone).
	SSHAddress(guestIP string) (host string, port int)
	// Accelerator says what runs the guest: kvm, tcg, or vz.
	Accelerator() string
	// RequestStop asks the hypervisor to ask the guest to power off.
	RequestStop(ctx context.Context) error
	// Kill stops the machine at once.
	Kill() error
	// Done is closed when the machine has ended; Err then says why.
	Done() <-chan struct{}
	Err() error
	// Events reports run-state changes while the machine lives: paused
	// (by a host I/O error or otherwise), resumed, a share's server gone.
	// Nobody need listen; events that find no room are dropped.
	Events() <-chan Event
	// Resume continues a paused machine.
	Resume(ctx context.Context) error
	// Save pauses the machine and writes its whole state (memory and
	// devices) to path, a new file, synced to disk when Save returns.
	// The machine stays paused after a successful save, for the caller
	// to Kill; after a failed one it runs on and path is removed.
	Save(ctx context.Context, path string) error
	// Hypervisor names what runs the machine, with its version (saved
	// states are tied to it).
	Hypervisor() string
}

// EventKind is what happened to a running machine.
type EventKind string

const (
	EventIOError     EventKind = "io-error"     // a host I/O error paused the VM
	EventPaused      EventKind = "paused"       // the VM stopped running
	EventResumed     EventKind = "resumed"      // the VM runs again
	EventShareBroken EventKind = "share-broken" // a shared folder's server ended
)

// Event is one run-state change.
type Event struct {
	Kind    EventKind
	Detail  string // the hypervisor's words: the I/O error, the share
	NoSpace bool   // for EventIOError: the host file system is full
}

// Emit sends ev on ch without ever blocking the hypervisor's side.
func Emit(ch chan Event, ev Event) {
	select {
	case ch <- ev:
	default:
	}
}

// Backend is one hypervisor.
type Backend interface {
	Name() string
	// Available returns nil if the backend can run here, or why not.
	Available() error
	// Preflight says, before anything is created, whether this backend can
	// boot a machine with these mounts and ports here.
	Preflight(spec Spec) error
	// Start boots a machine. The machine ends when ctx is cancelled or the
	// process that started it dies.
	Start(ctx context.Context, spec Spec) (Machine, error)
	// HypervisorBuild identifies the hypervisor build that would run a
	// guest of arch here, cheaply (no process is started): a saved
	// machine state made by another build is not used. Empty if unknown.
	HypervisorBuild(arch string) string
}

// WarmStarter is a backend that may refuse warm starts: restoring one
// saved machine into many sandboxes (internal/warm).
type WarmStarter interface {
	// CanWarmStart says, in one line, why this backend cannot; nil if it
	// can.
	CanWarmStart() error
}

// CanWarmStart says whether backend b can start sandboxes warm.
func CanWarmStart(b Backend) error {
	if w, ok := b.(WarmStarter); ok {
		return w.CanWarmStart()
	}
	return nil
}

// DHCPHinter is a backend whose guests lease their address from a DHCP
// server of the host's that can run out: DHCPHint says what to do when a
// guest got none.
type DHCPHinter interface {
	DHCPHint() string
}

var registry = map[string]Backend{}

// Register adds a backend. Backend packages call it from init.
func Register(b Backend) { registry[b.Name()] = b }

// Names lists every registered backend.
func Names() []string {
	var n []string
	for k := range registry {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// DefaultName is the backend used when none is asked for.
func DefaultName() string {
	if runtime.GOOS == "darwin" {
		return "apple_virt"
	}
	return "qemu"
}

// Get returns a usable backend, or an error that names the usable ones
// and what to type.
func Get(name string) (Backend, error) {
	if name == "" {
		name = DefaultName()
	}
	b, ok := registry[name]
	if !ok {
		return nil, fmt.Errorf("unknown backend %q: %s", name, availableHint())
	}
	if err := b.Available(); err != nil {
		return nil, fmt.Errorf("backend %q is not available here: %v; %s", name, err, availableHint())
	}
	return b, nil
}

func availableHint() string {
	var ok []string
	for _, n := range Names() {
		if registry[n].Available() == nil {
			ok = append(ok, n)
		}
	}
	if len(ok) == 0 {
		return "no backend is available on this host (see `heyvm backends`)"
	}
	return fmt.Sprintf("available: %s (e.g. --backend %s)", strings.Join(ok, ", "), ok[0])
}

// Status is one row of `heyvm backends`.
type Status struct {
	Name      string `json:"name"`
	Available bool   `json:"available"`
	Reason    string `json:"reason,omitempty"`
	Default   bool   `json:"default"`
}

// Statuses reports every backend and why the unavailable ones are.
func Statuses() []Status {
	var out []Status
	for _, n := range Names() {
		s := Status{Name: n, Available: true, Default: n == DefaultName()}
		if err := registry[n].Available(); err != nil {
			s.Available = false
			s.Reason = err.Error()
		}
		out = append(out, s)
	}
	return out
}
