//go:build !linux

package qemu

import (
	"context"
	"errors"

	"github.com/heyvm/heyvm/internal/backend"
)

func init() { backend.Register(unavailable{}) }

type unavailable struct{}

func (unavailable) Name() string { return Name }
func (unavailable) Available() error {
	return errors.New("heyvm's qemu backend runs on Linux only")
}
func (u unavailable) Preflight(backend.Spec) error { return u.Available() }
func (u unavailable) Start(context.Context, backend.Spec) (backend.Machine, error) {
	return nil, u.Available()
}
func (unavailable) HypervisorBuild(string) string { return "" }
