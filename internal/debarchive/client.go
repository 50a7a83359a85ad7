package debarchive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"pault.ag/go/debian/deb"
)

// Config configures a Client.
type Config struct {
	// Mirror is the archive's base URL, http or https, e.g.
	// http://deb.debian.org/debian.
	Mirror string
	// Suite is the suite or codename, e.g. "bookworm".
	Suite string
	// Arch is the Debian architecture, e.g. "amd64" or "arm64".
	Arch string
	// Component is the archive component; "main" if empty.
	Component string

	// Keyring holds the keys InRelease must be signed by; DebianKeyring if
	// nil. KeyringName names it in errors; DebianKeyringName if empty.
	Keyring     openpgp.KeyRing
	KeyringName string

	// HTTPClient does the requests; http.DefaultClient if nil. It needs no
	// overall timeout (large downloads take a while): callers bound the
	// work with the context they pass.
	HTTPClient *http.Client
	// Now tells the time signatures and Valid-Until are checked at;
	// time.Now if nil.
	Now func() time.Time
	// ClockSkew is how far the local clock may be off from the archive's;
	// DefaultClockSkew if zero.
	ClockSkew time.Duration
}

// DefaultClockSkew is the default margin for a Release's Date and
// Valid-Until.
const DefaultClockSkew = time.Hour

// maxUncheckedSize bounds a file read before anything vouches for its
// size: InRelease (Debian's is about 150 kB).
const maxUncheckedSize = 16 << 20

// Client fetches and verifies files of one suite and architecture of a
// Debian mirror. It is safe for concurrent use.
type Client struct {
	mirror      string // without a trailing slash
	suite       string
	arch        string
	component   string
	keyring     openpgp.KeyRing
	keyringName string
	http        *http.Client
	now         func() time.Time
	skew        time.Duration
}

// New checks cfg and returns a Client.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.Mirror)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("debian mirror %q: want an http:// or https:// URL", cfg.Mirror)
	}
	if cfg.Suite == "" || strings.ContainsAny(cfg.Suite, "/ ") {
		return nil, fmt.Errorf("debian suite %q: want a suite or codename such as bookworm", cfg.Suite)
	}
	if cfg.Arch == "" || strings.ContainsAny(cfg.Arch, "/ ") {
		return nil, fmt.Errorf("debian architecture %q: want one such as amd64", cfg.Arch)
	}
	c := &Client{
		mirror:      strings.TrimRight(cfg.Mirror, "/"),
		suite:       cfg.Suite,
		arch:        cfg.Arch,
		component:   cfg.Component,
		keyring:     cfg.Keyring,
		keyringName: cfg.KeyringName,
		http:        cfg.HTTPClient,
		now:         cfg.Now,
		skew:        cfg.ClockSkew,
	}
	if c.component == "" {
		c.component = "main"
	}
	if c.keyring == nil {
		kr, err := DebianKeyring()
		if err != nil {
			return nil, err
		}
		c.keyring = kr
		if c.keyringName == "" {
			c.keyringName = DebianKeyringName
		}
	}
	if c.keyringName == "" {
		c.keyringName = "the trusted keys"
	}
	if c.http == nil {
		c.http = http.DefaultClient
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.skew == 0 {
		c.skew = DefaultClockSkew
	}
	return c, nil
}

// Mirror returns the mirror's base URL.
func (c *Client) Mirror() string { return c.mirror }

// Release fetches dists/<suite>/InRelease, verifies its signature and
// dates, and returns its signed content.
func (c *Client) Release(ctx context.Context) (*Release, error) {
	file := "dists/" + c.suite + "/InRelease"
	data, err := c.fetch(ctx, file, nil)
	if err != nil {
		return nil, err
	}
	rel, err := verifyInRelease(data, releaseCheck{
		keyring:     c.keyring,
		keyringName: c.keyringName,
		suite:       c.suite,
		now:         c.now(),
		skew:        c.skew,
	})
	if err != nil {
		var ve *VerifyError
		if errors.As(err, &ve) {
			ve.Mirror, ve.File = c.mirror, file
		}
		return nil, err
	}
	return rel, nil
}

// packagesVariants are the extensions of the Packages files tried, best
// first; each is also the name of its pault.ag decompressor.
var packagesVariants = []string{".xz", ".gz", ""}

// Index fetches the component's Packages index for the client's
// architecture (Packages.xz, else .gz, else uncompressed, among those rel
// lists; the next is tried only if the mirror answers 404), checks its
// size and SHA256 against rel before decompressing it, and parses it.
func (c *Client) Index(ctx context.Context, rel *Release) (*Index, error) {
	base := c.component + "/binary-" + c.arch + "/Packages"
	var notFound error
	for _, ext := range packagesVariants {
		name := base + ext
		sum, ok := rel.Files[name]
		if !ok {
			continue
		}
		data, err := c.fetchIndexFile(ctx, rel, name, sum)
		var he *HTTPError
		if errors.As(err, &he) && he.StatusCode == http.StatusNotFound {
			notFound = err
			continue
		}
		if err != nil {
			return nil, err
		}
		return c.parseIndexFile(name, ext, data)
	}
	if notFound != nil {
		return nil, notFound
	}
	return nil, &VerifyError{
		Mirror:  c.mirror,
		File:    "dists/" + c.suite + "/InRelease",
		Problem: "which lists no " + base + " index",
		Hint:    "wrong component or architecture for this suite",
	}
}

// parseIndexFile decompresses (as ext says) and parses a verified index.
func (c *Client) parseIndexFile(name, ext string, data []byte) (*Index, error) {
	r, err := deb.DecompressorFor(ext)(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("decompressing %s from %s: %w", name, c.mirror, err)
	}
	defer r.Close()
	ix, err := ParseIndex(r, c.arch)
	if err != nil {
		return nil, fmt.Errorf("%s from %s: %w", name, c.mirror, err)
	}
	return ix, nil
}

// fetchIndexFile fetches a file the Release lists, by hash when the
// Release offers that (so a mirror caught mid-update still serves a
// consistent pair), else by name.
func (c *Client) fetchIndexFile(ctx context.Context, rel *Release, name string, sum Checksum) ([]byte, error) {
	dir := "dists/" + c.suite + "/"
	if rel.AcquireByHash {
		byHash := dir + path.Dir(name) + "/by-hash/SHA256/" + sum.SHA256
		data, err := c.fetch(ctx, byHash, &fileCheck{sum, "the signed Release"})
		var he *HTTPError
		if !errors.As(err, &he) || he.StatusCode != http.StatusNotFound {
			return data, err
		}
	}
	return c.fetch(ctx, dir+name, &fileCheck{sum, "the signed Release"})
}

// fileCheck is what a fetched file must match, and which signed document
// says so.
type fileCheck struct {
	Checksum
	source string // e.g. "the signed Release"
}

// fetch GETs file (a path under the mirror) into memory. With check, the
// body must have check's size and SHA256; without, it may be at most
// maxUncheckedSize bytes.
func (c *Client) fetch(ctx context.Context, file string, check *fileCheck) ([]byte, error) {
	resp, err := c.get(ctx, file)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	limit := int64(maxUncheckedSize)
	if check != nil {
		limit = check.Size
	}
	var buf bytes.Buffer
	v := c.newVerifier(file, check)
	if _, err := io.Copy(io.MultiWriter(&buf, v), io.LimitReader(resp.Body, limit+1)); err != nil {
		return nil, c.transportError(ctx, file, err)
	}
	if check == nil && int64(buf.Len()) > limit {
		return nil, &VerifyError{Mirror: c.mirror, File: file, Problem: fmt.Sprintf("which is larger than %d bytes", limit), Hint: hintTampered}
	}
	if err := v.verify(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// get starts a GET of file. A non-200 answer is an *HTTPError.
func (c *Client) get(ctx context.Context, file string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.mirror+"/"+file, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.transportError(ctx, file, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, &HTTPError{Mirror: c.mirror, File: file, StatusCode: resp.StatusCode}
	}
	return resp, nil
}

// transportError wraps a failure to talk to the mirror: the context's own
// error if it is done, else an *UnreachableError.
func (c *Client) transportError(ctx context.Context, file string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("fetching %s from %s: %w", file, c.mirror, context.Cause(ctx))
	}
	return &UnreachableError{Mirror: c.mirror, File: file, Err: err}
}

// verifier hashes what is written to it and, in verify, compares size and
// SHA256 with a fileCheck. Without a check it accepts anything.
type verifier struct {
	c     *Client
	file  string
	check *fileCheck
	n     int64
	h     hash.Hash
}

func (c *Client) newVerifier(file string, check *fileCheck) *verifier {
	return &verifier{c: c, file: file, check: check, h: sha256.New()}
}

func (v *verifier) Write(p []byte) (int, error) {
	v.n += int64(len(p))
	return v.h.Write(p)
}

// verify compares what was written with the check.
func (v *verifier) verify() error {
	if v.check == nil {
		return nil
	}
	if v.n != v.check.Size {
		return &VerifyError{
			Mirror:  v.c.mirror,
			File:    v.file,
			Problem: fmt.Sprintf("whose size (%d bytes) does not match %s (%d bytes)", v.n, v.check.source, v.check.Size),
			Hint:    hintTampered,
		}
	}
	if got := hex.EncodeToString(v.h.Sum(nil)); got != v.check.SHA256 {
		return &VerifyError{
			Mirror:  v.c.mirror,
			File:    v.file,
			Problem: "whose sha256 does not match " + v.check.source,
			Hint:    hintTampered,
			Err:     fmt.Errorf("got %s, want %s", got, v.check.SHA256),
		}
	}
	return nil
}
