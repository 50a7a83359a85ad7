package qemu

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
)

// EnvAccel overrides the accelerator choice: kvm or tcg.
const EnvAccel = "HEYVM_ACCEL"

// chooseAccel picks kvm only when it really works. /dev/kvm existing is
// not enough: some hosts (kvm_pvm) expose it but only run paravirtualised
// guests, and a stock kernel hangs there. Those hosts also lack the
// hardware virtualisation flag, so on x86 we require vmx or svm too.
func chooseAccel(guestArch, override string, kvmOpens bool, cpuinfo io.Reader) (accel, why string, err error) {
	switch override {
	case "kvm":
		if !kvmOpens {
			return "", "", fmt.Errorf("%s=kvm but /dev/kvm cannot be opened read-write: add yourself to the kvm group or unset %s", EnvAccel, EnvAccel)
		}
		return "kvm", EnvAccel + "=kvm", nil
	case "tcg":
		return "tcg", EnvAccel + "=tcg", nil
	case "":
	default:
		return "", "", fmt.Errorf("%s=%q: use kvm or tcg", EnvAccel, override)
	}
	if guestArch != hostArch() {
		return "tcg", "guest architecture differs from the host", nil
	}
	if !kvmOpens {
		return "tcg", "/dev/kvm cannot be opened read-write", nil
	}
	if runtime.GOARCH == "amd64" && !hasVirtFlag(cpuinfo) {
		return "tcg", "the CPU advertises neither vmx nor svm (a /dev/kvm without them runs only paravirtualised guests)", nil
	}
	return "kvm", "/dev/kvm works and the CPU has hardware virtualisation", nil
}

func hasVirtFlag(cpuinfo io.Reader) bool {
	if cpuinfo == nil {
		return false
	}
	sc := bufio.NewScanner(cpuinfo)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(k) != "flags" {
			continue
		}
		for _, f := range strings.Fields(v) {
			if f == "vmx" || f == "svm" {
				return true
			}
		}
		return false
	}
	return false
}

func hostArch() string { return runtime.GOARCH }

// probeAccel runs chooseAccel against this host.
func probeAccel(guestArch string) (string, string, error) {
	kvmOpens := false
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
		kvmOpens = true
		f.Close()
	}
	var cpuinfo io.Reader
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		cpuinfo = f
	}
	return chooseAccel(guestArch, os.Getenv(EnvAccel), kvmOpens, cpuinfo)
}

// KVMNote says why an ordinary user gets TCG where KVM would work: the
// device is there and the CPU could use it, but the user may not open
// it. It returns "" when there is nothing the user can do about it.
func KVMNote(user string, exists, opens bool, cpuinfo io.Reader) string {
	if runtime.GOOS != "linux" || !exists || opens || (runtime.GOARCH == "amd64" && !hasVirtFlag(cpuinfo)) {
		return ""
	}
	return fmt.Sprintf("note: /dev/kvm is here but you may not use it, so VMs run under TCG (many times slower): run `sudo usermod -aG kvm %s`, then log in again", user)
}

// KVMNoteHere is KVMNote for this host and user.
func KVMNoteHere() string {
	_, statErr := os.Stat("/dev/kvm")
	opens := false
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
		opens = true
		f.Close()
	}
	var cpuinfo io.Reader
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		cpuinfo = f
	}
	user := os.Getenv("USER")
	if user == "" {
		user = "$USER"
	}
	return KVMNote(user, statErr == nil, opens, cpuinfo)
}
