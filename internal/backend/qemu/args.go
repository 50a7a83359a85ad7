package qemu

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/heyvm/heyvm/internal/backend"
)

// Fixed fd numbers for the sockets handed to qemu (ExtraFiles start at 3).
const (
	consoleFD = 3
	qmpFD     = 4
	uplinkFD  = 5 // passt's end of the uplink, when the loopback is closed
	restoreFD = 6 // the saved state to restore (Spec.RestoreFrom)
	memoryFD  = 7 // the guest's memory, a memfd (memory.go)
)

// How a restored machine's state reaches qemu: a bare migration stream
// on the state fd, or (deferred) the device state alone, started over
// QMP once heyvm has loaded the memory.
const (
	incomingNone     = ""
	incomingStream   = "stream"
	incomingDeferred = "deferred"
)

// hotplugPorts is how many shares a restored machine can be given.
const hotplugPorts = 4

// binaryFor is the qemu-system binary for a guest architecture.
func binaryFor(arch string) (string, error) {
	switch arch {
	case "amd64":
		return "qemu-system-x86_64", nil
	case "arm64":
		return "qemu-system-aarch64", nil
	}
	return "", fmt.Errorf("no qemu system emulator known for architecture %q", arch)
}

// buildArgs turns a spec into qemu's command line.
//
// Machine choice: q35 (x86) and virt (arm64) with -nodefaults and no
// option ROMs. microvm would boot faster, but with ACPI it hung in 3 of 9
// TCG boots on our machines; q35 never did. Memory is a shared memfd, made
// by heyvm (memory.go), so vhost-user-fs (virtiofsd) can map it.
//
// The console and QMP are sockets heyvm already holds (fd=), so no socket
// file exists, nothing races to connect, and no early output is lost.
//
// link is the host link when the guest's uplink is passt (see network.go);
// nil means one QEMU user network, with the host's loopback at 10.0.2.2.
func buildArgs(spec backend.Spec, accel string, vfsSockets []string, link *hostLink, incoming string) []string {
	var a []string
	add := func(s ...string) { a = append(a, s...) }
	mem := strconv.Itoa(spec.MemoryMiB) + "M"
	add("-name", "heyvm-"+spec.Name)
	add("-nodefaults", "-no-user-config", "-display", "none", "-no-reboot")
	add("-object", fmt.Sprintf("memory-backend-file,id=mem,size=%s,mem-path=/proc/self/fd/%d,share=on", mem, memoryFD))
	cpu := "max"
	if accel == "kvm" {
		cpu = "host"
	}
	switch spec.Arch {
	case "arm64":
		add("-machine", "virt,gic-version=max,memory-backend=mem")
	default:
		add("-machine", "q35,memory-backend=mem")
	}
	if accel == "tcg" {
		add("-accel", "tcg,thread=multi")
	} else {
		add("-accel", accel)
	}
	add("-cpu", cpu, "-smp", strconv.Itoa(spec.CPUs), "-m", mem)
	cmdline := spec.Cmdline
	if link != nil {
		cmdline += " " + link.cmdlineArg()
	}
	add("-kernel", spec.Kernel, "-initrd", spec.Initrd, "-append", cmdline)
	// werror/rerror=stop: a host I/O error (a full disk) pauses the VM,
	// which the owner reports and resumes, instead of handing the guest
	// errors that its file system would remount read-only over.
	format := spec.DiskFormat
	if format == "" {
		format = "raw"
	}
	add("-drive", "file="+escapeComma(spec.Disk)+",if=none,id=disk0,format="+format+",cache=writeback,discard=unmap,werror=stop,rerror=stop")
	add("-device", "virtio-blk-pci,drive=disk0")
	// Only SSH is forwarded here; --port forwards run in the owner, over
	// SSH (internal/portfwd), the same on every backend.
	nic := func(netdev, mac string) string {
		s := "virtio-net-pci,netdev=" + netdev + ",romfile="
		if mac != "" {
			s += ",mac=" + mac
		}
		return s
	}
	if link == nil {
		add("-netdev", "user,id=net0,hostfwd=tcp:127.0.0.1:0-:22")
		add("-device", nic("net0", spec.MAC))
	} else {
		add("-netdev", fmt.Sprintf("socket,id=net0,fd=%d", uplinkFD))
		add("-device", nic("net0", spec.MAC))
		add("-netdev", link.netdevArg("net1"))
		add("-device", nic("net1", link.GuestMAC))
	}
	add("-device", "virtio-rng-pci")
	add("-chardev", fmt.Sprintf("socket,id=con0,fd=%d", consoleFD))
	add("-device", "virtio-serial-pci,id=vser0")
	add("-device", "virtconsole,chardev=con0")
	// Spare PCIe root ports: shares are hot-plugged into them after a
	// restore (a snapshot is made without shares). Every machine has them,
	// so a snapshot and the sandboxes restored from it match.
	for i := 0; i < hotplugPorts; i++ {
		add("-device", fmt.Sprintf("pcie-root-port,id=hp%d,chassis=%d,bus=pcie.0", i, i+1))
	}
	for i, m := range spec.Mounts {
		if incoming != incomingNone {
			break // hot-plugged once the saved machine is loaded
		}
		id := fmt.Sprintf("vfs%d", i)
		add("-chardev", "socket,id="+id+",path="+escapeComma(vfsSockets[i]))
		add("-device", "vhost-user-fs-pci,chardev="+id+",tag="+m.Tag)
	}
	add("-chardev", fmt.Sprintf("socket,id=qmp,fd=%d", qmpFD))
	add("-mon", "chardev=qmp,mode=control")
	// Load the saved machine and stay paused (-S) until resumed.
	switch incoming {
	case incomingStream:
		add("-incoming", fmt.Sprintf("fd:%d", restoreFD), "-S")
	case incomingDeferred:
		add("-incoming", "defer", "-S")
	}
	return a
}

// escapeComma escapes a value for qemu's comma-separated option syntax.
func escapeComma(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// parseUsernetSSHPort finds the host port forwarded to guest port 22 in
// the output of the monitor command `info usernet`, e.g.
//
//	Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ
//	TCP[HOST_FORWARD]  13       127.0.0.1 41235       10.0.2.15    22     0     0
func parseUsernetPort(out string, guestPort int) (int, error) {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasPrefix(f[0], "TCP[HOST_FORWARD]") {
			continue
		}
		// The guest port is the 6th field when FD is shown, the 5th when not.
		for _, off := range []int{0, -1} {
			if len(f) < 7+off {
				continue
			}
			gp, err1 := strconv.Atoi(f[5+off])
			hp, err2 := strconv.Atoi(f[3+off])
			if err1 == nil && err2 == nil && gp == guestPort && hp > 0 {
				return hp, nil
			}
		}
	}
	return 0, fmt.Errorf("no host forward to guest port %d in qemu's usernet table", guestPort)
}
