package fsutil

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// PunchHole turns n bytes of f at off into a hole (reads give zeros, and
// the blocks are freed). File systems without hole punching get zeros
// written instead.
func PunchHole(f *os.File, off, n int64) error {
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return writeZeros(f, off, n)
	}
	return err
}
