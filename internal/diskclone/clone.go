// Package diskclone makes a sandbox's disk from an image's rootfs without
// copying what it need not: a reflink (copy-on-write) where the file
// system supports it, else a sparse copy that skips holes.
package diskclone

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// Method says how a clone was made.
type Method string

const (
	Reflink    Method = "reflink"     // FICLONE on Linux
	Clonefile  Method = "clonefile"   // APFS clonefile(2) on macOS
	SparseCopy Method = "sparse-copy" // data extents only (SEEK_DATA/SEEK_HOLE)
)

// Clone copies src to dst (which must not exist) and grows dst to size
// bytes if size is larger than src. On any failure dst is removed, so a
// full disk never leaves half a file behind.
func Clone(src, dst string, size int64) (m Method, err error) {
	fi, err := os.Stat(src)
	if err != nil {
		return "", err
	}
	if size > 0 && size < fi.Size() {
		return "", fmt.Errorf("disk size %d MiB is smaller than the image's %d MiB", size>>20, fi.Size()>>20)
	}
	defer func() {
		if err != nil {
			os.Remove(dst)
			if errors.Is(err, syscall.ENOSPC) {
				err = fmt.Errorf("no space left on the device holding %s: free some space and try again: %w", dst, err)
			}
		}
	}()
	m, err = cloneFile(src, dst)
	if err != nil {
		return "", err
	}
	if size > fi.Size() {
		if err := os.Truncate(dst, size); err != nil {
			return "", fmt.Errorf("grow disk: %w", err)
		}
	}
	return m, nil
}
