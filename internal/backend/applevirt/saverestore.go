package applevirt

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/heyvm/heyvm/internal/backend"
)

// SaveRestoreMinMacOSMajor is the first macOS whose Virtualization.framework
// saves and restores VMs.
const SaveRestoreMinMacOSMajor = 14

// macOSMajor reads the major number of a product version such as "14.2.1"
// (what the kern.osproductversion sysctl says).
func macOSMajor(product string) (int, error) {
	s := strings.TrimSpace(product)
	major, err := strconv.Atoi(strings.SplitN(s, ".", 2)[0])
	if err != nil || major <= 0 {
		return 0, fmt.Errorf("cannot read the macOS version %q", product)
	}
	return major, nil
}

// CheckSaveRestoreOS says, in one line, why a Mac with this product
// version cannot save or restore VMs; nil from macOS 14 on. A version it
// cannot read counts as too old: below macOS 14 the framework's
// save/restore calls (validateSaveRestoreSupportWithError: first among
// them, which vz v3.7.1 calls with no version check of its own) raise an
// Objective-C exception that aborts the whole process, so heyvm never
// makes them on a guess.
func CheckSaveRestoreOS(product string) error {
	major, err := macOSMajor(product)
	if err != nil {
		return fmt.Errorf("suspend and resume need macOS %d or newer on apple_virt, and heyvm %v", SaveRestoreMinMacOSMajor, err)
	}
	if major < SaveRestoreMinMacOSMajor {
		return fmt.Errorf("suspend and resume need macOS %d or newer on apple_virt (this Mac runs macOS %s): stop the sandbox instead", SaveRestoreMinMacOSMajor, strings.TrimSpace(product))
	}
	return nil
}

// checkSaveRestore is the gate in front of every save and restore: the
// macOS version first (readVersion), and only from macOS 14 on the
// framework's own verdict on the configuration (validate).
func checkSaveRestore(readVersion func() (string, error), validate func() (bool, error)) error {
	v, err := readVersion()
	if err != nil {
		return fmt.Errorf("suspend and resume need macOS %d or newer on apple_virt, and heyvm cannot read this Mac's version: %v", SaveRestoreMinMacOSMajor, err)
	}
	if err := CheckSaveRestoreOS(v); err != nil {
		return err
	}
	ok, err := validate()
	if err != nil {
		return fmt.Errorf("Virtualization.framework cannot save this VM: %w", err)
	}
	if !ok {
		return errors.New("Virtualization.framework cannot save this VM's configuration")
	}
	return nil
}

// checkRestoreSource refuses, before anything runs, a restore the backend
// does not do: one from another VM's saved state (a ready snapshot shared
// by many sandboxes; see errNoWarmStart). A sandbox's own saved state is
// in its own directory, beside its machine identifier.
func checkRestoreSource(spec backend.Spec) error {
	if spec.RestoreFrom == "" {
		return nil
	}
	if spec.RunDir == "" || filepath.Dir(filepath.Clean(spec.RestoreFrom)) != filepath.Clean(spec.RunDir) {
		return fmt.Errorf("%w: %v", backend.ErrRestoreUnsupported, errNoWarmStart)
	}
	return nil
}
