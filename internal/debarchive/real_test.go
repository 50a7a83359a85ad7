package debarchive

import (
	"context"
	"errors"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// realMirror is Debian's own mirror network; the real-archive test skips
// when it cannot be reached.
const realMirror = "http://deb.debian.org/debian"

// TestRealBookworm verifies the real bookworm InRelease against the
// embedded keys, loads the amd64 Packages index, resolves heyvm's default
// image package set, and fetches one small package through the cache.
// With DEBARCHIVE_DUMP=<file> it writes the resolved names there, e.g. to
// compare them with mmdebstrap's choice.
func TestRealBookworm(t *testing.T) {
	if testing.Short() {
		t.Skip("fetches about 9 MB from the real Debian archive; not with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := New(Config{Mirror: realMirror, Suite: "bookworm", Arch: "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	rel, err := c.Release(ctx)
	var unreachable *UnreachableError
	var httpErr *HTTPError
	if errors.As(err, &unreachable) {
		t.Skipf("the real Debian archive is not reachable here: %v", err)
	}
	if errors.As(err, &httpErr) && httpErr.StatusCode >= 500 {
		t.Skipf("the real Debian archive is in trouble: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("InRelease: %s %s (%s), %s, signed by %s", rel.Codename, rel.Version, rel.Suite, rel.Date, rel.SignedBy)
	if rel.Codename != "bookworm" {
		t.Errorf("Codename = %q", rel.Codename)
	}

	ix, err := c.Index(ctx, rel)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Packages: %d packages, fetched and parsed in %s", ix.Len(), time.Since(start).Round(time.Millisecond))

	start = time.Now()
	res, err := ix.ResolveMinbase("openssh-server", "busybox-static", "e2fsprogs", "git", "linux-image-cloud-amd64")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("resolved %d packages (%d essential) in %s", len(res.Packages), len(res.Essential), time.Since(start).Round(time.Millisecond))
	names := res.Names()
	if dump := os.Getenv("DEBARCHIVE_DUMP"); dump != "" {
		os.WriteFile(dump, []byte(strings.Join(names, "\n")+"\n"), 0o644)
	}
	for _, want := range []string{"dpkg", "apt", "libc6", "base-files", "openssh-server", "busybox-static", "e2fsprogs", "git", "linux-image-cloud-amd64", "mawk", "usrmerge"} {
		if !slices.Contains(names, want) {
			t.Errorf("the resolution lacks %s", want)
		}
	}
	kernel := regexp.MustCompile(`^linux-image-6\.1\..*-cloud-amd64$`)
	if !slices.ContainsFunc(names, kernel.MatchString) {
		t.Errorf("the resolution lacks a linux-image-6.1.*-cloud-amd64")
	}
	for _, recommendsOnly := range []string{"xauth", "ncurses-term", "patch", "less", "openssh-sftp-server-doc"} {
		if slices.Contains(names, recommendsOnly) {
			t.Errorf("%s (only recommended) is in the resolution", recommendsOnly)
		}
	}
	for _, p := range res.Essential {
		if !p.Essential {
			t.Errorf("%s is listed as essential", p.Name)
		}
	}
	if !slices.ContainsFunc(res.Essential, func(p *Package) bool { return p.Name == "dpkg" }) {
		t.Errorf("dpkg is not among the essential packages")
	}
	checkOrder(t, ix, res)

	// With usr-is-merged asked for (as mmdebstrap's merged-usr hook does),
	// it meets init-system-helpers' "usrmerge | usr-is-merged", so neither
	// usrmerge nor the perl it needs comes in.
	merged, err := ix.ResolveMinbase("usr-is-merged", "openssh-server")
	if err != nil {
		t.Fatal(err)
	}
	if got := merged.Names(); slices.Contains(got, "usrmerge") || slices.Contains(got, "perl") || !slices.Contains(got, "usr-is-merged") {
		t.Errorf("with usr-is-merged: %v", got)
	}

	// One small package end to end through the cache.
	hello := ix.Package("hello")
	if hello == nil {
		t.Fatal("no hello package")
	}
	dir := t.TempDir()
	got, err := c.Download(ctx, []*Package{hello}, DownloadOptions{CacheDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if got.Fetched != 1 || got.Reused != 0 {
		t.Errorf("Download = %+v, want one fetched", got)
	}
	ctrl, err := DebControl(CachePath(dir, hello))
	if err != nil {
		t.Fatal(err)
	}
	if ctrl.Package != "hello" || ctrl.Version.String() != hello.Version.String() {
		t.Errorf("the .deb's control says %s %s", ctrl.Package, ctrl.Version)
	}
}
