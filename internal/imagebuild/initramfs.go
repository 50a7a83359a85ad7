package imagebuild

import (
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/cavaliergopher/cpio"
)

// WriteInitramfs writes a gzip-compressed newc cpio archive holding a
// static busybox, the /init script, and the given modules (paths relative
// to modDir, in load order) under lib/modules/<kver>/.
func WriteInitramfs(w io.Writer, busybox, initScript []byte, modDir, kver string, modules []string) error {
	gz, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return err
	}
	cw := cpio.NewWriter(gz)
	dirs := map[string]bool{}
	addDir := func(p string) error {
		var parts []string
		for d := p; d != "." && d != "/"; d = path.Dir(d) {
			parts = append([]string{d}, parts...)
		}
		for _, d := range parts {
			if dirs[d] {
				continue
			}
			dirs[d] = true
			if err := cw.WriteHeader(&cpio.Header{Name: d, Mode: cpio.TypeDir | 0o755}); err != nil {
				return err
			}
		}
		return nil
	}
	addFile := func(name string, mode cpio.FileMode, data []byte) error {
		if err := addDir(path.Dir(name)); err != nil {
			return err
		}
		if err := cw.WriteHeader(&cpio.Header{Name: name, Mode: cpio.TypeReg | mode, Size: int64(len(data))}); err != nil {
			return err
		}
		_, err := cw.Write(data)
		return err
	}
	for _, d := range []string{"dev", "proc", "sys", "newroot", "sbin"} {
		if err := addDir(d); err != nil {
			return err
		}
	}
	// No dev/console node: the cpio writer cannot record device numbers,
	// so /init reopens its stdio on the console once devtmpfs is mounted.
	if err := addFile("bin/busybox", 0o755, busybox); err != nil {
		return err
	}
	if err := addDir("bin"); err != nil {
		return err
	}
	if err := cw.WriteHeader(&cpio.Header{Name: "bin/sh", Mode: cpio.TypeSymlink | 0o777, Size: int64(len("busybox"))}); err != nil {
		return err
	}
	if _, err := cw.Write([]byte("busybox")); err != nil {
		return err
	}
	if err := addFile("init", 0o755, initScript); err != nil {
		return err
	}
	var order []string
	for _, m := range modules {
		data, err := os.ReadFile(filepath.Join(modDir, m))
		if err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
		rel := path.Join(kver, m)
		if err := addFile(path.Join("lib/modules", rel), 0o644, data); err != nil {
			return err
		}
		order = append(order, rel)
	}
	if err := addFile("etc/modules.order", 0o644, []byte(strings.Join(order, "\n")+"\n")); err != nil {
		return err
	}
	if err := cw.Close(); err != nil {
		return err
	}
	return gz.Close()
}
