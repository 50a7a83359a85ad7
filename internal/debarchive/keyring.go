package debarchive

import (
	"bufio"
	"bytes"
	"embed"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"sync"

	"github.com/ProtonMail/go-crypto/openpgp"
)

// keyFiles holds Debian's archive keyrings, copied from the
// debian-archive-keyring package (see keys/README.md for version and
// fingerprints).
//
//go:embed keys/*.gpg
var keyFiles embed.FS

// DebianKeyringName is how errors name the embedded keyring.
const DebianKeyringName = "Debian's archive keys"

var debianKeyring = sync.OnceValues(func() (openpgp.EntityList, error) {
	names, err := fs.Glob(keyFiles, "keys/*.gpg")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var all openpgp.EntityList
	for _, name := range names {
		data, err := keyFiles.ReadFile(name)
		if err != nil {
			return nil, err
		}
		el, err := ReadKeyring(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("embedded keyring %s: %w", name, err)
		}
		all = append(all, el...)
	}
	return all, nil
})

// DebianKeyring returns the Debian archive keys embedded in heyvm: the
// archive, security and stable release keys of bookworm and trixie.
func DebianKeyring() (openpgp.EntityList, error) {
	return debianKeyring()
}

// ReadKeyring reads OpenPGP public keys, binary (like the files in
// /usr/share/keyrings) or ASCII-armored.
func ReadKeyring(r io.Reader) (openpgp.EntityList, error) {
	br := bufio.NewReader(r)
	head, _ := br.Peek(5)
	if string(head) == "-----" {
		return openpgp.ReadArmoredKeyRing(br)
	}
	return openpgp.ReadKeyRing(br)
}
