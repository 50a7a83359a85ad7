package debarchive

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// stanza writes a Packages stanza for name and version, with fields
// ("Depends: libc6") and placeholder file fields.
func stanza(name, version string, fields ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Package: %s\nVersion: %s\n", name, version)
	hasArch := slices.ContainsFunc(fields, func(f string) bool { return strings.HasPrefix(f, "Architecture:") })
	if !hasArch {
		b.WriteString("Architecture: amd64\n")
	}
	for _, f := range fields {
		b.WriteString(f + "\n")
	}
	fmt.Fprintf(&b, "Filename: pool/main/%s_%s.deb\nSize: 1000\nSHA256: %s\n", name, version, sha256hex([]byte(name+version)))
	return b.String()
}

// testIndex parses stanzas as an amd64 Packages index.
func testIndex(t *testing.T, stanzas ...string) *Index {
	t.Helper()
	ix, err := ParseIndex(strings.NewReader(strings.Join(stanzas, "\n")), "amd64")
	if err != nil {
		t.Fatal(err)
	}
	return ix
}

// resolveNames resolves requests and returns the names chosen.
func resolveNames(t *testing.T, ix *Index, requests ...string) []string {
	t.Helper()
	res, err := ix.Resolve(requests...)
	if err != nil {
		t.Fatal(err)
	}
	checkOrder(t, ix, res)
	return res.Names()
}

// checkOrder checks that res.Order holds every package once and puts each
// dependency first, unless the two are on a dependency cycle.
func checkOrder(t testing.TB, ix *Index, res *Resolution) {
	t.Helper()
	if len(res.Order) != len(res.Packages) {
		t.Fatalf("Order has %d packages, Packages %d", len(res.Order), len(res.Packages))
	}
	selected := map[string]*Package{}
	for _, p := range res.Packages {
		selected[p.Name] = p
	}
	g := &depGraph{ix: ix, selected: selected}
	reaches := func(from, to *Package) bool {
		seen := map[*Package]bool{from: true}
		queue := []*Package{from}
		for len(queue) > 0 {
			p := queue[0]
			queue = queue[1:]
			if p == to {
				return true
			}
			for _, q := range g.edges(p, true) {
				if !seen[q] {
					seen[q] = true
					queue = append(queue, q)
				}
			}
		}
		return false
	}
	pos := map[*Package]int{}
	for i, p := range res.Order {
		if _, dup := pos[p]; dup {
			t.Fatalf("%s is twice in Order", p.Name)
		}
		pos[p] = i
	}
	for _, p := range res.Order {
		for _, q := range g.edges(p, true) {
			if pos[q] > pos[p] && !reaches(q, p) {
				t.Errorf("Order puts %s after %s, which depends on it", q.Name, p.Name)
			}
		}
	}
}

func TestResolveMinbase(t *testing.T) {
	ix := testIndex(t,
		stanza("libc6", "2.36-9", "Priority: optional", "Multi-Arch: same"),
		stanza("base-files", "12.4", "Essential: yes", "Priority: required"),
		stanza("dpkg", "1.21.22", "Essential: yes", "Priority: required", "Pre-Depends: libc6 (>= 2.34), tar (>= 1.28)"),
		stanza("tar", "1.34", "Essential: yes", "Priority: required", "Pre-Depends: libc6 (>= 2.34)"),
		stanza("mawk", "1.3.4", "Priority: required", "Provides: awk", "Multi-Arch: foreign"),
		stanza("gawk", "5.2.1", "Priority: optional", "Provides: awk"),
		stanza("apt", "2.6.1", "Priority: required", "Depends: libapt-pkg6.0 (>= 2.6.1), gpgv | gpgv2, awk", "Recommends: ca-certificates", "Suggests: aptitude"),
		stanza("libapt-pkg6.0", "2.6.1", "Depends: libc6"),
		stanza("gpgv", "2.2.40", "Priority: important"),
		stanza("gpgv2", "2.2.40", "Priority: optional"),
		stanza("ca-certificates", "20230311", "Architecture: all", "Priority: optional"),
		stanza("aptitude", "0.8.13", "Priority: optional"),
		stanza("hello", "2.10-3", "Priority: optional", "Depends: libc6 (>= 2.34)"),
		stanza("foreign", "1.0", "Architecture: i386", "Essential: yes"),
	)
	if got, want := ix.MinbaseSeeds(), []string{"apt", "base-files", "dpkg", "mawk", "tar"}; !slices.Equal(got, want) {
		t.Errorf("MinbaseSeeds = %v, want %v", got, want)
	}
	res, err := ix.ResolveMinbase("hello")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"apt", "base-files", "dpkg", "gpgv", "hello", "libapt-pkg6.0", "libc6", "mawk", "tar"}
	if got := res.Names(); !slices.Equal(got, want) {
		t.Errorf("ResolveMinbase = %v, want %v (no Recommends, no Suggests, mawk for awk, gpgv for gpgv | gpgv2)", got, want)
	}
	var essential []string
	for _, p := range res.Essential {
		essential = append(essential, p.Name)
	}
	if want := []string{"base-files", "dpkg", "tar"}; !slices.Equal(essential, want) {
		t.Errorf("Essential = %v, want %v", essential, want)
	}
	checkOrder(t, ix, res)
	// libc6 comes before the packages that pre-depend on it.
	order := names(res.Order)
	if i, j := slices.Index(order, "libc6"), slices.Index(order, "tar"); i > j {
		t.Errorf("Order = %v: libc6 after tar", order)
	}

	// The same input gives the same result.
	again, err := ix.ResolveMinbase("hello")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names(again.Order), order) || !slices.Equal(again.Names(), res.Names()) {
		t.Errorf("a second resolution differs: %v vs %v", names(again.Order), order)
	}
}

func names(ps []*Package) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Name
	}
	return out
}

func TestResolveAlternatives(t *testing.T) {
	ix := testIndex(t,
		stanza("needs-selected", "1", "Depends: first | second"),
		stanza("first", "1"),
		stanza("second", "1"),
		stanza("needs-first", "1", "Depends: first | second"),
		stanza("needs-missing-first", "1", "Depends: not-in-archive | second"),
		stanza("needs-new", "1", "Depends: first (>= 2) | second"),
		stanza("needs-virtual-first", "1", "Depends: mta | second"),
		stanza("needs-virtual", "1", "Depends: mta"),
		stanza("aaa-mta", "1", "Priority: optional", "Provides: mta"),
		stanza("zzz-mta", "1", "Priority: important", "Provides: mta"),
		stanza("needs-conflicting", "1", "Depends: grumpy | second"),
		stanza("grumpy", "1", "Conflicts: first"),
		stanza("needs-late-alt", "1", "Depends: first | second, pulls-second"),
		stanza("pulls-second", "1", "Depends: second"),
	)
	for _, tc := range []struct {
		requests []string
		want     []string
		why      string
	}{
		{[]string{"second", "needs-selected"}, []string{"needs-selected", "second"}, "an alternative already selected is used"},
		{[]string{"needs-first"}, []string{"first", "needs-first"}, "the first real alternative"},
		{[]string{"needs-missing-first"}, []string{"needs-missing-first", "second"}, "an alternative not in the archive is passed over"},
		{[]string{"needs-new"}, []string{"needs-new", "second"}, "an alternative too old is passed over"},
		{[]string{"needs-virtual-first"}, []string{"needs-virtual-first", "second"}, "a real package before a virtual one"},
		{[]string{"needs-virtual"}, []string{"needs-virtual", "zzz-mta"}, "providers by priority"},
		{[]string{"aaa-mta", "needs-virtual"}, []string{"aaa-mta", "needs-virtual"}, "a selected provider"},
		{[]string{"first", "needs-conflicting"}, []string{"first", "needs-conflicting", "second"}, "a conflicting alternative is passed over"},
		{[]string{"needs-late-alt"}, []string{"needs-late-alt", "pulls-second", "second"}, "alternatives wait for plain dependencies"},
		{[]string{"first | second"}, []string{"first"}, "a request with alternatives"},
	} {
		if got := resolveNames(t, ix, tc.requests...); !slices.Equal(got, tc.want) {
			t.Errorf("Resolve(%q) = %v, want %v: %s", tc.requests, got, tc.want, tc.why)
		}
	}
}

func TestResolveVersions(t *testing.T) {
	ix := testIndex(t,
		stanza("libfoo", "1.0-1"),
		stanza("libfoo", "2.0-1"),
		stanza("libfoo", "1:0.5-1", "Architecture: i386"), // another architecture: ignored
		stanza("libbar", "1.5"),
		stanza("needs-foo2", "1", "Depends: libfoo (>= 2.0)"),
		stanza("needs-foo-exact", "1", "Depends: libfoo (= 2.0-1)"),
		stanza("needs-api", "1", "Depends: foo-api (>= 3)"),
		stanza("old-api", "1", "Provides: foo-api (= 2)"),
		stanza("new-api", "1", "Provides: foo-api (= 3.1)"),
		stanza("loose-api", "1", "Provides: foo-api"),
		stanza("needs-perl", "1", "Depends: perl:any (>= 5.36), dash:native"),
		stanza("perl", "5.36.0-7", "Multi-Arch: allowed"),
		stanza("dash", "0.5.12"),
		stanza("needs-archs", "1", "Depends: libbar [amd64], nothere [i386]"),
	)
	if got := ix.Package("libfoo").Version.String(); got != "2.0-1" {
		t.Errorf("the libfoo candidate is %s, want the highest amd64 version 2.0-1", got)
	}
	for _, tc := range []struct {
		request string
		want    []string
	}{
		{"needs-foo2", []string{"libfoo", "needs-foo2"}},
		{"needs-foo-exact", []string{"libfoo", "needs-foo-exact"}},
		{"needs-api", []string{"needs-api", "new-api"}},
		{"needs-perl", []string{"dash", "needs-perl", "perl"}},
		{"needs-archs", []string{"libbar", "needs-archs"}},
		{"libfoo (>= 1.5)", []string{"libfoo"}},
	} {
		if got := resolveNames(t, ix, tc.request); !slices.Equal(got, tc.want) {
			t.Errorf("Resolve(%q) = %v, want %v", tc.request, got, tc.want)
		}
	}
}

func TestResolveUnsatisfiable(t *testing.T) {
	ix := testIndex(t,
		stanza("app", "1", "Depends: libfoo (>= 3), libgone, python3:any", "Pre-Depends: libbar (<< 1.0)"),
		stanza("libfoo", "2.0-1"),
		stanza("libbar", "1.5"),
		stanza("python3", "3.11.2-1"),
		stanza("ok", "1"),
	)
	_, err := ix.Resolve("app", "ok", "nosuchpackage")
	var ue *UnsatisfiableError
	if !errors.As(err, &ue) {
		t.Fatalf("Resolve = %v, want an *UnsatisfiableError", err)
	}
	msg := err.Error()
	for _, want := range []string{
		"cannot satisfy 5 dependencies",
		"app depends libfoo (>= 3): libfoo is 2.0-1",
		"app depends libgone: no package libgone in the index",
		"app depends python3:any: python3 is Multi-Arch",
		"app pre-depends libbar (<< 1.0): libbar is 1.5",
		"requested nosuchpackage: no package nosuchpackage in the index",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error lacks %q:\n%s", want, msg)
		}
	}
	if len(ue.Unmet) != 5 || ue.Unmet[0].Package != "app" {
		t.Errorf("Unmet = %+v", ue.Unmet)
	}
}

func TestResolveMalformedStanza(t *testing.T) {
	ix := testIndex(t,
		stanza("app", "1", "Depends: broken"),
		"Package: broken\nVersion: 1\nArchitecture: amd64\nFilename: x.deb\nSize: 12\nSHA256: nothex\n",
	)
	_, err := ix.Resolve("app")
	if err == nil || !strings.Contains(err.Error(), "the index's stanza for broken cannot be parsed") {
		t.Errorf("Resolve = %v, want it to name the malformed stanza", err)
	}
}

func TestInstallOrderCycles(t *testing.T) {
	ix := testIndex(t,
		stanza("top", "1", "Depends: a"),
		stanza("a", "1", "Depends: b"),
		stanza("b", "1", "Depends: c, a"),
		stanza("c", "1", "Pre-Depends: base", "Depends: a"),
		stanza("base", "1"),
		stanza("z", "1", "Pre-Depends: y"),
		stanza("y", "1", "Depends: z"),
	)
	res, err := ix.Resolve("top", "z")
	if err != nil {
		t.Fatal(err)
	}
	checkOrder(t, ix, res)
	// base first (no dependencies); a, b, c are a cycle, ordered by name;
	// y before z, which pre-depends on it although y depends on z.
	want := []string{"base", "a", "b", "c", "top", "y", "z"}
	if got := names(res.Order); !slices.Equal(got, want) {
		t.Errorf("Order = %v, want %v", got, want)
	}
}

// sha256hex is the SHA256 of b in hex.
func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
