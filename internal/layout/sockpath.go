package layout

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
)

// SunPathMax is the size of sockaddr_un's sun_path on goos: 104 bytes on
// macOS (and the BSDs), 108 on Linux. A socket's path must be shorter, to
// leave room for the terminating NUL (Go's net package refuses it
// otherwise, with "invalid argument").
func SunPathMax(goos string) int {
	if goos == "linux" {
		return 108
	}
	return 104
}

// SocketPathFits says whether a unix socket can be bound at path on goos.
func SocketPathFits(path, goos string) bool { return len(path) < SunPathMax(goos) }

// ShortSocketBase is where sockets whose own path is too long are put
// instead, in a private directory per user (heyvm-<uid>, 0700). It is
// /tmp rather than $TMPDIR: every process of the user must find the same
// path (the owner that listens, and every heyvm command that connects),
// and $TMPDIR differs between a Terminal, an ssh session and a
// LaunchAgent on macOS, or is unset.
const ShortSocketBase = "/tmp"

// SocketPath is where heyvm listens on, and connects to, the unix socket
// meant to live at path: path itself if it fits this system's sun_path,
// else a short stand-in, the same in every process of the user, named
// after a hash of path and its base name:
// /tmp/heyvm-<uid>/<hash>-<name>. The stand-in's directory is made (0700)
// when needed; if it cannot be made safely (another user's, or a
// symlink), path is returned and binding it fails as before. A sandbox's
// sockets under ~/.heyo fit (about 80 bytes with a 30-character user
// name); a home or HEYO_HOME much deeper than that, or a ready
// snapshot's build folder (~/.heyo/cache/warm/<backend>/<image>/.b-<shape>/),
// may not.
func SocketPath(path string) string {
	return socketPathIn(ShortSocketBase, os.Getuid(), runtime.GOOS, path)
}

func socketPathIn(base string, uid int, goos, path string) string {
	if SocketPathFits(path, goos) {
		return path
	}
	short := shortSocketPath(base, uid, path)
	if !SocketPathFits(short, goos) || ensurePrivateDir(filepath.Dir(short)) != nil {
		return path
	}
	return short
}

// shortSocketPath names the stand-in for path: 16 hex digits of its
// SHA-256 (a collision between two of one user's sockets is out of
// reach) and its base name, cut to keep the whole short.
func shortSocketPath(base string, uid int, path string) string {
	sum := sha256.Sum256([]byte(filepath.Clean(path)))
	name := filepath.Base(path)
	if len(name) > 24 {
		name = name[:24]
	}
	return filepath.Join(base, fmt.Sprintf("heyvm-%d", uid), hex.EncodeToString(sum[:8])+"-"+name)
}

// ensurePrivateDir makes dir (mode 0700) or checks the one there: a real
// directory, not a symlink, that this user can chmod to 0700 (only its
// owner can), so no other user can put or read sockets in it.
func ensurePrivateDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !os.IsExist(err) {
		return err
	}
	for i := 0; i < 2; i++ {
		fi, err := os.Lstat(dir)
		if err != nil {
			return err
		}
		if !fi.IsDir() || fi.Mode()&os.ModeSymlink != 0 {
			return fmt.Errorf("%s is not a directory of this user's", dir)
		}
		if i == 0 {
			if err := os.Chmod(dir, 0o700); err != nil {
				return fmt.Errorf("%s is not a directory of this user's: %w", dir, err)
			}
		}
	}
	return nil
}
