//go:build linux

package qemu

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/heyvm/heyvm/internal/diskclone"
)

// The guest's memory is a memfd heyvm makes and hands to qemu (fd 7, as
// a shared memory-backend-file on /proc/self/fd/7): vhost-user-fs needs
// shared memory, and heyvm itself can then copy the memory out on save
// and in on restore.
//
// A saved machine is one file:
//
//	a 4 KiB header     "heyvm-qemu-saved 1\nram <bytes>\nstate <offset>\n"
//	the guest memory   at 4096, sparse: pages the guest never used are holes
//	the device state   at <offset>: QEMU's migration stream, with the
//	                   x-ignore-shared capability, so without the memory
//
// Why not the memory in the migration stream, as QEMU does by default:
// loading 120 MB of pages through the stream took 0.5 s here, most of a
// warm start; copying them into a new memfd takes 40 ms, and runs while
// qemu starts. A file without the header is a bare migration stream,
// as heyvm wrote before, and still loads.

const (
	savedMagic  = "heyvm-qemu-saved 1\n"
	savedHeader = 4096
)

// savedLayout is where a saved machine's parts are in its file.
type savedLayout struct {
	MemoryBytes int64
	StateOffset int64
}

// newGuestMemory makes the memfd that is the guest's memory.
func newGuestMemory(bytes int64) (*os.File, error) {
	fd, err := unix.MemfdCreate("heyvm-guest-memory", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("guest memory: %w", err)
	}
	f := os.NewFile(uintptr(fd), "guest-memory")
	if err := f.Truncate(bytes); err != nil {
		f.Close()
		return nil, fmt.Errorf("guest memory: %w", err)
	}
	return f, nil
}

// readSavedLayout reads a saved machine's header; ok is false for a bare
// migration stream (no header).
func readSavedLayout(f *os.File) (l savedLayout, ok bool, err error) {
	head := make([]byte, savedHeader)
	n, err := f.ReadAt(head, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return l, false, fmt.Errorf("saved state: %w", err)
	}
	head = head[:n]
	if !bytes.HasPrefix(head, []byte(savedMagic)) {
		return l, false, nil
	}
	rest, _, _ := bytes.Cut(head[len(savedMagic):], []byte{0})
	if _, err := fmt.Sscanf(string(rest), "ram %d\nstate %d\n", &l.MemoryBytes, &l.StateOffset); err != nil {
		return l, false, fmt.Errorf("saved state: a damaged header (%v)", err)
	}
	fi, err := f.Stat()
	if err != nil {
		return l, false, fmt.Errorf("saved state: %w", err)
	}
	if l.MemoryBytes <= 0 || l.StateOffset != savedHeader+l.MemoryBytes || l.StateOffset >= fi.Size() {
		return l, false, fmt.Errorf("saved state: a damaged header (memory %d bytes, state at %d, file %d bytes)", l.MemoryBytes, l.StateOffset, fi.Size())
	}
	return l, true, nil
}

// writeSavedLayout writes the header, last, once both parts are in.
func writeSavedLayout(f *os.File, l savedLayout) error {
	head := make([]byte, savedHeader)
	copy(head, fmt.Sprintf("%sram %d\nstate %d\n", savedMagic, l.MemoryBytes, l.StateOffset))
	_, err := f.WriteAt(head, 0)
	return err
}

// saveMemory copies the guest's memory into a saved machine's file,
// skipping what was never used (holes in the memfd).
func saveMemory(mem, f *os.File, bytes int64) error {
	if err := diskclone.CopyData(mem, 0, bytes, f, savedHeader); err != nil {
		return fmt.Errorf("save the guest memory: %w", err)
	}
	return nil
}

// loadMemory fills a new memfd with a saved machine's memory.
func loadMemory(f *os.File, l savedLayout, mem *os.File) error {
	if err := diskclone.CopyData(f, savedHeader, l.MemoryBytes, mem, 0); err != nil {
		return fmt.Errorf("load the saved guest memory: %w", err)
	}
	return nil
}
