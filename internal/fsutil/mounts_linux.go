//go:build linux

package fsutil

import (
	"bufio"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// UnmountUnder detaches every mount at or below dir, deepest first. Call it
// before removing a tree a chroot tool worked in: a recursive delete that
// walked into a leftover bind mount of /dev or /proc would reach the host.
func UnmountUnder(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			points = append(points, mp)
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var firstErr error
	for _, p := range points {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// unescapeMount undoes the octal escapes mountinfo uses for spaces etc.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// RemoveAllSafely unmounts what is mounted below dir, then removes it. If
// something stays mounted it refuses rather than delete through it.
func RemoveAllSafely(dir string) error {
	if err := UnmountUnder(dir); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}
