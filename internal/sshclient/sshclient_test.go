package sshclient

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/heyvm/heyvm/internal/layout"
)

func TestShellQuoteAndCommandLine(t *testing.T) {
	for in, want := range map[string]string{"abc": "abc", "": "''", "a b": "'a b'", "it's": `'it'\''s'`, "$HOME": "'$HOME'"} {
		if got := ShellQuote(in); got != want {
			t.Errorf("ShellQuote(%q) = %s, want %s", in, got, want)
		}
	}
	got := CommandLine([]string{"echo", "a b"}, "/work dir", "dev", []string{"K=v v"})
	want := `cd '/work dir' && exec runuser -u dev -- env 'K=v v' echo 'a b'`
	if got != want {
		t.Fatalf("CommandLine = %s\nwant %s", got, want)
	}
	if got := CommandLine([]string{"true"}, "", "root", nil); got != "exec true" {
		t.Fatalf("root: %s", got)
	}
}

func TestManagedKeyAndPinning(t *testing.T) {
	root := layout.Root{Dir: t.TempDir()}
	s1, pub1, err := ManagedKey(root)
	if err != nil {
		t.Fatal(err)
	}
	s2, pub2, err := ManagedKey(root)
	if err != nil || pub1 != pub2 || string(s1.PublicKey().Marshal()) != string(s2.PublicKey().Marshal()) {
		t.Fatal("key not stable across calls")
	}
	fi, _ := os.Stat(root.PrivateKey())
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key mode %v", fi.Mode())
	}
	if !strings.HasPrefix(pub1, "ssh-ed25519 ") {
		t.Fatalf("pub = %s", pub1)
	}
	kh := filepath.Join(t.TempDir(), "known_hosts")
	if _, err := PinHostKey(kh, "abc", "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC7 x"); err == nil {
		t.Fatal("non-ed25519 or bad key pinned")
	}
	key, err := PinHostKey(kh, "abc", strings.TrimSuffix(pub1, " heyvm-managed")+" root@heyvm")
	if err != nil {
		t.Fatal(err)
	}
	back, err := PinnedHostKey(kh)
	if err != nil || string(back.Marshal()) != string(key.Marshal()) {
		t.Fatal("pinned key differs", err)
	}
	b, _ := os.ReadFile(kh)
	if !strings.HasPrefix(string(b), "heyvm-abc ssh-ed25519 ") {
		t.Fatalf("known_hosts = %s", b)
	}
	cb := checkPinned(key)
	if err := cb("x", nil, key); err != nil {
		t.Fatal(err)
	}
	other, _, _ := ManagedKey(layout.Root{Dir: t.TempDir()})
	if err := cb("x", nil, other.PublicKey()); err == nil || !strings.Contains(err.Error(), "mismatch") {
		t.Fatalf("other key accepted: %v", err)
	}
}

func TestPIDFilter(t *testing.T) {
	var out strings.Builder
	f := &pidFilter{w: &out, ready: make(chan struct{})}
	for _, chunk := range []string{"HEYVM-", "PGID 42", "3\nreal ", "stderr\n"} {
		f.Write([]byte(chunk))
	}
	<-f.ready
	if f.pid != 423 || out.String() != "real stderr\n" {
		t.Fatalf("pid %d out %q", f.pid, out.String())
	}
	out.Reset()
	g := &pidFilter{w: &out, ready: make(chan struct{})}
	g.Write([]byte("no marker here\n"))
	if g.pid != 0 || out.String() != "no marker here\n" {
		t.Fatalf("unmarked stderr: %d %q", g.pid, out.String())
	}
}

func TestAbandonedErrorCodes(t *testing.T) {
	for sig, want := range map[os.Signal]int{syscall.SIGINT: 130, syscall.SIGTERM: 143} {
		e := &AbandonedError{Signal: sig}
		if e.ExitCode() != want || !strings.Contains(e.Error(), "may still be running") {
			t.Errorf("%v: %d %q", sig, e.ExitCode(), e.Error())
		}
	}
	if !strings.Contains((&AbandonedError{Signal: syscall.SIGINT}).Error(), "Ctrl-C") {
		t.Error("SIGINT is not called Ctrl-C")
	}
}
