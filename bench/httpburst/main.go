// Command httpburst sends N GETs, C at a time, to 127.0.0.1:PORT and
// prints "<seconds> <failures>", for bench/ports.sh.
package main

import (
	"flag"
	"fmt"

	"github.com/heyvm/heyvm/internal/portfwd/httpburst"
)

func main() {
	port := flag.Int("port", 0, "host port")
	n := flag.Int("n", 500, "requests")
	c := flag.Int("c", 50, "concurrency")
	flag.Parse()
	failed, took := httpburst.Run(*port, *n, *c)
	fmt.Printf("%.3f %d\n", took.Seconds(), failed)
}
