package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBadInputs(t *testing.T) {
	env := testHome(t)
	fails(t, env, "no such sandbox", "get", "nosuch")
	fails(t, env, "no such sandbox", "exec", "nosuch", "--", "true")
	fails(t, env, "invalid sandbox name", "create", "--name", "Bad_Name")
	fails(t, env, "no image", "create", "--image", "nosuch:1")
	fails(t, env, `contains ".."`, "create", "--image", "../x")
	fails(t, env, "contains '/'", "create", "--image", "a/b")
	fails(t, env, `backend "apple_virt" is not available here`, "create", "--backend", "apple_virt")
	fails(t, env, "available: qemu", "create", "--backend", "apple_virt")
	fails(t, env, `unknown backend "xen"`, "create", "--backend", "xen")
	fails(t, env, "--memory 0 is too small", "create", "--memory", "0")
	fails(t, env, `invalid argument "lots"`, "create", "--memory", "lots")
	fails(t, env, `invalid argument "big"`, "create", "--disk-size", "big")
	fails(t, env, "not KEY=VALUE", "create", "--env", "novalue")
	// None of that left anything behind.
	des, _ := os.ReadDir(filepath.Join(homeOf(env), "sandboxes"))
	for _, d := range des {
		if !strings.HasPrefix(d.Name(), ".") {
			t.Errorf("bad input left sandbox %s", d.Name())
		}
	}
}

// writeFakeSandbox makes a stopped sandbox directory by hand.
func writeFakeSandbox(t *testing.T, env []string, id, yaml string) string {
	dir := filepath.Join(homeOf(env), "sandboxes", id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "sandbox.yaml"), []byte(yaml), 0o600)
	return dir
}

func TestAmbiguousPrefixAndCorruptConfig(t *testing.T) {
	env := testHome(t)
	writeFakeSandbox(t, env, "abc111111111", "id: abc111111111\nname: one\nimage: debian:12\nbackend: qemu\n")
	writeFakeSandbox(t, env, "abc222222222", "id: abc222222222\nname: two\nimage: debian:12\nbackend: qemu\n")
	fails(t, env, "ambiguous", "get", "abc")
	if s := get(t, env, "abc1"); s.Name != "one" {
		t.Fatalf("unique prefix: %+v", s)
	}
	bad := writeFakeSandbox(t, env, "bad000000000", "id: bad000000000\nname: [trunc")
	// A damaged sandbox is a row of its own, in the table and in JSON.
	out, errOut, code := runIn(env, "", "list")
	if code != 0 || !strings.Contains(out, "one") || !strings.Contains(out, "two") || !strings.Contains(out, "bad000000000") || !strings.Contains(out, "damaged: "+filepath.Join(bad, "sandbox.yaml")) || !strings.Contains(out, "rm --force") {
		t.Fatalf("list with a corrupt sandbox: %d\n%s\n%s", code, out, errOut)
	}
	var rows []struct {
		ID, State, Error string
	}
	if err := json.Unmarshal([]byte(must(t, env, "list", "--json")), &rows); err != nil || len(rows) != 3 {
		t.Fatalf("list --json with a corrupt sandbox: %v %+v", err, rows)
	}
	if r := rows[2]; r.ID != "bad000000000" || r.State != "damaged" || !strings.Contains(r.Error, "sandbox.yaml") {
		t.Fatalf("the damaged sandbox in list --json: %+v", r)
	}
	fails(t, env, filepath.Join(bad, "sandbox.yaml"), "get", "bad000000000")
	fails(t, env, "--yes", "rm", "--force", "bad000000000")
	must(t, env, "rm", "--force", "--yes", "bad000000000")
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Fatal("corrupt sandbox not removed")
	}
	if _, err := os.Stat(filepath.Join(homeOf(env), "sandboxes", "abc111111111")); err != nil {
		t.Fatal("removing one sandbox touched another")
	}
	// rm takes several; a name that matches nothing removes none of them.
	fails(t, env, "nothing was removed", "rm", "--yes", "one", "nosuch")
	if s := get(t, env, "one"); s.Name != "one" {
		t.Fatal("a failed rm of two removed the first")
	}
	must(t, env, "rm", "--yes", "one", "two")
	for _, id := range []string{"abc111111111", "abc222222222"} {
		if _, err := os.Stat(filepath.Join(homeOf(env), "sandboxes", id)); !os.IsNotExist(err) {
			t.Errorf("rm one two left %s", id)
		}
	}
}
