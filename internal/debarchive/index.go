package debarchive

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"pault.ag/go/debian/control"
	"pault.ag/go/debian/dependency"
	"pault.ag/go/debian/version"
)

// Package is one binary package of a Packages index.
type Package struct {
	Name         string
	Version      version.Version
	Architecture string // the index's architecture, or "all"
	MultiArch    string // "same", "foreign", "allowed" or ""
	Essential    bool
	Priority     string
	Filename     string // path under the mirror, e.g. pool/main/h/hello/hello_2.10-3_amd64.deb
	Size         int64
	SHA256       string // lower-case hex

	PreDepends dependency.Dependency
	Depends    dependency.Dependency
	Provides   dependency.Dependency
	Conflicts  dependency.Dependency
	Breaks     dependency.Dependency

	// stanza is the package's stanza as deb822 text, every field in the
	// index's order. Text takes a third of the memory of a parsed
	// control.Paragraph, and only the few packages that are written to a
	// local index or asked for a Field need it parsed again.
	stanza string
}

// String names the package as name_version_arch.
func (p *Package) String() string {
	return p.Name + "_" + p.Version.String() + "_" + p.Architecture
}

// Field returns a field of the package's original stanza ("" if absent),
// e.g. Field("Installed-Size"). It parses the stanza on each call.
func (p *Package) Field(name string) string {
	para, err := p.paragraph()
	if err != nil {
		return ""
	}
	return para.Values[name]
}

// paragraph parses the package's stanza again.
func (p *Package) paragraph() (*control.Paragraph, error) {
	pr, err := control.NewParagraphReader(strings.NewReader(p.stanza), nil)
	if err != nil {
		return nil, err
	}
	return pr.Next()
}

// packageFields is the part of a Packages stanza that debarchive reads,
// decoded by pault.ag's control package.
type packageFields struct {
	control.Paragraph

	Package      string          `required:"true"`
	Version      version.Version `required:"true"`
	Architecture string          `required:"true"`
	MultiArch    string          `control:"Multi-Arch"`
	Essential    bool
	Priority     string
	Filename     string `required:"true"`
	Size         int    `required:"true"`
	SHA256       string `required:"true"`

	PreDepends dependency.Dependency `control:"Pre-Depends"`
	Depends    dependency.Dependency
	Provides   dependency.Dependency
	Conflicts  dependency.Dependency
	Breaks     dependency.Dependency
}

// Index is a queryable Packages index of one architecture. For each name it
// keeps one candidate, the highest version, as apt does.
type Index struct {
	arch      string
	native    *dependency.Arch      // arch, parsed
	packages  map[string]*Package   // candidate by name
	providers map[string][]*Package // virtual name -> candidates that provide it, sorted by name
	malformed map[string]error      // name -> why its stanza was skipped
}

// ParseIndex reads a Packages file for arch. Packages of other
// architectures than arch and "all" are left out. A stanza that cannot be
// parsed is skipped (and named if something depends on it) rather than
// failing the whole index; a syntax error in the file itself is an error.
func ParseIndex(r io.Reader, arch string) (*Index, error) {
	pr, err := control.NewParagraphReader(r, nil)
	if err != nil {
		return nil, err
	}
	native, err := dependency.ParseArch(arch)
	if err != nil {
		return nil, fmt.Errorf("architecture %q: %w", arch, err)
	}
	ix := &Index{
		arch:      arch,
		native:    native,
		packages:  make(map[string]*Package),
		providers: make(map[string][]*Package),
		malformed: make(map[string]error),
	}
	for {
		para, err := pr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("Packages index: %w", err)
		}
		p, err := newPackage(para)
		if err != nil {
			ix.malformed[para.Values["Package"]] = err
			continue
		}
		if p.Architecture != arch && p.Architecture != "all" {
			continue
		}
		if old := ix.packages[p.Name]; old == nil || version.Compare(p.Version, old.Version) > 0 {
			ix.packages[p.Name] = p
		}
	}
	for name := range ix.packages {
		delete(ix.malformed, name)
	}
	ix.indexProviders()
	return ix, nil
}

// newPackage decodes one stanza.
func newPackage(para *control.Paragraph) (*Package, error) {
	var f packageFields
	if err := control.UnpackFromParagraph(*para, &f); err != nil {
		return nil, err
	}
	// The digest names the file in the download cache: it must be hex.
	if !isSHA256Hex(f.SHA256) {
		return nil, fmt.Errorf("SHA256 %q is not a SHA256", f.SHA256)
	}
	return &Package{
		Name:         f.Package,
		Version:      f.Version,
		Architecture: f.Architecture,
		MultiArch:    f.MultiArch,
		Essential:    f.Essential,
		Priority:     f.Priority,
		Filename:     f.Filename,
		Size:         int64(f.Size),
		SHA256:       strings.ToLower(f.SHA256),
		PreDepends:   f.PreDepends,
		Depends:      f.Depends,
		Provides:     f.Provides,
		Conflicts:    f.Conflicts,
		Breaks:       f.Breaks,
		stanza:       formatStanza(para, nil),
	}, nil
}

// indexProviders maps each provided name to the candidates providing it.
func (ix *Index) indexProviders() {
	for _, p := range ix.packages {
		for _, rel := range p.Provides.Relations {
			for _, prov := range rel.Possibilities {
				list := ix.providers[prov.Name]
				if len(list) == 0 || list[len(list)-1] != p {
					ix.providers[prov.Name] = append(list, p)
				}
			}
		}
	}
	for _, list := range ix.providers {
		sortPackages(list)
	}
}

// Arch is the index's architecture.
func (ix *Index) Arch() string { return ix.arch }

// Len is the number of package names in the index.
func (ix *Index) Len() int { return len(ix.packages) }

// Package returns the candidate named name, or nil.
func (ix *Index) Package(name string) *Package { return ix.packages[name] }

// Providers returns the candidates whose Provides names name, sorted by
// package name.
func (ix *Index) Providers(name string) []*Package { return ix.providers[name] }

// Packages returns every candidate, sorted by name.
func (ix *Index) Packages() []*Package {
	return ix.filter(func(*Package) bool { return true })
}

// filter returns the candidates for which keep is true, sorted by name.
func (ix *Index) filter(keep func(*Package) bool) []*Package {
	var out []*Package
	for _, p := range ix.packages {
		if keep(p) {
			out = append(out, p)
		}
	}
	sortPackages(out)
	return out
}

// sortPackages sorts by name.
func sortPackages(ps []*Package) {
	sort.Slice(ps, func(i, j int) bool { return ps[i].Name < ps[j].Name })
}

// isSHA256Hex reports whether s is a SHA256 digest in hex. Digests end up
// in URLs and file names, so nothing else may pass as one.
func isSHA256Hex(s string) bool {
	sum, err := hex.DecodeString(s)
	return err == nil && len(sum) == sha256.Size
}
