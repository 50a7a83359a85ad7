package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// bootOf says how a running sandbox began: cold, warm or resumed.
func bootOf(t *testing.T, env []string, name string) (boot, coldWhy string) {
	t.Helper()
	var v struct {
		Owner *struct {
			Boot    string `json:"boot"`
			ColdWhy string `json:"cold_why"`
		} `json:"owner"`
	}
	if err := json.Unmarshal([]byte(must(t, env, "get", "--json", name)), &v); err != nil || v.Owner == nil {
		t.Fatalf("get --json %s: %v %+v", name, err, v)
	}
	return v.Owner.Boot, v.Owner.ColdWhy
}

// identity is what must differ between two sandboxes restored from one
// snapshot.
type identity struct{ host, machineID, hostKey, random string }

func identityOf(t *testing.T, env []string, name string) (identity, int64) {
	t.Helper()
	out := must(t, env, "exec", name, "--", "sh", "-c", "hostname; cat /etc/machine-id; cut -d' ' -f2 /etc/ssh/ssh_host_ed25519_key.pub; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; date +%s")
	f := strings.Fields(out)
	if len(f) != 5 {
		t.Fatalf("identity of %s: %q", name, out)
	}
	clock, _ := strconv.ParseInt(f[4], 10, 64)
	return identity{f[0], f[1], f[2], f[3]}, clock
}

// Ready snapshots: made on request or after a cold create, restored by
// the next creates of that shape with identities of their own, and never
// used once the image changed or when damaged.
func TestWarmStart(t *testing.T) {
	env := testHome(t)
	home := homeOf(env)
	snapDir := filepath.Join(home, "cache", "warm", "qemu", "debian:12", "amd64-2cpu-384m-c")

	// Two sandboxes from one snapshot.
	must(t, env, "images", "warm", "debian:12", "--memory", "384")
	if _, err := os.Stat(filepath.Join(snapDir, "warm.json")); err != nil {
		t.Fatalf("no snapshot after images warm: %v", err)
	}
	h := freePort(t)
	share := t.TempDir()
	os.WriteFile(filepath.Join(share, "from-host"), []byte("hello\n"), 0o644)
	// The share is given through a symlink to it, which is shared as the
	// directory it points at.
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(share, link); err != nil {
		t.Fatal(err)
	}
	must(t, env, "create", "--name", "wa", "--memory", "384", "--port", fmt.Sprintf("%d:8080", h), "--mount", link+":/mnt/share")
	must(t, env, "create", "--name", "wb", "--memory", "384")
	for _, n := range []string{"wa", "wb"} {
		if boot, why := bootOf(t, env, n); boot != "warm" {
			t.Fatalf("%s: boot %q (%s), want warm", n, boot, why)
		}
	}
	a, clockA := identityOf(t, env, "wa")
	b, clockB := identityOf(t, env, "wb")
	now := time.Now().Unix()
	if a.host != "wa" || b.host != "wb" {
		t.Errorf("hostnames: %q %q", a.host, b.host)
	}
	if a.machineID == b.machineID || a.hostKey == b.hostKey || a.random == b.random {
		t.Errorf("restored sandboxes share an identity:\n%+v\n%+v", a, b)
	}
	for _, c := range []int64{clockA, clockB} {
		if d := now - c; d < -2 || d > 2 {
			t.Errorf("a restored guest's clock is %d s off the host's", d)
		}
	}
	// The DHCP lease was renewed (the template's last event was its
	// boot's "bound"); the address stayed, so nothing in flight broke.
	renewed := ""
	for i := 0; i < 50 && renewed != "renew"; i++ {
		renewed = strings.TrimSpace(must(t, env, "exec", "wa", "--", "cat", "/run/heyvm-dhcp.last"))
		time.Sleep(200 * time.Millisecond)
	}
	if renewed != "renew" {
		t.Errorf("the restored guest's last DHCP event is %q, want renew", renewed)
	}
	must(t, env, "exec", "wa", "--", "sh", "-c", "echo only-a > /root/mine")
	if out, _, code := runIn(env, "", "exec", "wb", "--", "cat", "/root/mine"); code == 0 {
		t.Errorf("a file written in one restored sandbox shows in the other: %q", out)
	}
	// The share, hot-plugged into the restored VM, works both ways.
	if got := must(t, env, "exec", "wa", "--", "sh", "-c", "cat /mnt/share/from-host && echo back > /mnt/share/from-guest"); got != "hello\n" {
		t.Errorf("share in a warm sandbox: %q", got)
	}
	if b, err := os.ReadFile(filepath.Join(share, "from-guest")); err != nil || string(b) != "back\n" {
		t.Errorf("a file the warm guest wrote to its share: %q %v", b, err)
	}
	warmView := userView(t, env, "wa", share, "warm")
	// The forward works on a restored sandbox.
	must(t, env, "exec", "wa", "--", "sh", "-c", startHTTPD)
	if got := httpGet(t, h); !strings.Contains(got, "served") {
		t.Fatalf("forward on a warm sandbox: %q", got)
	}
	// The pinned host key is the new one: OpenSSH's config agrees.
	if kh, _ := os.ReadFile(filepath.Join(get(t, env, "wa").Dir, "known_hosts")); !strings.Contains(string(kh), a.hostKey) {
		t.Errorf("known_hosts does not pin the restored sandbox's new key")
	}
	// A later start of a warm-made sandbox boots its own disk.
	must(t, env, "stop", "wb")
	must(t, env, "start", "wb")
	if boot, _ := bootOf(t, env, "wb"); boot != "cold" {
		t.Errorf("second start of wb: %q, want cold", boot)
	}
	if got := strings.TrimSpace(must(t, env, "exec", "wb", "--", "hostname")); got != "wb" {
		t.Errorf("wb after a cold start is %q", got)
	}
	must(t, env, "rm", "--force", "--yes", "wa")
	must(t, env, "rm", "--force", "--yes", "wb")
	if _, err := os.Stat(filepath.Join(snapDir, "warm.json")); err != nil {
		t.Fatalf("the ready snapshot is gone after its sandboxes: %v", err)
	}

	// heyvm's managed key replaced since the snapshot was made: a warm
	// sandbox takes the new one.
	os.RemoveAll(filepath.Join(home, "keys"))
	must(t, env, "create", "--name", "wk", "--memory", "384")
	if boot, why := bootOf(t, env, "wk"); boot != "warm" {
		t.Fatalf("wk: %q (%s)", boot, why)
	}
	must(t, env, "exec", "wk", "--", "true")
	must(t, env, "rm", "--force", "--yes", "wk")

	// --cold ignores the snapshot.
	must(t, env, "create", "--name", "wc", "--memory", "384", "--cold", "--mount", share+":/mnt/share")
	if boot, _ := bootOf(t, env, "wc"); boot != "cold" {
		t.Errorf("create --cold: %q", boot)
	}
	// Warm and cold do not differ in what a user sees.
	if coldView := userView(t, env, "wc", share, "cold"); coldView != warmView {
		t.Errorf("a warm sandbox differs from a cold one:\nwarm: %s\ncold: %s", warmView, coldView)
	}
	must(t, env, "rm", "--force", "--yes", "wc")

	// The image changed (its digest no longer matches): not used, dropped.
	meta := filepath.Join(snapDir, "warm.json")
	b0, _ := os.ReadFile(meta)
	os.WriteFile(meta, []byte(strings.Replace(string(b0), `"rootfs_sha256": "`, `"rootfs_sha256": "0`, 1)), 0o600)
	must(t, env, "create", "--name", "wd", "--memory", "384")
	if boot, _ := bootOf(t, env, "wd"); boot != "cold" {
		t.Errorf("a snapshot of another image version was used: %q", boot)
	}
	if _, err := os.Stat(snapDir); !os.IsNotExist(err) {
		t.Errorf("the stale snapshot was kept")
	}
	must(t, env, "rm", "--force", "--yes", "wd")

	// A damaged snapshot: a cold boot with a note, and the snapshot dropped.
	must(t, env, "images", "warm", "debian:12", "--memory", "384")
	fh, err := os.OpenFile(filepath.Join(snapDir, "suspend.state"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fh.WriteAt(make([]byte, 1<<20), 4096)
	fh.Close()
	_, errOut, code := runIn(env, "", "create", "--name", "we", "--memory", "384")
	if code != 0 || !strings.Contains(errOut, "booted cold: its ready snapshot could not be restored") {
		t.Fatalf("create from a damaged snapshot: exit %d, stderr %q", code, errOut)
	}
	must(t, env, "exec", "we", "--", "true")
	if _, err := os.Stat(snapDir); !os.IsNotExist(err) {
		t.Errorf("the damaged snapshot was kept")
	}
	must(t, env, "rm", "--force", "--yes", "we")

	// With no snapshot, a create boots cold and makes one in the
	// background for the next.
	auto := append(append([]string(nil), env...), "HEYVM_AUTO_WARM=1")
	must(t, auto, "create", "--name", "wf", "--memory", "384")
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := os.Stat(filepath.Join(snapDir, "warm.json")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(filepath.Dir(snapDir), "warm.log"))
			t.Fatalf("no snapshot made in the background:\n%s", log)
		}
		time.Sleep(200 * time.Millisecond)
	}
	must(t, auto, "create", "--name", "wg", "--memory", "384")
	if boot, why := bootOf(t, auto, "wg"); boot != "warm" {
		t.Errorf("the create after a background snapshot: %q (%s)", boot, why)
	}
}

// userView is what a user of a sandbox sees of its defaults: the umask of
// an SSH session, the mode of a file it creates, in the guest and, through
// a share, on the host (tag keeps the files of two sandboxes apart).
func userView(t *testing.T, env []string, name, share, tag string) string {
	t.Helper()
	out := must(t, env, "exec", name, "--", "sh", "-c", "umask; cd /tmp && touch f-"+tag+" && stat -c %a f-"+tag+" && touch /mnt/share/f-"+tag)
	fi, err := os.Stat(filepath.Join(share, "f-"+tag))
	if err != nil {
		t.Fatalf("%s's file on the share: %v", name, err)
	}
	return fmt.Sprintf("%s host:%o", strings.Join(strings.Fields(out), " "), fi.Mode().Perm())
}
