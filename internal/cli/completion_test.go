package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/layout"
	"github.com/heyvm/heyvm/internal/sandbox"
)

// completionStore makes a HEYO_HOME holding sandboxes of the given names,
// written by the store's own Create (no disk, nothing booted), and one
// image named img (empty files and an image.yaml) unless img is "".
func completionStore(t *testing.T, img string, names ...string) layout.Root {
	t.Helper()
	root := layout.Root{Dir: t.TempDir()}
	t.Setenv(layout.EnvHome, root.Dir)
	st := sandbox.Store{Root: root}
	for _, n := range names {
		cfg := &sandbox.Config{Name: n, Image: "debian:12", Backend: "qemu", Arch: "amd64", CPUs: 1, MemoryMiB: 512}
		if _, err := st.Create(context.Background(), cfg, func(string) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if img != "" {
		dir := root.ImageDir("qemu", img)
		os.MkdirAll(dir, 0o700)
		for _, f := range image.Files {
			os.WriteFile(filepath.Join(dir, f), nil, 0o600)
		}
		if err := image.WriteMetadata(dir, &image.Metadata{Name: img, Backend: "qemu", Arch: "amd64"}); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// completeFor runs cobra's hidden `__complete` (what every shell's script
// calls) and returns the candidates without descriptions.
func completeFor(t *testing.T, args ...string) []string {
	t.Helper()
	var out, errOut bytes.Buffer
	root := NewRoot(IO{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	root.SetArgs(append([]string{cobra.ShellCompRequestCmd}, args...))
	if err := root.Execute(); err != nil {
		t.Fatalf("__complete %v: %v %s", args, err, errOut.String())
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if strings.HasPrefix(l, ":") || l == "" {
			continue // the directive
		}
		name, _, _ := strings.Cut(l, "\t")
		got = append(got, name)
	}
	return got
}

func TestCompletionOffersSandboxes(t *testing.T) {
	completionStore(t, "", "alpha", "beta")
	for _, args := range [][]string{{"exec", ""}, {"sh", ""}, {"stop", ""}, {"get", ""}, {"port", "add", ""}, {"autostart", "on", ""}, {"logs", ""}} {
		if got := strings.Join(completeFor(t, args...), " "); got != "alpha beta" {
			t.Errorf("heyvm %s<TAB>: %q, want alpha beta", strings.Join(args, " "), got)
		}
	}
	// rm takes several: one already given is not offered again.
	if got := strings.Join(completeFor(t, "rm", "alpha", ""), " "); got != "beta" {
		t.Errorf("heyvm rm alpha <TAB>: %q", got)
	}
	// exec's command and port add's second argument are not sandboxes.
	if got := completeFor(t, "exec", "alpha", "--", ""); len(got) != 0 {
		t.Errorf("heyvm exec alpha -- <TAB>: %q", got)
	}
	if got := completeFor(t, "port", "add", "alpha", ""); len(got) != 0 {
		t.Errorf("heyvm port add alpha <TAB>: %q", got)
	}
}

func TestCompletionOffersImages(t *testing.T) {
	completionStore(t, "debian:12", "alpha")
	for _, args := range [][]string{{"images", "inspect", ""}, {"images", "rm", ""}, {"images", "warm", ""}, {"create", "--image", ""}} {
		got := completeFor(t, args...)
		if !hasCandidate(got, "debian:12") || !hasCandidate(got, "default") || hasCandidate(got, "alpha") {
			t.Errorf("heyvm %s<TAB>: %q, want debian:12 and its alias default", strings.Join(args, " "), got)
		}
	}
	if got := completeFor(t, "images", "inspect", "--backend", "apple_virt", ""); len(got) != 0 {
		t.Errorf("images of another backend: %q", got)
	}
	if got := completeFor(t, "create", "--backend", ""); !hasCandidate(got, "qemu") {
		t.Errorf("--backend <TAB>: %q", got)
	}
}

// Completion on a machine where heyvm never ran: no candidates, no error,
// and no ~/.heyo made.
func TestCompletionWithoutAStore(t *testing.T) {
	home := filepath.Join(t.TempDir(), "absent")
	t.Setenv(layout.EnvHome, home)
	if got := completeFor(t, "exec", ""); len(got) != 0 {
		t.Errorf("%q", got)
	}
	if got := completeFor(t, "images", "rm", ""); len(got) != 0 {
		t.Errorf("%q", got)
	}
	if _, err := os.Stat(home); !os.IsNotExist(err) {
		t.Errorf("completion created %s", home)
	}
}

// Every command whose usage names a sandbox (ID) completes one.
func TestEveryIDCommandCompletes(t *testing.T) {
	root := NewRoot(IO{In: strings.NewReader(""), Out: &bytes.Buffer{}, ErrOut: &bytes.Buffer{}})
	var walk func(c *cobra.Command)
	n := 0
	walk = func(c *cobra.Command) {
		if w := strings.Fields(c.Use); len(w) > 1 && (w[1] == "ID" || w[1] == "ID...") {
			n++
			if c.ValidArgsFunction == nil {
				t.Errorf("%s takes a sandbox but does not complete it", c.CommandPath())
			}
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	if n < 15 {
		t.Errorf("only %d commands take an ID", n)
	}
}

func hasCandidate(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
