package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// childrenOf lists the pids whose parent is pid.
func childrenOf(pid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so cut at ')'.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 1 {
			if pp, _ := strconv.Atoi(f[1]); pp == pid {
				out = append(out, n)
			}
		}
	}
	return out
}

// crash kills a sandbox's owner and its VM with SIGKILL, as a host
// power cut would, and waits until heyvm sees it stopped.
func crash(t *testing.T, env []string, name string) {
	t.Helper()
	s := get(t, env, name)
	if s.Owner == nil {
		t.Fatalf("%s has no owner", name)
	}
	kids := childrenOf(s.Owner.PID)
	syscall.Kill(s.Owner.PID, syscall.SIGKILL)
	for _, k := range kids {
		syscall.Kill(k, syscall.SIGKILL)
	}
	deadline := time.Now().Add(20 * time.Second)
	for get(t, env, name).State != "stopped" {
		if time.Now().After(deadline) {
			t.Fatalf("%s still not stopped after kill -9", name)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestAutostartAfterSimulatedRestart(t *testing.T) {
	env := testHome(t)
	unitDir := t.TempDir()
	env = append(env, "HEYVM_AUTOSTART_UNIT_DIR="+unitDir)
	must(t, env, "create", "--name", "marked", "--memory", "512", "--autostart")
	must(t, env, "create", "--name", "plain", "--memory", "512")
	units, _ := filepath.Glob(filepath.Join(unitDir, "heyvm-autostart*.service"))
	if len(units) != 1 {
		t.Fatalf("after create --autostart, units: %v", units)
	}
	unit, _ := os.ReadFile(units[0])
	if !strings.Contains(string(unit), "ExecStart="+heyvmBin+" autostart run") || !strings.Contains(string(unit), "HEYO_HOME="+homeOf(env)) {
		t.Fatalf("unit:\n%s", unit)
	}
	if !strings.Contains(must(t, env, "get", "--json", "marked"), `"autostart": true`) {
		t.Fatal("get --json does not show the mark")
	}
	if st := must(t, env, "autostart", "status"); !strings.Contains(st, "marked (") || strings.Contains(st, "plain") {
		t.Fatalf("status:\n%s", st)
	}

	crash(t, env, "marked")
	crash(t, env, "plain")
	// A marked sandbox that cannot start (its image is gone) is reported,
	// makes the run fail, and does not keep the others from starting.
	broken := writeFakeSandbox(t, env, "bad000000000", "id: bad000000000\nname: broken\nimage: nosuch:1\nbackend: qemu\narch: amd64\ncpus: 1\nmemory_mib: 256\nautostart: true\n")
	out, errOut, code := runIn(env, "", "autostart", "run")
	if code == 0 || !strings.Contains(errOut, "broken did not start") || !strings.Contains(errOut, "1 of 2 marked sandboxes did not start") || !strings.Contains(out, "started marked") {
		t.Fatalf("autostart run with a broken sandbox: exit %d\n%s\n%s", code, out, errOut)
	}
	os.RemoveAll(broken)
	if got := strings.TrimSpace(must(t, env, "exec", "marked", "--", "echo", "back")); got != "back" {
		t.Fatalf("marked sandbox after autostart run: %q", got)
	}
	if s := get(t, env, "plain"); s.State != "stopped" {
		t.Fatalf("unmarked sandbox is %s", s.State)
	}
	// Running it again is idempotent.
	if out := must(t, env, "autostart", "run"); !strings.Contains(out, "marked is already running") {
		t.Fatalf("second autostart run: %s", out)
	}

	// The unit's stop action stops marked sandboxes cleanly.
	if out := must(t, env, "autostart", "stop"); !strings.Contains(out, "stopped marked") {
		t.Fatalf("autostart stop: %s", out)
	}
	if s := get(t, env, "marked"); s.State != "stopped" || s.LastStop == nil || s.LastStop.Reason != "stopped" {
		t.Fatalf("after autostart stop: %+v", s)
	}

	// on/off, and the unit goes with the last mark (here: rm of the marked one).
	must(t, env, "autostart", "on", "plain")
	must(t, env, "autostart", "off", "plain")
	if _, err := os.Stat(units[0]); err != nil {
		t.Fatal("unit removed while a sandbox is still marked")
	}
	must(t, env, "rm", "--force", "--yes", "marked")
	if _, err := os.Stat(units[0]); err == nil {
		t.Fatal("unit still installed after the last marked sandbox was removed")
	}
	fails(t, env, "unknown command", "autostart", "onn")
}
