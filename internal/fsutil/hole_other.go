//go:build !linux

package fsutil

import "os"

// PunchHole zeroes n bytes of f at off. (macOS has F_PUNCHHOLE, but only
// on APFS and with alignment rules; zeros are always right.)
func PunchHole(f *os.File, off, n int64) error { return writeZeros(f, off, n) }
