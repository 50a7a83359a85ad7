package debarchive

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"pault.ag/go/debian/control"
)

// Release is the verified content of a suite's InRelease file.
type Release struct {
	Origin        string
	Label         string
	Suite         string // e.g. "oldstable"
	Codename      string // e.g. "bookworm"
	Version       string // e.g. "12.15"
	Date          time.Time
	ValidUntil    time.Time // zero when the Release sets none (Debian's main suites do not)
	Architectures []string
	Components    []string
	AcquireByHash bool

	// Files maps each index file the Release lists, relative to its
	// dists/<suite> directory (e.g. "main/binary-amd64/Packages.xz"), to
	// its size and SHA256.
	Files map[string]Checksum

	// SignedBy names the key whose signature was verified.
	SignedBy string
}

// Checksum is the size and SHA256 (lower-case hex) a signed index lists for
// a file.
type Checksum struct {
	Size   int64
	SHA256 string
}

// releaseFields is the wire form of a Release, decoded by pault.ag's
// control package.
type releaseFields struct {
	Origin        string
	Label         string
	Suite         string
	Codename      string
	Version       string
	Date          string
	ValidUntil    string `control:"Valid-Until"`
	Architectures string
	Components    string
	AcquireByHash string                   `control:"Acquire-By-Hash"`
	SHA256        []control.SHA256FileHash `delim:"\n" strip:"\n\r\t "`
}

// releaseCheck is what verifyInRelease checks an InRelease against.
type releaseCheck struct {
	keyring     openpgp.KeyRing
	keyringName string
	suite       string
	now         time.Time
	skew        time.Duration
}

// verifyInRelease checks the clearsigned InRelease data and parses its
// signed text. Its errors are *VerifyError without Mirror and File, which
// the caller fills in.
func verifyInRelease(data []byte, chk releaseCheck) (*Release, error) {
	block, _ := clearsign.Decode(data)
	if block == nil {
		return nil, &VerifyError{Problem: "which is not an OpenPGP clearsigned document", Hint: hintTampered}
	}
	config := &packet.Config{Time: func() time.Time { return chk.now }}
	signer, err := block.VerifySignature(chk.keyring, config)
	if err != nil {
		return nil, &VerifyError{
			Problem: "whose signature does not verify against " + chk.keyringName,
			Hint:    hintTampered,
			Err:     err,
		}
	}
	rel, err := parseRelease(block.Plaintext)
	if err != nil {
		return nil, &VerifyError{Problem: "whose signed Release cannot be parsed", Hint: "a Release format heyvm does not know", Err: err}
	}
	rel.SignedBy = describeSigner(signer)

	if chk.suite != rel.Suite && chk.suite != rel.Codename {
		return nil, &VerifyError{
			Problem: fmt.Sprintf("which is signed for suite %q (codename %q), not %q", rel.Suite, rel.Codename, chk.suite),
			Hint:    "a misconfigured or malicious mirror",
		}
	}
	if rel.Date.After(chk.now.Add(chk.skew)) {
		return nil, &VerifyError{
			Problem: fmt.Sprintf("whose Date (%s) lies in the future (now is %s)", rel.Date.UTC().Format(time.RFC1123), chk.now.UTC().Format(time.RFC1123)),
			Hint:    hintStale,
		}
	}
	if !rel.ValidUntil.IsZero() && chk.now.After(rel.ValidUntil.Add(chk.skew)) {
		return nil, &VerifyError{
			Problem: fmt.Sprintf("whose Valid-Until (%s) has passed (now is %s)", rel.ValidUntil.UTC().Format(time.RFC1123), chk.now.UTC().Format(time.RFC1123)),
			Hint:    hintStale,
		}
	}
	return rel, nil
}

// parseRelease parses the (already verified) text of a Release file.
func parseRelease(text []byte) (*Release, error) {
	var f releaseFields
	if err := control.Unmarshal(&f, bytes.NewReader(text)); err != nil {
		return nil, err
	}
	rel := &Release{
		Origin:        f.Origin,
		Label:         f.Label,
		Suite:         f.Suite,
		Codename:      f.Codename,
		Version:       f.Version,
		Architectures: strings.Fields(f.Architectures),
		Components:    strings.Fields(f.Components),
		AcquireByHash: f.AcquireByHash == "yes",
		Files:         make(map[string]Checksum, len(f.SHA256)),
	}
	var err error
	if rel.Date, err = parseReleaseTime(f.Date); err != nil {
		return nil, fmt.Errorf("Date: %w", err)
	}
	if f.ValidUntil != "" {
		if rel.ValidUntil, err = parseReleaseTime(f.ValidUntil); err != nil {
			return nil, fmt.Errorf("Valid-Until: %w", err)
		}
	}
	for _, h := range f.SHA256 {
		if h.Filename == "" || !isSHA256Hex(h.Hash) {
			return nil, fmt.Errorf("malformed SHA256 line for %q", h.Filename)
		}
		rel.Files[h.Filename] = Checksum{Size: h.Size, SHA256: strings.ToLower(h.Hash)}
	}
	if len(rel.Files) == 0 {
		return nil, errors.New("no SHA256 file list")
	}
	return rel, nil
}

// parseReleaseTime parses a Release date, e.g. "Sat, 11 Jul 2026 10:16:37 UTC".
func parseReleaseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, errors.New("missing")
	}
	var firstErr error
	for _, layout := range []string{time.RFC1123, time.RFC1123Z} {
		t, err := time.Parse(layout, s)
		if err == nil {
			return t, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return time.Time{}, firstErr
}

// describeSigner names a key by its primary identity and fingerprint.
func describeSigner(e *openpgp.Entity) string {
	if e == nil || e.PrimaryKey == nil {
		return ""
	}
	fp := fmt.Sprintf("%X", e.PrimaryKey.Fingerprint)
	if id := e.PrimaryIdentity(); id != nil {
		return id.Name + " (" + fp + ")"
	}
	return fp
}
