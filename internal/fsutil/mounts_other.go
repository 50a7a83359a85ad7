//go:build !linux

package fsutil

import "os"

// RemoveAllSafely removes dir. Only Linux builds images in a chroot, so
// elsewhere nothing can be mounted below it.
func RemoveAllSafely(dir string) error { return os.RemoveAll(dir) }
