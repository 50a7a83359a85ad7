package contexts

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heyvm/heyvm/internal/layout"
)

func TestStoreRoundTripAndResolve(t *testing.T) {
	root := layout.Root{Dir: t.TempDir()}
	s, err := Load(root)
	if err != nil || len(s.List()) != 1 || s.CurrentName() != DefaultName {
		t.Fatalf("empty store: %v %+v", err, s)
	}
	if err := s.Add(&Context{Name: "box", Kind: SSH, Host: "ssh://me@box:2222"}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []*Context{{Name: "box", Kind: SSH}, {Name: DefaultName, Kind: SSH}, {Name: "Bad Name", Kind: SSH}} {
		if err := s.Add(bad); err == nil {
			t.Errorf("Add(%q) succeeded", bad.Name)
		}
	}
	if err := s.Use("box"); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(root); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(root.ContextsFile()); fi.Mode().Perm() != 0o600 {
		t.Errorf("contexts.yaml is %v", fi.Mode())
	}
	c, err := Resolve(root, "")
	if err != nil || c.Name != "box" || c.Kind != SSH || c.Host != "ssh://me@box:2222" {
		t.Fatalf("current: %+v %v", c, err)
	}
	t.Setenv(Env, DefaultName)
	if c, _ := Resolve(root, ""); c.Kind != Local {
		t.Errorf("HEYVM_CONTEXT=default: %+v", c)
	}
	if c, _ := Resolve(root, "box"); c.Name != "box" {
		t.Errorf("--context box over the env: %+v", c)
	}
	if _, err := Resolve(root, "nope"); err == nil || !strings.Contains(err.Error(), "context ls") {
		t.Errorf("unknown context: %v", err)
	}
	s2, _ := Load(root)
	if err := s2.Remove("box"); err != nil || s2.CurrentName() != DefaultName {
		t.Errorf("remove the current one: %v %s", err, s2.CurrentName())
	}
	if err := s2.Remove(DefaultName); err == nil {
		t.Error("removed the default context")
	}
	// A damaged file is named.
	os.WriteFile(root.ContextsFile(), []byte("contexts: [nope\n"), 0o600)
	if _, err := Load(root); err == nil || !strings.Contains(err.Error(), filepath.Base(root.ContextsFile())) {
		t.Errorf("damaged file: %v", err)
	}
}

func TestParseSSH(t *testing.T) {
	for in, want := range map[string]SSHTarget{
		"ssh://me@box:2222": {User: "me", Host: "box", Port: 2222},
		"ssh://box":         {Host: "box"},
		"me@10.0.0.5":       {User: "me", Host: "10.0.0.5"},
		"ssh://[::1]:22":    {Host: "::1", Port: 22},
	} {
		got, err := ParseSSH(in)
		if err != nil || got != want {
			t.Errorf("ParseSSH(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"http://box", "ssh://", "ssh://me:pw@box", "ssh://box:99999", "ssh://box/path"} {
		if _, err := ParseSSH(bad); err == nil {
			t.Errorf("ParseSSH(%q) succeeded", bad)
		}
	}
	if s := (SSHTarget{User: "me", Host: "::1", Port: 22}).String(); s != "ssh://me@[::1]:22" {
		t.Errorf("String: %s", s)
	}
}
