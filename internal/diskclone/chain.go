package diskclone

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// A copy-on-write chain (qemu backend): a sandbox's directory holds its
// read-only layers, hard-linked from the image (and from a ready
// snapshot), and its own qcow2 overlay on top, which is the only file the
// VM writes. Making one costs two links and a qemu-img run, whatever the
// image's size, and the layers' blocks are shared on disk by every
// sandbox of the image.
//
// Hard links rather than backing paths into the image store: removing or
// rebuilding the image (a new directory renamed over the old) leaves the
// sandbox's layers in place, so no image can be deleted out from under a
// sandbox; its space is freed with the last sandbox that uses it. The
// overlay names its backing file relatively, so the sandbox directory
// stands on its own. Where the store and the sandbox are on different
// file systems, a layer is cloned (reflink or sparse copy) instead.

// Layer is one read-only layer of a chain.
type Layer struct {
	Src    string // file to link (or clone) in
	Name   string // its name in the sandbox directory
	Format string // "raw" or "qcow2"
}

// Chained is what Chain did.
type Chained struct {
	Linked bool // every layer is a hard link (else some were cloned)
}

// QemuImg is the qemu-img binary.
var QemuImg = "qemu-img"

// ChainAvailable says whether Chain can work here (qemu-img is installed).
func ChainAvailable() bool {
	_, err := exec.LookPath(QemuImg)
	return err == nil
}

// Chain makes dir/top, a qcow2 overlay of size bytes on the last of
// layers, each linked into dir. A layer that is itself a qcow2 overlay
// must name its own backing file relatively, as Chain's overlays do, and
// that file must be an earlier layer. On failure nothing it made is left.
func Chain(ctx context.Context, dir string, layers []Layer, top string, size int64) (c Chained, err error) {
	if len(layers) == 0 {
		return c, errors.New("a disk chain needs a base layer")
	}
	var made []string
	defer func() {
		if err != nil {
			for _, p := range made {
				os.Remove(p)
			}
		}
	}()
	c.Linked = true
	for _, l := range layers {
		dst := filepath.Join(dir, l.Name)
		if err := os.Link(l.Src, dst); err != nil {
			if _, cerr := Clone(l.Src, dst, 0); cerr != nil {
				return c, fmt.Errorf("link the disk layer %s: %v; clone: %w", l.Src, err, cerr)
			}
			c.Linked = false
		}
		made = append(made, dst)
	}
	last := layers[len(layers)-1]
	out := filepath.Join(dir, top)
	// -u: the size is given, so qemu-img need not open the backing chain.
	cmd := exec.CommandContext(ctx, QemuImg, "create", "-q", "-u", "-f", "qcow2", "-F", last.Format, "-b", last.Name,
		"-o", "cluster_size=65536", out, strconv.FormatInt(size, 10))
	cmd.Dir = dir
	made = append(made, out)
	if b, err := cmd.CombinedOutput(); err != nil {
		return c, fmt.Errorf("qemu-img create: %v: %s", err, strings.TrimSpace(string(b)))
	}
	if err := os.Chmod(out, 0o600); err != nil {
		return c, err
	}
	return c, nil
}
