package qemu

import (
	"io"
	"net"
	"runtime"
	"strings"
	"testing"

	"github.com/heyvm/heyvm/internal/backend"
)

func TestParseUsernetPort(t *testing.T) {
	out := "VLAN -1 (net0):\r\n  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n" +
		"  TCP[HOST_FORWARD]  14       127.0.0.1 18080       10.0.2.15    80     0     0\r\n" +
		"  TCP[HOST_FORWARD]  13       127.0.0.1 41235       10.0.2.15    22     0     0\r\n"
	if p, err := parseUsernetPort(out, 22); err != nil || p != 41235 {
		t.Fatalf("got %d, %v", p, err)
	}
	if p, err := parseUsernetPort(out, 80); err != nil || p != 18080 {
		t.Fatalf("got %d, %v", p, err)
	}
	if _, err := parseUsernetPort("nothing", 22); err == nil {
		t.Fatal("no error on empty table")
	}
}

func TestChooseAccel(t *testing.T) {
	native := runtime.GOARCH
	noVirt := strings.NewReader("processor: 0\nflags\t\t: fpu sse hypervisor\n")
	cases := []struct {
		arch, override string
		opens          bool
		cpuinfo        string
		want           string
	}{
		{native, "", false, "flags: vmx", "tcg"},
		{native, "tcg", true, "flags: vmx", "tcg"},
		{"riscv64", "", true, "flags: vmx", "tcg"},
	}
	if runtime.GOARCH == "amd64" {
		cases = append(cases,
			struct {
				arch, override string
				opens          bool
				cpuinfo        string
				want           string
			}{native, "", true, "flags\t: fpu vmx sse", "kvm"},
			struct {
				arch, override string
				opens          bool
				cpuinfo        string
				want           string
			}{native, "", true, "flags\t: fpu hypervisor", "tcg"}, // kvm_pvm: /dev/kvm opens, no vmx/svm
		)
	}
	for _, c := range cases {
		got, why, err := chooseAccel(c.arch, c.override, c.opens, strings.NewReader(c.cpuinfo))
		if err != nil || got != c.want || why == "" {
			t.Errorf("chooseAccel(%+v) = %s (%s), %v; want %s", c, got, why, err, c.want)
		}
	}
	if _, _, err := chooseAccel(native, "kvm", false, noVirt); err == nil {
		t.Error("HEYVM_ACCEL=kvm without /dev/kvm accepted")
	}
	if _, _, err := chooseAccel(native, "hvf", true, noVirt); err == nil {
		t.Error("bad override accepted")
	}
}

func TestBuildArgs(t *testing.T) {
	spec := backend.Spec{Name: "box", Arch: "amd64", CPUs: 2, MemoryMiB: 512, Kernel: "/k", Initrd: "/i", Cmdline: "console=hvc0",
		Disk: "/d,odd", MAC: "02:00:00:00:00:01",
		Mounts: []backend.Mount{{Tag: "ws", HostPath: "/h", GuestPath: "/workspace"}}}
	a := strings.Join(buildArgs(spec, "tcg", []string{"/run/vfs0.sock"}, nil, incomingNone), " ")
	for _, want := range []string{
		"-nodefaults", "-machine q35,memory-backend=mem", "-accel tcg,thread=multi", "-smp 2", "-m 512M",
		"file=/d,,odd,", "hostfwd=tcp:127.0.0.1:0-:22", "romfile=",
		"socket,id=con0,fd=3", "virtconsole,chardev=con0", "socket,id=qmp,fd=4", "vhost-user-fs-pci,chardev=vfs0,tag=ws",
		"memory-backend-file,id=mem,size=512M,mem-path=/proc/self/fd/7,share=on", "-no-reboot",
	} {
		if !strings.Contains(a, want) {
			t.Errorf("args lack %q:\n%s", want, a)
		}
	}
	if strings.Contains(a, "0.0.0.0") {
		t.Error("a port is bound on all interfaces")
	}
	if strings.Contains(a, "-incoming") {
		t.Error("a boot waits for a saved state")
	}
	// A restored machine gets its shares hot-plugged, not on the command
	// line, and its state as a stream or (with its memory apart) later.
	for incoming, want := range map[string]string{incomingStream: "-incoming fd:6 -S", incomingDeferred: "-incoming defer -S"} {
		r := strings.Join(buildArgs(spec, "tcg", []string{"/run/vfs0.sock"}, nil, incoming), " ")
		if !strings.HasSuffix(r, want) || strings.Contains(r, "vhost-user-fs-pci") {
			t.Errorf("restore (%s) args:\n%s", incoming, r)
		}
	}
	arm := strings.Join(buildArgs(backend.Spec{Arch: "arm64", CPUs: 1, MemoryMiB: 256}, "tcg", nil, nil, incomingNone), " ")
	if !strings.Contains(arm, "-machine virt") {
		t.Errorf("arm64 machine: %s", arm)
	}
}

// The default network: passt on fd 5 as eth0, a restricted user network
// carrying only SSH on a host link the guest finds by MAC.
func TestBuildArgsClosedLoopback(t *testing.T) {
	spec := backend.Spec{Arch: "amd64", CPUs: 1, MemoryMiB: 256, Cmdline: "console=hvc0", MAC: "02:00:00:00:00:10"}
	link, err := pickHostLink(nil, spec.MAC)
	if err != nil {
		t.Fatal(err)
	}
	a := strings.Join(buildArgs(spec, "tcg", nil, &link, incomingNone), " ")
	for _, want := range []string{
		"-netdev socket,id=net0,fd=5", "netdev=net0,romfile=,mac=02:00:00:00:00:10",
		"user,id=net1,restrict=on,net=10.0.2.0/24,host=10.0.2.2,dhcpstart=10.0.2.15,hostfwd=tcp:127.0.0.1:0-:22",
		"netdev=net1,romfile=,mac=02:00:00:00:00:11",
		"console=hvc0 heyvm.hostlink=02:00:00:00:00:11,10.0.2.15/24 heyvm.dns=169.254.1.53",
	} {
		if !strings.Contains(a, want) {
			t.Errorf("args lack %q:\n%s", want, a)
		}
	}
	if strings.Count(a, "hostfwd") != 1 {
		t.Errorf("want exactly one hostfwd (SSH):\n%s", a)
	}
}

// The host link never shares a subnet with the host's own networks (the
// guest gets those on its uplink from passt).
func TestPickHostLink(t *testing.T) {
	cidr := func(s string) *net.IPNet {
		ip, n, err := net.ParseCIDR(s)
		if err != nil {
			t.Fatal(err)
		}
		n.IP = ip
		return n
	}
	cases := []struct {
		host []*net.IPNet
		want string
	}{
		{nil, "10.0.2.0/24"},
		{[]*net.IPNet{cidr("192.0.2.2/24")}, "10.0.2.0/24"},
		{[]*net.IPNet{cidr("10.0.2.15/24")}, "192.168.127.0/24"}, // VirtualBox NAT
		{[]*net.IPNet{cidr("10.0.0.5/8")}, "192.168.127.0/24"},   // a /8 covers it
		{[]*net.IPNet{cidr("10.0.2.9/32"), cidr("192.168.127.4/24")}, "172.31.254.0/24"},
	}
	for _, c := range cases {
		l, err := pickHostLink(c.host, "02:00:00:00:00:01")
		if err != nil || l.Net.String() != c.want {
			t.Errorf("host nets %v: got %v %v, want %s", c.host, l.Net, err, c.want)
		}
	}
	all := []*net.IPNet{cidr("10.0.0.1/8"), cidr("192.168.0.1/16"), cidr("172.16.0.1/12")}
	if _, err := pickHostLink(all, "02:00:00:00:00:01"); err == nil || !strings.Contains(err.Error(), "--host-loopback") {
		t.Errorf("no free subnet: %v", err)
	}
	if hostLinkMAC("02:00:00:00:00:01") == "02:00:00:00:00:01" {
		t.Error("the host link reuses the uplink's MAC")
	}
}

func TestKVMNote(t *testing.T) {
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skip("the note is for Linux on x86")
	}
	vmx := func() io.Reader { return strings.NewReader("flags\t: fpu vmx sse\n") }
	if n := KVMNote("alice", true, false, vmx()); !strings.Contains(n, "usermod -aG kvm alice") {
		t.Fatalf("usable KVM, no access: %q", n)
	}
	if n := KVMNote("alice", true, true, vmx()); n != "" {
		t.Fatalf("KVM opens: %q", n)
	}
	if n := KVMNote("alice", false, false, vmx()); n != "" {
		t.Fatalf("no /dev/kvm: %q", n)
	}
	// A /dev/kvm without vmx/svm (kvm_pvm here) would not help: no note.
	if n := KVMNote("alice", true, false, strings.NewReader("flags\t: fpu sse\n")); n != "" {
		t.Fatalf("no virtualisation flag: %q", n)
	}
}
