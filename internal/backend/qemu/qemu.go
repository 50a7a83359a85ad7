//go:build linux

// Package qemu is heyvm's Linux backend: qemu-system with KVM when it
// truly works, TCG otherwise, and Debian's virtiofsd for shared folders.
package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/heyvm/heyvm/internal/backend"
	"github.com/heyvm/heyvm/internal/userns"
)

// VirtiofsdPath is where Debian's QEMU ships the C virtiofsd.
var VirtiofsdPath = "/usr/lib/qemu/virtiofsd"

func init() { backend.Register(Backend{}) }

// Backend runs machines with qemu-system.
type Backend struct{}

func (Backend) Name() string { return Name }

func (Backend) Available() error {
	bin, _ := binaryFor(nativeDebianArch())
	if _, err := exec.LookPath(bin); err != nil {
		return fmt.Errorf("%s is not installed: run `sudo apt-get install qemu-system-x86 qemu-system-arm`", bin)
	}
	return nil
}

func nativeDebianArch() string { return hostArch() }

// HypervisorBuild is the qemu-system binary for arch as a path, size and
// modification time: an upgrade replaces the file.
func (Backend) HypervisorBuild(arch string) string {
	bin, err := binaryFor(arch)
	if err != nil {
		return ""
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return ""
	}
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%s %d %d", path, fi.Size(), fi.ModTime().UnixNano())
}

// Preflight checks what Start would need for the spec's shares.
func (Backend) Preflight(spec backend.Spec) error {
	if err := checkNetwork(spec); err != nil {
		return err
	}
	if len(spec.Mounts) > 0 {
		_, err := sharesUsable()
		return err
	}
	return nil
}

// sharesUsable says whether virtiofsd can serve shares here. It never
// lets a share be dropped silently: no virtiofsd, no sandbox. For an
// ordinary user it returns the user namespace virtiofsd will run in
// (nil as root).
func sharesUsable() (*userns.Config, error) {
	if _, err := os.Stat(VirtiofsdPath); err != nil {
		return nil, fmt.Errorf("shared folders need virtiofsd, which is missing at %s: run `sudo apt-get install qemu-system-common`", VirtiofsdPath)
	}
	if !userns.Rootless() {
		return nil, nil
	}
	cfg, err := userns.ThisHost().Check()
	if err != nil {
		return nil, fmt.Errorf("shared folders: %w", err)
	}
	return &cfg, nil
}

// virtiofsdCommand is virtiofsd for one share. As root it runs as is. As
// an ordinary user it runs as root of a user namespace that maps the user
// to root and the subordinate ids to 1..65535: files the guest's root
// creates belong to the user on the host, the user's files are root's in
// the guest, and other guest ids land in the subordinate range. It gets a
// private /run (its lock directory) and chroot sandboxing, since it cannot
// set up its namespace sandbox from there.
func virtiofsdCommand(ns *userns.Config, args ...string) *exec.Cmd {
	if ns == nil {
		return exec.Command(VirtiofsdPath, args...)
	}
	argv := ns.Args(append([]string{"sh", "-c", `mount -t tmpfs -o mode=0755 tmpfs /run && exec "$0" "$@"`, VirtiofsdPath}, append(args, "-o", "sandbox=chroot")...)...)
	return exec.Command(argv[0], argv[1:]...)
}

// Start boots the machine described by spec.
func (Backend) Start(ctx context.Context, spec backend.Spec) (backend.Machine, error) {
	bin, err := binaryFor(spec.Arch)
	if err != nil {
		return nil, err
	}
	if _, err := exec.LookPath(bin); err != nil {
		return nil, fmt.Errorf("%s is not installed: run `sudo apt-get install qemu-system-x86 qemu-system-arm`", bin)
	}
	accel, why, err := probeAccel(spec.Arch)
	if err != nil {
		return nil, err
	}
	logw := spec.Log
	if logw == nil {
		logw = io.Discard
	}
	fmt.Fprintf(logw, "qemu: accelerator %s (%s)\n", accel, why)

	m := &machine{accel: accel, shares: len(spec.Mounts), done: make(chan struct{}), events: make(chan backend.Event, 16)}
	ok := false
	defer func() {
		if !ok {
			m.cleanup()
		}
	}()

	if err := checkNetwork(spec); err != nil {
		return nil, err
	}
	if spec.RestoreFrom != "" && len(spec.Mounts) > hotplugPorts {
		return nil, fmt.Errorf("%w: %d shares, and a restored machine has room for %d", backend.ErrRestoreUnsupported, len(spec.Mounts), hotplugPorts)
	}
	vfsSockets, err := m.startVirtiofsd(spec, logw)
	if err != nil {
		return nil, err
	}
	var link *hostLink
	var uplink *os.File
	if !spec.HostLoopback {
		l, err := pickHostLink(hostIPv4Nets(), spec.MAC)
		if err != nil {
			return nil, err
		}
		link = &l
		if uplink, err = m.startPasst(logw); err != nil {
			return nil, err
		}
	}

	conHost, conGuest, err := socketPair("console")
	if err != nil {
		return nil, err
	}
	m.closers = append(m.closers, conHost)
	qmpHost, qmpGuest, err := socketPair("qmp")
	if err != nil {
		conGuest.Close()
		return nil, err
	}
	m.closers = append(m.closers, qmpHost)
	m.console = conHost

	m.memoryBytes = int64(spec.MemoryMiB) << 20
	if m.memory, err = newGuestMemory(m.memoryBytes); err != nil {
		return nil, err
	}
	m.closers = append(m.closers, m.memory)
	incoming := incomingNone
	var state *os.File
	var memoryLoaded chan error
	if spec.RestoreFrom != "" {
		if state, err = os.Open(spec.RestoreFrom); err != nil {
			return nil, fmt.Errorf("saved state: %w", err)
		}
		defer state.Close()
		saved, apart, err := readSavedLayout(state)
		if err != nil {
			return nil, backend.SavedStateError(err)
		}
		incoming = incomingStream
		if apart {
			if saved.MemoryBytes != m.memoryBytes {
				return nil, backend.SavedStateError(fmt.Errorf("saved state: it has %d MiB of memory, and this machine %d MiB", saved.MemoryBytes>>20, spec.MemoryMiB))
			}
			// The memory is copied while qemu starts. qemu reads the device
			// state from the fd's offset, set once the copy (which moves
			// it: SEEK_DATA) is done.
			incoming = incomingDeferred
			memoryLoaded = make(chan error, 1)
			go func() {
				err := loadMemory(state, saved, m.memory)
				if err == nil {
					_, err = state.Seek(saved.StateOffset, io.SeekStart)
				}
				memoryLoaded <- err
			}()
		}
	}

	args := buildArgs(spec, accel, vfsSockets, link, incoming)
	cmd := exec.Command(bin, args...)
	cmd.ExtraFiles = []*os.File{conGuest, qmpGuest} // fds 3 and 4
	cmd.ExtraFiles = append(cmd.ExtraFiles, uplink) // fd 5 (nil: none)
	if uplink != nil {
		defer uplink.Close()
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, state, m.memory) // fds 6 (nil: none) and 7
	// Pdeathsig: qemu dies with its owner, however the owner dies.
	// Setpgid: a Ctrl-C on the owner's terminal is the owner's to handle.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	m.stderr = &tailBuffer{max: 4096}
	cmd.Stdout = logw
	cmd.Stderr = io.MultiWriter(logw, m.stderr)
	fmt.Fprintf(logw, "qemu: %s %s\n", bin, strings.Join(args, " "))
	err = cmd.Start()
	conGuest.Close()
	qmpGuest.Close()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	m.cmd = cmd
	go func() {
		err := cmd.Wait()
		m.mu.Lock()
		if err != nil && m.err == nil && !m.killed {
			m.err = fmt.Errorf("qemu exited: %v: %s", err, m.stderr.String())
		}
		m.mu.Unlock()
		m.cleanup()
		close(m.done)
	}()

	m.qmp, err = newQMP(qmpHost)
	if err != nil {
		if memoryLoaded != nil {
			<-memoryLoaded
		}
		<-m.done
		return nil, m.startError(err)
	}
	if memoryLoaded != nil {
		if err := m.startIncoming(memoryLoaded); err != nil {
			m.Kill()
			<-m.done
			return nil, backend.SavedStateError(err)
		}
	}
	if incoming != incomingNone {
		if err := m.waitIncoming(ctx); err != nil {
			m.Kill()
			<-m.done
			return nil, backend.SavedStateError(m.startError(err))
		}
		if err := m.plugShares(spec, vfsSockets); err != nil {
			m.Kill()
			<-m.done
			return nil, err
		}
	}
	usernet, err := m.qmp.hmp("info usernet")
	if err != nil {
		m.Kill()
		return nil, m.startError(err)
	}
	m.sshPort, err = parseUsernetPort(usernet, 22)
	if err != nil {
		m.Kill()
		return nil, err
	}
	go func() {
		select {
		case <-ctx.Done():
			m.Kill()
		case <-m.done:
		}
	}()
	go m.followQMPEvents()
	ok = true
	return m, nil
}

// followQMPEvents turns QEMU's events into backend events.
func (m *machine) followQMPEvents() {
	for {
		select {
		case <-m.done:
			return
		case ev := <-m.qmp.events:
			switch ev.Event {
			case "BLOCK_IO_ERROR":
				var d struct {
					Device    string `json:"device"`
					Operation string `json:"operation"`
					NoSpace   bool   `json:"nospace"`
					Reason    string `json:"reason"`
				}
				json.Unmarshal(ev.Data, &d)
				backend.Emit(m.events, backend.Event{Kind: backend.EventIOError, NoSpace: d.NoSpace,
					Detail: fmt.Sprintf("%s error on the disk: %s", d.Operation, d.Reason)})
			case "STOP":
				backend.Emit(m.events, backend.Event{Kind: backend.EventPaused})
			case "RESUME":
				backend.Emit(m.events, backend.Event{Kind: backend.EventResumed})
			}
		}
	}
}

func (m *machine) Events() <-chan backend.Event { return m.events }

// Resume continues a paused VM (QMP cont).
func (m *machine) Resume(context.Context) error {
	_, err := m.qmp.execute("cont", nil)
	return err
}

var hostfwdRe = regexp.MustCompile(`host forwarding rule 'tcp:127\.0\.0\.1:(\d+)-:(\d+)'`)

// startError turns qemu's dying words into a message a user can act on.
func (m *machine) startError(err error) error {
	msg := strings.TrimSpace(m.stderr.String())
	if sm := hostfwdRe.FindStringSubmatch(msg); sm != nil {
		return fmt.Errorf("port 127.0.0.1:%s is already in use: pick another host port with --port HOST:%s", sm[1], sm[2])
	}
	if strings.Contains(msg, `Failed to get "write" lock`) {
		return fmt.Errorf("%w (qemu: %s)", backend.ErrDiskBusy, lastLines(msg, 1))
	}
	if msg != "" {
		return fmt.Errorf("qemu failed to start: %s", lastLines(msg, 3))
	}
	return fmt.Errorf("qemu failed to start: %w", err)
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}

// startVirtiofsd starts one virtiofsd per share. heyvm creates each
// listening socket itself and hands it over (--fd), so qemu can connect
// the moment it starts, with no wait for a socket file to appear.
func (m *machine) startVirtiofsd(spec backend.Spec, logw io.Writer) ([]string, error) {
	if len(spec.Mounts) == 0 {
		return nil, nil
	}
	ns, err := sharesUsable()
	if err != nil {
		return nil, err
	}
	var socks []string
	for i, mt := range spec.Mounts {
		sock := filepath.Join(spec.RunDir, fmt.Sprintf("vfs%d.sock", i))
		os.Remove(sock)
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
		if err != nil {
			return nil, fmt.Errorf("virtiofsd socket: %w", err)
		}
		l.SetUnlinkOnClose(false)
		f, err := l.File()
		l.Close()
		if err != nil {
			return nil, err
		}
		os.Chmod(sock, 0o600)
		cmd := virtiofsdCommand(ns, "--fd=3", "-o", "source="+mt.HostPath, "-o", "cache=auto", "-o", "xattr", "-o", "log_level=warn")
		cmd.ExtraFiles = []*os.File{f}
		cmd.Stdout, cmd.Stderr = logw, logw
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
		err = cmd.Start()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("start virtiofsd for %s: %w", mt.HostPath, err)
		}
		m.helpers = append(m.helpers, cmd)
		go func() {
			err := cmd.Wait()
			// virtiofsd also ends when qemu does: only a death while the
			// VM goes on is a broken share.
			select {
			case <-m.done:
				return
			case <-time.After(time.Second):
			}
			if !m.ending() {
				backend.Emit(m.events, backend.Event{Kind: backend.EventShareBroken,
					Detail: fmt.Sprintf("%s (%s): its virtiofsd exited (%v)", mt.GuestPath, mt.HostPath, err)})
			}
		}()
		m.sockets = append(m.sockets, sock)
		socks = append(socks, sock)
	}
	return socks, nil
}

// startPasst starts passt on one end of a socket pair and returns the
// other end, for qemu's uplink NIC. passt ends when qemu closes its end;
// cleanup kills it in case.
func (m *machine) startPasst(logw io.Writer) (*os.File, error) {
	ours, qemuEnd, err := filePair("uplink")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(PasstPath, passtArgs()...)
	cmd.ExtraFiles = []*os.File{ours}
	cmd.Stdout, cmd.Stderr = logw, logw
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	err = cmd.Start()
	ours.Close()
	if err != nil {
		qemuEnd.Close()
		return nil, fmt.Errorf("start passt (the guest's network): %w", err)
	}
	fmt.Fprintf(logw, "qemu: uplink: %s %s\n", PasstPath, strings.Join(passtArgs(), " "))
	m.helpers = append(m.helpers, cmd)
	go func() {
		err := cmd.Wait()
		if !m.ending() {
			fmt.Fprintf(logw, "qemu: passt, the guest's network, ended (%v); the guest is offline until the sandbox restarts\n", err)
		}
	}()
	return qemuEnd, nil
}

// socketPair is a connected pair: heyvm's end as a net.Conn, qemu's as a
// file to hand over.
func socketPair(what string) (host net.Conn, guest *os.File, err error) {
	hf, guest, err := filePair(what)
	if err != nil {
		return nil, nil, err
	}
	host, err = net.FileConn(hf)
	hf.Close()
	if err != nil {
		guest.Close()
		return nil, nil, err
	}
	return host, guest, nil
}

// filePair is a connected pair of unix stream sockets as files, the
// second one qemu's (close-on-exec until handed over as ExtraFiles).
func filePair(what string) (a, qemuEnd *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("%s socket: %w", what, err)
	}
	return os.NewFile(uintptr(fds[0]), what), os.NewFile(uintptr(fds[1]), what+"-qemu"), nil
}

// ending says whether the machine is being stopped or cleaned up, so a
// helper that exits now is no news.
func (m *machine) ending() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.killed || m.cleaned
}

type machine struct {
	accel string
	// memory is the guest's memory (memory.go), memoryBytes its size.
	memory      *os.File
	memoryBytes int64
	shares      int // virtio-fs devices: a machine with any cannot be saved
	cmd         *exec.Cmd
	qmp         *qmpClient
	console     net.Conn
	sshPort     int
	stderr      *tailBuffer
	helpers     []*exec.Cmd
	sockets     []string
	closers     []io.Closer

	events chan backend.Event

	mu      sync.Mutex
	killed  bool
	err     error
	cleaned bool
	done    chan struct{}
}

func (m *machine) Console() io.ReadWriter { return m.console }
func (m *machine) Accelerator() string    { return m.accel }
func (m *machine) Done() <-chan struct{}  { return m.done }

func (m *machine) SSHAddress(string) (string, int) { return "127.0.0.1", m.sshPort }

// DialSSH connects to the host port qemu forwards to the guest's port 22.
func (m *machine) DialSSH(ctx context.Context, _ string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(m.sshPort)))
}

func (m *machine) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// RequestStop presses the virtual power button (ACPI).
func (m *machine) RequestStop(ctx context.Context) error {
	if m.qmp == nil {
		return errors.New("qemu is not running")
	}
	_, err := m.qmp.execute("system_powerdown", nil)
	return err
}

func (m *machine) Kill() error {
	m.mu.Lock()
	m.killed = true
	m.mu.Unlock()
	if m.cmd != nil && m.cmd.Process != nil {
		m.cmd.Process.Kill()
	}
	return nil
}

// cleanup stops the helpers and closes the sockets. virtiofsd never
// outlives its VM.
func (m *machine) cleanup() {
	m.mu.Lock()
	if m.cleaned {
		m.mu.Unlock()
		return
	}
	m.cleaned = true
	m.mu.Unlock()
	for _, h := range m.helpers {
		if h.Process != nil {
			h.Process.Kill()
		}
	}
	for _, c := range m.closers {
		c.Close()
	}
	for _, s := range m.sockets {
		os.Remove(s)
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf.Write(p)
	if over := t.buf.Len() - t.max; over > 0 {
		t.buf.Next(over)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.buf.String()
}
