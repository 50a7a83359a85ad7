package ociimage

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A rootfs chunk layer carries only the chunk's data. Its payload, before
// zstd, is
//
//	heyvm-sparse-chunk 1 <count>\n
//	<offset> <length>\n          count lines: the extents, relative to the
//	...                          chunk, increasing and non-overlapping
//	<the extents' bytes, in order>
//
// An extent is a run of 4 KiB blocks that are not all zero; the rest of
// the chunk reads as zeros. A 4 GiB disk holding 300 MB is then 300 MB to
// decompress and write, not 4 GiB, and a pull leaves the rest as holes
// with no need to look at it. The extents depend only on the bytes, not
// on how the file happens to be allocated, so packing the same image
// twice gives the same blob.

const sparseMagic = "heyvm-sparse-chunk 1 "

// block is the granularity of extents: a file system block.
const block = 4096

type extent struct{ Off, Len int64 }

// chunkExtents finds the non-zero 4 KiB runs of f's [off, off+n). Holes
// (SEEK_DATA/SEEK_HOLE) are skipped without reading them.
func chunkExtents(f *os.File, off, n int64) ([]extent, error) {
	var out []extent
	end := off + n
	buf := make([]byte, 1<<20)
	add := func(at, l int64) {
		if k := len(out); k > 0 && out[k-1].Off+out[k-1].Len == at-off {
			out[k-1].Len += l
			return
		}
		out = append(out, extent{Off: at - off, Len: l})
	}
	pos := off
	for pos < end {
		data, err := unix.Seek(int(f.Fd()), pos, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			data = pos // no SEEK_DATA here: read everything
		}
		if data >= end {
			break
		}
		hole, err := unix.Seek(int(f.Fd()), data, unix.SEEK_HOLE)
		if err != nil || hole > end {
			hole = end
		}
		// Scan [data, hole) block by block for zeros, from a block boundary.
		at := data - (data-off)%block
		for at < hole {
			k := min(int64(len(buf)), hole-at)
			k -= k % block
			if k == 0 {
				k = hole - at
			}
			got, err := f.ReadAt(buf[:k], at)
			if err != nil && !(errors.Is(err, io.EOF) && int64(got) == k) {
				return nil, err
			}
			for i := int64(0); i < k; i += block {
				l := min(block, k-i)
				if !isZero(buf[i : i+l]) {
					add(at+i, l)
				}
			}
			at += k
		}
		pos = hole
	}
	return out, nil
}

// writeSparsePayload writes the payload of the chunk at off with extents.
func writeSparsePayload(w io.Writer, f *os.File, off int64, exts []extent) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	fmt.Fprintf(bw, "%s%d\n", sparseMagic, len(exts))
	for _, e := range exts {
		fmt.Fprintf(bw, "%d %d\n", e.Off, e.Len)
	}
	for _, e := range exts {
		if _, err := io.Copy(bw, io.NewSectionReader(f, off+e.Off, e.Len)); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// readSparsePayload checks a payload's header against the chunk's size
// and hands each extent's bytes to write, at offsets relative to the
// chunk. Anything malformed is an error: the payload comes from a
// registry.
func readSparsePayload(r *bufio.Reader, chunk int64, write func(p []byte, at int64) error) error {
	head, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(head, sparseMagic) {
		return errors.New("not a heyvm sparse chunk")
	}
	count, err := strconv.Atoi(strings.TrimSpace(head[len(sparseMagic):]))
	if err != nil || count < 0 || int64(count) > chunk/block+1 {
		return fmt.Errorf("bad extent count in %q", strings.TrimSpace(head))
	}
	exts := make([]extent, count)
	var next int64
	for i := range exts {
		line, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("extent list cut short: %w", err)
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return fmt.Errorf("bad extent line %q", strings.TrimSpace(line))
		}
		o, err1 := strconv.ParseInt(f[0], 10, 64)
		l, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil || o < next || l <= 0 || o+l > chunk {
			return fmt.Errorf("bad extent %q for a chunk of %d bytes", strings.TrimSpace(line), chunk)
		}
		exts[i] = extent{o, l}
		next = o + l
	}
	buf := make([]byte, 1<<20)
	for _, e := range exts {
		for done := int64(0); done < e.Len; {
			k := min(int64(len(buf)), e.Len-done)
			if _, err := io.ReadFull(r, buf[:k]); err != nil {
				return fmt.Errorf("extent data cut short: %w", err)
			}
			if err := write(buf[:k], e.Off+done); err != nil {
				return err
			}
			done += k
		}
	}
	if _, err := r.ReadByte(); !errors.Is(err, io.EOF) {
		return errors.New("data after the last extent")
	}
	return nil
}
