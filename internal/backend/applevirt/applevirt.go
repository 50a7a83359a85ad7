// Package applevirt is heyvm's macOS backend on Apple's
// Virtualization.framework, through github.com/Code-Hex/vz/v3. The
// framework calls live in vz_darwin.go (darwin && arm64 && cgo); every
// other build registers the backend as unavailable, with the reason.
package applevirt

// Name is the backend's registry name.
const Name = "apple_virt"
