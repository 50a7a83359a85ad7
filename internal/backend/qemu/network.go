package qemu

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"

	"github.com/heyvm/heyvm/internal/backend"
)

// A guest's network on qemu, unless --host-loopback:
//
//   - eth0, the uplink, is served by passt (Debian's passt package) with
//     --no-map-gw: the guest reaches the outside world and the host's
//     non-loopback addresses, as behind a NAT, but no address of the
//     guest's maps to the host's 127.0.0.1.
//   - a second NIC, the host link, is QEMU's user network with restrict=on:
//     it carries only the hostfwd to the guest's sshd, and lets the guest
//     connect nowhere. Without restrict, 10.0.2.2 would be the host's
//     loopback.
//
// Why not passt alone: passt 2023-03 (Debian 12) with --no-map-gw sends
// inbound connections from the host's loopback with a loopback source, and
// the guest's replies never leave it. Why not QEMU in its own network
// namespace: it would need a second user-mode stack (slirp4netns or pasta)
// behind it and a user namespace around every qemu.
//
// With --host-loopback the guest has one NIC, QEMU's user network, where
// 10.0.2.2 is the host's 127.0.0.1.

// PasstPath is the passt binary (found on PATH when empty).
var PasstPath = "passt"

// dnsForwardAddr is the nameserver the guest is given (on the kernel
// command line: passt 2023-03 cannot both forward an address and hand it
// out by DHCP). passt forwards queries to it on to the host's own first
// nameserver, so DNS works even when that is a loopback resolver
// (systemd-resolved's 127.0.0.53) the guest may not reach otherwise; and
// once passt forwards, queries sent to the host's nameserver directly go
// unanswered.
const dnsForwardAddr = "169.254.1.53"

// hostLinkCandidates are the subnets the host link may use; the first that
// overlaps none of the host's own networks is taken, so that the guest,
// which gets the host's addresses on its uplink from passt, never has two
// routes to one subnet.
var hostLinkCandidates = []string{"10.0.2.0/24", "192.168.127.0/24", "172.31.254.0/24"}

// hostLink is the restricted user network that carries SSH.
type hostLink struct {
	Net       *net.IPNet
	Host      net.IP // slirp's own address: where forwarded connections come from
	Guest     net.IP // the guest's address on it
	GuestMAC  string
	PrefixLen int
}

// pickHostLink chooses the host link's subnet given the host's networks.
func pickHostLink(hostNets []*net.IPNet, guestMAC string) (hostLink, error) {
	for _, c := range hostLinkCandidates {
		_, n, _ := net.ParseCIDR(c)
		clash := false
		for _, h := range hostNets {
			if h.Contains(n.IP) || n.Contains(h.IP) {
				clash = true
				break
			}
		}
		if clash {
			continue
		}
		base := n.IP.To4()
		ones, _ := n.Mask.Size()
		return hostLink{
			Net:       n,
			Host:      net.IPv4(base[0], base[1], base[2], 2).To4(),
			Guest:     net.IPv4(base[0], base[1], base[2], 15).To4(),
			GuestMAC:  hostLinkMAC(guestMAC),
			PrefixLen: ones,
		}, nil
	}
	return hostLink{}, fmt.Errorf("every subnet heyvm could use for the guest's SSH link (%s) is one of the host's own networks; use --host-loopback", strings.Join(hostLinkCandidates, ", "))
}

// hostIPv4Nets lists the IPv4 networks of the host's interfaces.
func hostIPv4Nets() []*net.IPNet {
	addrs, _ := net.InterfaceAddrs()
	var out []*net.IPNet
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			out = append(out, n)
		}
	}
	return out
}

// hostLinkMAC derives the host link's MAC from the sandbox's, so it is
// stable per sandbox and differs from the uplink's.
func hostLinkMAC(mac string) string {
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		return "02:68:79:76:6d:02"
	}
	out := make(net.HardwareAddr, 6)
	copy(out, hw)
	out[5] ^= 0x01
	return out.String()
}

// cmdlineArg tells the guest's init which NIC is the host link and its
// address: heyvm.hostlink=MAC,ADDR/LEN (no route: the uplink has those),
// and the nameserver passt forwards: heyvm.dns=ADDR.
func (h hostLink) cmdlineArg() string {
	return fmt.Sprintf("heyvm.hostlink=%s,%s/%d heyvm.dns=%s", h.GuestMAC, h.Guest, h.PrefixLen, dnsForwardAddr)
}

// netdevArg is QEMU's restricted user network for the host link, with the
// SSH forward on a free port of the host's 127.0.0.1.
func (h hostLink) netdevArg(id string) string {
	return fmt.Sprintf("user,id=%s,restrict=on,net=%s,host=%s,dhcpstart=%s,hostfwd=tcp:127.0.0.1:0-:22", id, h.Net, h.Host, h.Guest)
}

// passtArgs runs passt on a socket heyvm already holds (fd 3), in the
// foreground, with nothing forwarded from the host and the host's loopback
// left unmapped.
func passtArgs() []string {
	return []string{"--foreground", "--quiet", "--fd", "3", "--no-map-gw",
		"--tcp-ports", "none", "--udp-ports", "none",
		"--dns-forward", dnsForwardAddr, "--no-dhcp-dns"}
}

// checkNetwork says whether the spec's network can be built here.
func checkNetwork(spec backend.Spec) error {
	if spec.HostLoopback {
		return nil
	}
	if !spec.GuestHostLink {
		return errors.New("this image predates heyvm's closed host loopback (its init cannot bring up the SSH link): rebuild or pull it again, or create the sandbox with --host-loopback")
	}
	if _, err := exec.LookPath(PasstPath); err != nil {
		return errors.New("the guest's network needs passt, which is not installed: run `sudo apt-get install passt` (or create the sandbox with --host-loopback, which opens the host's 127.0.0.1 to the guest)")
	}
	return nil
}
