package debarchive

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"pault.ag/go/debian/control"
)

// WritePackages writes a Packages index of pkgs, in the order given, for a
// local apt repository: each package's original stanza, with Filename
// replaced by filename(p), the path of its .deb relative to the
// repository's root. For a flat repository on the download cache,
//
//	WritePackages(w, pkgs, func(p *Package) string { return filepath.Base(CachePath(".", p)) })
//
// lets "deb [trusted=yes] file:/cache ./" install straight from the cache.
func WritePackages(w io.Writer, pkgs []*Package, filename func(*Package) string) error {
	bw := bufio.NewWriter(w)
	for i, p := range pkgs {
		para, err := p.paragraph()
		if err != nil {
			return fmt.Errorf("the stanza of %s: %w", p, err)
		}
		if i > 0 {
			bw.WriteByte('\n')
		}
		bw.WriteString(formatStanza(para, map[string]string{"Filename": filename(p)}))
	}
	return bw.Flush()
}

// formatStanza writes para as deb822 text, with the values in replace
// instead of those of para.
//
// pault.ag's parser keeps a multi-line value as its lines joined by "\n",
// an empty line standing for " ."; Paragraph.WriteTo would end such a
// value with a whitespace-only line, which apt reads as the end of the
// stanza, so this writes the lines itself. (A multi-line value whose first
// line is empty, which Packages files do not have, comes back with its
// second line as the first.)
func formatStanza(para *control.Paragraph, replace map[string]string) string {
	var b strings.Builder
	for _, key := range para.Order {
		value, ok := replace[key]
		if !ok {
			value = para.Values[key]
		}
		lines := strings.Split(strings.TrimSuffix(value, "\n"), "\n")
		b.WriteString(key + ": " + lines[0] + "\n")
		for _, line := range lines[1:] {
			if strings.TrimSpace(line) == "" {
				line = "."
			}
			b.WriteString(" " + line + "\n")
		}
	}
	return b.String()
}
