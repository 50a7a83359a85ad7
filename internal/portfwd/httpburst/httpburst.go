// Package httpburst is the load that port forwards are judged by: N
// GETs to 127.0.0.1:port, C at a time, each on a fresh connection. The
// integration test and bench/ports.sh both use it, so they measure the
// same thing.
package httpburst

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Run sends n requests, c at a time, and returns how many failed (no
// answer in 30 s, or not 200) and how long it all took.
func Run(port, n, c int) (failed int64, took time.Duration) {
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, MaxConnsPerHost: c}}
	var fails atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, c)
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
			if err != nil {
				fails.Add(1)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				fails.Add(1)
			}
		}()
	}
	wg.Wait()
	return fails.Load(), time.Since(start)
}
