package debarchive

import (
	"pault.ag/go/debian/dependency"
	"pault.ag/go/debian/version"
)

// This file decides whether a package satisfies one possibility of a
// dependency ("foo:any (>= 1.2)"), for a single-architecture system: every
// candidate is of the index's architecture or "all".

// applicable returns the possibilities of rel that apply to the index's
// architecture: those without an architecture restriction ("[amd64]") that
// excludes it. Substitution variables never appear in a Packages index and
// are dropped.
func (ix *Index) applicable(rel dependency.Relation) []dependency.Possibility {
	var out []dependency.Possibility
	for _, q := range rel.Possibilities {
		if q.Substvar {
			continue
		}
		if q.Architectures != nil && ix.native != nil && !q.Architectures.Matches(ix.native) {
			continue
		}
		out = append(out, q)
	}
	return out
}

// satisfies reports whether p satisfies q by its own name or by one of
// its Provides.
func (ix *Index) satisfies(p *Package, q dependency.Possibility) bool {
	return ix.satisfiesByName(p, q) || ix.satisfiesByProvides(p, q)
}

// satisfiesByName reports whether p is the package q names, in a version
// and architecture q accepts.
func (ix *Index) satisfiesByName(p *Package, q dependency.Possibility) bool {
	if p.Name != q.Name || !ix.archQualifierOK(p, q.Arch) {
		return false
	}
	return q.Version == nil || q.Version.SatisfiedBy(p.Version)
}

// satisfiesByProvides reports whether one of p's Provides satisfies q. A
// versioned dependency is only satisfied by a Provides of the form
// "name (= version)" whose version fits it, as in dpkg.
func (ix *Index) satisfiesByProvides(p *Package, q dependency.Possibility) bool {
	if !ix.archQualifierOK(p, q.Arch) {
		return false
	}
	for _, rel := range p.Provides.Relations {
		for _, prov := range rel.Possibilities {
			if prov.Name != q.Name {
				continue
			}
			if q.Version == nil {
				return true
			}
			if prov.Version == nil || prov.Version.Operator != "=" {
				continue
			}
			v, err := version.Parse(prov.Version.Number)
			if err == nil && q.Version.SatisfiedBy(v) {
				return true
			}
		}
	}
	return false
}

// archQualifierOK applies a dependency's architecture qualifier to p: none
// and ":native" accept any candidate (they are all native or "all"), ":any"
// only a "Multi-Arch: allowed" package, and an explicit architecture that
// architecture (with "all" counting as native).
func (ix *Index) archQualifierOK(p *Package, qual *dependency.Arch) bool {
	if qual == nil {
		return true
	}
	switch q := qual.String(); q {
	case "native":
		return true
	case "any":
		return p.MultiArch == "allowed"
	default:
		return p.Architecture == q || (p.Architecture == "all" && q == ix.arch)
	}
}

// hits reports whether p satisfies any possibility of dep; it is how
// Conflicts and Breaks apply to p.
func (ix *Index) hits(dep dependency.Dependency, p *Package) bool {
	for _, rel := range dep.Relations {
		for _, q := range ix.applicable(rel) {
			if ix.satisfies(p, q) {
				return true
			}
		}
	}
	return false
}
