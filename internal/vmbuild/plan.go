package vmbuild

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/cavaliergopher/cpio"

	"github.com/heyvm/heyvm/internal/debarchive"
	"github.com/heyvm/heyvm/internal/imagebuild"
)

// plan is what a build installs, resolved from the archive's index.
type plan struct {
	client    *debarchive.Client
	res       *debarchive.Resolution // the root's packages
	stage1    map[string]bool        // the essential ones and what they need: unpacked first
	requested []string               // what the recipe names on top of minbase
	seeds     map[string]bool        // what apt would have been asked for
	kernel    *debarchive.Package    // linux-image-<version>, unpacked, not installed
	busybox   *debarchive.Package    // busybox-static, for the initramfs
	tools     []*debarchive.Package  // kmod and what it needs beyond the root: depmod
	arch      string
}

// resolve reads the archive's index and resolves the recipe.
func resolve(ctx context.Context, o Options) (*plan, error) {
	c, err := debarchive.New(debarchive.Config{Mirror: o.Mirror, Suite: o.Suite, Arch: o.Arch, HTTPClient: o.HTTPClient})
	if err != nil {
		return nil, err
	}
	rel, err := c.Release(ctx)
	if err != nil {
		return nil, err
	}
	idx, err := c.Index(ctx, rel)
	if err != nil {
		return nil, err
	}
	p := &plan{client: c, arch: o.Arch, requested: append(append([]string(nil), imagebuild.Packages...), o.ExtraPackages...), seeds: map[string]bool{}}
	if p.res, err = idx.ResolveMinbase(p.requested...); err != nil {
		return nil, fmt.Errorf("the recipe's packages in %s %s: %w", o.Mirror, o.Suite, err)
	}
	for _, n := range append(idx.MinbaseSeeds(), p.requested...) {
		p.seeds[n] = true
	}
	// The first stage, as mmdebstrap's: the Essential:yes packages with
	// everything they (pre-)depend on, unpacked by hand, then installed by
	// the dpkg among them.
	var essential []string
	for _, q := range p.res.Essential {
		essential = append(essential, q.Name)
	}
	er, err := idx.Resolve(essential...)
	if err != nil {
		return nil, fmt.Errorf("the essential packages in %s %s: %w", o.Mirror, o.Suite, err)
	}
	p.stage1 = map[string]bool{}
	for _, q := range er.Packages {
		p.stage1[q.Name] = true
	}
	// The cloud kernel's metapackage names the kernel package itself.
	meta := "linux-image-cloud-" + o.Arch
	mp := idx.Package(meta)
	if mp == nil {
		return nil, fmt.Errorf("%s %s has no %s", o.Mirror, o.Suite, meta)
	}
	kr, err := idx.Resolve(meta)
	if err != nil {
		return nil, fmt.Errorf("the kernel in %s %s: %w", o.Mirror, o.Suite, err)
	}
	for _, k := range kr.Packages {
		if strings.HasPrefix(k.Name, "linux-image-") && k.Name != meta {
			p.kernel = k
		}
	}
	if p.kernel == nil {
		return nil, fmt.Errorf("%s names no kernel package", meta)
	}
	for _, q := range p.res.Packages {
		if q.Name == "busybox-static" {
			p.busybox = q
		}
	}
	if p.busybox == nil {
		return nil, fmt.Errorf("the recipe lacks busybox-static")
	}
	tr, err := idx.Resolve("kmod")
	if err != nil {
		return nil, fmt.Errorf("kmod (for depmod) in %s %s: %w", o.Mirror, o.Suite, err)
	}
	in := map[string]bool{}
	for _, q := range p.res.Packages {
		in[q.Name] = true
	}
	for _, q := range tr.Order {
		if !in[q.Name] {
			p.tools = append(p.tools, q)
		}
	}
	return p, nil
}

// all is every package the build downloads.
func (p *plan) all() []*debarchive.Package {
	out := append(append([]*debarchive.Package(nil), p.res.Packages...), p.kernel)
	return append(out, p.tools...)
}

func (p *plan) downloadBytes() int64 {
	var n int64
	for _, q := range p.all() {
		n += q.Size
	}
	return n
}

// debName is a package's file name in the build VM.
func debName(q *debarchive.Package) string {
	return q.Name + "_" + strings.ReplaceAll(q.Version.String(), ":", "%3a") + "_" + q.Architecture + ".deb"
}

// lists are the build VM's lists of package files: the first stage (the
// essential ones and their dependencies), the rest, each in dependency
// order, and depmod's tools.
func (p *plan) lists() (essential, rest, tools string) {
	var e, r, t []string
	for _, q := range p.res.Order {
		if p.stage1[q.Name] {
			e = append(e, debName(q))
		} else {
			r = append(r, debName(q))
		}
	}
	for _, q := range p.tools {
		t = append(t, debName(q))
	}
	join := func(l []string) string {
		if len(l) == 0 {
			return ""
		}
		return strings.Join(l, "\n") + "\n"
	}
	return join(e), join(r), join(t)
}

// extendedStates is what apt records of the packages it installed as
// dependencies (mmdebstrap's second stage is apt): every package not
// installed first (the essential ones, by dpkg) and not asked for.
func (p *plan) extendedStates() string {
	var b strings.Builder
	for _, q := range p.res.Packages {
		if p.stage1[q.Name] || p.seeds[q.Name] {
			continue
		}
		// apt writes the native architecture, for "all" packages too.
		fmt.Fprintf(&b, "Package: %s\nArchitecture: %s\nAuto-Installed: 1\n\n", q.Name, p.arch)
	}
	return b.String()
}

// mergedUsr is the folders that are links into /usr, as mmdebstrap's
// merged-/usr hook makes them.
func mergedUsr(arch string) string {
	if arch == "amd64" {
		return "bin sbin lib lib64"
	}
	return "bin sbin lib"
}

// triplet is a Debian architecture's multiarch folder.
func triplet(arch string) string {
	switch arch {
	case "arm64":
		return "aarch64-linux-gnu"
	case "amd64":
		return "x86_64-linux-gnu"
	}
	return arch + "-linux-gnu"
}

// writeBuildInitrd writes the build VM's initramfs: heyvm's own (the
// image's, at initrd: busybox and the modules), followed by a second,
// uncompressed archive (the kernel unpacks both, the later over the
// earlier) with the build script as /init and everything it installs.
func writeBuildInitrd(out, imageInitrd string, p *plan, k *kernelFiles, o Options) error {
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	base, err := os.Open(imageInitrd)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, base)
	base.Close()
	if err != nil {
		return err
	}
	// The next archive starts on a 4-byte boundary.
	if off, _ := f.Seek(0, io.SeekCurrent); off%4 != 0 {
		f.Write(make([]byte, 4-off%4))
	}
	cw := cpio.NewWriter(f)
	dirs := map[string]bool{}
	addDir := func(d string) error {
		for _, x := range parents(d) {
			if !dirs[x] {
				dirs[x] = true
				if err := cw.WriteHeader(&cpio.Header{Name: x, Mode: cpio.TypeDir | 0o755}); err != nil {
					return err
				}
			}
		}
		return nil
	}
	add := func(name string, mode cpio.FileMode, size int64, r io.Reader) error {
		if err := addDir(path.Dir(name)); err != nil {
			return err
		}
		if err := cw.WriteHeader(&cpio.Header{Name: name, Mode: cpio.TypeReg | mode, Size: size}); err != nil {
			return err
		}
		_, err := io.CopyN(cw, r, size)
		return err
	}
	addBytes := func(name string, mode cpio.FileMode, data []byte) error {
		return add(name, mode, int64(len(data)), bytes.NewReader(data))
	}
	addDeb := func(name string, q *debarchive.Package) error {
		df, err := os.Open(debarchive.CachePath(o.CacheDir, q))
		if err != nil {
			return err
		}
		defer df.Close()
		return add(name, 0o644, q.Size, df)
	}
	essential, rest, tools := p.lists()
	params := fmt.Sprintf("KVER=%s\nARCH=%s\nTRIPLET=%s\nMERGED=%q\nSIZE_KB=%d\nTOTAL_STEPS=%d\n",
		k.version, o.Arch, triplet(o.Arch), mergedUsr(o.Arch), o.RootfsSize/1024, guestStages)
	for _, x := range []struct {
		name string
		mode cpio.FileMode
		data string
	}{
		{"init", 0o755, string(buildScript)},
		{"build/params", 0o644, params},
		{"build/essential.list", 0o644, essential},
		{"build/rest.list", 0o644, rest},
		{"build/tools.list", 0o644, tools},
		{"build/edits.sh", 0o644, imagebuild.EditsScript(imagebuild.GuestEdits())},
		{"build/extended_states", 0o644, p.extendedStates()},
		{"build/sources.list", 0o644, fmt.Sprintf("deb %s %s main\n", o.Mirror, o.Suite)},
	} {
		if err := addBytes(x.name, x.mode, []byte(x.data)); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	for _, q := range append(slices.Clone(p.res.Packages), p.tools...) {
		if n := debName(q); !seen[n] {
			seen[n] = true
			if err := addDeb("build/debs/"+n, q); err != nil {
				return err
			}
		}
	}
	if err := addDeb("build/kernel.deb", p.kernel); err != nil {
		return err
	}
	if err := cw.Close(); err != nil {
		return err
	}
	return f.Close()
}

// parents lists d and the folders above it, outermost first.
func parents(d string) []string {
	var out []string
	for ; d != "." && d != "/" && d != ""; d = path.Dir(d) {
		out = append([]string{d}, out...)
	}
	return out
}
