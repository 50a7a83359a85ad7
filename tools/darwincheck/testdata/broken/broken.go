//go:build darwin && arm64 && cgo

package broken

import "github.com/Code-Hex/vz/v3"

// Both calls are wrong on purpose: a misspelled function and a method
// that does not exist. darwincheck must report them.
func Broken() {
	vz.NewLinuxBootLoaderr("/k")
	var vm *vz.VirtualMachine
	vm.Reboot()
}
