//go:build linux

package diskclone

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

func cloneFile(src, dst string) (Method, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	defer out.Close()
	if err := unix.IoctlFileClone(int(out.Fd()), int(in.Fd())); err == nil {
		return Reflink, nil
	}
	if err := sparseCopy(in, out); err != nil {
		return "", err
	}
	// No fsync of the copied data: the VM then writes this file through
	// the page cache (cache=writeback), so a power cut can damage it
	// either way, and a sync here would double the time of create. The
	// sandbox's metadata is still written atomically and synced.
	return SparseCopy, out.Close()
}

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
// new out. out must be large enough already.
func CopyData(in *os.File, off, n int64, out *os.File, outOff int64) error {
	inFd := int(in.Fd())
	start, end := off, off+n
	for off < end {
		data, err := unix.Seek(inFd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		if err != nil {
			return fmt.Errorf("seek data: %w", err)
		}
		if data >= end {
			break
		}
		hole, err := unix.Seek(inFd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seek hole: %w", err)
		}
		hole = min(hole, end)
		if err := copyRange(in, out, data, outOff+data-start, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// copyRange copies n bytes at off in in to woff in out, in the kernel
// when it can.
func copyRange(in, out *os.File, off, woff, n int64) error {
	for n > 0 {
		roff, wo := off, woff
		c, err := unix.CopyFileRange(int(in.Fd()), &roff, int(out.Fd()), &wo, int(min(n, 1<<30)), 0)
		if err != nil {
			if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL) {
				return copyPlain(in, out, off, woff, n)
			}
			return err
		}
		if c == 0 {
			return io.ErrUnexpectedEOF
		}
		off += int64(c)
		woff += int64(c)
		n -= int64(c)
	}
	return nil
}

// copyPlain copies across file systems (a memfd, say): sendfile, still
// without a trip through user space, else read and write.
func copyPlain(in, out *os.File, off, woff, n int64) error {
	if _, err := out.Seek(woff, io.SeekStart); err == nil {
		for n > 0 {
			c, err := unix.Sendfile(int(out.Fd()), int(in.Fd()), &off, int(min(n, 1<<30)))
			if err != nil || c == 0 {
				break
			}
			woff += int64(c)
			n -= int64(c)
		}
		if n == 0 {
			return nil
		}
	}
	_, err := io.Copy(io.NewOffsetWriter(out, woff), io.NewSectionReader(in, off, n))
	return err
}
