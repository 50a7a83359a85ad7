//go:build !(darwin && arm64 && cgo)

package applevirt

import (
	"context"
	"errors"
	"runtime"

	"github.com/heyvm/heyvm/internal/backend"
)

func init() { backend.Register(unavailable{}) }

// unavailable stands in for the backend where it cannot run, so that
// `--backend apple_virt` says why instead of "unknown backend".
type unavailable struct{}

func (unavailable) Name() string { return Name }

func (unavailable) Available() error {
	return errors.New(unavailableReason(runtime.GOOS, runtime.GOARCH))
}

func (u unavailable) Preflight(backend.Spec) error { return u.Available() }

func (u unavailable) Start(context.Context, backend.Spec) (backend.Machine, error) {
	return nil, u.Available()
}

func (unavailable) HypervisorBuild(string) string { return "" }

func unavailableReason(goos, goarch string) string {
	switch {
	case goos != "darwin":
		return "Apple Virtualization.framework exists only on macOS 13 or newer on Apple silicon"
	case goarch != "arm64":
		return "heyvm's apple_virt backend needs Apple silicon (arm64)"
	default:
		return "this heyvm binary was built without cgo: build it with `make`"
	}
}

// CanWarmStart: never on apple_virt (see errNoWarmStart).
func (unavailable) CanWarmStart() error { return canWarmStart() }

// DHCPHint: see dhcpHint.
func (unavailable) DHCPHint() string { return dhcpHint }
