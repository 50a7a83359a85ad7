//go:build unix

package fsutil

import (
	"os"
	"syscall"
)

// AllocatedBytes is how much disk a file takes: its size less its holes.
func AllocatedBytes(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int64(st.Blocks) * 512
	}
	return fi.Size()
}
