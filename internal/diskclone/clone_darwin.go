//go:build darwin

package diskclone

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// cloneFile uses APFS clonefile(2), which makes the copy instant and
// shares blocks until either side writes. Off APFS it falls back to a
// plain copy.
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
	if _, err := io.Copy(out, in); err != nil {
		return "", err
	}
	return SparseCopy, out.Close()
}
