// Package version says which heyvm this is: the version, commit and build
// date that the release build (GoReleaser, `make`) sets with -ldflags -X,
// and, where a build did not set them (`go build`, `go install pkg@v`),
// what the Go toolchain recorded in the binary's build information.
package version

import (
	"fmt"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
)

// Set by the linker, e.g.
//
//	-X github.com/heyvm/heyvm/internal/version.version=v1.2.3
//	-X github.com/heyvm/heyvm/internal/version.commit=<40 hex digits>
//	-X github.com/heyvm/heyvm/internal/version.date=2025-01-02T03:04:05Z
var (
	version string
	commit  string
	date    string
)

// Info is what `heyvm version` prints.
type Info struct {
	Version string `json:"version"`
	// Commit is the git commit heyvm was built from; empty when nothing
	// recorded it (a build outside a git checkout without ldflags).
	Commit string `json:"commit"`
	// Modified: the checkout had uncommitted changes (from the build
	// information's vcs.modified).
	Modified bool `json:"modified,omitempty"`
	// Date is when heyvm was built (ldflags) or, failing that, the time of
	// its commit (vcs.time); RFC 3339.
	Date      string `json:"date"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	// Source says where Version and Commit came from: "ldflags" or
	// "buildinfo".
	Source string `json:"source"`
}

// Get returns this binary's version information.
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	return get(version, commit, date, bi)
}

// pseudoRev is the revision at the end of a pseudo-version
// (v0.0.0-20250102030405-0123456789ab, optionally +incompatible/+dirty).
var pseudoRev = regexp.MustCompile(`\d{14}-([0-9a-f]{12})(\+[0-9A-Za-z.-]+)?$`)

func get(ldVersion, ldCommit, ldDate string, bi *debug.BuildInfo) Info {
	in := Info{Version: ldVersion, Commit: ldCommit, Date: ldDate, GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH, Source: "ldflags"}
	if ldVersion == "" && ldCommit == "" {
		in.Source = "buildinfo"
	}
	if bi == nil {
		if in.Version == "" {
			in.Version = "devel"
		}
		return in
	}
	if bi.GoVersion != "" {
		in.GoVersion = bi.GoVersion
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	mainVersion := bi.Main.Version
	if mainVersion == "(devel)" {
		mainVersion = ""
	}
	if in.Version == "" {
		in.Version = mainVersion
	}
	if in.Commit == "" {
		in.Commit = settings["vcs.revision"]
		in.Modified = settings["vcs.modified"] == "true"
	}
	if in.Commit == "" {
		// `go install …@latest` of an untagged commit: the proxy's
		// pseudo-version names the commit (its first 12 hex digits).
		if m := pseudoRev.FindStringSubmatch(mainVersion); m != nil {
			in.Commit = m[1]
		}
	}
	if in.Date == "" {
		in.Date = settings["vcs.time"]
	}
	if in.Version == "" {
		in.Version = "devel"
	}
	return in
}

// Text is the human form: the version on the first line, then the rest.
func (in Info) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "heyvm %s\n", in.Version)
	c := in.Commit
	if c == "" {
		c = "unknown"
	}
	if in.Modified {
		c += " (with uncommitted changes)"
	}
	fmt.Fprintf(&b, "commit:  %s\n", c)
	d := in.Date
	if d == "" {
		d = "unknown"
	}
	fmt.Fprintf(&b, "built:   %s\n", d)
	fmt.Fprintf(&b, "go:      %s\n", in.GoVersion)
	fmt.Fprintf(&b, "os/arch: %s/%s\n", in.OS, in.Arch)
	return b.String()
}

// Key identifies a build for a remote heyvm to check its caller against:
// the version and the commit. Two builds with the same key speak the same
// command line.
func (in Info) Key() string {
	k := in.Version
	if in.Commit != "" {
		k += "@" + in.Commit
	}
	return k
}
