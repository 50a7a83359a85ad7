// Package hostinfo answers questions about the host that heyvm checks
// before it writes or boots: how much memory it has, how much space a
// file system has left, and which file system a path is on.
package hostinfo

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// MiB is a mebibyte.
const MiB = 1 << 20

// Space is a file system's free space as an ordinary user may use it.
type Space struct {
	MountPoint string
	Free       int64 // bytes available to unprivileged users
	Total      int64
}

// FreeSpace reports the space left on the file system holding path (or
// its nearest existing parent).
func FreeSpace(path string) (Space, error) {
	p := existingParent(path)
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		return Space{}, fmt.Errorf("check free space on %s: %w", p, err)
	}
	bs := int64(st.Bsize)
	return Space{MountPoint: MountPoint(p), Free: int64(st.Bavail) * bs, Total: int64(st.Blocks) * bs}, nil
}

func existingParent(p string) string {
	p = filepath.Clean(p)
	for {
		if _, err := os.Stat(p); err == nil {
			return p
		}
		parent := filepath.Dir(p)
		if parent == p {
			return p
		}
		p = parent
	}
}

// MountPoint is the top directory of the file system holding path: the
// last ancestor on the same device.
func MountPoint(path string) string {
	p, err := filepath.Abs(existingParent(path))
	if err != nil {
		return path
	}
	d, ok := dev(p)
	if !ok {
		return p
	}
	for {
		parent := filepath.Dir(p)
		if parent == p {
			return p
		}
		pd, ok := dev(parent)
		if !ok || pd != d {
			return p
		}
		p = parent
	}
}

// dev is the device of the file system holding q.
func dev(q string) (uint64, bool) {
	fi, err := os.Stat(q)
	if err != nil {
		return 0, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return uint64(st.Dev), true
}

// SameFileSystem says whether a and b (or, where they do not exist yet,
// their nearest existing parents) are on one file system: whether a file
// of one can be hard-linked into the other.
func SameFileSystem(a, b string) bool {
	da, ok1 := dev(existingParent(a))
	db, ok2 := dev(existingParent(b))
	return ok1 && ok2 && da == db
}

// NeedSpace fails, naming the file system and the amounts, when the file
// system holding path has less than need bytes free. what says what the
// space is for.
func NeedSpace(path string, need int64, what string) error {
	sp, err := FreeSpace(path)
	if err != nil {
		return err
	}
	if sp.Free < need {
		return fmt.Errorf("not enough free space on %s for %s: %d MB needed, %d MB free; free some space there (or set HEYO_HOME to a larger file system) and try again", sp.MountPoint, what, (need+MiB-1)/MiB, sp.Free/MiB)
	}
	return nil
}
