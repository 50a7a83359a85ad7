package hostinfo

import "golang.org/x/sys/unix"

// TotalMemory is the host's physical memory in bytes.
func TotalMemory() (int64, error) {
	n, err := unix.SysctlUint64("hw.memsize")
	return int64(n), err
}
