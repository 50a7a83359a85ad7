package diskclone

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// CopyData moves a range's data to another offset, in another kind of
// file (a memfd, as the qemu backend's guest memory is), and writes
// nothing for the range's holes.
func TestCopyDataShiftsAndKeepsHoles(t *testing.T) {
	src, err := os.Create(filepath.Join(t.TempDir(), "src"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	src.WriteAt([]byte("before"), 0)
	src.WriteAt([]byte("first"), 4096)
	src.WriteAt([]byte("second"), 32<<20)
	src.WriteAt([]byte("after"), 64<<20)
	fd, err := unix.MemfdCreate("copydata-test", 0)
	if err != nil {
		t.Skipf("no memfd here: %v", err)
	}
	dst := os.NewFile(uintptr(fd), "memfd")
	defer dst.Close()
	dst.Truncate(48 << 20)
	// [4096, 4096+40 MiB) of src goes to 8 MiB onward in dst.
	if err := CopyData(src, 4096, 40<<20, dst, 8<<20); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 48<<20)
	dst.ReadAt(got, 0)
	want := make([]byte, 48<<20)
	copy(want[8<<20:], "first")
	copy(want[8<<20+32<<20-4096:], "second")
	if !bytes.Equal(got, want) {
		t.Fatal("the data landed elsewhere, or more was copied than the range")
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(dst.Fd()), &st); err == nil && st.Blocks*512 > 1<<20 {
		t.Errorf("%d bytes allocated for two small extents: holes were written", st.Blocks*512)
	}
}
