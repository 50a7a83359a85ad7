package debarchive

import (
	"strings"
	"testing"
)

func TestWritePackages(t *testing.T) {
	text := stanza("hello", "2.10-3", "Priority: optional", "Depends: libc6 (>= 2.34)",
		"Description: example package based on GNU hello\n The GNU hello program produces a familiar, friendly greeting.\n .\n   indented line") +
		"\n" + stanza("libc6", "2.36-9", "Multi-Arch: same")
	ix := testIndex(t, text)
	pkgs := []*Package{ix.Package("hello"), ix.Package("libc6")}

	var out strings.Builder
	err := WritePackages(&out, pkgs, func(p *Package) string { return p.SHA256 + ".deb" })
	if err != nil {
		t.Fatal(err)
	}
	want := strings.ReplaceAll(text, "Filename: pool/main/hello_2.10-3.deb", "Filename: "+ix.Package("hello").SHA256+".deb")
	want = strings.ReplaceAll(want, "Filename: pool/main/libc6_2.36-9.deb", "Filename: "+ix.Package("libc6").SHA256+".deb")
	if out.String() != want {
		t.Errorf("WritePackages wrote\n%s\nwant\n%s", out.String(), want)
	}

	// apt's view: the same packages, at the new file names.
	again, err := ParseIndex(strings.NewReader(out.String()), "amd64")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pkgs {
		q := again.Package(p.Name)
		if q == nil || q.Filename != p.SHA256+".deb" || q.SHA256 != p.SHA256 || q.Size != p.Size || q.Depends.String() != p.Depends.String() {
			t.Errorf("%s reads back as %+v", p.Name, q)
		}
	}
	if got := again.Package("hello").Field("Description"); !strings.Contains(got, "\n  indented line") {
		t.Errorf("Description = %q", got)
	}
}
