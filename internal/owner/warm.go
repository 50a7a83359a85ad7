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
	// sshd and its host key go before the save: a restored VM gets a new
	// key first, and starting sshd then is quicker than restarting it.
	// Without a key on the disk, a sandbox that has to boot this disk cold
	// instead makes its own at boot.
	if _, _, err := s.console.Run(ctx, "kill $(cat /run/sshd.pid) && rm -f /run/sshd.pid /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key.pub && sync"); err != nil {
		s.Shutdown(sandbox.StopFailed)
		return nil, fmt.Errorf("prepare the booted image for its snapshot: %w", err)
	}
	si, err := s.Suspend(ctx)
	if err != nil {
		s.Shutdown(sandbox.StopFailed)
		return nil, fmt.Errorf("save the booted image: %w", err)
	}
	meta := warm.Meta{Image: im.Name, RootfsSHA256: im.Meta.SHA256[layout.ImageRootfs], Shape: shape, Hypervisor: si.Hypervisor, Created: time.Now().UTC(),
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

// identityScript makes a VM restored from a ready snapshot this sandbox's
// own, before anything reaches it: the clock, the kernel RNG mixed with
// host randomness and reseeded (RNDRESEEDCRNG: the guest has no vmgenid),
// the hostname, machine-id, a fresh SSH host key (made on the host), sshd
// started with it (the snapshot was saved without it), the root file
// system grown to the sandbox's disk, and a DHCP renewal. It is one line
// for the console's bash, and every process costs tens of milliseconds in
// an emulated guest, so all but date, perl (for the ioctl) and sshd are
// shell builtins.
func identityScript(name, authorizedKey string, grow bool, mounts []backend.Mount) (string, error) {
	seed := make([]byte, 64)
	rand.Read(seed)
	id := make([]byte, 16)
	rand.Read(id)
	priv, pub, err := sshclient.NewHostKey("root@" + name)
	if err != nil {
		return "", err
	}
	q := sshclient.ShellQuote
	// The PEM text as printf's format: base64 and dashes only, with its
	// line breaks written as \n.
	pemFormat := strings.ReplaceAll(string(priv), "\n", `\n`)
	// The clock first: the script is on its way for a few milliseconds
	// only, while the rest of it takes a good part of a second under TCG.
	cmds := []string{
		clockCommand(time.Now()),
		"printf %s " + hex.EncodeToString(seed) + " >/dev/urandom",
		`perl -e 'open(my $f, ">", "/dev/urandom") or die; ioctl($f, 0x5207, 0) or die "RNDRESEEDCRNG: $!\n"'`,
		"printf %s " + q(name) + " >/proc/sys/kernel/hostname",
		"printf '%s\\n' " + q(name) + " >/etc/hostname",
		"printf '127.0.0.1 localhost\\n127.0.1.1 %s\\n::1 localhost ip6-localhost ip6-loopback\\n' " + q(name) + " >/etc/hosts",
		"printf '%s\\n' " + hex.EncodeToString(id) + " >/etc/machine-id",
		// heyvm's key is the only one a fresh sandbox has: the template's
		// copy may be of a managed key since replaced.
		"umask 077", "printf -- '" + pemFormat + "' >/etc/ssh/ssh_host_ed25519_key",
		"printf '%s\\n' " + q(authorizedKey) + " >/root/.ssh/authorized_keys", "umask 022",
		"printf '%s\\n' " + q(pub) + " >/etc/ssh/ssh_host_ed25519_key.pub",
		"for i in {1..40}; do /usr/sbin/sshd -r 2>/dev/null && break; sleep 0.025; done",
		"for p in /proc/[0-9]*; do read -r c 2>/dev/null <$p/comm && [ \"$c\" = udhcpc ] && kill -USR1 ${p#/proc/}; done; true",
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
	return strings.Join(cmds, " && "), nil
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

// adoptRestored runs the identity script over the console and reports the
// guest's address and new host key, as provisioning does.
// One console round trip: the identity, then the new host key read back
// (proof it is in place). The address is the snapshot's: every restored
// VM has the template's, on its own private networks.
func adoptRestored(ctx context.Context, d *console.Driver, name, authorizedKey string, grow bool, mounts []backend.Mount) (hostKey string, err error) {
	script, err := identityScript(name, authorizedKey, grow, mounts)
	if err != nil {
		return "", err
	}
	out, status, err := d.Run(ctx, script+" && echo \"HOSTKEY $(cat /etc/ssh/ssh_host_ed25519_key.pub)\"")
	if err != nil {
		return "", err
	}
	if status != 0 {
		return "", fmt.Errorf("giving the restored VM its identity failed (status %d): %s", status, strings.TrimSpace(out))
	}
	for _, l := range strings.Split(out, "\n") {
		if k, ok := strings.CutPrefix(strings.TrimSpace(l), "HOSTKEY "); ok {
			return k, nil
		}
	}
	return "", fmt.Errorf("the restored VM did not report its new host key: %q", out)
}
