package ociimage

import (
	"strconv"

	"golang.org/x/sys/unix"
)

// bootID names this boot of the host: its boot time.
func bootID() string {
	tv, err := unix.SysctlTimeval("kern.boottime")
	if err != nil {
		return "unknown"
	}
	return strconv.FormatInt(tv.Sec, 10) + "." + strconv.FormatInt(int64(tv.Usec), 10)
}
