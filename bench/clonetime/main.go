// Command clonetime times heyvm's disk making against cp on the same file:
// clonetime SRC DIR prints "heyvm <seconds> <method>" (the copy-on-write
// chain a qemu sandbox gets, where qemu-img is installed; else the clone),
// "clone <seconds> <method>" (the raw clone apple_virt sandboxes get) and
// "cp <seconds>".
package main

import (
	"context"
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
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fi, err := os.Stat(src)
	if err != nil {
		fail(err)
	}
	clone := func() (float64, diskclone.Method) {
		dst := filepath.Join(dir, "heyvm-clone.img")
		os.Remove(dst)
		start := time.Now()
		m, err := diskclone.Clone(src, dst, 0)
		if err != nil {
			fail(err)
		}
		d := time.Since(start).Seconds()
		os.Remove(dst)
		return d, m
	}
	if diskclone.ChainAvailable() {
		cdir, err := os.MkdirTemp(dir, "chain-")
		if err != nil {
			fail(err)
		}
		start := time.Now()
		c, err := diskclone.Chain(context.Background(), cdir, []diskclone.Layer{{Src: src, Name: "base.img", Format: "raw"}}, "rootfs.qcow2", fi.Size())
		if err != nil {
			fail(err)
		}
		method := "qcow2-chain"
		if !c.Linked {
			method += "+copy"
		}
		fmt.Printf("heyvm %.3f %s\n", time.Since(start).Seconds(), method)
		os.RemoveAll(cdir)
		d, m := clone()
		fmt.Printf("clone %.3f %s\n", d, m)
	} else {
		d, m := clone()
		fmt.Printf("heyvm %.3f %s\n", d, m)
	}
	cpDst := filepath.Join(dir, "cp-clone.img")
	os.Remove(cpDst)
	start := time.Now()
	if out, err := exec.Command("cp", "--sparse=always", src, cpDst).CombinedOutput(); err != nil {
		fail(fmt.Errorf("cp: %v %s", err, out))
	}
	fmt.Printf("cp %.3f\n", time.Since(start).Seconds())
	os.Remove(cpDst)
}
