// Command httpburst sends N GETs, C at a time, to 127.0.0.1:PORT and
// prints "<seconds> <failures>", for bench/ports.sh.
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	port := flag.Int("port", 0, "host port")
	n := flag.Int("n", 500, "requests")
	c := flag.Int("c", 50, "concurrency")
	flag.Parse()
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, MaxConnsPerHost: *c}}
	var fails atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, *c)
	start := time.Now()
	for i := 0; i < *n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", *port))
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
	fmt.Printf("%.3f %d\n", time.Since(start).Seconds(), fails.Load())
}
