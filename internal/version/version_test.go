package version

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestLdflagsWin(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20250102030405-0123456789ab"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "ffff"}, {Key: "vcs.time", Value: "2020-01-01T00:00:00Z"}}}
	in := get("v1.2.3", "abcdef0123456789abcdef0123456789abcdef01", "2025-01-02T03:04:05Z", bi)
	if in.Version != "v1.2.3" || in.Commit != "abcdef0123456789abcdef0123456789abcdef01" || in.Date != "2025-01-02T03:04:05Z" || in.Source != "ldflags" {
		t.Fatalf("%+v", in)
	}
	if in.GoVersion != "go1.26.8" || in.OS != runtime.GOOS || in.Arch != runtime.GOARCH {
		t.Fatalf("%+v", in)
	}
}

func TestBuildInfoFallback(t *testing.T) {
	for _, tc := range []struct {
		name                          string
		bi                            *debug.BuildInfo
		wantVersion, wantCommit, date string
		modified                      bool
	}{
		{"go build in a checkout", &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20250102030405-0123456789ab+dirty"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"}, {Key: "vcs.time", Value: "2025-01-02T03:04:05Z"}, {Key: "vcs.modified", Value: "true"}}},
			"v0.0.0-20250102030405-0123456789ab+dirty", "0123456789abcdef0123456789abcdef01234567", "2025-01-02T03:04:05Z", true},
		{"go install of a tag", &debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}}, "v1.4.0", "", "", false},
		{"go install of a commit", &debug.BuildInfo{Main: debug.Module{Version: "v1.4.1-0.20250102030405-0123456789ab"}},
			"v1.4.1-0.20250102030405-0123456789ab", "0123456789ab", "", false},
		{"go build without vcs", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "devel", "", "", false},
		{"no build info", nil, "devel", "", "", false},
	} {
		in := get("", "", "", tc.bi)
		if in.Version != tc.wantVersion || in.Commit != tc.wantCommit || in.Date != tc.date || in.Modified != tc.modified || in.Source != "buildinfo" {
			t.Errorf("%s: %+v", tc.name, in)
		}
	}
}

func TestText(t *testing.T) {
	txt := Info{Version: "v1.2.3", Commit: "abc", Modified: true, GoVersion: "go1.26.8", OS: "linux", Arch: "amd64"}.Text()
	for _, want := range []string{"heyvm v1.2.3\n", "commit:  abc (with uncommitted changes)\n", "built:   unknown\n", "go:      go1.26.8\n", "os/arch: linux/amd64\n"} {
		if !strings.Contains(txt, want) {
			t.Errorf("%q lacks %q", txt, want)
		}
	}
}
