package remote

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heyvm/heyvm/internal/contexts"
)

// ssh's own failures become one line that says what to do.
func TestSSHErrorsSayWhatToDo(t *testing.T) {
	h := &Host{Name: "box", Target: contexts.SSHTarget{User: "me", Host: "box.example", Port: 2222}}
	cases := map[string]string{
		"No ED25519 host key is known for [box.example]:2222 and you have requested strict checking.\r\nHost key verification failed.\r\n": "not in your known_hosts",
		"@@@@@@@@\r\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n":                                                      "ssh-keygen -R box.example",
		"me@box.example: Permission denied (publickey).\r\n":                                                                               "refused your SSH key",
		"ssh: Could not resolve hostname box.example: Name or service not known\r\n":                                                       "cannot resolve",
		"ssh: connect to host box.example port 2222: Connection refused\r\n":                                                               "refused the connection",
		"ssh: connect to host box.example port 2222: No route to host\r\n":                                                                 "cannot reach",
		"client_loop: send disconnect: Broken pipe\r\n":                                                                                    "lost the connection",
		"something else entirely\r\n":                                                                                                      "something else entirely",
	}
	for log, want := range cases {
		err := h.sshError(log)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: %v (want one line with %q)", log, err, want)
		}
	}
	if !strings.Contains(h.sshError("Host key verification failed.").Error(), "ssh -p 2222 me@box.example") {
		t.Errorf("the known_hosts advice does not say how to connect")
	}
}

// The remote command, run by a shell as sshd runs it, gives heyvm each
// argument exactly as given, with the caller's version and call id set.
func TestHeyvmCommandQuotes(t *testing.T) {
	script := filepath.Join(t.TempDir(), "args")
	os.WriteFile(script, []byte("#!/bin/sh\necho \"$HEYVM_CLIENT_VERSION|$HEYVM_REMOTE_CALL|$HEYVM_ORIGIN_CONTEXT\"\nfor a; do printf '[%s]\\n' \"$a\"; done\n"), 0o755)
	h := &Host{Heyvm: script, ClientVersion: "v1.2.3 abc", Origin: "big-box"}
	argv := []string{"exec", "box", "--", "sh", "-c", "echo 'it''s' $HOME \"q\" `x` \\n"}
	out, err := exec.Command("sh", "-c", h.heyvmCommand("0123456789abcdef", argv)).Output()
	if err != nil {
		t.Fatal(err)
	}
	want := "v1.2.3 abc|0123456789abcdef|big-box\n"
	for _, a := range argv {
		want += "[" + a + "]\n"
	}
	if string(out) != want {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}
}

// Only the master's own answer says the shared connection is up: a
// master that dies while asked fails the handshake, and OpenSSH then
// connects by itself and exits 0 (seen in TestRemoteDeploy). The check
// never starts a master, and its fallback runs only `true`.
func TestMasterAliveTakesOnlyTheMastersAnswer(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "ssh")
	h := &Host{SSH: fake, ControlDir: dir, Target: contexts.SSHTarget{User: "me", Host: "box.example", Port: 2222}}
	for answer, alive := range map[string]bool{
		"echo 'Master running (pid=4242)' >&2": true,
		"echo 'muxclient: master hello exchange failed' >&2; echo 'ControlSocket x already exists, disabling multiplexing' >&2": false,
		"echo 'Control socket connect(x): Connection refused' >&2; exit 255":                                                    false,
	} {
		os.WriteFile(fake, []byte("#!/bin/sh\necho \"$@\" >"+filepath.Join(dir, "args")+"\n"+answer+"\n"), 0o755)
		if got := h.masterAlive(); got != alive {
			t.Errorf("ssh saying %q: alive %v, want %v", answer, got, alive)
		}
		args, _ := os.ReadFile(filepath.Join(dir, "args"))
		if !strings.Contains(string(args), "-O check") || !strings.Contains(string(args), "ControlMaster=no") || !strings.HasSuffix(strings.TrimSpace(string(args)), "box.example true") {
			t.Errorf("the check's command line: %s", args)
		}
	}
}
