package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// stop --suspend saves the running VM; start resumes it with its
// processes; a state that cannot be loaded is reported and kept until
// start --cold; a save killed halfway leaves a stopped sandbox, not a
// suspended one.
func TestSuspendResume(t *testing.T) {
	env := testHome(t)
	must(t, env, "create", "--name", "su", "--memory", "384")
	pid := strings.TrimSpace(must(t, env, "exec", "su", "--", "sh", "-c", "nohup sleep 10000 >/dev/null 2>&1 & echo $!; echo kept > /root/file"))
	if _, err := strconv.Atoi(pid); err != nil {
		t.Fatalf("sleep pid: %q", pid)
	}
	s := get(t, env, "su")
	ownerPID := s.Owner.PID

	// The guest loses its lease before the save (its address gone), and
	// the address recorded with the save is stale: a resume renews the
	// lease and reports the address the guest has then.
	must(t, env, "exec", "su", "--", "busybox", "ip", "-4", "addr", "flush", "dev", "eth0")
	out := must(t, env, "stop", "--suspend", "su")
	t.Logf("%s", strings.TrimSpace(out))
	sj := filepath.Join(s.Dir, "suspend.json")
	if b, err := os.ReadFile(sj); err == nil {
		var rec map[string]any
		json.Unmarshal(b, &rec)
		rec["guest_ip"] = "10.99.0.5"
		b, _ = json.Marshal(rec)
		os.WriteFile(sj, b, 0o600)
	}
	waitGone(t, ownerPID, "owner after suspend")
	if s := get(t, env, "su"); s.State != "suspended" || s.Owner != nil {
		t.Fatalf("after stop --suspend: %+v", s)
	}
	if list := must(t, env, "list"); !strings.Contains(list, "suspended") {
		t.Fatalf("list does not show suspended:\n%s", list)
	}
	fails(t, env, "is suspended: `heyvm start su` resumes it", "exec", "su", "--", "true")
	// No heyvm process is left to kill: the saved VM lives in files only.
	for _, f := range []string{"suspend.state", "suspend.json"} {
		if fi, err := os.Stat(filepath.Join(s.Dir, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, fi, err)
		}
	}

	if out := must(t, env, "start", "su"); !strings.Contains(out, "resumed su") {
		t.Fatalf("start of a suspended sandbox: %q", out)
	}
	got := must(t, env, "exec", "su", "--", "sh", "-c", "kill -0 "+pid+" && echo alive; cat /root/file; date +%s")
	f := strings.Fields(got)
	if len(f) != 3 || f[0] != "alive" || f[1] != "kept" {
		t.Fatalf("after resume: %q", got)
	}
	guest, _ := strconv.ParseInt(f[2], 10, 64)
	if d := time.Now().Unix() - guest; d < -2 || d > 2 {
		t.Errorf("the resumed guest's clock is %d s off the host's", d)
	}
	addr := must(t, env, "exec", "su", "--", "sh", "-c", "busybox ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1; busybox ip route | grep -c '^default'")
	var resumed struct {
		Owner struct {
			GuestIP string `json:"guest_ip"`
		} `json:"owner"`
	}
	json.Unmarshal([]byte(must(t, env, "get", "--json", "su")), &resumed)
	if a := strings.Fields(addr); len(a) != 2 || a[0] != resumed.Owner.GuestIP || a[0] == "10.99.0.5" || a[1] != "1" {
		t.Errorf("after a resume with a lost lease: the guest has %q, heyvm says %q", addr, resumed.Owner.GuestIP)
	}
	for _, f := range []string{"suspend.state", "suspend.json"} {
		if _, err := os.Stat(filepath.Join(s.Dir, f)); !os.IsNotExist(err) {
			t.Errorf("%s still there after the resume", f)
		}
	}

	// A damaged saved state: start fails with the way out and keeps it.
	must(t, env, "stop", "--suspend", "su")
	state := filepath.Join(s.Dir, "suspend.state")
	fh, err := os.OpenFile(state, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fh.WriteAt(make([]byte, 1<<20), 4096)
	fh.Close()
	fails(t, env, "start --cold su", "start", "su")
	if s := get(t, env, "su"); s.State != "suspended" {
		t.Fatalf("after a failed resume: %+v", s)
	}
	out = runOK(t, env, "start", "--cold", "su")
	if got := must(t, env, "exec", "su", "--", "sh", "-c", "cat /root/file; kill -0 "+pid+" 2>/dev/null && echo still-alive; true"); strings.TrimSpace(got) != "kept" {
		t.Fatalf("after start --cold: %q (%s)", got, out)
	}

	// The owner killed while it saves: the sandbox is stopped, not
	// suspended, and boots again.
	s = get(t, env, "su")
	done := make(chan struct{})
	go func() { runIn(env, "", "stop", "--suspend", "su"); close(done) }()
	tmp := filepath.Join(s.Dir, "suspend.state.tmp")
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(tmp); err == nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	syscall.Kill(s.Owner.PID, syscall.SIGKILL)
	waitGone(t, s.Owner.PID, "owner")
	<-done
	if s := get(t, env, "su"); s.State != "stopped" {
		t.Fatalf("after kill -9 of the owner during a suspend: %+v", s)
	}
	must(t, env, "start", "su")
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Error("a half-written state was left behind")
	}
	must(t, env, "exec", "su", "--", "true")
}

// A sandbox with a shared folder cannot be saved on QEMU 7.2: refused
// with the reason, and it keeps running.
func TestSuspendRefusedWithShares(t *testing.T) {
	env := testHome(t)
	must(t, env, "create", "--name", "sh1", "--memory", "384", "--mount", t.TempDir()+":/mnt/x")
	fails(t, env, "shared folders", "stop", "--suspend", "sh1")
	must(t, env, "exec", "sh1", "--", "true")
	must(t, env, "stop", "sh1")
	fails(t, env, "nothing to suspend", "stop", "--suspend", "sh1")
}

// runOK is must, for commands whose stderr carries notes.
func runOK(t *testing.T, env []string, args ...string) string {
	t.Helper()
	out, errOut, code := runIn(env, "", args...)
	if code != 0 {
		t.Fatalf("heyvm %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out + errOut
}
