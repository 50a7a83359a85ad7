// Command clonetime times heyvm's disk clone against cp on the same file:
// clonetime SRC DIR prints "heyvm <seconds> <method>" and "cp <seconds>".
package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/heyvm/heyvm/internal/diskclone"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: clonetime SRC DIR")
		os.Exit(2)
	}
	src, dir := os.Args[1], os.Args[2]
	dst := filepath.Join(dir, "heyvm-clone.img")
	os.Remove(dst)
	start := time.Now()
	m, err := diskclone.Clone(src, dst, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("heyvm %.3f %s\n", time.Since(start).Seconds(), m)
	os.Remove(dst)
	cpDst := filepath.Join(dir, "cp-clone.img")
	os.Remove(cpDst)
	start = time.Now()
	if out, err := exec.Command("cp", "--sparse=always", src, cpDst).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "cp: %v %s\n", err, out)
		os.Exit(1)
	}
	fmt.Printf("cp %.3f\n", time.Since(start).Seconds())
	os.Remove(cpDst)
}
