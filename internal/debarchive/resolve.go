package debarchive

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"pault.ag/go/debian/dependency"
)

// Resolution is a package set closed under Depends and Pre-Depends.
type Resolution struct {
	Packages  []*Package // every package, sorted by name
	Essential []*Package // the Essential:yes ones, sorted by name; a build installs them first
	Order     []*Package // every package, each after what it (pre-)depends on; see installOrder
}

// Names returns the names of r.Packages.
func (r *Resolution) Names() []string {
	names := make([]string, len(r.Packages))
	for i, p := range r.Packages {
		names[i] = p.Name
	}
	return names
}

// UnsatisfiableError lists every dependency a resolution could not meet.
type UnsatisfiableError struct {
	Unmet []Unmet // sorted
}

// Unmet is one dependency that cannot be satisfied.
type Unmet struct {
	Package  string // the package that has the dependency; "" for a requested package
	Field    string // "Pre-Depends", "Depends", or "request"
	Relation string // e.g. "libfoo1 (>= 2.0) | libfoo-compat"
	Reason   string // why no package fits, e.g. "libfoo1 is 1.0-1"
}

func (u Unmet) String() string {
	if u.Package == "" {
		return fmt.Sprintf("requested %s: %s", u.Relation, u.Reason)
	}
	return fmt.Sprintf("%s %s %s: %s", u.Package, strings.ToLower(u.Field), u.Relation, u.Reason)
}

func (e *UnsatisfiableError) Error() string {
	lines := make([]string, len(e.Unmet))
	for i, u := range e.Unmet {
		lines[i] = "  " + u.String()
	}
	noun := "dependencies"
	if len(e.Unmet) == 1 {
		noun = "dependency"
	}
	return fmt.Sprintf("cannot satisfy %d %s:\n%s", len(e.Unmet), noun, strings.Join(lines, "\n"))
}

// MinbaseSeeds returns the packages mmdebstrap's minbase variant starts
// from: every Essential:yes package, every Priority:required one, and apt
// (which Resolve reports as unmet if the index lacks it). The result is
// sorted.
func (ix *Index) MinbaseSeeds() []string {
	var names []string
	for _, p := range ix.filter(func(p *Package) bool { return p.Essential || p.Priority == "required" }) {
		names = append(names, p.Name)
	}
	if !slices.Contains(names, "apt") {
		names = append(names, "apt")
		sort.Strings(names)
	}
	return names
}

// ResolveMinbase resolves what mmdebstrap --variant=minbase
// --include=<include> would install: MinbaseSeeds plus include.
func (ix *Index) ResolveMinbase(include ...string) (*Resolution, error) {
	return ix.Resolve(append(ix.MinbaseSeeds(), include...)...)
}

// Resolve closes the requested packages under Depends and Pre-Depends
// (never Recommends or Suggests). A request is a package name or any
// dependency expression ("foo (>= 1.0)", "mawk | gawk").
//
// Dependencies are met by candidates only (the highest version of a name),
// as apt does. A dependency already met by the selection adds nothing;
// alternatives are decided after every plain dependency has been followed,
// one at a time, each by the first of: an alternative already selected,
// the first alternative that is a real package of a fitting version, the
// first provider of a virtual alternative (providers ranked by priority,
// then name). A candidate that conflicts with (or breaks) the selection is
// passed over. There is no backtracking: a dependency nothing fits is
// reported, with every other, in one *UnsatisfiableError.
func (ix *Index) Resolve(requests ...string) (*Resolution, error) {
	r := &resolver{ix: ix, selected: make(map[string]*Package), unmet: make(map[string]Unmet)}
	for _, req := range requests {
		dep, err := dependency.Parse(req)
		if err != nil {
			return nil, fmt.Errorf("request %q: %w", req, err)
		}
		for _, rel := range dep.Relations {
			r.need(nil, "request", rel, true)
		}
	}
	r.close()
	if len(r.unmet) > 0 {
		return nil, r.unmetError()
	}
	var res Resolution
	for _, p := range r.selected {
		res.Packages = append(res.Packages, p)
		if p.Essential {
			res.Essential = append(res.Essential, p)
		}
	}
	sortPackages(res.Packages)
	sortPackages(res.Essential)
	res.Order = ix.installOrder(res.Packages, r.selected)
	return &res, nil
}

// resolver is the state of one Resolve.
type resolver struct {
	ix       *Index
	selected map[string]*Package
	queue    []*Package       // selected, dependencies not yet followed
	deferred []pendingRel     // alternatives not yet decided
	unmet    map[string]Unmet // keyed by Unmet.String, so each is reported once
}

// pendingRel is a dependency with alternatives, waiting for its turn.
type pendingRel struct {
	from  *Package
	field string
	rel   dependency.Relation
}

// close follows dependencies until nothing is left: all plain ones first,
// then one deferred alternative at a time.
func (r *resolver) close() {
	for {
		for len(r.queue) > 0 {
			p := r.queue[0]
			r.queue = r.queue[1:]
			for _, rel := range p.PreDepends.Relations {
				r.need(p, "Pre-Depends", rel, true)
			}
			for _, rel := range p.Depends.Relations {
				r.need(p, "Depends", rel, true)
			}
		}
		if len(r.deferred) == 0 {
			return
		}
		d := r.deferred[0]
		r.deferred = r.deferred[1:]
		r.need(d.from, d.field, d.rel, false)
	}
}

// need makes sure rel is met, selecting a package if it is not yet. With
// deferAlternatives, a relation with several possibilities waits in
// r.deferred instead.
func (r *resolver) need(from *Package, field string, rel dependency.Relation, deferAlternatives bool) {
	alts := r.ix.applicable(rel)
	if len(alts) == 0 || r.met(alts) {
		return
	}
	if len(alts) > 1 && deferAlternatives {
		r.deferred = append(r.deferred, pendingRel{from, field, rel})
		return
	}
	p := r.choose(alts)
	if p == nil {
		u := Unmet{Field: field, Relation: rel.String(), Reason: r.explain(alts)}
		if from != nil {
			u.Package = from.Name
		}
		r.unmet[u.String()] = u
		return
	}
	r.selected[p.Name] = p
	r.queue = append(r.queue, p)
}

// met reports whether a selected package satisfies one of alts.
func (r *resolver) met(alts []dependency.Possibility) bool {
	for _, q := range alts {
		if p := r.selected[q.Name]; p != nil && r.ix.satisfiesByName(p, q) {
			return true
		}
		for _, p := range r.ix.providers[q.Name] {
			if r.selected[p.Name] == p && r.ix.satisfiesByProvides(p, q) {
				return true
			}
		}
	}
	return false
}

// choose picks the package to meet alts with: the first real package that
// fits, else the first fitting provider; nil if nothing fits.
func (r *resolver) choose(alts []dependency.Possibility) *Package {
	for _, q := range alts {
		if p := r.ix.packages[q.Name]; p != nil && r.ix.satisfiesByName(p, q) && r.conflict(p) == nil {
			return p
		}
	}
	for _, q := range alts {
		for _, p := range r.rankedProviders(q.Name) {
			if r.ix.satisfiesByProvides(p, q) && r.conflict(p) == nil {
				return p
			}
		}
	}
	return nil
}

// rankedProviders orders the providers of name by priority, then name.
func (r *resolver) rankedProviders(name string) []*Package {
	ps := append([]*Package(nil), r.ix.providers[name]...)
	sort.SliceStable(ps, func(i, j int) bool { return priorityRank(ps[i].Priority) < priorityRank(ps[j].Priority) })
	return ps
}

// priorityRank orders Debian's priorities, most important first.
func priorityRank(priority string) int {
	switch priority {
	case "required":
		return 0
	case "important":
		return 1
	case "standard":
		return 2
	case "optional":
		return 3
	default:
		return 4
	}
}

// conflict returns a selected package that p conflicts with or breaks, or
// that conflicts with or breaks p; nil if none.
func (r *resolver) conflict(p *Package) *Package {
	names := make([]string, 0, len(r.selected))
	for name := range r.selected {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		s := r.selected[name]
		if s == p {
			continue
		}
		if r.ix.hits(p.Conflicts, s) || r.ix.hits(p.Breaks, s) || r.ix.hits(s.Conflicts, p) || r.ix.hits(s.Breaks, p) {
			return s
		}
	}
	return nil
}

// explain says why nothing fits alts.
func (r *resolver) explain(alts []dependency.Possibility) string {
	var why []string
	for _, q := range alts {
		why = append(why, r.explainOne(q))
	}
	return strings.Join(why, "; ")
}

func (r *resolver) explainOne(q dependency.Possibility) string {
	ix := r.ix
	if p := ix.packages[q.Name]; p != nil {
		switch {
		case !ix.archQualifierOK(p, q.Arch):
			return fmt.Sprintf("%s is Multi-Arch: %q, which %s:%s needs to be \"allowed\"", p.Name, p.MultiArch, q.Name, q.Arch)
		case q.Version != nil && !q.Version.SatisfiedBy(p.Version):
			return fmt.Sprintf("%s is %s", p.Name, p.Version)
		case r.conflict(p) != nil:
			return fmt.Sprintf("%s conflicts with %s", p.Name, r.conflict(p).Name)
		}
	}
	provs := ix.providers[q.Name]
	if len(provs) > 0 {
		names := make([]string, len(provs))
		for i, p := range provs {
			names[i] = p.Name
		}
		return fmt.Sprintf("%s is provided by %s, none in a fitting version or without a conflict", q.Name, strings.Join(names, ", "))
	}
	if err := ix.malformed[q.Name]; err != nil {
		return fmt.Sprintf("the index's stanza for %s cannot be parsed: %v", q.Name, err)
	}
	if ix.packages[q.Name] == nil {
		return fmt.Sprintf("no package %s in the index", q.Name)
	}
	return fmt.Sprintf("%s does not fit", q.Name)
}

func (r *resolver) unmetError() error {
	e := &UnsatisfiableError{}
	keys := make([]string, 0, len(r.unmet))
	for k := range r.unmet {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		e.Unmet = append(e.Unmet, r.unmet[k])
	}
	return e
}
