package diskclone

import (
	"bytes"
	"io"
)

// zeroBlock is the unit copySkippingZeros leaves out when it reads all
// zeros: APFS's block size (and most file systems').
const zeroBlock = 4096

// copySkippingZeros copies n bytes at off in in to woff in out, writing
// nothing for whole zero blocks (aligned to off), so on a new, truncated
// out they stay holes: a sparse copy of data extents that are partly
// zeros, and of a whole file on a file system that cannot tell its holes.
func copySkippingZeros(in io.ReaderAt, out io.WriterAt, off, woff, n int64) error {
	buf := make([]byte, min(n, 1<<20))
	for n > 0 {
		k := min(n, int64(len(buf)))
		got, err := in.ReadAt(buf[:k], off)
		if int64(got) < k {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		// Write each run of blocks that are not all zeros in one go.
		b := buf[:k]
		for i := 0; i < len(b); {
			j := min(i+zeroBlock, len(b))
			if isZero(b[i:j]) {
				i = j
				continue
			}
			for j < len(b) && !isZero(b[j:min(j+zeroBlock, len(b))]) {
				j = min(j+zeroBlock, len(b))
			}
			if _, err := out.WriteAt(b[i:j], woff+int64(i)); err != nil {
				return err
			}
			i = j
		}
		off += k
		woff += k
		n -= k
	}
	return nil
}

var zeros [zeroBlock]byte

func isZero(b []byte) bool { return bytes.Equal(b, zeros[:len(b)]) }
