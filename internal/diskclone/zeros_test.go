package diskclone

import (
	"bytes"
	"io"
	"testing"
)

// writeRecorder is an io.WriterAt that keeps what was written where.
type writeRecorder struct {
	buf    []byte
	writes [][2]int64 // offset, length
}

func (w *writeRecorder) WriteAt(p []byte, off int64) (int, error) {
	w.writes = append(w.writes, [2]int64{off, int64(len(p))})
	copy(w.buf[off:], p)
	return len(p), nil
}

// Zero blocks are not written, data lands at the shifted offset, and runs
// of data blocks go out in one write each.
func TestCopySkippingZeros(t *testing.T) {
	src := make([]byte, 3<<20+1000)                // more than one buffer, and a partial last block
	copy(src[100:], "head")                        // block 0
	copy(src[zeroBlock*5:], "two blocks, one run") // blocks 5..6
	copy(src[zeroBlock*6+10:], "still the same run")
	copy(src[2<<20-3:], "across the buffer edge")
	copy(src[len(src)-7:], "the end")
	const off, woff = 100, 5000
	n := int64(len(src) - off)
	w := &writeRecorder{buf: make([]byte, woff+n)}
	if err := copySkippingZeros(bytes.NewReader(src), w, off, woff, n); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(w.buf[woff:], src[off:]) {
		t.Fatal("copied data differs")
	}
	var written int64
	for _, wr := range w.writes {
		written += wr[1]
	}
	if written > 8*zeroBlock || len(w.writes) > 6 {
		t.Fatalf("%d bytes in %d writes for four small pieces of data: zeros were written (%v)", written, len(w.writes), w.writes)
	}
	// A source shorter than asked is an error, not a silent short copy.
	if err := copySkippingZeros(bytes.NewReader(src[:10]), w, 0, 0, 100); err != io.ErrUnexpectedEOF {
		t.Fatalf("short source: %v", err)
	}
}
