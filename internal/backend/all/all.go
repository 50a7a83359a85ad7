// Package all links in every backend, so that importing it fills the
// registry.
package all

import (
	_ "github.com/heyvm/heyvm/internal/backend/applevirt"
	_ "github.com/heyvm/heyvm/internal/backend/qemu"
)
