package debarchive

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
)

// smallDistro is a tiny distribution: an essential set, apt, a kernel and
// busybox, with .debs in every data.tar compression.
func smallDistro() []fakePkg {
	return []fakePkg{
		{Name: "libc6", Version: "2.36-9", Fields: map[string]string{"Priority": "optional", "Multi-Arch": "same"},
			Files: map[string]string{"lib/x86_64-linux-gnu/libc.so.6": "ELF libc"}},
		{Name: "base-files", Version: "12.4", Fields: map[string]string{"Essential": "yes", "Priority": "required"},
			Files: map[string]string{"etc/debian_version": "12.99\n"}, DataExt: ".gz"},
		{Name: "dpkg", Version: "1.21.22", Fields: map[string]string{"Essential": "yes", "Priority": "required", "Pre-Depends": "libc6 (>= 2.34), tar (>= 1.28)"},
			Files: map[string]string{"usr/bin/dpkg": "dpkg binary"}, DataExt: ".zst"},
		{Name: "tar", Version: "1.34+dfsg-1.2", Fields: map[string]string{"Essential": "yes", "Priority": "required", "Pre-Depends": "libc6 (>= 2.34)"},
			Files: map[string]string{"bin/tar": "tar binary"}, DataExt: "none"},
		{Name: "mawk", Version: "1.3.4", Fields: map[string]string{"Priority": "required", "Provides": "awk"},
			Files: map[string]string{"usr/bin/mawk": "mawk"}},
		{Name: "apt", Version: "2.6.1", Fields: map[string]string{"Priority": "required", "Depends": "libc6, gpgv | gpgv2, awk", "Recommends": "ca-certificates"},
			Files: map[string]string{"usr/bin/apt": "apt"}},
		{Name: "gpgv", Version: "2.2.40-1.1", Fields: map[string]string{"Priority": "important"}, Files: map[string]string{"usr/bin/gpgv": "gpgv"}},
		{Name: "ca-certificates", Version: "20230311", Arch: "all", Fields: map[string]string{"Priority": "optional"},
			Files: map[string]string{"etc/ssl/certs/x": "cert"}},
		{Name: "busybox-static", Version: "1:1.35.0-4+b3", Fields: map[string]string{"Priority": "optional"},
			Files: map[string]string{"bin/busybox": "busybox binary", "usr/share/doc/busybox-static/README": "doc"}, DataExt: ".zst"},
		{Name: "linux-image-6.1.0-9-cloud-amd64", Version: "6.1.27-1", Fields: map[string]string{"Priority": "optional", "Depends": "kmod"},
			Files: map[string]string{
				"boot/vmlinuz-6.1.0-9-cloud-amd64":                       "bzImage",
				"boot/config-6.1.0-9-cloud-amd64":                        "CONFIG_EXT4_FS=y\n",
				"lib/modules/6.1.0-9-cloud-amd64/kernel/fs/ext4/ext4.ko": "module",
				"lib/modules/6.1.0-9-cloud-amd64/modules.order":          "kernel/fs/ext4/ext4.ko\n",
				"lib/modules/6.1.0-9-cloud-amd64/build":                  "symlink:/usr/src/linux-headers-6.1.0-9-cloud-amd64",
			}},
		{Name: "linux-image-cloud-amd64", Version: "6.1.27-1", Fields: map[string]string{"Priority": "optional", "Depends": "linux-image-6.1.0-9-cloud-amd64 (= 6.1.27-1)"}},
		{Name: "kmod", Version: "30+20221128-1", Fields: map[string]string{"Priority": "important", "Depends": "libc6"}},
	}
}

func TestHappyPath(t *testing.T) {
	a := newTestArchive(t, smallDistro(), archiveOptions{})
	c := a.Client(t)
	ctx := context.Background()

	rel, err := c.Release(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rel.Codename != "bookworm" || rel.Suite != "stable" || rel.Version != "12.99" || !rel.ValidUntil.IsZero() {
		t.Errorf("Release = %+v", rel)
	}
	if !strings.Contains(rel.SignedBy, "heyvm test archive") {
		t.Errorf("SignedBy = %q", rel.SignedBy)
	}
	if _, ok := rel.Files["main/binary-amd64/Packages.xz"]; !ok {
		t.Errorf("Files = %v", rel.Files)
	}

	ix, err := c.Index(ctx, rel)
	if err != nil {
		t.Fatal(err)
	}
	if a.Hits("dists/bookworm/main/binary-amd64/Packages.xz") != 1 || a.Hits("dists/bookworm/main/binary-amd64/Packages.gz") != 0 {
		t.Errorf("Index did not fetch just Packages.xz")
	}
	if ix.Len() != len(smallDistro()) {
		t.Errorf("the index has %d packages, want %d", ix.Len(), len(smallDistro()))
	}
	if got := ix.Package("busybox-static").Version.Epoch; got != 1 {
		t.Errorf("busybox-static's epoch = %d", got)
	}

	res, err := ix.ResolveMinbase("busybox-static", "linux-image-cloud-amd64")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"apt", "base-files", "busybox-static", "dpkg", "gpgv", "kmod", "libc6", "linux-image-6.1.0-9-cloud-amd64", "linux-image-cloud-amd64", "mawk", "tar"}
	if got := res.Names(); !slices.Equal(got, want) {
		t.Errorf("resolved %v, want %v", got, want)
	}

	cache := t.TempDir()
	var progress []Progress
	got, err := c.Download(ctx, res.Packages, DownloadOptions{CacheDir: cache, Concurrency: 3, Progress: func(p Progress) { progress = append(progress, p) }})
	if err != nil {
		t.Fatal(err)
	}
	if got.Fetched != len(want) || got.Reused != 0 {
		t.Errorf("Download = %+v, want %d fetched", got, len(want))
	}
	var total int64
	for _, p := range res.Packages {
		total += p.Size
		fi, err := os.Stat(CachePath(cache, p))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() != p.Size || fi.Mode().Perm() != 0o644 {
			t.Errorf("%s in the cache: %d bytes, mode %v", p.Name, fi.Size(), fi.Mode())
		}
	}
	last := progress[len(progress)-1]
	if last.Done != total || last.Total != total || got.BytesFetched != total || last.FilesDone != len(want) || last.FilesTotal != len(want) {
		t.Errorf("last progress %+v, result %+v, want %d bytes", last, got, total)
	}
	for i := 1; i < len(progress); i++ {
		if progress[i].Done < progress[i-1].Done {
			t.Fatalf("progress went back: %+v after %+v", progress[i], progress[i-1])
		}
	}
	assertCacheClean(t, cache)

	// A second download reuses every file and fetches nothing.
	before := a.Hits("pool/")
	got, err = c.Download(ctx, res.Packages, DownloadOptions{CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	if got.Reused != len(want) || got.Fetched != 0 || a.Hits("pool/") != before {
		t.Errorf("second Download = %+v with %d new requests, want all reused", got, a.Hits("pool/")-before)
	}

	// A damaged cache entry is fetched again.
	hello := CachePath(cache, ix.Package("mawk"))
	if err := os.WriteFile(hello, bytes.Repeat([]byte{'x'}, int(ix.Package("mawk").Size)), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err = c.Download(ctx, res.Packages, DownloadOptions{CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	if got.Reused != len(want)-1 || got.Fetched != 1 {
		t.Errorf("Download after damage = %+v, want mawk fetched again", got)
	}

	// The cached busybox-static .deb yields its binary.
	out := t.TempDir()
	extracted, err := ExtractDeb(CachePath(cache, ix.Package("busybox-static")), out, func(name string) bool { return name == "bin/busybox" })
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "bin/busybox")); string(b) != "busybox binary" || !slices.Equal(extracted, []string{"bin/busybox"}) {
		t.Errorf("extracted %v, bin/busybox = %q", extracted, b)
	}
}

// assertCacheClean fails if dir holds anything but <sha256>.deb files.
func assertCacheClean(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if len(e.Name()) != 64+len(".deb") || !strings.HasSuffix(e.Name(), ".deb") {
			t.Errorf("the cache holds %s", e.Name())
		}
	}
}

// wantVerifyError checks that err is a *VerifyError whose message has every
// one of wants.
func wantVerifyError(t *testing.T, err error, wants ...string) *VerifyError {
	t.Helper()
	var ve *VerifyError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v (%T), want a *VerifyError", err, err)
	}
	var ue *UnreachableError
	if errors.As(err, &ue) {
		t.Errorf("a verification error is also an UnreachableError: %v", err)
	}
	for _, want := range wants {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error lacks %q: %v", want, err)
		}
	}
	return ve
}

func TestTamperedInRelease(t *testing.T) {
	a := newTestArchive(t, smallDistro(), archiveOptions{})
	inRelease := a.File("dists/bookworm/InRelease")
	a.Tamper("dists/bookworm/InRelease", bytes.Index(inRelease, []byte("Codename: bookworm"))+3)
	_, err := a.Client(t).Release(context.Background())
	wantVerifyError(t, err, "the mirror "+a.Mirror()+" served dists/bookworm/InRelease whose signature does not verify against the test key", "refusing it")
}

func TestInReleaseNotByDebian(t *testing.T) {
	a := newTestArchive(t, smallDistro(), archiveOptions{})
	c, err := New(Config{Mirror: a.Mirror(), Suite: "bookworm", Arch: "amd64", HTTPClient: a.Server.Client()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Release(context.Background())
	wantVerifyError(t, err, "dists/bookworm/InRelease whose signature does not verify against Debian's archive keys")
}

func TestInReleaseUnsigned(t *testing.T) {
	a := newTestArchive(t, smallDistro(), archiveOptions{})
	a.SetFile("dists/bookworm/InRelease", []byte("Origin: Debian\nCodename: bookworm\n"))
	_, err := a.Client(t).Release(context.Background())
	wantVerifyError(t, err, "dists/bookworm/InRelease which is not an OpenPGP clearsigned document")
}

func TestInReleaseDates(t *testing.T) {
	date := time.Now().Add(-time.Hour).Truncate(time.Second)
	a := newTestArchive(t, smallDistro(), archiveOptions{Date: date, ValidUntil: 7 * 24 * time.Hour})
	for _, tc := range []struct {
		now  time.Time
		want string // "" for success
	}{
		{date.Add(24 * time.Hour), ""},
		{date.Add(7*24*time.Hour + 30*time.Minute), ""}, // within the clock-skew margin
		{date.Add(8 * 24 * time.Hour), "whose Valid-Until (" + date.Add(7*24*time.Hour).UTC().Format(time.RFC1123) + ") has passed"},
	} {
		cfg := a.Config()
		cfg.Now = func() time.Time { return tc.now }
		c, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		rel, err := c.Release(context.Background())
		if tc.want == "" {
			if err != nil {
				t.Errorf("at %s: %v", tc.now, err)
			} else if !rel.ValidUntil.Equal(date.Add(7 * 24 * time.Hour)) {
				t.Errorf("ValidUntil = %s", rel.ValidUntil)
			}
			continue
		}
		wantVerifyError(t, err, tc.want, "a stale mirror")
	}

	future := newTestArchive(t, smallDistro(), archiveOptions{Date: time.Now().Add(3 * time.Hour)})
	_, err := future.Client(t).Release(context.Background())
	wantVerifyError(t, err, "lies in the future")
}

func TestInReleaseWrongSuite(t *testing.T) {
	a := newTestArchive(t, smallDistro(), archiveOptions{Suite: "trixie"})
	a.SetFile("dists/bookworm/InRelease", a.File("dists/trixie/InRelease"))
	_, err := a.Client(t).Release(context.Background())
	wantVerifyError(t, err, `which is signed for suite "stable" (codename "trixie"), not "bookworm"`)
}

func TestTamperedPackages(t *testing.T) {
	a := newTestArchive(t, smallDistro(), archiveOptions{})
	c := a.Client(t)
	rel, err := c.Release(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	a.Tamper("dists/bookworm/main/binary-amd64/Packages.xz", 100)
	_, err = c.Index(context.Background(), rel)
	wantVerifyError(t, err, "the mirror "+a.Mirror()+" served dists/bookworm/main/binary-amd64/Packages.xz whose sha256 does not match the signed Release (a broken or tampered mirror): refusing it")

	// One byte more is a size mismatch.
	a.SetFile("dists/bookworm/main/binary-amd64/Packages.xz", append(bytes.Clone(a.File("dists/bookworm/main/binary-amd64/Packages.gz")), 0))
	_, err = c.Index(context.Background(), rel)
	wantVerifyError(t, err, "Packages.xz whose size", "does not match the signed Release")
}

func TestPackagesFallback(t *testing.T) {
	// Only Packages.gz exists.
	a := newTestArchive(t, smallDistro(), archiveOptions{IndexVariants: []string{".gz"}})
	c := a.Client(t)
	rel, err := c.Release(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Index(context.Background(), rel); err != nil {
		t.Fatal(err)
	}
	if a.Hits("dists/bookworm/main/binary-amd64/Packages.xz") != 0 {
		t.Errorf("fetched a Packages.xz the Release does not list")
	}

	// Packages.xz is listed but missing: Packages.gz, then Packages.
	a = newTestArchive(t, smallDistro(), archiveOptions{})
	a.SetFile("dists/bookworm/main/binary-amd64/Packages.xz", nil)
	a.SetFile("dists/bookworm/main/binary-amd64/Packages.gz", nil)
	c = a.Client(t)
	rel, err = c.Release(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ix, err := c.Index(context.Background(), rel)
	if err != nil || ix.Len() != len(smallDistro()) {
		t.Fatalf("Index = %v, %v", ix, err)
	}
	if a.Hits("dists/bookworm/main/binary-amd64/Packages") != 3 {
		t.Errorf("not one request for each of .xz, .gz and uncompressed")
	}

	// None at all: the 404 is the error.
	a.SetFile("dists/bookworm/main/binary-amd64/Packages", nil)
	_, err = c.Index(context.Background(), rel)
	var he *HTTPError
	if !errors.As(err, &he) || he.StatusCode != 404 || !strings.Contains(err.Error(), "answered 404 Not Found for dists/bookworm/main/binary-amd64/Packages") {
		t.Errorf("Index = %v, want a 404 HTTPError", err)
	}

	// A Release without this architecture's index.
	rel.Files = map[string]Checksum{"main/binary-arm64/Packages.xz": {}}
	_, err = c.Index(context.Background(), rel)
	wantVerifyError(t, err, "dists/bookworm/InRelease which lists no main/binary-amd64/Packages index")
}

func TestAcquireByHash(t *testing.T) {
	a := newTestArchive(t, smallDistro(), archiveOptions{AcquireByHash: true})
	// The canonical name holds a newer index than the Release vouches for,
	// as on a mirror caught mid-update: by-hash still works.
	a.Tamper("dists/bookworm/main/binary-amd64/Packages.xz", 100)
	c := a.Client(t)
	rel, err := c.Release(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !rel.AcquireByHash {
		t.Error("AcquireByHash is false")
	}
	if _, err := c.Index(context.Background(), rel); err != nil {
		t.Fatal(err)
	}
	if a.Hits("dists/bookworm/main/binary-amd64/by-hash/SHA256/") != 1 || a.Hits("dists/bookworm/main/binary-amd64/Packages") != 0 {
		t.Errorf("the index was not fetched by hash")
	}
}

func TestTamperedDeb(t *testing.T) {
	a := newTestArchive(t, smallDistro(), archiveOptions{})
	c := a.Client(t)
	ix := loadIndex(t, c)
	mawk := ix.Package("mawk")
	a.Tamper(mawk.Filename, -10)
	cache := t.TempDir()
	res, err := c.Download(context.Background(), []*Package{ix.Package("libc6"), mawk}, DownloadOptions{CacheDir: cache, Concurrency: 1})
	wantVerifyError(t, err, "the mirror "+a.Mirror()+" served pool/main/m/mawk/mawk_1.3.4_amd64.deb whose sha256 does not match the Packages index")
	if res == nil || res.Fetched != 1 {
		t.Errorf("Download = %+v, want libc6 fetched", res)
	}
	if _, err := os.Stat(CachePath(cache, mawk)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the tampered mawk is in the cache: %v", err)
	}
	assertCacheClean(t, cache)
}

func TestDownloadHTTPError(t *testing.T) {
	a := newTestArchive(t, smallDistro(), archiveOptions{})
	c := a.Client(t)
	ix := loadIndex(t, c)
	a.SetFile(ix.Package("tar").Filename, nil)
	_, err := c.Download(context.Background(), []*Package{ix.Package("tar")}, DownloadOptions{CacheDir: t.TempDir()})
	var he *HTTPError
	if !errors.As(err, &he) || he.File != ix.Package("tar").Filename {
		t.Errorf("Download = %v, want an HTTPError for tar", err)
	}
}

// loadIndex fetches the release and index.
func loadIndex(t *testing.T, c *Client) *Index {
	t.Helper()
	rel, err := c.Release(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ix, err := c.Index(context.Background(), rel)
	if err != nil {
		t.Fatal(err)
	}
	return ix
}

func TestDownloadCancel(t *testing.T) {
	a := newTestArchive(t, smallDistro(), archiveOptions{})
	c := a.Client(t)
	ix := loadIndex(t, c)
	kernel := ix.Package("linux-image-6.1.0-9-cloud-amd64")
	release := a.Stall(kernel.Filename)
	defer release()

	ctx, cancel := context.WithCancel(context.Background())
	cache := t.TempDir()
	var once sync.Once
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := c.Download(ctx, []*Package{kernel}, DownloadOptions{CacheDir: cache, Progress: func(Progress) {
			once.Do(func() { close(started) })
		}})
		done <- err
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the download did not start")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Download = %v, want context.Canceled", err)
		}
		var ue *UnreachableError
		if errors.As(err, &ue) {
			t.Errorf("a cancelled download is reported as unreachable: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Download did not return after cancel")
	}
	assertCacheClean(t, cache)
	if entries, _ := os.ReadDir(cache); len(entries) != 0 {
		t.Errorf("the cache holds %d files after a cancelled download", len(entries))
	}
}

func TestUnreachableMirror(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mirror := "http://" + l.Addr().String() + "/debian"
	l.Close()
	c, err := New(Config{Mirror: mirror, Suite: "bookworm", Arch: "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Release(context.Background())
	var ue *UnreachableError
	if !errors.As(err, &ue) {
		t.Fatalf("Release = %v, want an *UnreachableError", err)
	}
	var ve *VerifyError
	if errors.As(err, &ve) {
		t.Errorf("an unreachable mirror is reported as a verification failure")
	}
	if want := "the Debian mirror " + mirror + " is unreachable"; !strings.Contains(err.Error(), want) {
		t.Errorf("the error %q lacks %q", err, want)
	}
}

func TestNewChecksConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Mirror: "ftp://deb.debian.org/debian", Suite: "bookworm", Arch: "amd64"},
		{Mirror: "deb.debian.org/debian", Suite: "bookworm", Arch: "amd64"},
		{Mirror: "http://deb.debian.org/debian", Suite: "", Arch: "amd64"},
		{Mirror: "http://deb.debian.org/debian", Suite: "../x", Arch: "amd64"},
		{Mirror: "http://deb.debian.org/debian", Suite: "bookworm"},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted it", cfg)
		}
	}
	c, err := New(Config{Mirror: "https://deb.debian.org/debian/", Suite: "bookworm", Arch: "arm64"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Mirror() != "https://deb.debian.org/debian" {
		t.Errorf("Mirror() = %q", c.Mirror())
	}
}

func TestDebianKeyring(t *testing.T) {
	kr, err := DebianKeyring()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range kr {
		if _, ok := e.SigningKey(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)); !ok {
			t.Errorf("%s has no signing key valid in 2027", describeSigner(e))
		}
		ids = append(ids, describeSigner(e))
	}
	for _, want := range []string{
		"Debian Archive Automatic Signing Key (12/bookworm)",
		"Debian Security Archive Automatic Signing Key (12/bookworm)",
		"Debian Stable Release Key (12/bookworm)",
		"Debian Archive Automatic Signing Key (13/trixie)",
		"Debian Security Archive Automatic Signing Key (13/trixie)",
		"Debian Stable Release Key (13/trixie)",
	} {
		if !slices.ContainsFunc(ids, func(id string) bool { return strings.HasPrefix(id, want) }) {
			t.Errorf("the embedded keyring lacks %s; it has %v", want, ids)
		}
	}

	// ReadKeyring takes armored keys too.
	var armored bytes.Buffer
	if err := serializeArmored(&armored, testKey()); err != nil {
		t.Fatal(err)
	}
	el, err := ReadKeyring(&armored)
	if err != nil || len(el) != 1 {
		t.Errorf("ReadKeyring(armored) = %v, %v", el, err)
	}
}

func serializeArmored(w *bytes.Buffer, e *openpgp.Entity) error {
	aw, err := armor.Encode(w, openpgp.PublicKeyType, nil)
	if err != nil {
		return err
	}
	if err := e.Serialize(aw); err != nil {
		return err
	}
	return aw.Close()
}
