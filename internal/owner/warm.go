package owner

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/heyvm/heyvm/internal/backend"
	"github.com/heyvm/heyvm/internal/console"
	"github.com/heyvm/heyvm/internal/fsutil"
	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/layout"
	"github.com/heyvm/heyvm/internal/sandbox"
	"github.com/heyvm/heyvm/internal/sshclient"
	"github.com/heyvm/heyvm/internal/warm"
)

// warmTemplateName is the hostname of the VM a snapshot is made of; every
// sandbox restored from it gets its own at once.
const warmTemplateName = "heyvm-warm"

// MakeSnapshot boots the image with the shape, waits until its guest is
// ready and heyvm's key is installed, and saves it as the image's ready
// snapshot for that shape. One maker per image and shape runs at a time;
// a later one finds the snapshot made and returns it.
func MakeSnapshot(ctx context.Context, root layout.Root, backendName string, im *image.Image, shape warm.Shape, log io.Writer) (*warm.Snapshot, error) {
	if err := layout.EnsureDir(root.WarmDir(backendName, im.Name)); err != nil {
		return nil, err
	}
	lock, err := fsutil.LockContext(ctx, warm.LockPath(root, backendName, im.Name, shape))
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	b, err := backend.Get(backendName)
	if err != nil {
		return nil, err
	}
	hvBuild := b.HypervisorBuild(im.Meta.Arch)
	if snap := warm.Find(root, backendName, hvBuild, im, shape); snap != nil {
		return snap, nil
	}
	final := warm.Files(root, backendName, im, shape)
	build := layout.Sandbox{Dir: filepath.Join(filepath.Dir(final.Dir), ".b-"+shape.Key())}
	os.RemoveAll(build.Dir)
	if err := os.Mkdir(build.Dir, 0o700); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(build.Dir)
		}
	}()
	format, err := MakeDisk(ctx, backendName, build.Dir, im, nil, im.Meta.RootfsSize)
	if err != nil {
		return nil, fmt.Errorf("make the snapshot's disk: %w", err)
	}
	cfg := &sandbox.Config{
		ID: "warm-" + shape.Key(), Name: warmTemplateName, Image: im.Name, Backend: backendName, Arch: shape.Arch,
		CPUs: shape.CPUs, MemoryMiB: shape.MemoryMiB, DiskSizeMiB: int(im.Meta.RootfsSize >> 20),
		MAC: "02:68:79:76:6d:01", HostLoopback: shape.HostLoopback, DiskFormat: format,
	}
	s, err := Boot(ctx, BootOptions{Root: root, Sandbox: &sandbox.Sandbox{Config: cfg, Files: build}, Log: log})
	if err != nil {
		return nil, fmt.Errorf("boot the image to snapshot it: %w", err)
	}
	s.dropGuestSSH()
	if out, status, err := s.console.Run(ctx, templatePrep()); err != nil || status != 0 {
		if err == nil {
			err = fmt.Errorf("status %d: %s", status, strings.TrimSpace(out))
		}
		s.Shutdown(sandbox.StopFailed)
		return nil, fmt.Errorf("prepare the booted image for its snapshot: %w", err)
	}
	si, err := s.Suspend(ctx)
	if err != nil {
		s.Shutdown(sandbox.StopFailed)
		return nil, fmt.Errorf("save the booted image: %w", err)
	}
	meta := warm.Meta{Format: warm.Format, Image: im.Name, RootfsSHA256: im.Meta.SHA256[layout.ImageRootfs], Shape: shape, Hypervisor: si.Hypervisor, Created: time.Now().UTC(),
		DiskFormat: format, DiskBytes: im.Meta.RootfsSize, HypervisorBuild: hvBuild}
	if err := warm.WriteMeta(build, meta); err != nil {
		return nil, err
	}
	if err := warm.Drop(final); err != nil {
		return nil, err
	}
	if err := os.Rename(build.Dir, final.Dir); err != nil {
		return nil, err
	}
	ok = true
	return &warm.Snapshot{Files: final, Meta: meta, Saved: &si}, nil
}

// warmSnapshotFor returns the snapshot a sandbox's first start restores,
// or nil with the reason it boots cold instead.
func warmSnapshotFor(cfg *sandbox.Config) (*warm.Snapshot, string) {
	if cfg.WarmFrom == "" {
		return nil, ""
	}
	snap, err := warm.Load(layout.Sandbox{Dir: cfg.WarmFrom})
	if err != nil {
		return nil, "its ready snapshot was removed after it was created"
	}
	return snap, ""
}

// The restore helper is a perl process the template starts before it is
// saved, in a session of its own and holding the console, blocked on a
// FIFO. A restored VM's console script wakes it, and it reads the line
// heyvm sends after the script from the console: the host's clock and
// randomness, then the sandbox's files (SSH host key and authorized key,
// hostname, hosts, machine-id). It writes the SSH files, sets the clock
// (clock_settime), mixes the bytes into the kernel RNG and reseeds it
// (RNDRESEEDCRNG: the guest has no vmgenid), and only then starts sshd,
// so sshd never seeds itself from the RNG state every VM restored from
// the snapshot shares. While sshd loads, it writes the other files and
// renews the DHCP lease. Once sshd listens it says "ok" (or what failed)
// on a second FIFO.
//
// Why a helper: under TCG every process costs tens of milliseconds, and
// bash reads its input a byte at a time (0.1 ms each: 0.15 s for the
// line), where perl reads the line in one read(2). sshd's start (0.25 s,
// mostly loading its 27 libraries) is then most of the identity step.
const (
	restoreFIFO      = "/run/heyvm-restore"
	restoredFIFO     = "/run/heyvm-restored"
	restoreHelperPID = "/run/heyvm-restore.pid"
)

// restoreHelper is the helper's perl program (run with -MPOSIX and the
// console on fd 3): it records its pid in pidFile, waits for a line on
// the FIFO in, reads its work from fd 3 and answers on the FIFO out.
// dhcpClient names the process it signals to renew the lease ("" for
// none: the unit test runs it on the host).
func restoreHelper(in, out, pidFile, dhcpClient string) string {
	return `exit if fork; POSIX::setsid(); open(my $pf, ">", "` + pidFile + `") or die; print $pf "$$\n"; close($pf); ` +
		`open(my $tty, "<&=", 3) or die; open(my $go, "<", "` + in + `") or die; <$go>; ` +
		`my $l = ""; while ($l !~ /\n/) { sysread($tty, my $b, 8192) or last; $l .= $b; } ` +
		`my ($s, $ns, $seed, $nr, @files) = split(" ", $l); my $e = ""; umask(077); ` +
		`my $put = sub { my ($p, $m, $d) = split(/:/, $_[0]); $d =~ s/%([0-9A-F]{2})/chr(hex($1))/ge; ` +
		`if (open(my $o, ">", $p)) { print $o $d; close($o) or $e .= "$p: $! "; $m eq "-" or chmod(oct($m), $p) or $e .= "$p: $! "; } else { $e .= "$p: $! "; } }; ` +
		`$put->($_) for grep { m{^/etc/ssh/|^/root/} } @files; ` +
		`syscall($nr, 0, pack("qq", $s, $ns)) == 0 or $e .= "clock_settime: $! "; ` +
		`if (open(my $r, ">", "/dev/urandom")) { syswrite($r, pack("H*", $seed)) or $e .= "urandom: $! "; ioctl($r, 0x5207, 0) or $e .= "RNDRESEEDCRNG: $! "; } else { $e .= "urandom: $! "; } ` +
		`my $sshd = 0; if ($e eq "") { $sshd = fork(); if (defined($sshd) && $sshd == 0) { close($tty); umask(022); exec("/usr/sbin/sshd", "-D", "-r"); POSIX::_exit(127); } } ` +
		`$put->($_) for grep { !m{^/etc/ssh/|^/root/} } @files; ` +
		// The client may be a busybox applet: its name is in argv[0] or argv[1].
		`my $dhcp = "` + dhcpClient + `"; if ($dhcp ne "" && opendir(my $d, "/proc")) { for my $p (grep { /^\d+$/ } readdir($d)) { open(my $c, "<", "/proc/$p/cmdline") or next; local $/; my @a = split(/\0/, <$c> // ""); kill("USR1", $p) if grep { defined($_) && m{(^|/)\Q$dhcp\E$} } @a[0, 1]; } } ` +
		// sshd's first process returns before its daemon listens.
		`if ($sshd) { my $up = 0; for (1..2000) { if (open(my $t, "<", "/proc/net/tcp")) { while (<$t>) { my @c = split; $up = 1 if $c[1] =~ /:0016$/ && $c[3] eq "0A"; } } last if $up; ` +
		`if (waitpid($sshd, POSIX::WNOHANG()) == $sshd) { $e = "sshd exited (status $?)"; last; } select(undef, undef, undef, 0.005); } $up or $e ||= "sshd does not listen on port 22"; } ` +
		`elsif ($e eq "") { $e = "could not start sshd: $!"; } ` +
		`open(my $out, ">", "` + out + `") or die; print $out ($e eq "" ? "ok" : $e), "\n";`
}

// templatePrep readies a booted template for its save: sshd stopped (the
// listener and any connection's child) and its host key removed (a
// restored VM gets a new key first, and starting sshd then is quicker
// than restarting it; a sandbox that boots this disk cold makes its own),
// the restore helper waiting, the console left reading plain lines, and
// the disk synced.
func templatePrep() string {
	return "for p in /proc/[0-9]*; do read -r c 2>/dev/null <$p/comm && [ \"$c\" = sshd ] && kill ${p#/proc/}; done; rm -f /run/sshd.pid /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key.pub" +
		" && rm -f " + restoreFIFO + " " + restoredFIFO + " " + restoreHelperPID + " && mkfifo -m 600 " + restoreFIFO + " " + restoredFIFO +
		" && { perl -MPOSIX -e " + sshclient.ShellQuote(restoreHelper(restoreFIFO, restoredFIFO, restoreHelperPID, "udhcpc")) + " 3<&0 </dev/null >/dev/null 2>&1 & }" +
		" && for i in {1..500}; do [ -s " + restoreHelperPID + " ] && break; sleep 0.01; done && [ -s " + restoreHelperPID + " ]" +
		// The console reads the next script as plain lines at once
		// (console.Driver.Run); the identity script turns editing back on.
		" && HEYVM_PLAIN=1" +
		" && sync"
}

// helperFile is a file the restore helper writes; mode "-" leaves the
// mode as it is (a /proc file).
type helperFile struct {
	path string
	mode string
	data string
}

// helperLine is what the restore helper reads: the clock, the seed,
// clock_settime's number, then the files as path:mode:data, with every
// byte of data outside [A-Za-z0-9+/=@._-] written %XX.
func helperLine(now time.Time, seed []byte, clockSettime int, files []helperFile) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %d %s %d", now.Unix(), now.Nanosecond(), hex.EncodeToString(seed), clockSettime)
	for _, f := range files {
		fmt.Fprintf(&b, " %s:%s:", f.path, f.mode)
		for _, c := range []byte(f.data) {
			if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("+/=@._-", c) >= 0 {
				b.WriteByte(c)
			} else {
				fmt.Fprintf(&b, "%%%02X", c)
			}
		}
	}
	return b.String()
}

// clockSettimeSyscall is clock_settime's number, for the restore helper.
func clockSettimeSyscall(arch string) int {
	if arch == "arm64" {
		return 112
	}
	return 227
}

// identityScript makes a VM restored from a ready snapshot this sandbox's
// own, before anything reaches it: the restore helper's work (above),
// then the root file system grown to the sandbox's disk and hot-plugged
// shares mounted, by the console's shell meanwhile. It ends with the new
// host key read back, and line editing back on for a person at the
// console. It returns the script, the helper's line to send after it
// (console.Driver.RunWithInput), and the new host key's public half.
func identityScript(name, arch, authorizedKey string, grow bool, mounts []backend.Mount) (script, input, hostKey string, err error) {
	seed := make([]byte, 32)
	rand.Read(seed)
	id := make([]byte, 16)
	rand.Read(id)
	priv, pub, err := sshclient.NewHostKey("root@" + name)
	if err != nil {
		return "", "", "", err
	}
	// heyvm's key is the only one a fresh sandbox has: the template's copy
	// may be of a managed key since replaced.
	line := helperLine(time.Now(), seed, clockSettimeSyscall(arch), []helperFile{
		{"/etc/ssh/ssh_host_ed25519_key", "0600", string(priv)},
		{"/etc/ssh/ssh_host_ed25519_key.pub", "0644", pub + "\n"},
		{"/root/.ssh/authorized_keys", "0600", authorizedKey + "\n"},
		{"/proc/sys/kernel/hostname", "-", name},
		{"/etc/hostname", "0644", name + "\n"},
		{"/etc/hosts", "0644", "127.0.0.1 localhost\n127.0.1.1 " + name + "\n::1 localhost ip6-localhost ip6-loopback\n"},
		{"/etc/machine-id", "0444", hex.EncodeToString(id) + "\n"},
	})
	// No helper (its line must be read all the same): no warm start.
	cmds := []string{
		`{ read -r p <` + restoreHelperPID + ` 2>/dev/null && [ -d /proc/$p ] || { read -r _; echo 'the ready snapshot has no restore helper running'; false; }; }`,
		"echo >" + restoreFIFO,
	}
	if grow {
		cmds = append(cmds, growCmd)
	}
	if len(mounts) > 0 {
		cmds = append(cmds, "{ modprobe virtiofs 2>/dev/null; true; }")
	}
	for _, m := range mounts {
		cmds = append(cmds, mountCmd(m))
	}
	cmds = append(cmds,
		`{ read -r r <`+restoredFIFO+` && [ "$r" = ok ] || { echo "the restore helper failed: $r"; false; }; }`,
		`read -r k </etc/ssh/ssh_host_ed25519_key.pub && echo "HOSTKEY $k"`,
		// The console shell's prompt shows the new name (bash read the
		// template's once, at its start).
		`PS1=${PS1//\\h/`+sshclient.ShellQuote(name)+"}",
		"unset HEYVM_PLAIN")
	return strings.Join(cmds, " &&\n"), line, pub, nil
}

// mountCmd mounts a share hot-plugged into a restored VM. The device
// shows up a moment after the guest resumes (PCIe hot-plug), so the mount
// is retried for up to 10 s.
func mountCmd(m backend.Mount) string {
	q := sshclient.ShellQuote
	opt := "rw"
	if m.ReadOnly {
		opt = "ro"
	}
	return fmt.Sprintf("mkdir -p %s && { for i in {1..400}; do mount -t virtiofs -o %s %s %s 2>/dev/null && break; sleep 0.025; done; mountpoint -q %s || { echo 'share %s did not appear in the restored VM'; false; }; }",
		q(m.GuestPath), opt, q(m.Tag), q(m.GuestPath), q(m.GuestPath), m.Tag)
}

// growCmd grows the root file system to a disk made larger than the
// snapshot's (the guest's boot does this on a cold start).
const growCmd = `resize2fs "$(awk '$2 == "/" {print $1}' /proc/mounts | tail -n 1)" >/dev/null 2>&1`

// adoptRestored runs an identity script over the console: one round
// trip, which ends with the new host key read back (proof it is in
// place). The address stays the snapshot's: every restored VM has the
// template's, on its own private networks.
func adoptRestored(ctx context.Context, d *console.Driver, script, input, hostKey string) error {
	out, status, err := d.RunWithInput(ctx, script, input)
	if err != nil {
		return err
	}
	if status != 0 {
		return fmt.Errorf("giving the restored VM its identity failed (status %d): %s", status, strings.TrimSpace(out))
	}
	for _, l := range strings.Split(out, "\n") {
		if k, ok := strings.CutPrefix(strings.TrimSpace(l), "HOSTKEY "); ok {
			if k != hostKey {
				return fmt.Errorf("the restored VM reports another host key than it was given: %q", k)
			}
			return nil
		}
	}
	return fmt.Errorf("the restored VM did not report its new host key: %q", out)
}
