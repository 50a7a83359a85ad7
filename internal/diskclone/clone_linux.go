//go:build linux

package diskclone

import (
	"errors"
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
