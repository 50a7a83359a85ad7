//go:build linux

package qemu

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A saved machine's header round-trips; a bare migration stream (what an
// older heyvm wrote) has none; a header that does not fit the file is
// an error, not a guess.
func TestSavedLayout(t *testing.T) {
	dir := t.TempDir()
	f, _ := os.Create(filepath.Join(dir, "saved"))
	defer f.Close()
	l := savedLayout{MemoryBytes: 1 << 20, StateOffset: savedHeader + 1<<20}
	if err := writeSavedLayout(f, l); err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("QEVM device state"), l.StateOffset)
	got, ok, err := readSavedLayout(f)
	if err != nil || !ok || got != l {
		t.Fatalf("read back %+v, %v, %v", got, ok, err)
	}
	bare, _ := os.Create(filepath.Join(dir, "bare"))
	defer bare.Close()
	bare.WriteString("QEVM\x00\x00\x00\x03")
	if _, ok, err := readSavedLayout(bare); ok || err != nil {
		t.Errorf("a bare stream: %v, %v", ok, err)
	}
	f.Truncate(savedHeader + 100) // cut short: the state is gone
	if _, _, err := readSavedLayout(f); err == nil || !strings.Contains(err.Error(), "damaged header") {
		t.Errorf("a cut file: %v", err)
	}
}
