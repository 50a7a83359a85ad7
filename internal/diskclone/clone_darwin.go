//go:build darwin

package diskclone

import (
	"os"

	"golang.org/x/sys/unix"
)

// cloneFile uses APFS clonefile(2), which makes the copy instant and
// shares blocks until either side writes. Off APFS (HFS+, exFAT, a
// network volume) it falls back to a sparse copy: only the data extents
// (SEEK_DATA/SEEK_HOLE), and within them no all-zero block, so holes stay
// holes where the file system has them.
func cloneFile(src, dst string) (Method, error) {
	if err := unix.Clonefile(src, dst, unix.CLONE_NOFOLLOW); err == nil {
		return Clonefile, os.Chmod(dst, 0o600)
	}
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
	if err := sparseCopy(in, out); err != nil {
		return "", err
	}
	// No fsync, as on Linux: the VM writes this file through the host's
	// cache either way (see clone_linux.go).
	return SparseCopy, out.Close()
}

// copyRange copies n bytes at off in in to woff in out. macOS has no
// copy_file_range: the bytes pass through here, and all-zero blocks are
// left out.
func copyRange(in, out *os.File, off, woff, n int64) error {
	return copySkippingZeros(in, out, off, woff, n)
}
