package vmbuild

import "fmt"

// ChooseVM says whether an image is built in a VM rather than on the host,
// and why: on macOS always (the host build needs Linux); on Linux when
// asked (inVM), or when the host build cannot run here (hostErr: no
// mmdebstrap or e2fsprogs, no user namespaces for an ordinary user).
func ChooseVM(goos string, inVM bool, hostErr error) (bool, string) {
	switch {
	case goos != "linux":
		return true, "the host build needs Linux"
	case inVM:
		return true, "asked for with --in-vm"
	case hostErr != nil:
		return true, fmt.Sprintf("the host build cannot run here (%v)", hostErr)
	}
	return false, "mmdebstrap runs here"
}
