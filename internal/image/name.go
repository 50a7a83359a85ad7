// Package image is the image store: where images live, what their names
// may be, which aliases point where, and what image.yaml records.
package image

import (
	"fmt"
	"runtime"
	"strings"
)

// MaxNameLen is the longest image name accepted, in bytes.
const MaxNameLen = 128

// DefaultName is the canonical name of the default image for the host's
// native architecture. It says what the image is: Debian 12 (bookworm).
const DefaultName = "debian:12"

// DefaultSuite is the Debian release the default image is built from.
const DefaultSuite = "bookworm"

// Aliases map names users may type to the canonical default image.
// "ubuntu:24.04" and "default" are kept because older installs used them.
var Aliases = map[string]string{
	"default":      DefaultName,
	"ubuntu:24.04": DefaultName,
}

// LegacyDirs are directory names older installs used for the default
// image; if one holds a valid image and the canonical one does not exist,
// the aliases resolve to it.
var LegacyDirs = []string{"default", "ubuntu:24.04"}

// ValidateName checks an image name. Names look like container references
// (debian:12, my-base) and become directory names, so anything that could
// escape the images directory or confuse a shell is refused.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("image name is empty: use a name like %q", DefaultName)
	case len(name) > MaxNameLen:
		return fmt.Errorf("image name is %d bytes long: the limit is %d", len(name), MaxNameLen)
	case strings.Contains(name, ".."):
		return fmt.Errorf("image name %q contains \"..\": use letters, digits, '.', '_', '-' and ':'", name)
	}
	for i, r := range name {
		switch {
		case r == '/':
			return fmt.Errorf("image name %q contains '/': use a name like %q", name, DefaultName)
		case r < 0x20 || r == 0x7f:
			return fmt.Errorf("image name %q contains a control character", name)
		case r == ' ' || r == '\t' || r > 0x7e:
			return fmt.Errorf("image name %q contains whitespace or a non-ASCII character", name)
		case isAlnum(r):
		case i > 0 && (r == '.' || r == '_' || r == '-' || r == ':'):
		default:
			if i == 0 {
				return fmt.Errorf("image name %q must start with a letter or digit", name)
			}
			return fmt.Errorf("image name %q contains %q: use letters, digits, '.', '_', '-' and ':'", name, r)
		}
	}
	return nil
}

func isAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

// NativeArch is the Debian architecture name of this host.
func NativeArch() string { return debianArch(runtime.GOARCH) }

func debianArch(goarch string) string {
	switch goarch {
	case "amd64", "arm64":
		return goarch
	}
	return goarch
}

// NormalizeArch accepts the spellings people use and returns Debian's
// name, or an error naming what is supported.
func NormalizeArch(arch string) (string, error) {
	switch strings.ToLower(arch) {
	case "", "native":
		return NativeArch(), nil
	case "amd64", "x86_64", "x86-64":
		return "amd64", nil
	case "arm64", "aarch64":
		return "arm64", nil
	}
	return "", fmt.Errorf("unsupported architecture %q: use amd64 or arm64", arch)
}

// BackendArch is the guest architecture a backend runs natively:
// apple_virt runs arm64 guests only, qemu matches the host.
func BackendArch(backend string) string {
	if backend == "apple_virt" {
		return "arm64"
	}
	return NativeArch()
}

// DefaultNameFor is the canonical default image name for a backend and
// arch. The backend's native architecture gets the plain name; a foreign
// one carries its arch, so an arm64 image built for qemu on an amd64 host
// never shadows the one the host boots. An image built for apple_virt on
// Linux is plain debian:12, ready to copy to a Mac.
func DefaultNameFor(backend, arch string) string {
	if arch == BackendArch(backend) {
		return DefaultName
	}
	return DefaultName + "-" + arch
}
