// Package debarchive is a verifying client for Debian's apt archive, the
// host side of building heyvm's Debian guest image without root, dpkg or
// mmdebstrap on the host. It is pure Go and works on macOS as on Linux.
//
// # Trust chain
//
// Nothing a mirror serves is believed until it is tied to Debian's archive
// keys, which are embedded in heyvm (see keys/README.md):
//
//  1. dists/<suite>/InRelease must carry a valid OpenPGP signature by one of
//     the trusted keys (Client.Release). A signature or key that has expired
//     at "now" is refused, and so is a Release whose Valid-Until has passed
//     or whose Date lies in the future, each with a clock-skew margin, and a
//     Release whose Suite and Codename both differ from the suite asked for.
//     Only the signed text is parsed.
//  2. The Packages index (Packages.xz, else Packages.gz, else Packages) must
//     have the size and SHA256 the signed Release lists for it; it is
//     checked before it is decompressed or parsed (Client.Index).
//  3. Each .deb must have the size and SHA256 its Packages stanza lists; it
//     is checked while it streams to a temporary file, which becomes a cache
//     entry only once verified (Client.Download).
//
// A failed check is a *VerifyError naming the mirror and the file; a mirror
// that cannot be reached is an *UnreachableError, and one that answers
// with an HTTP error is an *HTTPError, so callers can tell "refused" from
// "offline" with errors.As.
//
// # Package selection
//
// Index.Resolve computes what mmdebstrap's minbase variant installs, plus
// a list of included packages: every Essential:yes and Priority:required
// package and apt, closed under Depends and Pre-Depends (not Recommends),
// choosing among alternatives as apt does. The Resolution lists the
// packages sorted by name, the Essential:yes subset (installed first), and
// an installation order in which dependencies come first.
//
// # Cache
//
// Downloaded packages live in a cache directory as <sha256>.deb. A file
// already there is hashed again before it is reused (hashing the ~150
// packages of a minbase image takes well under a second, much less than a
// download), and replaced if it no longer matches: disk corruption or a
// stray write cannot end up in an image.
//
// WritePackages turns the chosen stanzas into a Packages file for a local
// "file:" repository, so apt inside a build VM can install from the cache.
// WalkDeb and ExtractDeb read a .deb's data.tar on the host, e.g. to take
// the kernel and its modules out of a linux-image package.
package debarchive
