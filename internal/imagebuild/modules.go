package imagebuild

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// InitramfsModules are the modules the initramfs loads, in the order the
// issue names them. Order matters only for readability: ResolveModules
// puts each module after everything it depends on.
var InitramfsModules = []string{
	"virtio_ring", "virtio",
	"virtio_pci", "virtio_mmio",
	"virtio_blk", "virtio_net", "virtio_console", "virtio_rng",
	"vsock", "vmw_vsock_virtio_transport",
	"fuse", "virtiofs",
}

// moduleKey normalises a module name the way modprobe does: '-' and '_'
// are the same, and the file extension is dropped.
func moduleKey(p string) string {
	base := path.Base(p)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

// ModuleIndex is what a kernel's modules.dep and modules.builtin say.
type ModuleIndex struct {
	path    map[string]string   // key -> path relative to /lib/modules/<ver>
	deps    map[string][]string // key -> dependency keys
	builtin map[string]bool
}

// ParseModuleIndex reads modules.dep ("kernel/a.ko: kernel/b.ko ...") and
// modules.builtin (one path a line).
func ParseModuleIndex(modulesDep, modulesBuiltin io.Reader) (*ModuleIndex, error) {
	idx := &ModuleIndex{path: map[string]string{}, deps: map[string][]string{}, builtin: map[string]bool{}}
	sc := bufio.NewScanner(modulesDep)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		mod, depList, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("modules.dep: malformed line %q", line)
		}
		k := moduleKey(mod)
		idx.path[k] = mod
		for _, d := range strings.Fields(depList) {
			idx.deps[k] = append(idx.deps[k], moduleKey(d))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if modulesBuiltin != nil {
		sc = bufio.NewScanner(modulesBuiltin)
		for sc.Scan() {
			if l := strings.TrimSpace(sc.Text()); l != "" {
				idx.builtin[moduleKey(l)] = true
			}
		}
		if err := sc.Err(); err != nil {
			return nil, err
		}
	}
	return idx, nil
}

// ResolveModules returns the module files to load for the wanted modules,
// each after all of its dependencies. Modules built into the kernel are
// skipped; a module that is neither built in nor present is an error,
// because a guest without it would not boot.
func (idx *ModuleIndex) ResolveModules(wanted []string) ([]string, error) {
	var order []string
	state := map[string]int{} // 0 new, 1 visiting, 2 done
	var visit func(k string, from string) error
	visit = func(k, from string) error {
		switch state[k] {
		case 1:
			return fmt.Errorf("module dependency cycle at %s", k)
		case 2:
			return nil
		}
		p, ok := idx.path[k]
		if !ok {
			if idx.builtin[k] {
				state[k] = 2
				return nil
			}
			if from != "" {
				return fmt.Errorf("module %s (needed by %s) is not in this kernel", k, from)
			}
			return fmt.Errorf("module %s is neither built into this kernel nor shipped with it", k)
		}
		state[k] = 1
		for _, d := range idx.deps[k] {
			if err := visit(d, k); err != nil {
				return err
			}
		}
		state[k] = 2
		if strings.HasSuffix(p, ".ko") {
			order = append(order, p)
			return nil
		}
		return fmt.Errorf("module %s is compressed (%s): this builder loads only uncompressed modules", k, path.Base(p))
	}
	for _, w := range wanted {
		if err := visit(moduleKey(w), ""); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// OwnKernelModules are what an initramfs for a root's own kernel loads:
// heyvm's usual set plus ext4, which a distribution's general kernel
// builds as a module. OwnKernelRequired are those it cannot boot without.
var (
	OwnKernelModules  = append(append([]string(nil), InitramfsModules...), "ext4")
	OwnKernelRequired = []string{"virtio_pci", "virtio_blk", "virtio_console", "ext4"}
)

// ResolveAvailable is ResolveModules for a kernel heyvm did not choose:
// a wanted module the kernel neither ships nor builds in is skipped,
// unless it is required.
func (idx *ModuleIndex) ResolveAvailable(wanted, required []string) ([]string, error) {
	var order []string
	seen := map[string]bool{}
	for _, w := range wanted {
		mods, err := idx.ResolveModules([]string{w})
		if err != nil {
			if slices.Contains(required, w) {
				return nil, fmt.Errorf("the root's kernel cannot boot under heyvm: %w", err)
			}
			continue
		}
		for _, m := range mods {
			if !seen[m] {
				seen[m] = true
				order = append(order, m)
			}
		}
	}
	return order, nil
}

// WriteOwnKernelInitramfs writes heyvm's initramfs for a kernel brought
// by a built root: root holds bin/busybox and lib/modules/<kver> with
// modules.dep, modules.builtin and the (uncompressed) modules.
func WriteOwnKernelInitramfs(root, kver, out string) ([]string, error) {
	idx, err := readModuleIndex(filepath.Join(root, "lib", "modules", kver))
	if err != nil {
		return nil, err
	}
	mods, err := idx.ResolveAvailable(OwnKernelModules, OwnKernelRequired)
	if err != nil {
		return nil, err
	}
	return mods, writeInitramfsFile(root, kver, mods, out)
}

// readModuleIndex reads a kernel's modules.dep and modules.builtin.
func readModuleIndex(modDir string) (*ModuleIndex, error) {
	dep, err := os.Open(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	defer dep.Close()
	builtin, err := os.Open(filepath.Join(modDir, "modules.builtin"))
	if err != nil {
		return nil, err
	}
	defer builtin.Close()
	return ParseModuleIndex(dep, builtin)
}
