// Command zstdfloor measures the least a pull of an image can cost here:
// every zstd blob of an OCI image layout (`heyvm images export`, untarred)
// read into memory first, then decoded to nowhere and its sha256 taken,
// on as many goroutines as there are CPUs. No network, no writes: what
// is left is the work a pull cannot skip.
//
//	zstdfloor DIR   prints: <seconds> <blobs> <compressed bytes> <decoded bytes>
package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: zstdfloor OCI-LAYOUT-DIR")
		os.Exit(2)
	}
	paths, _ := filepath.Glob(filepath.Join(os.Args[1], "blobs", "sha256", "*"))
	var blobs [][]byte
	var in int64
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if bytes.HasPrefix(b, []byte{0x28, 0xb5, 0x2f, 0xfd}) { // zstd frames only
			blobs = append(blobs, b)
			in += int64(len(b))
		}
	}
	var out atomic.Int64
	work := make(chan []byte)
	var wg sync.WaitGroup
	start := time.Now()
	for range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dec, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.IgnoreChecksum(true))
			for b := range work {
				sha256.Sum256(b)
				dec.Reset(bytes.NewReader(b))
				n, err := io.Copy(io.Discard, dec)
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(1)
				}
				out.Add(n)
			}
		}()
	}
	for _, b := range blobs {
		work <- b
	}
	close(work)
	wg.Wait()
	fmt.Printf("%.3f %d %d %d\n", time.Since(start).Seconds(), len(blobs), in, out.Load())
}
