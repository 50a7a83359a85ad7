// Package owner runs one sandbox's VM for as long as it lives. The owner
// is either the CLI process itself (the default: the VM ends with the
// command) or a detached `heyvm __sandbox_owner <id>` process. Either way
// it holds owner.lock for its whole life, writes owner.json only once SSH
// really works, and removes it when the VM stops.
package owner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/heyvm/heyvm/internal/backend"
	"github.com/heyvm/heyvm/internal/console"
	"github.com/heyvm/heyvm/internal/fsutil"
	"github.com/heyvm/heyvm/internal/hostinfo"
	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/layout"
	"github.com/heyvm/heyvm/internal/portfwd"
	"github.com/heyvm/heyvm/internal/sandbox"
	"github.com/heyvm/heyvm/internal/sshclient"
	"github.com/heyvm/heyvm/internal/sshmux"
	"github.com/heyvm/heyvm/internal/warm"
)

// ErrAlreadyRunning means another owner holds the sandbox.
var ErrAlreadyRunning = errors.New("sandbox is already running")

// ConsoleLogMax bounds console.log (it rotates once to console.log.1).
const ConsoleLogMax = 1 << 20

// StartMargin is the free space a sandbox's file system must have for it
// to boot: the guest writes logs, keys and whatever it runs.
const StartMargin = 128 * hostinfo.MiB

// BootTimeout bounds the wait for the guest's ready line. TCG boots take
// seconds; this only catches a guest that will never come up.
var BootTimeout = 180 * time.Second

// Session is a running sandbox VM and the owner's hold on it.
type Session struct {
	root    layout.Root
	sb      *sandbox.Sandbox
	log     *retryLog
	lock    *fsutil.Lock
	machine backend.Machine
	cancel  context.CancelFunc
	console *console.Driver
	hub     *consoleHub
	conLog  *console.BoundedLog
	target  sshclient.Target
	ports   *portfwd.Forwarder
	control net.Listener
	mux     *sshmux.Server // the shared guest connection (ssh.sock)
	Info    sandbox.OwnerInfo

	stopOnce sync.Once
	stopped  chan struct{}
	reason   string
	mu       sync.Mutex
	stopping bool
	ready    bool // owner.json written: pauses are recorded, not boot failures
	// suspending: Suspend is saving the VM; its pause is not reported.
	suspending bool
}

// BootOptions say which sandbox to boot and how its owner runs.
type BootOptions struct {
	Root     layout.Root
	Sandbox  *sandbox.Sandbox
	Log      io.Writer // owner diagnostics (owner.log for a detached owner)
	Detached bool
}

// Boot takes the owner lock, starts the VM, provisions it over the
// console and checks SSH. On any failure it tears everything down and
// records why in last_stop.json.
func Boot(ctx context.Context, o BootOptions) (*Session, error) {
	files := o.Sandbox.Files
	cfg := o.Sandbox.Config
	lock, err := fsutil.TryLock(files.OwnerLock())
	if errors.Is(err, fsutil.ErrLocked) {
		return nil, ErrAlreadyRunning
	}
	if err != nil {
		return nil, err
	}
	lock.WriteOwnerPID(os.Getpid())
	os.Remove(files.OwnerState()) // stale: its owner is gone, or we would not hold the lock
	if o.Log == nil {
		o.Log = io.Discard
	}
	logw := newRetryLog(o.Log)
	s := &Session{root: o.Root, sb: o.Sandbox, log: logw, lock: lock, stopped: make(chan struct{})}
	fail := func(err error) (*Session, error) {
		detail := err.Error()
		if s.machine != nil {
			s.machine.Kill()
			<-s.machine.Done()
		}
		s.finish(sandbox.StopFailed, detail)
		return nil, err
	}

	b, im, signer, pubLine, err := s.preflight()
	if err != nil {
		return fail(err)
	}
	// The machine lives until Shutdown cancels this, not until ctx ends:
	// ctx only bounds the boot.
	saved, err := savedVM(o.Sandbox)
	if err != nil {
		return fail(err)
	}
	spec := Spec(cfg, im, files)
	var snap *warm.Snapshot
	coldWhy := ""
	if saved != nil {
		spec.RestoreFrom = files.SuspendState()
	} else if snap, coldWhy = warmSnapshotFor(cfg); snap != nil {
		spec.RestoreFrom = snap.State()
	}
	if cfg.WarmFrom != "" {
		// A snapshot is for the first start only: later ones boot the disk.
		if _, err := (sandbox.Store{Root: o.Root}).Update(ctx, cfg.ID, func(c *sandbox.Config) { c.WarmFrom = "" }); err != nil {
			return fail(err)
		}
	}
	mctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	started := time.Now()
	m, snap, why, err := s.startOrColder(ctx, mctx, b, spec, snap)
	if why != "" {
		coldWhy = why
	}
	if err != nil {
		cancel()
		if saved != nil {
			err = resumeError(cfg.Name, saved, err)
		}
		return fail(err)
	}
	s.machine = m
	fmt.Fprintf(logw, "owner: %s started (%s) in %s\n", cfg.Backend, m.Accelerator(), time.Since(started).Round(time.Millisecond))

	s.hub = newConsoleHub()
	s.console = console.New(m.Console(), io.MultiWriter(s.conLog, s.hub))
	// A host I/O error during boot ends the boot with its reason at once.
	fctx, failBoot := context.WithCancelCause(ctx)
	defer failBoot(nil)
	go s.followEvents(failBoot)
	bctx, bcancel := context.WithTimeout(fctx, BootTimeout)
	defer bcancel()
	var ip string
	var key ssh.PublicKey
	switch {
	case saved != nil:
		ip, key, err = s.resumeSaved(bctx, saved, started)
	case snap != nil:
		ip, key, err = s.adoptWarm(bctx, snap, pubLine, started)
	default:
		ip, key, err = s.provisionCold(bctx, b, pubLine, started)
	}
	if err != nil {
		return fail(err)
	}
	host, port := m.SSHAddress(ip)
	s.target = sshclient.Target{Host: host, Port: port, User: "root", Signer: signer, HostKey: key,
		Dial: func(ctx context.Context) (net.Conn, error) { return m.DialSSH(ctx, ip) }}
	// A resumed guest's clock stands where it was when the VM was saved:
	// the check sets it.
	then := ""
	if saved != nil {
		then = clockCommand(time.Now())
	}
	guest, err := s.checkSSH(bctx, then)
	if err != nil {
		return fail(s.bootError(bctx, "checking SSH", err))
	}
	if saved != nil {
		// A lease may have run out while the VM was saved, and its old
		// address belong to another VM by now: renew it, and take the
		// address the guest has after that.
		if now, err := renewLease(bctx, guest); err != nil {
			fmt.Fprintf(logw, "owner: renewing the resumed guest's lease: %v\n", err)
		} else if now != ip {
			fmt.Fprintf(logw, "owner: the resumed guest's address is %s (it was %s when saved)\n", now, ip)
			ip = now
		}
	}
	fmt.Fprintf(logw, "owner: ssh ready at %s:%d after %s\n", host, port, time.Since(started).Round(time.Millisecond))
	info := sandbox.OwnerInfo{
		PID: os.Getpid(), GuestIP: ip, SSHHost: host, SSHPort: port,
		StartedAt: started.UTC(), Accelerator: m.Accelerator(), Detached: o.Detached,
		Boot: "cold", ColdWhy: coldWhy,
	}
	switch {
	case saved != nil:
		info.Boot = "resumed"
	case snap != nil:
		info.Boot = "warm"
	}
	if err := s.serve(guest, info); err != nil {
		return fail(err)
	}
	return s, nil
}

// preflight is what a boot needs before a VM starts, each checked with
// its reason: the backend, the image, the disk, heyvm's key, the console
// log, the --port host ports, the free space, and the pause reserve.
func (s *Session) preflight() (backend.Backend, *image.Image, ssh.Signer, string, error) {
	cfg, files := s.sb.Config, s.sb.Files
	b, err := backend.Get(cfg.Backend)
	if err != nil {
		return nil, nil, nil, "", err
	}
	im, err := sandboxImage(s.root, cfg, files)
	if err != nil {
		return nil, nil, nil, "", fmt.Errorf("sandbox %s needs image %q: %w", cfg.Name, cfg.Image, err)
	}
	if err := checkDisk(cfg, files); err != nil {
		return nil, nil, nil, "", err
	}
	signer, pubLine, err := sshclient.ManagedKey(s.root)
	if err != nil {
		return nil, nil, nil, "", err
	}
	s.conLog, err = console.OpenBoundedLog(files.ConsoleLog(), ConsoleLogMax)
	if err != nil {
		return nil, nil, nil, "", err
	}
	fmt.Fprintf(s.conLog, "\n--- heyvm: boot of %s at %s ---\n", cfg.Name, time.Now().UTC().Format(time.RFC3339))
	for _, p := range cfg.Ports {
		if err := portfwd.CheckFree(p.HostPort); err != nil {
			return nil, nil, nil, "", err
		}
	}
	// A guest that cannot write its disk cannot boot: say so now, not
	// after a pause the boot would wait out.
	if err := hostinfo.NeedSpace(files.Dir, StartMargin, "sandbox "+cfg.Name+" to run"); err != nil {
		return nil, nil, nil, "", err
	}
	if err := sandbox.ReservePause(files); err != nil {
		return nil, nil, nil, "", err
	}
	return b, im, signer, pubLine, nil
}

// startOrColder starts the machine as spec says, from a ready snapshot
// if snap is one, and falls back to a cold boot where the snapshot cannot
// be restored. It returns the snapshot the machine runs from (nil after a
// fall back) and why it fell back ("" if it did not).
func (s *Session) startOrColder(ctx, mctx context.Context, b backend.Backend, spec backend.Spec, snap *warm.Snapshot) (backend.Machine, *warm.Snapshot, string, error) {
	m, err := startMachine(ctx, mctx, b, spec)
	if snap == nil || err == nil {
		return m, snap, "", err
	}
	why := err.Error()
	if !errors.Is(err, backend.ErrRestoreUnsupported) {
		// This sandbox's disk, cloned from the snapshot's, boots as it
		// is. A snapshot the hypervisor cannot load (damaged, or made by
		// another version) is dropped too; one that failed for this
		// sandbox's own reasons (a shared folder, say) stays for others.
		why = fmt.Sprintf("its ready snapshot could not be restored (%v)", err)
		if errors.Is(err, backend.ErrSavedState) {
			why += ", so it was dropped"
			warm.Drop(snap.Files)
		}
		fmt.Fprintf(s.log, "owner: warning: %s; booting cold\n", why)
	}
	spec.RestoreFrom = ""
	m, err = startMachine(ctx, mctx, b, spec)
	return m, nil, why, err
}

// resumeSaved runs a VM restored from its own suspend: its address and
// host key are the ones it had.
func (s *Session) resumeSaved(bctx context.Context, saved *sandbox.SuspendInfo, started time.Time) (string, ssh.PublicKey, error) {
	files := s.sb.Files
	// The saved state goes before the guest runs again: once its disk
	// moves on, that state could only corrupt it.
	if err := sandbox.DiscardSuspend(files); err != nil {
		return "", nil, err
	}
	if err := s.machine.Resume(bctx); err != nil {
		return "", nil, fmt.Errorf("resume the restored VM: %w", err)
	}
	fmt.Fprintf(s.log, "owner: restored the VM saved at %s, running after %s\n", saved.At.Format(time.RFC3339), time.Since(started).Round(time.Millisecond))
	key, err := sshclient.PinnedHostKey(files.KnownHosts())
	return saved.GuestIP, key, err
}

// adoptWarm runs a VM restored from a ready snapshot and gives it this
// sandbox's identity over the console.
func (s *Session) adoptWarm(bctx context.Context, snap *warm.Snapshot, pubLine string, started time.Time) (string, ssh.PublicKey, error) {
	cfg := s.sb.Config
	if err := s.machine.Resume(bctx); err != nil {
		return "", nil, fmt.Errorf("resume the restored VM: %w", err)
	}
	fmt.Fprintf(s.log, "owner: the ready snapshot is loaded and running after %s\n", time.Since(started).Round(time.Millisecond))
	grow := int64(cfg.DiskSizeMiB)<<20 > snap.DiskBytes()
	script, input, hostKey, err := identityScript(cfg.Name, cfg.Arch, pubLine, grow, cfg.Mounts)
	if err != nil {
		return "", nil, err
	}
	if err := adoptRestored(bctx, s.console, script, input, hostKey); err != nil {
		return "", nil, s.bootError(bctx, "giving the restored VM its identity", err)
	}
	fmt.Fprintf(s.log, "owner: restored from the ready snapshot, with its own identity, after %s\n", time.Since(started).Round(time.Millisecond))
	key, err := sshclient.PinHostKey(s.sb.Files.KnownHosts(), cfg.ID, hostKey)
	return snap.Saved.GuestIP, key, err
}

// provisionCold waits for a booting guest's ready line and provisions it
// over the console: heyvm's key in, its address and host key out.
func (s *Session) provisionCold(bctx context.Context, b backend.Backend, pubLine string, started time.Time) (string, ssh.PublicKey, error) {
	uptime, err := s.console.WaitReady(bctx)
	if err != nil {
		return "", nil, s.bootError(bctx, "waiting for the guest to boot", err)
	}
	fmt.Fprintf(s.log, "owner: guest ready after %s (guest uptime %ss)\n", time.Since(started).Round(time.Millisecond), uptime)
	ip, hostKey, err := provision(bctx, s.console, pubLine)
	if h, ok := b.(backend.DHCPHinter); ok && errors.Is(err, ErrNoAddress) {
		err = fmt.Errorf("the guest got no IPv4 address: %s", h.DHCPHint())
	}
	if err != nil {
		return "", nil, s.bootError(bctx, "provisioning over the console", err)
	}
	fmt.Fprintf(s.log, "owner: provisioned over the console after %s\n", time.Since(started).Round(time.Millisecond))
	key, err := sshclient.PinHostKey(s.sb.Files.KnownHosts(), s.sb.Config.ID, hostKey)
	return ip, key, err
}

// serve starts what a running sandbox offers once SSH answers: the
// shared connection (ssh.sock), the console socket, the --port forwards
// and the control socket; then it records the owner's state (owner.json)
// and watches the VM.
func (s *Session) serve(guest *ssh.Client, info sandbox.OwnerInfo) error {
	files, cfg, logw := s.sb.Files, s.sb.Config, s.log
	// That connection stays up, shared on ssh.sock with every heyvm
	// command (sshmux): they skip the guest's handshake.
	sockKey, err := s.shareSSH(guest)
	if err != nil {
		guest.Close()
		fmt.Fprintf(logw, "owner: shared SSH socket unavailable (commands connect on their own): %v\n", err)
	}

	if err := s.hub.listen(files.ConsoleSock(), s.console); err != nil {
		fmt.Fprintf(logw, "owner: console socket unavailable: %v\n", err)
	}
	// --port forwards: the owner listens on 127.0.0.1 and carries each
	// connection over SSH, on every backend.
	target := s.target
	s.ports = portfwd.New(func(ctx context.Context) (*ssh.Client, error) { return sshclient.Dial(ctx, target) }, logw)
	for _, p := range cfg.Ports {
		if _, err := s.ports.Add(p); err != nil {
			return err
		}
	}
	if err := s.listenControl(files.ControlSock()); err != nil {
		fmt.Fprintf(logw, "owner: control socket unavailable (heyvm port will not work): %v\n", err)
	}
	info.Ports, info.SSHSockKey = s.ports.List(), sockKey
	if cfg.TTL > 0 {
		t := info.StartedAt.Add(time.Duration(cfg.TTL)).UTC()
		info.ExpiresAt = &t
	}
	s.mu.Lock()
	s.Info = info
	s.ready = true
	err = sandbox.WriteOwnerInfo(files, s.Info)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	go s.watch()
	if cfg.AutoPorts {
		go s.watchPorts()
	}
	return nil
}

// DiskBusyWait bounds the wait for a killed owner's VM to let go of the
// disk: it dies with its owner, but not at the same instant.
var DiskBusyWait = 15 * time.Second

// startMachine starts the VM, waiting out a disk still held by the VM of
// a killed owner (a stale VM never runs beside a new one: the hypervisor's
// disk lock refuses it).
func startMachine(ctx, mctx context.Context, b backend.Backend, spec backend.Spec) (backend.Machine, error) {
	deadline := time.Now().Add(DiskBusyWait)
	for {
		m, err := b.Start(mctx, spec)
		if !errors.Is(err, backend.ErrDiskBusy) || time.Now().After(deadline) {
			return m, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Spec turns a sandbox and its image into what the backend boots.
func Spec(cfg *sandbox.Config, im *image.Image, files layout.Sandbox) backend.Spec {
	cmdline := im.Meta.KernelCmdline + " heyvm.hostname=" + cfg.Name
	if len(cfg.Mounts) > 0 {
		var ms []string
		for _, m := range cfg.Mounts {
			e := m.Tag + ":" + m.GuestPath
			if m.ReadOnly {
				e += ":ro"
			}
			ms = append(ms, e)
		}
		cmdline += " heyvm.mounts=" + strings.Join(ms, ",")
	}
	disk, format := cfg.Disk(files)
	return backend.Spec{
		Disk: disk, DiskFormat: format,
		Name: cfg.Name, Arch: im.Meta.Arch, CPUs: cfg.CPUs, MemoryMiB: cfg.MemoryMiB,
		Kernel: im.Kernel(), Initrd: im.Initrd(), Cmdline: cmdline,
		Mounts: cfg.Mounts,
		MAC:    cfg.MAC, MachineIdentifier: files.MachineIdentifier(), RunDir: files.Dir,
		HostLoopback: cfg.HostLoopback, GuestHostLink: im.Meta.HasFeature(image.FeatureHostLink),
	}
}

var inetRe = regexp.MustCompile(`inet (\d+\.\d+\.\d+\.\d+)/`)

// provision runs the one console command that installs heyvm's key and
// reports the guest's address and host key.
func provision(ctx context.Context, d *console.Driver, pubLine string) (ip, hostKey string, err error) {
	return runProvision(ctx, d, ProvisionScript(pubLine))
}

// ProvisionScript installs heyvm's key and prints the guest's address and
// host key.
func ProvisionScript(pubLine string) string {
	q := sshclient.ShellQuote(pubLine)
	// The umask is the subshell's: the console's shell, which a person
	// may use later (heyvm console), keeps the usual 022.
	return "( umask 077; mkdir -p /root/.ssh && touch /root/.ssh/authorized_keys && " +
		"{ grep -qxF " + q + " /root/.ssh/authorized_keys || echo " + q + " >>/root/.ssh/authorized_keys; } ) && " +
		"echo \"IP $(busybox ip -4 -o addr show dev eth0)\" && echo \"HOSTKEY $(cat /etc/ssh/ssh_host_ed25519_key.pub)\""
}

func runProvision(ctx context.Context, d *console.Driver, script string) (ip, hostKey string, err error) {
	out, status, err := d.Run(ctx, script)
	if err != nil {
		return "", "", err
	}
	if status != 0 {
		return "", "", fmt.Errorf("provisioning command failed (status %d): %s", status, out)
	}
	return ParseProvisionOutput(out)
}

// ErrNoAddress: the guest got no IPv4 address on its uplink.
var ErrNoAddress = errors.New("the guest has no IPv4 address on eth0 (DHCP failed?)")

// ParseProvisionOutput extracts the IP and host key lines.
func ParseProvisionOutput(out string) (ip, hostKey string, err error) {
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "IP "):
			if m := inetRe.FindStringSubmatch(l); m != nil {
				ip = m[1]
			}
		case strings.HasPrefix(l, "HOSTKEY "):
			hostKey = strings.TrimSpace(strings.TrimPrefix(l, "HOSTKEY "))
		}
	}
	if ip == "" {
		return "", "", fmt.Errorf("%w: %q", ErrNoAddress, out)
	}
	if !strings.HasPrefix(hostKey, "ssh-ed25519 ") {
		return "", "", fmt.Errorf("the guest reported no ed25519 host key: %q", out)
	}
	return ip, hostKey, nil
}

// checkSSH proves the data plane works: the pinned host key matches, our
// key is accepted, and sshd opens a session channel. (Running a command
// too would cost a fork of sshd and a shell, about 0.2 s under TCG, on
// every boot; the caller's first command does that anyway.) It returns
// the connection, for the owner to share.
//
// A non-empty command runs in that session instead, on the same
// connection; it failing is logged, not fatal.
func (s *Session) checkSSH(ctx context.Context, command string) (*ssh.Client, error) {
	c, err := sshclient.Dial(ctx, s.target)
	if err != nil {
		return nil, err
	}
	if command != "" {
		code, err := sshclient.Exec(ctx, c, sshclient.ExecOptions{Command: command})
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("run a command over SSH: %w", err)
		}
		if code != 0 {
			fmt.Fprintf(s.log, "owner: %q exited %d in the guest\n", command, code)
		}
		return c, nil
	}
	sess, err := c.NewSession()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("open an SSH session: %w", err)
	}
	sess.Close()
	return c, nil
}

// shareSSH serves the guest connection on ssh.sock and returns the
// socket's host key, for owner.json.
func (s *Session) shareSSH(guest *ssh.Client) (string, error) {
	hostKey, err := sshmux.NewHostKey()
	if err != nil {
		return "", err
	}
	target := s.target
	mux, err := sshmux.Listen(s.sb.Files.SSHSock(), hostKey, target.Signer.PublicKey(), guest,
		func(ctx context.Context) (*ssh.Client, error) { return sshclient.Dial(ctx, target) }, target.Dial)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	s.mux = mux
	s.mu.Unlock()
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hostKey.PublicKey()))), nil
}

// guestSSH is a connection to the guest for one command of the owner's:
// the shared one when there is one; done lets go of it.
func (s *Session) guestSSH(ctx context.Context) (c *ssh.Client, done func(), err error) {
	if mux := s.sharedSSH(); mux != nil {
		return mux.Guest(ctx)
	}
	if c, err = sshclient.Dial(ctx, s.target); err != nil {
		return nil, nil, err
	}
	return c, func() { c.Close() }, nil
}

// dropGuestSSH closes the shared guest connections before the VM is
// saved: a saved VM keeps no sshd child for a connection that is gone
// when it resumes.
func (s *Session) dropGuestSSH() {
	if mux := s.sharedSSH(); mux != nil {
		mux.DropGuests()
	}
}

// sharedSSH is the shared guest connection's server, nil if there is none.
func (s *Session) sharedSSH() *sshmux.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mux
}

// bootError adds the end of the console log, which is where the guest
// says what went wrong.
func (s *Session) bootError(ctx context.Context, what string, err error) error {
	if cause := context.Cause(ctx); cause != nil && cause != ctx.Err() && !errors.Is(cause, context.DeadlineExceeded) && !errors.Is(cause, context.Canceled) {
		return fmt.Errorf("%s: %w", what, cause)
	}
	if s.machine != nil {
		select {
		case <-s.machine.Done():
			if merr := s.machine.Err(); merr != nil {
				err = fmt.Errorf("%v (%v)", err, merr)
			} else {
				err = fmt.Errorf("%v (the VM exited)", err)
			}
		default:
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Target is how to reach the running sandbox over SSH.
func (s *Session) Target() sshclient.Target { return s.target }

// watch ends the session when the VM ends on its own (the guest powered
// off, or the hypervisor died) and stops it when the TTL runs out.
func (s *Session) watch() {
	var ttl <-chan time.Time
	if s.Info.ExpiresAt != nil {
		t := time.NewTimer(time.Until(*s.Info.ExpiresAt))
		defer t.Stop()
		ttl = t.C
	}
	var idle <-chan time.Time
	if s.sb.Config.IdleStop > 0 {
		t := time.NewTicker(idleCheckEvery(time.Duration(s.sb.Config.IdleStop)))
		defer t.Stop()
		idle = t.C
	}
	for {
		select {
		case <-idle:
			if lock := idleLock(s.sb.Files, time.Duration(s.sb.Config.IdleStop)); lock != nil {
				// Held through the stop: a user arriving now waits for
				// it, then starts the sandbox again.
				s.Shutdown(sandbox.StopIdle)
				lock.Unlock()
				return
			}
			continue
		case <-s.machine.Done():
			if s.beginStop() {
				reason, detail := sandbox.StopGuest, "the guest powered off"
				if err := s.machine.Err(); err != nil {
					reason, detail = sandbox.StopCrashed, err.Error()
				}
				s.finish(reason, detail)
			}
		case <-ttl:
			s.Shutdown(sandbox.StopExpired)
		case <-s.stopped:
		}
		return
	}
}

// idleCheckEvery is how often an idle-stopping sandbox looks at its busy
// lock: a tenth of the idle time, within 1 s to 30 s.
func idleCheckEvery(idle time.Duration) time.Duration {
	return min(max(idle/10, time.Second), 30*time.Second)
}

// idleLock returns the sandbox's busy lock, taken, if nobody held it and
// nobody touched it (or, never used, since the first look) for idle.
// Users hold the lock while they work and touch it when they let go.
func idleLock(files layout.Sandbox, idle time.Duration) *fsutil.Lock {
	lock, err := fsutil.TryLock(files.BusyLock())
	if err != nil {
		return nil // held: in use
	}
	if fi, err := os.Stat(files.BusyLock()); err == nil && time.Since(fi.ModTime()) >= idle {
		return lock
	}
	lock.Unlock()
	return nil
}

// beginStop marks the session as stopping; only the first caller wins.
func (s *Session) beginStop() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return false
	}
	s.stopping = true
	return true
}

// Wait blocks until the session ends: the VM stops on its own, the TTL
// expires, or ctx is cancelled (a stop request). It returns the reason.
func (s *Session) Wait(ctx context.Context) string {
	select {
	case <-s.stopped:
	case <-ctx.Done():
		s.Shutdown(sandbox.StopRequested)
	}
	return s.reason
}

// Shutdown stops the VM: poweroff through SSH first (any guest heyvm
// boots honours it; an ACPI button needs a daemon in the guest), then the
// hypervisor's own stop request, then a hard kill.
func (s *Session) Shutdown(reason string) {
	if !s.beginStop() {
		<-s.stopped
		return
	}
	select {
	case <-s.machine.Done():
	default:
		s.gracefulStop()
	}
	detail := ""
	if err := s.machine.Err(); err != nil {
		detail = err.Error()
	}
	s.finish(reason, detail)
}

func (s *Session) gracefulStop() {
	start := time.Now()
	if p := s.currentPause(); p != nil && p.NoSpace {
		// The guest cannot flush anything to a full disk: a poweroff
		// would only pause it again.
		fmt.Fprintf(s.log, "owner: the VM is paused (%s): forcing it off; what the guest had not written yet is lost\n", p.Reason)
		s.machine.Kill()
		<-s.machine.Done()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if c, done, err := s.guestSSH(ctx); err == nil {
		sshclient.Exec(ctx, c, sshclient.ExecOptions{Command: "nohup poweroff >/dev/null 2>&1 &"})
		done()
	}
	cancel()
	if s.waitDone(20 * time.Second) {
		fmt.Fprintf(s.log, "owner: guest powered off in %s\n", time.Since(start).Round(time.Millisecond))
		return
	}
	fmt.Fprintf(s.log, "owner: guest did not power off; asking the hypervisor\n")
	ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
	s.machine.RequestStop(ctx)
	cancel()
	if s.waitDone(5 * time.Second) {
		return
	}
	fmt.Fprintf(s.log, "owner: forcing the VM off\n")
	s.machine.Kill()
	<-s.machine.Done()
}

func (s *Session) waitDone(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.machine.Done():
		return true
	case <-t.C:
		return false
	}
}

// finish records why the VM stopped and lets go of the sandbox. Order
// matters: owner.json goes before the lock, so nobody sees a running
// sandbox without an owner.
func (s *Session) finish(reason, detail string) {
	s.stopOnce.Do(func() {
		s.reason = reason
		files := s.sb.Files
		os.Remove(files.OwnerState())
		os.Remove(files.PauseState())
		if s.hub != nil {
			s.hub.close(files.ConsoleSock())
		}
		if s.control != nil {
			s.control.Close()
			os.Remove(files.ControlSock())
		}
		if mux := s.sharedSSH(); mux != nil {
			mux.Close()
			os.Remove(files.SSHSock())
		}
		if s.ports != nil {
			s.ports.Close()
		}
		if s.cancel != nil {
			s.cancel()
		}
		sandbox.WriteStopInfo(files, sandbox.StopInfo{At: time.Now().UTC(), Reason: reason, Detail: detail})
		if s.conLog != nil {
			fmt.Fprintf(s.conLog, "\n--- heyvm: stopped (%s) at %s ---\n", reason, time.Now().UTC().Format(time.RFC3339))
			s.conLog.Close()
		}
		fmt.Fprintf(s.log, "owner: stopped: %s %s\n", reason, detail)
		s.lock.Unlock()
		close(s.stopped)
	})
}

// Stopped is closed once the session has ended and let go of the sandbox.
func (s *Session) Stopped() <-chan struct{} { return s.stopped }

// Reason says why the session ended.
func (s *Session) Reason() string { return s.reason }
