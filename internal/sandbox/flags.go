package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/heyvm/heyvm/internal/backend"
)

// systemDirs may not be mount points in the guest: shadowing them would
// break the guest (or hide what it needs to boot).
var systemDirs = []string{"/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run", "/sbin", "/sys", "/usr", "/var"}

// shadowOnly are directories that may hold mounts below them, but not be
// replaced whole.
var shadowOnly = []string{"/", "/root", "/home", "/tmp", "/mnt", "/opt", "/srv"}

// ParseMount parses HOST:GUEST[:ro] for --mount. The host path must exist;
// the guest path must be absolute and clear of system directories.
func ParseMount(s string, index int) (backend.Mount, error) {
	parts := strings.Split(s, ":")
	m := backend.Mount{Tag: fmt.Sprintf("m%d", index)}
	switch {
	case len(parts) == 3 && parts[2] == "ro":
		m.ReadOnly = true
	case len(parts) == 3 && parts[2] == "rw":
	case len(parts) != 2:
		return m, fmt.Errorf("--mount %q: use HOST:GUEST or HOST:GUEST:ro", s)
	}
	host, guest := parts[0], parts[1]
	if host == "" || guest == "" {
		return m, fmt.Errorf("--mount %q: use HOST:GUEST or HOST:GUEST:ro", s)
	}
	abs, err := filepath.Abs(host)
	if err != nil {
		return m, err
	}
	// virtiofsd serves a real directory, not a symlink to one: share
	// what the path points at.
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		return m, fmt.Errorf("--mount %q: host path %s does not exist", s, host)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return m, fmt.Errorf("--mount %q: host path %s does not exist", s, abs)
	}
	if !fi.IsDir() {
		return m, fmt.Errorf("--mount %q: host path %s is not a directory (only directories can be shared)", s, abs)
	}
	m.HostPath = abs
	if err := ValidateGuestPath(guest); err != nil {
		return m, fmt.Errorf("--mount %q: %w", s, err)
	}
	m.GuestPath = filepath.Clean(guest)
	return m, nil
}

// ValidateGuestPath refuses relative paths and paths over system
// directories.
func ValidateGuestPath(p string) error {
	if !filepath.IsAbs(p) {
		return fmt.Errorf("guest path %q is relative: give an absolute path such as /workspace", p)
	}
	if strings.ContainsAny(p, ",: \t\n") {
		return fmt.Errorf("guest path %q contains ',', ':' or whitespace", p)
	}
	c := filepath.Clean(p)
	for _, d := range systemDirs {
		if c == d || strings.HasPrefix(c, d+"/") {
			return fmt.Errorf("guest path %s is inside the system directory %s: mount somewhere like /workspace or /mnt/data", c, d)
		}
	}
	for _, d := range shadowOnly {
		if c == d {
			return fmt.Errorf("guest path %s would hide the guest's own %s: mount below it instead", c, d)
		}
	}
	return nil
}

// ParsePort parses --port GUEST or HOST:GUEST (TCP, bound on 127.0.0.1).
func ParsePort(s string) (backend.PortForward, error) {
	hostStr, guestStr, two := strings.Cut(s, ":")
	if !two {
		guestStr, hostStr = s, s
	}
	if strings.Contains(guestStr, ":") {
		return backend.PortForward{}, fmt.Errorf("--port %q: use GUEST or HOST:GUEST (forwards always bind 127.0.0.1)", s)
	}
	host, err1 := strconv.Atoi(hostStr)
	guest, err2 := strconv.Atoi(guestStr)
	if err1 != nil || err2 != nil || host < 1 || host > 65535 || guest < 1 || guest > 65535 {
		return backend.PortForward{}, fmt.Errorf("--port %q: ports are numbers from 1 to 65535, as GUEST or HOST:GUEST", s)
	}
	return backend.PortForward{HostPort: host, GuestPort: guest}, nil
}
