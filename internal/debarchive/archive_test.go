package debarchive

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// This file builds a small, signed apt archive for the tests and serves it
// over httptest: fake .debs (ar + control.tar + data.tar), a Packages
// index in several compressions, and an InRelease clearsigned by a key
// made for the test.

// fakePkg describes a package of the test archive.
type fakePkg struct {
	Name    string
	Version string
	Arch    string            // "amd64" if empty
	Fields  map[string]string // further control fields: Depends, Provides, Essential, Priority...
	Files   map[string]string // data.tar content, path -> content
	DataExt string            // data.tar compression: ".xz" (default), ".gz", ".zst", or "none"
}

func (p fakePkg) arch() string {
	if p.Arch == "" {
		return "amd64"
	}
	return p.Arch
}

func (p fakePkg) filename() string {
	return fmt.Sprintf("pool/main/%c/%s/%s_%s_%s.deb", p.Name[0], p.Name, p.Name, p.Version, p.arch())
}

// control returns the package's control stanza, without index fields.
func (p fakePkg) control() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Package: %s\nVersion: %s\nArchitecture: %s\nMaintainer: heyvm tests <test@example.invalid>\n", p.Name, p.Version, p.arch())
	keys := make([]string, 0, len(p.Fields))
	for k := range p.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %s\n", k, p.Fields[k])
	}
	fmt.Fprintf(&b, "Description: %s, a package made by heyvm's tests\n", p.Name)
	return b.String()
}

// buildDeb makes the .deb of p.
func buildDeb(t testing.TB, p fakePkg) []byte {
	t.Helper()
	controlTar := tarball(t, map[string]string{"control": p.control()})
	dataTar := tarball(t, p.Files)
	ext := p.DataExt
	if ext == "" {
		ext = ".xz"
	}
	var data []byte
	switch ext {
	case "none":
		ext, data = "", dataTar
	default:
		data = compress(t, ext, dataTar)
	}
	var ar bytes.Buffer
	ar.WriteString("!<arch>\n")
	for _, m := range []struct {
		name string
		data []byte
	}{
		{"debian-binary", []byte("2.0\n")},
		{"control.tar.gz", compress(t, ".gz", controlTar)},
		{"data.tar" + ext, data},
	} {
		fmt.Fprintf(&ar, "%-16s%-12d%-6d%-6d%-8s%-10d`\n", m.name, 1700000000, 0, 0, "100644", len(m.data))
		ar.Write(m.data)
		if len(m.data)%2 == 1 {
			ar.WriteByte('\n')
		}
	}
	return ar.Bytes()
}

// tarball makes a tar of files (path -> content) as dpkg-deb does: names
// start with "./", and parent directories come first.
func tarball(t testing.TB, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	dirs := map[string]bool{}
	write := func(h *tar.Header, body string) {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, body); err != nil {
			t.Fatal(err)
		}
	}
	write(&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755}, "")
	for _, n := range names {
		parts := strings.Split(n, "/")
		for i := 1; i < len(parts); i++ {
			d := strings.Join(parts[:i], "/")
			if !dirs[d] {
				dirs[d] = true
				write(&tar.Header{Name: "./" + d + "/", Typeflag: tar.TypeDir, Mode: 0o755}, "")
			}
		}
		if target, ok := strings.CutPrefix(files[n], "symlink:"); ok {
			write(&tar.Header{Name: "./" + n, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777}, "")
			continue
		}
		write(&tar.Header{Name: "./" + n, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(files[n]))}, files[n])
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// compress compresses data as ext (".xz", ".gz", ".zst") says.
func compress(t testing.TB, ext string, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	var err error
	switch ext {
	case ".xz":
		w, err = xz.NewWriter(&buf)
	case ".gz":
		w = gzip.NewWriter(&buf)
	case ".zst":
		w, err = zstd.NewWriter(&buf)
	default:
		t.Fatalf("no compressor for %q", ext)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// archiveOptions varies the test archive.
type archiveOptions struct {
	Suite         string        // codename; "bookworm" if empty
	ValidUntil    time.Duration // if set, Valid-Until is Date plus this
	Date          time.Time     // the Release's Date; an hour ago if zero
	IndexVariants []string      // which Packages files exist; all three if nil
	AcquireByHash bool          // serve and announce by-hash indexes
}

// testArchive is a signed archive served by httptest.
type testArchive struct {
	t       testing.TB
	Key     *openpgp.Entity
	Server  *httptest.Server
	Pkgs    map[string]fakePkg // by name
	mu      sync.Mutex
	files   map[string][]byte // served, by path under the mirror
	hits    map[string]int    // GETs per path
	stalled map[string]chan struct{}
}

// testKey is made once: generating keys is the slow part of these tests.
var testKey = sync.OnceValue(func() *openpgp.Entity {
	e, err := openpgp.NewEntity("heyvm test archive", "", "archive@example.invalid", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		panic(err)
	}
	return e
})

// newTestArchive builds and serves an archive of pkgs.
func newTestArchive(t testing.TB, pkgs []fakePkg, opts archiveOptions) *testArchive {
	t.Helper()
	a := &testArchive{
		t:       t,
		Key:     testKey(),
		Pkgs:    map[string]fakePkg{},
		files:   map[string][]byte{},
		hits:    map[string]int{},
		stalled: map[string]chan struct{}{},
	}
	suite := opts.Suite
	if suite == "" {
		suite = "bookworm"
	}
	var index strings.Builder
	for i, p := range pkgs {
		a.Pkgs[p.Name] = p
		deb := buildDeb(t, p)
		a.files[p.filename()] = deb
		if i > 0 {
			index.WriteString("\n")
		}
		fmt.Fprintf(&index, "%sFilename: %s\nSize: %d\nSHA256: %s\n", p.control(), p.filename(), len(deb), sha256hex(deb))
	}
	plain := []byte(index.String())
	variants := opts.IndexVariants
	if variants == nil {
		variants = []string{".xz", ".gz", ""}
	}
	dir := "dists/" + suite + "/"
	var sums strings.Builder
	for _, ext := range variants {
		data := plain
		if ext != "" {
			data = compress(t, ext, plain)
		}
		name := "main/binary-amd64/Packages" + ext
		a.files[dir+name] = data
		if opts.AcquireByHash {
			a.files[dir+"main/binary-amd64/by-hash/SHA256/"+sha256hex(data)] = data
		}
		fmt.Fprintf(&sums, " %s %8d %s\n", sha256hex(data), len(data), name)
	}
	date := opts.Date
	if date.IsZero() {
		date = time.Now().Add(-time.Hour)
	}
	var rel strings.Builder
	fmt.Fprintf(&rel, "Origin: Debian\nLabel: Debian\nSuite: stable\nVersion: 12.99\nCodename: %s\n", suite)
	fmt.Fprintf(&rel, "Date: %s\n", date.UTC().Format(time.RFC1123))
	if opts.ValidUntil != 0 {
		fmt.Fprintf(&rel, "Valid-Until: %s\n", date.Add(opts.ValidUntil).UTC().Format(time.RFC1123))
	}
	if opts.AcquireByHash {
		rel.WriteString("Acquire-By-Hash: yes\n")
	}
	fmt.Fprintf(&rel, "Architectures: amd64\nComponents: main\nDescription: heyvm test archive\nSHA256:\n%s", sums.String())
	a.files[dir+"InRelease"] = a.sign(rel.String())

	a.Server = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.Server.Close)
	return a
}

// sign clearsigns text with the archive's key.
func (a *testArchive) sign(text string) []byte {
	var buf bytes.Buffer
	w, err := clearsign.Encode(&buf, a.Key.PrivateKey, nil)
	if err != nil {
		a.t.Fatal(err)
	}
	io.WriteString(w, text)
	if err := w.Close(); err != nil {
		a.t.Fatal(err)
	}
	return buf.Bytes()
}

func (a *testArchive) serve(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/debian/")
	a.mu.Lock()
	a.hits[path]++
	data, ok := a.files[path]
	stall := a.stalled[path]
	a.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	if stall != nil { // send half, then wait for the client to give up
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.Write(data[:len(data)/2])
		w.(http.Flusher).Flush()
		select {
		case <-stall:
		case <-r.Context().Done():
		}
		return
	}
	w.Write(data)
}

// Mirror is the archive's base URL.
func (a *testArchive) Mirror() string { return a.Server.URL + "/debian" }

// Config configures a client of the archive's bookworm amd64 that trusts
// its key.
func (a *testArchive) Config() Config {
	return Config{
		Mirror:      a.Mirror(),
		Suite:       "bookworm",
		Arch:        "amd64",
		Keyring:     openpgp.EntityList{a.Key},
		KeyringName: "the test key",
		HTTPClient:  a.Server.Client(),
	}
}

// Client returns a client made with a.Config().
func (a *testArchive) Client(t testing.TB) *Client {
	t.Helper()
	c, err := New(a.Config())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Tamper changes the byte at offset i of a served file (from the end if
// i is negative).
func (a *testArchive) Tamper(path string, i int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	data := bytes.Clone(a.files[path])
	if i < 0 {
		i += len(data)
	}
	data[i] ^= 0x01
	a.files[path] = data
}

// File returns a served file.
func (a *testArchive) File(path string) []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.files[path]
}

// SetFile serves data at path, or nothing if data is nil.
func (a *testArchive) SetFile(path string, data []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if data == nil {
		delete(a.files, path)
		return
	}
	a.files[path] = data
}

// Stall makes GETs of path send half the file and hang until released.
func (a *testArchive) Stall(path string) (release func()) {
	ch := make(chan struct{})
	a.mu.Lock()
	a.stalled[path] = ch
	a.mu.Unlock()
	return sync.OnceFunc(func() { close(ch) })
}

// Hits counts the GETs of paths under prefix.
func (a *testArchive) Hits(prefix string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for p, c := range a.hits {
		if strings.HasPrefix(p, prefix) {
			n += c
		}
	}
	return n
}
