// Package applevirt is heyvm's macOS backend on Apple's
// Virtualization.framework, through github.com/Code-Hex/vz/v3. The
// framework calls live in vz_darwin.go (darwin && arm64 && cgo); every
// other build registers the backend as unavailable, with the reason.
package applevirt

import "errors"

// Name is the backend's registry name.
const Name = "apple_virt"

// SSHVsockPort is the virtio-vsock port the guest's sshd answers on (a
// listener in the guest that runs `sshd -i` for each connection). The
// owner reaches sshd through it, never through the guest's NAT address:
// macOS 15's Local Network Privacy blocks connections to 192.168.64.x
// from processes whose responsible app is not a terminal (VS Code's
// terminal, LaunchAgents), and a vsock stream is not a network
// connection at all.
const SSHVsockPort = 22

// errNoWarmStart is why apple_virt sandboxes never start from a ready
// snapshot (one saved VM restored into many sandboxes).
var errNoWarmStart = errors.New("warm start is off on apple_virt: Virtualization.framework restores a saved VM only with the MAC address and machine identifier it was saved with, so every sandbox restored from one snapshot would share one MAC and one IP address on VZ's NAT; sandboxes boot cold instead (a few seconds under VZ)")

// canWarmStart is CanWarmStart for every build of the backend. A sandbox
// still suspends and resumes its own saved state (the same MAC and
// machine identifier); only restoring one template into many is off.
func canWarmStart() error { return errNoWarmStart }

// dhcpHint is what a guest without an address on VZ's NAT most likely
// lacks: a lease. bootpd leases each MAC an address from one /24 for a
// day; heyvm reuses removed sandboxes' MACs, but a host that made many
// sandboxes (or other VMs) can still run out.
const dhcpHint = "VZ's NAT (macOS's bootpd) may have no address left to lease: it leases each MAC for a day from one /24. Shorten the lease time with `sudo defaults write /Library/Preferences/SystemConfiguration/com.apple.InternetSharing.default.plist bootpd -dict DHCPLeaseTimeSecs -int 600` (or remove old leases from /var/db/dhcpd_leases) and start the sandbox again"
