package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestVersionCommand(t *testing.T) {
	var out bytes.Buffer
	root := NewRoot(IO{In: strings.NewReader(""), Out: &out, ErrOut: &out})
	root.SetArgs([]string{"version", "--json"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	var v struct {
		Version   string `json:"version"`
		GoVersion string `json:"go_version"`
		OS        string `json:"os"`
		Arch      string `json:"arch"`
	}
	if err := json.Unmarshal(out.Bytes(), &v); err != nil || v.Version == "" || !strings.HasPrefix(v.GoVersion, "go") || v.OS == "" || v.Arch == "" {
		t.Fatalf("version --json: %v %q", err, out.String())
	}
	out.Reset()
	root = NewRoot(IO{In: strings.NewReader(""), Out: &out, ErrOut: &out})
	root.SetArgs([]string{"version"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	out.Reset()
	root = NewRoot(IO{In: strings.NewReader(""), Out: &out, ErrOut: &out})
	root.SetArgs([]string{"--version"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if out.String() != text || !strings.HasPrefix(text, "heyvm ") || !strings.Contains(text, "os/arch: ") {
		t.Fatalf("--version %q, version %q", out.String(), text)
	}
}
