//go:build linux || darwin

package diskclone

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// sparseCopy copies only the data extents of in; holes stay holes.
func sparseCopy(in, out *os.File) error {
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	if err := out.Truncate(size); err != nil {
		return err
	}
	return CopyData(in, 0, size, out, 0)
}

// CopyData copies the data extents of in's [off, off+n) to out at outOff
// onward: what is a hole in in is not written, so it stays a hole in a
// new out. out must be large enough already. Each extent goes through
// copyRange, this system's way to copy a range.
func CopyData(in *os.File, off, n int64, out *os.File, outOff int64) error {
	seek := func(off int64, whence int) (int64, error) { return unix.Seek(int(in.Fd()), off, whence) }
	return dataExtents(seek, off, n, func(data, end int64) error {
		return copyRange(in, out, data, outOff+data-off, end-data)
	})
}

// dataExtents calls fn for each data extent [data, end) of [off, off+n),
// found with SEEK_DATA and SEEK_HOLE through seek. A file system that
// cannot tell holes (SEEK_DATA refused, as on macOS's FAT and exFAT) has
// the whole range taken as data.
func dataExtents(seek func(off int64, whence int) (int64, error), off, n int64, fn func(data, end int64) error) error {
	end := off + n
	for off < end {
		data, err := seek(off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // only a hole remains
		}
		if noHoleInfo(err) {
			return fn(off, end)
		}
		if err != nil {
			return fmt.Errorf("seek data: %w", err)
		}
		if data >= end {
			return nil
		}
		hole, err := seek(data, unix.SEEK_HOLE)
		if noHoleInfo(err) {
			return fn(data, end)
		}
		if err != nil {
			return fmt.Errorf("seek hole: %w", err)
		}
		hole = min(hole, end)
		if err := fn(data, hole); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// noHoleInfo: the file system does not answer SEEK_DATA/SEEK_HOLE.
func noHoleInfo(err error) bool {
	return errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTTY)
}
