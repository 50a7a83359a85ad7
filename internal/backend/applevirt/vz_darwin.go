//go:build darwin && arm64 && cgo

package applevirt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/Code-Hex/vz/v3"
	"golang.org/x/sys/unix"

	"github.com/heyvm/heyvm/internal/backend"
	"github.com/heyvm/heyvm/internal/layout"
)

func init() { backend.Register(Backend{}) }

// Backend runs machines with Virtualization.framework.
type Backend struct{}

func (Backend) Name() string { return Name }

// CanWarmStart says why apple_virt sandboxes never start from a ready
// snapshot: they boot cold (see errNoWarmStart).
func (Backend) CanWarmStart() error { return canWarmStart() }

// DHCPHint: see dhcpHint.
func (Backend) DHCPHint() string { return dhcpHint }

// productVersion is this Mac's macOS version, such as "14.2.1".
func productVersion() (string, error) { return unix.Sysctl("kern.osproductversion") }

// HypervisorBuild is the macOS build: Virtualization.framework comes with it.
func (Backend) HypervisorBuild(string) string {
	v, err := unix.Sysctl("kern.osversion")
	if err != nil {
		return ""
	}
	return "macOS " + v
}

func (Backend) Available() error {
	v, err := productVersion()
	if err != nil {
		return fmt.Errorf("cannot read the macOS version: %w", err)
	}
	return CheckMacOSVersion(v)
}

// Preflight refuses what VZ cannot do here.
func (b Backend) Preflight(spec backend.Spec) error {
	if err := b.Available(); err != nil {
		return err
	}
	return checkSpec(spec)
}

// Start boots the machine inside this process: a VZ virtual machine
// cannot outlive the process that made it, so it dies with its owner.
func (b Backend) Start(ctx context.Context, spec backend.Spec) (backend.Machine, error) {
	if err := b.Available(); err != nil {
		return nil, err
	}
	kernel, err := BootableKernel(spec.Kernel, filepath.Join(filepath.Dir(spec.Kernel), layout.ImageKernelRaw))
	if err != nil {
		return nil, err
	}
	plan, err := BuildPlan(spec, kernel)
	if err != nil {
		return nil, err
	}
	// Console: two pipes, guest side handed to VZ, host side read by the
	// owner's console driver.
	guestIn, hostOut, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	hostIn, guestOut, err := os.Pipe()
	if err != nil {
		guestIn.Close()
		hostOut.Close()
		return nil, err
	}
	cfg, err := configure(plan, guestIn, guestOut)
	if err != nil {
		closeAll(guestIn, hostOut, hostIn, guestOut)
		return nil, EntitlementHint(err)
	}
	vm, err := vz.NewVirtualMachine(cfg)
	if err != nil {
		closeAll(guestIn, hostOut, hostIn, guestOut)
		return nil, EntitlementHint(err)
	}
	m := &machine{vm: vm, cfg: cfg, shares: len(spec.Mounts), console: &pipeConsole{r: hostIn, w: hostOut}, done: make(chan struct{}), events: make(chan backend.Event, 16), files: []*os.File{guestIn, hostOut, hostIn, guestOut}}
	if spec.RestoreFrom != "" {
		// VZ leaves a restored VM paused, as Spec.RestoreFrom asks.
		if len(spec.Mounts) > 0 {
			m.close()
			return nil, fmt.Errorf("%w: Virtualization.framework cannot add shared folders to a restored VM", backend.ErrRestoreUnsupported)
		}
		// The macOS version before any save/restore call: below macOS 14
		// they abort the process (see CheckSaveRestoreOS).
		if err := saveRestoreSupported(cfg); err != nil {
			m.close()
			return nil, fmt.Errorf("%w: %v", backend.ErrRestoreUnsupported, err)
		}
		if err := vm.RestoreMachineStateFromURL(spec.RestoreFrom); err != nil {
			m.close()
			// Saved by another macOS, or with another device set (heyvm
			// before the vsock device): the state, not the sandbox, is at
			// fault, and a cold start is the way on.
			return nil, backend.SavedStateError(fmt.Errorf("restore the saved VM: %w", err))
		}
	} else {
		// Said at boot (macOS 14 on, no shares), so a device VZ cannot
		// save shows on the first run on a Mac, not at the first suspend.
		if v, err := productVersion(); err == nil && CheckSaveRestoreOS(v) == nil && len(spec.Mounts) == 0 && spec.Log != nil {
			if err := saveRestoreSupported(cfg); err != nil {
				fmt.Fprintf(spec.Log, "apple_virt: this VM cannot be suspended: %v\n", err)
			}
		}
		if err := vm.Start(); err != nil {
			m.close()
			return nil, EntitlementHint(fmt.Errorf("start the VM: %w", err))
		}
	}
	go m.watch()
	go func() {
		select {
		case <-ctx.Done():
			m.Kill()
		case <-m.done:
		}
	}()
	return m, nil
}

// configure maps the plan onto VZ objects, one to one.
func configure(p *Plan, consoleIn, consoleOut *os.File) (*vz.VirtualMachineConfiguration, error) {
	boot, err := vz.NewLinuxBootLoader(p.Kernel, vz.WithCommandLine(p.Cmdline), vz.WithInitrd(p.Initrd))
	if err != nil {
		return nil, err
	}
	cfg, err := vz.NewVirtualMachineConfiguration(boot, p.CPUs, p.MemoryBytes)
	if err != nil {
		return nil, err
	}

	idData, err := LoadOrCreate(p.MachineIdentifierPath, func() ([]byte, error) {
		id, err := vz.NewGenericMachineIdentifier()
		if err != nil {
			return nil, err
		}
		return id.DataRepresentation(), nil
	})
	if err != nil {
		return nil, err
	}
	id, err := vz.NewGenericMachineIdentifierWithData(idData)
	if err != nil {
		return nil, err
	}
	platform, err := vz.NewGenericPlatformConfiguration(vz.WithGenericMachineIdentifier(id))
	if err != nil {
		return nil, err
	}
	cfg.SetPlatformVirtualMachineConfiguration(platform)

	attach, err := vz.NewFileHandleSerialPortAttachment(consoleIn, consoleOut)
	if err != nil {
		return nil, err
	}
	serial, err := vz.NewVirtioConsoleDeviceSerialPortConfiguration(attach)
	if err != nil {
		return nil, err
	}
	cfg.SetSerialPortsVirtualMachineConfiguration([]*vz.VirtioConsoleDeviceSerialPortConfiguration{serial})

	caching, syncMode := vz.DiskImageCachingModeAutomatic, vz.DiskImageSynchronizationModeFull
	if p.Disk.Cached {
		caching = vz.DiskImageCachingModeCached
	}
	if p.Disk.SyncFsync {
		syncMode = vz.DiskImageSynchronizationModeFsync
	}
	diskAttach, err := vz.NewDiskImageStorageDeviceAttachmentWithCacheAndSync(p.Disk.Path, p.Disk.ReadOnly, caching, syncMode)
	if err != nil {
		return nil, err
	}
	disk, err := vz.NewVirtioBlockDeviceConfiguration(diskAttach)
	if err != nil {
		return nil, err
	}
	cfg.SetStorageDevicesVirtualMachineConfiguration([]vz.StorageDeviceConfiguration{disk})

	nat, err := vz.NewNATNetworkDeviceAttachment()
	if err != nil {
		return nil, err
	}
	nic, err := vz.NewVirtioNetworkDeviceConfiguration(nat)
	if err != nil {
		return nil, err
	}
	mac, err := vz.NewMACAddress(p.MAC)
	if err != nil {
		return nil, err
	}
	nic.SetMACAddress(mac)
	cfg.SetNetworkDevicesVirtualMachineConfiguration([]*vz.VirtioNetworkDeviceConfiguration{nic})

	var shares []vz.DirectorySharingDeviceConfiguration
	for _, s := range p.Shares {
		dir, err := vz.NewSharedDirectory(s.Path, s.ReadOnly)
		if err != nil {
			return nil, err
		}
		single, err := vz.NewSingleDirectoryShare(dir)
		if err != nil {
			return nil, err
		}
		fs, err := vz.NewVirtioFileSystemDeviceConfiguration(s.Tag)
		if err != nil {
			return nil, err
		}
		fs.SetDirectoryShare(single)
		shares = append(shares, fs)
	}
	cfg.SetDirectorySharingDevicesVirtualMachineConfiguration(shares)

	// No entropy device and no memory balloon: see Plan.
	if p.Vsock {
		sock, err := vz.NewVirtioSocketDeviceConfiguration()
		if err != nil {
			return nil, err
		}
		cfg.SetSocketDevicesVirtualMachineConfiguration([]vz.SocketDeviceConfiguration{sock})
	}
	if ok, err := cfg.Validate(); !ok || err != nil {
		if err == nil {
			err = errors.New("the configuration is invalid")
		}
		return nil, fmt.Errorf("VM configuration: %w", err)
	}
	return cfg, nil
}

type machine struct {
	vm      *vz.VirtualMachine
	cfg     *vz.VirtualMachineConfiguration
	shares  int // shared folders: a VM with any is not saved
	console *pipeConsole
	files   []*os.File

	mu     sync.Mutex
	err    error
	vsock  *vz.VirtioSocketDevice // the VM's socket device, once looked up
	done   chan struct{}
	events chan backend.Event
	once   sync.Once
}

// watch follows VZ's state changes, so a guest that powers itself off,
// or a VM that fails, ends the machine.
func (m *machine) watch() {
	paused := false
	for state := range m.vm.StateChangedNotify() {
		switch state {
		case vz.VirtualMachineStatePaused:
			paused = true
			backend.Emit(m.events, backend.Event{Kind: backend.EventPaused})
		case vz.VirtualMachineStateRunning:
			if paused {
				paused = false
				backend.Emit(m.events, backend.Event{Kind: backend.EventResumed})
			}
		case vz.VirtualMachineStateStopped:
			m.finish(nil)
			return
		case vz.VirtualMachineStateError:
			m.finish(errors.New("Virtualization.framework reported an error state"))
			return
		}
	}
	m.finish(nil)
}

func (m *machine) finish(err error) {
	m.once.Do(func() {
		m.mu.Lock()
		m.err = err
		m.mu.Unlock()
		m.close()
		close(m.done)
	})
}

func (m *machine) close() { closeAll(m.files...) }

func (m *machine) Events() <-chan backend.Event { return m.events }

// Resume continues a paused VM.
func (m *machine) Resume(context.Context) error {
	if !m.vm.CanResume() {
		return errors.New("Virtualization.framework cannot resume this VM now")
	}
	return m.vm.Resume()
}

// saveRestoreSupported says whether VZ can save and restore this VM: the
// macOS version first, and only from macOS 14 on the framework's
// ValidateSaveRestoreSupport, which in vz v3.7.1 has no version check of
// its own and aborts the process below macOS 14 (an NSException).
func saveRestoreSupported(cfg *vz.VirtualMachineConfiguration) error {
	return checkSaveRestore(productVersion, cfg.ValidateSaveRestoreSupport)
}

// Save pauses the VM and writes its state with VZ's own save (macOS 14+).
func (m *machine) Save(ctx context.Context, path string) error {
	if m.shares > 0 {
		return errors.New("it has shared folders, which heyvm cannot give back to a restored VM on apple_virt; stop it instead")
	}
	if err := saveRestoreSupported(m.cfg); err != nil {
		return err
	}
	if !m.vm.CanPause() {
		return errors.New("Virtualization.framework cannot pause this VM now")
	}
	if err := m.vm.Pause(); err != nil {
		return fmt.Errorf("pause the VM: %w", err)
	}
	fail := func(err error) error {
		os.Remove(path)
		if m.vm.CanResume() {
			m.vm.Resume()
		}
		return err
	}
	if err := m.vm.SaveMachineStateToPath(path); err != nil {
		return fail(fmt.Errorf("save the VM: %w", err))
	}
	f, err := os.Open(path)
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	return nil
}

// Hypervisor is Virtualization.framework with the macOS version, which
// is what a saved state is tied to.
func (m *machine) Hypervisor() string {
	v, err := productVersion()
	if err != nil {
		v = "unknown"
	}
	return "Virtualization.framework on macOS " + v
}

func (m *machine) Console() io.ReadWriter { return m.console }
func (m *machine) Accelerator() string    { return "vz" }
func (m *machine) Done() <-chan struct{}  { return m.done }

// SSHAddress: none. The guest's sshd is reached over virtio-vsock
// (DialSSH), and no host process connects to its NAT address: macOS 15's
// Local Network Privacy would block that for processes whose responsible
// app is not a terminal.
func (m *machine) SSHAddress(string) (string, int) { return "", 0 }

// DialSSH opens a stream to the guest's sshd on vsock port SSHVsockPort,
// through the VM's socket device. vz runs the connect on the VM's
// dispatch queue (VZVirtioSocketDevice_connectToPort dispatch_asyncs onto
// it) and hands back the framework's file descriptor as a net.Conn. The
// connect may never be answered: it ends when ctx ends.
func (m *machine) DialSSH(ctx context.Context, _ string) (net.Conn, error) {
	dev, err := m.socketDevice()
	if err != nil {
		return nil, err
	}
	return dialContext(ctx, m.done, func() (net.Conn, error) {
		c, err := dev.Connect(SSHVsockPort)
		if err != nil {
			// Never a typed nil in the interface.
			return nil, fmt.Errorf("connect to the guest's sshd on vsock port %d: %w", SSHVsockPort, err)
		}
		return c, nil
	})
}

// socketDevice is the VM's virtio socket device, looked up once. The list
// is the configuration's, fixed when the VM is made.
func (m *machine) socketDevice() (*vz.VirtioSocketDevice, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.vsock == nil {
		devs := m.vm.SocketDevices()
		if len(devs) == 0 {
			return nil, errors.New("the VM has no virtio socket device to reach its sshd through")
		}
		m.vsock = devs[0]
	}
	return m.vsock, nil
}

func (m *machine) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// RequestStop asks the guest to power off, giving up when ctx ends (the
// framework's calls wait on the VM's queue).
func (m *machine) RequestStop(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() {
		if !m.vm.CanRequestStop() {
			errc <- errors.New("the VM cannot take a stop request now")
			return
		}
		_, err := m.vm.RequestStop()
		errc <- err
	}()
	select {
	case err := <-errc:
		return err
	case <-m.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Kill stops the VM at once, within killLimit. While it is starting,
// saving or restoring the framework refuses (CanStop is false), so Kill
// tries again every killRetry. If the VM still has not stopped, Kill ends
// the machine anyway, so Done closes and no caller waits for ever, and
// says so: the VM then ends when this process exits (a VZ VM cannot
// outlive the process that made it).
func (m *machine) Kill() error {
	err := forceStop(m.done, func() (bool, error) {
		if !m.vm.CanStop() {
			return false, nil
		}
		return true, m.vm.Stop()
	}, killRetry, killLimit)
	if err != nil {
		state := strings.ToLower(strings.TrimPrefix(m.vm.State().String(), "VirtualMachineState"))
		err = fmt.Errorf("%v (state: %s); the VM ends when this heyvm process exits", err, state)
		m.finish(err)
	}
	return err
}

type pipeConsole struct {
	r *os.File
	w *os.File
}

func (c *pipeConsole) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *pipeConsole) Write(p []byte) (int, error) { return c.w.Write(p) }

func closeAll(fs ...*os.File) {
	for _, f := range fs {
		if f != nil {
			f.Close()
		}
	}
}
