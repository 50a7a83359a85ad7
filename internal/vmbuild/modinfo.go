package vmbuild

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/heyvm/heyvm/internal/debarchive"
	"github.com/heyvm/heyvm/internal/imagebuild"
)

// kernelFiles is what the host takes from a kernel package: the kernel,
// and the modules heyvm's initramfs loads, resolved without depmod from
// each module's own .modinfo (its "depends=" line, which is what depmod
// reads too).
type kernelFiles struct {
	version string
	vmlinuz []byte
	modDir  string   // a folder holding the initramfs's modules
	modules []string // their paths relative to modDir, in load order
}

// readKernel reads a linux-image-<version> package: its kernel, and the
// modules the initramfs needs, written (decompressed) under work.
func readKernel(deb, work string) (*kernelFiles, error) {
	k := &kernelFiles{modDir: filepath.Join(work, "modules")}
	type mod struct {
		path    string // relative to lib/modules/<version>
		depends []string
		data    []byte
	}
	mods := map[string]*mod{}
	var builtin []byte
	err := debarchive.WalkDeb(deb, func(name string, hdr *tar.Header, r io.Reader) error {
		if hdr.Typeflag != tar.TypeReg {
			return nil
		}
		switch {
		case strings.HasPrefix(name, "boot/vmlinuz-"):
			k.version = strings.TrimPrefix(name, "boot/vmlinuz-")
			b, err := io.ReadAll(r)
			k.vmlinuz = b
			return err
		case strings.HasPrefix(name, "lib/modules/") || strings.HasPrefix(name, "usr/lib/modules/"):
			rel := name[strings.Index(name, "lib/modules/")+len("lib/modules/"):]
			_, rel, _ = strings.Cut(rel, "/") // drop the version
			if rel == "modules.builtin" {
				b, err := io.ReadAll(r)
				builtin = b
				return err
			}
			if !strings.Contains(path.Base(rel), ".ko") {
				return nil
			}
			data, err := moduleBytes(rel, r)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			deps, err := moduleDepends(data)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			rel = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(rel, ".xz"), ".zst"), ".gz")
			mods[moduleName(rel)] = &mod{path: rel, depends: deps, data: data}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if k.vmlinuz == nil {
		return nil, fmt.Errorf("%s holds no kernel (boot/vmlinuz-*)", filepath.Base(deb))
	}
	// modules.dep in depmod's form, which the recipe's resolver reads.
	var dep strings.Builder
	for _, m := range mods {
		fmt.Fprintf(&dep, "%s:", m.path)
		for _, d := range m.depends {
			if dm := mods[d]; dm != nil {
				fmt.Fprintf(&dep, " %s", dm.path)
			}
		}
		dep.WriteByte('\n')
	}
	idx, err := imagebuild.ParseModuleIndex(strings.NewReader(dep.String()), bytes.NewReader(builtin))
	if err != nil {
		return nil, err
	}
	if k.modules, err = idx.ResolveModules(imagebuild.InitramfsModules); err != nil {
		return nil, fmt.Errorf("kernel %s: %w", k.version, err)
	}
	for _, rel := range k.modules {
		m := mods[moduleName(rel)]
		if m == nil {
			return nil, fmt.Errorf("kernel %s: module %s is missing", k.version, rel)
		}
		p := filepath.Join(k.modDir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, m.data, 0o644); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// moduleName is a module's name from its path, as modprobe spells it.
func moduleName(rel string) string {
	base := path.Base(rel)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

// moduleBytes reads a module, decompressing .ko.xz and .ko.zst.
func moduleBytes(rel string, r io.Reader) ([]byte, error) {
	switch {
	case strings.HasSuffix(rel, ".ko.xz"):
		xr, err := xz.NewReader(r)
		if err != nil {
			return nil, err
		}
		return io.ReadAll(xr)
	case strings.HasSuffix(rel, ".ko.zst"):
		zr, err := zstd.NewReader(r)
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		return io.ReadAll(zr)
	case strings.HasSuffix(rel, ".ko"):
		return io.ReadAll(r)
	}
	return nil, fmt.Errorf("a module compressed in a way heyvm does not read")
}

// moduleDepends reads the "depends=" entry of a module's .modinfo
// section: the modules it needs loaded first, as modprobe names them.
func moduleDepends(data []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, nil
	}
	info, err := sec.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(info, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			var out []string
			for _, d := range strings.Split(string(v), ",") {
				if d != "" {
					out = append(out, strings.ReplaceAll(d, "-", "_"))
				}
			}
			return out, nil
		}
	}
	return nil, nil
}
