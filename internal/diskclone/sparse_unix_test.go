//go:build linux || darwin

package diskclone

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// A file system that cannot tell holes (macOS's FAT and exFAT refuse
// SEEK_DATA) has the whole range copied as data; one that can has only
// its extents visited.
func TestDataExtents(t *testing.T) {
	var got [][2]int64
	collect := func(data, end int64) error { got = append(got, [2]int64{data, end}); return nil }
	refuse := func(int64, int) (int64, error) { return 0, unix.EINVAL }
	if err := dataExtents(refuse, 10, 100, collect); err != nil || len(got) != 1 || got[0] != [2]int64{10, 110} {
		t.Fatalf("no hole support: %v %v", got, err)
	}
	// Data at [0,10) and [50,60), holes elsewhere, file of 100 bytes.
	fake := func(off int64, whence int) (int64, error) {
		switch {
		case whence == unix.SEEK_DATA && off < 10:
			return off, nil
		case whence == unix.SEEK_DATA && off < 60:
			return max(off, 50), nil
		case whence == unix.SEEK_DATA:
			return 0, unix.ENXIO
		case off < 10:
			return 10, nil
		case off < 60:
			return 60, nil
		}
		return 100, nil
	}
	got = nil
	if err := dataExtents(fake, 5, 50, collect); err != nil || len(got) != 2 || got[0] != [2]int64{5, 10} || got[1] != [2]int64{50, 55} {
		t.Fatalf("extents: %v %v", got, err)
	}
}

// macOS's fallback when clonefile is unavailable, run here on a real file:
// data extents found with SEEK_DATA/SEEK_HOLE, copied without their zero
// blocks, into a truncated new file that keeps every hole.
func TestDarwinStyleSparseCopy(t *testing.T) {
	dir := t.TempDir()
	src, err := os.Create(filepath.Join(dir, "src"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	src.WriteAt([]byte("head"), 0)
	src.WriteAt(make([]byte, 8<<20), 1<<20) // 8 MiB of written zeros: data, but nothing to copy
	src.WriteAt([]byte("middle"), 32<<20)
	src.WriteAt([]byte("tail"), 64<<20)
	dst, err := os.Create(filepath.Join(dir, "dst"))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	size := int64(64<<20 + 4)
	dst.Truncate(size)
	seek := func(off int64, whence int) (int64, error) { return unix.Seek(int(src.Fd()), off, whence) }
	err = dataExtents(seek, 0, size, func(data, end int64) error {
		return copySkippingZeros(src, dst, data, data, end-data)
	})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(src.Name())
	b, _ := os.ReadFile(dst.Name())
	if !bytes.Equal(a, b) {
		t.Fatal("the copy differs")
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(dst.Fd()), &st); err == nil && st.Blocks*512 > 1<<20 {
		t.Errorf("%d bytes allocated for three small pieces of data: zeros or holes were written", st.Blocks*512)
	}
}
