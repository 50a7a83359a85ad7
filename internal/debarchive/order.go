package debarchive

import (
	"slices"
)

// installOrder orders pkgs (sorted by name) so that each comes after the
// packages of the set that it pre-depends or depends on, as far as cycles
// allow. Packages on a dependency cycle (a strongly connected component)
// stay together; inside one, Pre-Depends are honoured if they do not
// themselves form a cycle, and names break the remaining ties. The order is
// the same for the same input.
func (ix *Index) installOrder(pkgs []*Package, selected map[string]*Package) []*Package {
	g := &depGraph{
		ix:       ix,
		selected: selected,
		index:    make(map[*Package]int),
		low:      make(map[*Package]int),
		onStack:  make(map[*Package]bool),
	}
	for _, p := range pkgs {
		if _, seen := g.index[p]; !seen {
			g.strongConnect(p)
		}
	}
	return g.order
}

// depGraph runs Tarjan's algorithm over the dependency graph of a
// selection. Tarjan emits each component after every component it reaches,
// which is dependencies first.
type depGraph struct {
	ix       *Index
	selected map[string]*Package
	index    map[*Package]int
	low      map[*Package]int
	onStack  map[*Package]bool
	stack    []*Package
	next     int
	order    []*Package
}

func (g *depGraph) strongConnect(p *Package) {
	g.index[p], g.low[p] = g.next, g.next
	g.next++
	g.stack = append(g.stack, p)
	g.onStack[p] = true
	for _, q := range g.edges(p, true) {
		if _, seen := g.index[q]; !seen {
			g.strongConnect(q)
			g.low[p] = min(g.low[p], g.low[q])
		} else if g.onStack[q] {
			g.low[p] = min(g.low[p], g.index[q])
		}
	}
	if g.low[p] != g.index[p] {
		return
	}
	var comp []*Package
	for {
		q := g.stack[len(g.stack)-1]
		g.stack = g.stack[:len(g.stack)-1]
		g.onStack[q] = false
		comp = append(comp, q)
		if q == p {
			break
		}
	}
	g.order = append(g.order, g.orderComponent(comp)...)
}

// edges returns the selected packages that satisfy p's Pre-Depends and,
// with depends, its Depends, sorted by name, without p itself.
func (g *depGraph) edges(p *Package, depends bool) []*Package {
	rels := p.PreDepends.Relations
	if depends {
		rels = append(slices.Clip(rels), p.Depends.Relations...)
	}
	var out []*Package
	for _, rel := range rels {
		for _, q := range g.ix.applicable(rel) {
			if s := g.selected[q.Name]; s != nil && s != p && g.ix.satisfiesByName(s, q) {
				out = append(out, s)
			}
			for _, s := range g.ix.providers[q.Name] {
				if g.selected[s.Name] == s && s != p && g.ix.satisfiesByProvides(s, q) {
					out = append(out, s)
				}
			}
		}
	}
	sortPackages(out)
	return slices.Compact(out)
}

// orderComponent orders one strongly connected component: by Pre-Depends
// among its members (Kahn's algorithm, smallest name first), then any left
// on a Pre-Depends cycle by name.
func (g *depGraph) orderComponent(comp []*Package) []*Package {
	sortPackages(comp)
	if len(comp) == 1 {
		return comp
	}
	in := make(map[*Package]bool, len(comp))
	for _, p := range comp {
		in[p] = true
	}
	waitsFor := make(map[*Package]int) // unplaced pre-dependencies inside comp
	dependents := make(map[*Package][]*Package)
	for _, p := range comp {
		for _, q := range g.edges(p, false) {
			if in[q] {
				waitsFor[p]++
				dependents[q] = append(dependents[q], p)
			}
		}
	}
	var out []*Package
	placed := make(map[*Package]bool, len(comp))
	for len(out) < len(comp) {
		next := -1
		for i, p := range comp { // comp is sorted: the first ready one has the smallest name
			if !placed[p] && waitsFor[p] == 0 {
				next = i
				break
			}
		}
		if next < 0 { // a Pre-Depends cycle: take the smallest name
			for i, p := range comp {
				if !placed[p] {
					next = i
					break
				}
			}
		}
		p := comp[next]
		placed[p] = true
		out = append(out, p)
		for _, d := range dependents[p] {
			waitsFor[d]--
		}
	}
	return out
}
