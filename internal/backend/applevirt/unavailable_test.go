//go:build !(darwin && arm64 && cgo)

package applevirt

import "testing"

// The stand-in answers CanWarmStart as the real backend does.
func TestUnavailableCanWarmStart(t *testing.T) {
	var b interface{ CanWarmStart() error } = unavailable{}
	if err := b.CanWarmStart(); err != errNoWarmStart {
		t.Fatalf("%v", err)
	}
}
