package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestTestVM(t *testing.T) {
	env := testHome(t)
	for _, args := range [][]string{{"test-vm"}, {"test-vm", "--detach"}} {
		out, errOut, code := runIn(env, "", args...)
		if code != 0 || !strings.HasPrefix(out, "PASS") {
			t.Fatalf("heyvm %v: exit %d\n%s\n%s", args, code, out, errOut)
		}
		if !strings.Contains(out, "tcg") && !strings.Contains(out, "kvm") {
			t.Errorf("test-vm does not name the accelerator: %s", out)
		}
	}
	// It cleans up after itself.
	if out := must(t, env, "list"); strings.Count(out, "\n") != 1 {
		t.Fatalf("test-vm left sandboxes:\n%s", out)
	}
}

func TestExecStreamsAndExitStatus(t *testing.T) {
	needVM(t)
	out, errOut, code := runIn(sharedEnv, "line1\nline2\n", "exec", shared, "--", "sh", "-c", "wc -l; echo to-stderr >&2; exit 7")
	if code != 7 || strings.TrimSpace(out) != "2" || strings.TrimSpace(errOut) != "to-stderr" {
		t.Fatalf("exit %d stdout %q stderr %q", code, out, errOut)
	}
	out = must(t, sharedEnv, "exec", "--cwd", "/tmp", "--env", "A=b c", shared, "--", "sh", "-c", `pwd; echo "$A"; echo "$SANDBOX_ENV"`)
	if out != "/tmp\nb c\nfrom-create\n" {
		t.Fatalf("cwd/env: %q", out)
	}
	if out := must(t, sharedEnv, "exec", "--user", "nobody", shared, "--", "id", "-un"); out != "nobody\n" {
		t.Fatalf("--user: %q", out)
	}
	// Arguments arrive intact, quotes and all.
	if out := must(t, sharedEnv, "exec", shared, "--", "printf", "%s|", "a b", "it's", "$HOME"); out != "a b|it's|$HOME|" {
		t.Fatalf("argv: %q", out)
	}
	s := get(t, sharedEnv, shared)
	if s.State != "running" || s.Owner == nil || s.Owner.Accelerator != "tcg" && s.Owner.Accelerator != "kvm" {
		t.Fatalf("get: %+v", s)
	}
	if g := must(t, sharedEnv, "get", shared); !strings.Contains(g, "Accel:") {
		t.Fatalf("get does not show the accelerator:\n%s", g)
	}
}

func TestExecForwardsSignals(t *testing.T) {
	needVM(t)
	cmd := exec.Command(heyvmBin, "exec", shared, "--", "sh", "-c", `trap 'echo got-int; exit 42' INT; echo armed; while :; do sleep 0.1; done`)
	cmd.Env = sharedEnv
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _ := stdout.Read(buf) // wait until the trap is set
	if !strings.Contains(string(buf[:n]), "armed") {
		t.Fatalf("got %q", buf[:n])
	}
	cmd.Process.Signal(syscall.SIGINT)
	rest := make([]byte, 64)
	m, _ := stdout.Read(rest)
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 42 || !strings.Contains(string(rest[:m]), "got-int") {
		t.Fatalf("after SIGINT: %v %q", err, rest[:m])
	}
}

func TestSSHConfigWorksWithOpenSSH(t *testing.T) {
	needVM(t)
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Skip("OpenSSH client not installed")
	}
	cfg := filepath.Join(t.TempDir(), "config")
	os.WriteFile(cfg, []byte(must(t, sharedEnv, "ssh-config", shared)), 0o600)
	out, err := exec.Command("ssh", "-F", cfg, shared, "hostname").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != shared {
		t.Fatalf("ssh -F: %v %s", err, out)
	}
}

func TestLifecycle(t *testing.T) {
	env := testHome(t)
	id := strings.TrimSpace(must(t, env, "create", "--name", "lc", "--memory", "384", "--print-id"))
	if len(id) != 12 {
		t.Fatalf("print-id: %q", id)
	}
	dir := filepath.Join(homeOf(env), "sandboxes", id)
	for _, f := range []string{"sandbox.yaml", "base.img", "rootfs.qcow2", "owner.json", "owner.log", "console.log", "known_hosts"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}
	for _, f := range []string{"sandbox.yaml", "known_hosts", "owner.json", "rootfs.qcow2"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err == nil && fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s is mode %v", f, fi.Mode())
		}
	}
	must(t, env, "exec", id[:5], "--", "sh", "-c", "echo persisted >/root/note")
	if out := must(t, env, "stop", "lc"); !strings.Contains(out, "stopped lc") {
		t.Fatalf("stop: %s", out)
	}
	if out := must(t, env, "stop", "lc"); !strings.Contains(out, "already stopped") {
		t.Fatalf("second stop: %s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "owner.json")); !os.IsNotExist(err) {
		t.Fatal("owner.json survives stop")
	}
	s := get(t, env, "lc")
	if s.State != "stopped" || s.LastStop == nil || s.LastStop.Reason != "stopped" {
		t.Fatalf("after stop: %+v", s)
	}
	fails(t, env, "is stopped: start it with `heyvm start lc`", "exec", "lc", "--", "true")
	// The ssh-config block outlives a stop (its ProxyCommand finds the
	// sandbox by id); the proxy itself says the sandbox is stopped.
	if out := must(t, env, "ssh-config", "lc"); !strings.Contains(out, "ssh-proxy") {
		t.Errorf("ssh-config of a stopped sandbox:\n%s", out)
	}
	fails(t, env, "is stopped: start it with `heyvm start lc`", "ssh-proxy", "lc")
	if out := must(t, env, "start", "lc"); !strings.Contains(out, "started lc") {
		t.Fatalf("start: %s", out)
	}
	if out := must(t, env, "start", "lc"); !strings.Contains(out, "already running") {
		t.Fatalf("second start: %s", out)
	}
	if out := must(t, env, "exec", "lc", "--", "cat", "/root/note"); out != "persisted\n" {
		t.Fatalf("disk not kept across stop/start: %q", out)
	}
	must(t, env, "restart", "lc")
	must(t, env, "exec", "lc", "--", "true")
	fails(t, env, "is running", "rm", "--yes", "lc")
	fails(t, env, "--yes", "rm", "--force", "lc") // stdin is not a terminal
	must(t, env, "rm", "--force", "--yes", "lc")
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatal("rm left the directory")
	}
	fails(t, env, "no such sandbox", "get", "lc")
}

func TestDiskSizeGrowsGuestFilesystem(t *testing.T) {
	env := testHome(t)
	must(t, env, "create", "--name", "big", "--disk-size", "6144", "--memory", "384")
	out := must(t, env, "exec", "big", "--", "sh", "-c", "df -k / | awk 'NR==2 {print $2}'")
	kb, _ := strconv.Atoi(strings.TrimSpace(out))
	if kb < 5<<20 {
		t.Fatalf("root fs is %d KiB, want about 6 GiB", kb)
	}
}

func TestConcurrentStartsStartOneVM(t *testing.T) {
	env := testHome(t)
	must(t, env, "create", "--name", "conc", "--memory", "384")
	must(t, env, "stop", "conc")
	var wg sync.WaitGroup
	outs := make([]string, 2)
	codes := make([]int, 2)
	for i := range outs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			outs[i], _, codes[i] = runIn(env, "", "start", "conc")
		}(i)
	}
	wg.Wait()
	joined := outs[0] + outs[1]
	if codes[0] != 0 || codes[1] != 0 || strings.Count(joined, "started conc") != 1 || strings.Count(joined, "already running") != 1 {
		t.Fatalf("two starts: %v %q", codes, joined)
	}
	log, _ := os.ReadFile(filepath.Join(get(t, env, "conc").Dir, "owner.log"))
	if n := strings.Count(string(log), "starting sandbox"); n != 2 { // the create, and exactly one of the starts
		t.Fatalf("%d owners started:\n%s", n, log)
	}
}

func TestConcurrentCreateSameName(t *testing.T) {
	env := testHome(t)
	var wg sync.WaitGroup
	errs := make([]string, 2)
	codes := make([]int, 2)
	for i := range codes {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i], codes[i] = runIn(env, "", "create", "--name", "dup", "--memory", "384")
		}(i)
	}
	wg.Wait()
	if codes[0]+codes[1] == 0 || codes[0] != 0 && codes[1] != 0 {
		t.Fatalf("exit codes %v: %q", codes, errs)
	}
	if !strings.Contains(errs[0]+errs[1], `a sandbox named "dup" already exists`) {
		t.Fatalf("errors: %q", errs)
	}
}

// qemuPIDOf finds the qemu child of an owner process.
func qemuPIDOf(t *testing.T, ownerPID int) int {
	t.Helper()
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, st := range stats {
		b, err := os.ReadFile(st)
		if err != nil {
			continue
		}
		// Fields after the command name (which may hold spaces): state ppid ...
		rest := string(b[strings.LastIndexByte(string(b), ')')+2:])
		f := strings.Fields(rest)
		if len(f) < 2 || f[1] != strconv.Itoa(ownerPID) {
			continue
		}
		pid, _ := strconv.Atoi(strings.Split(st, "/")[2])
		if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); strings.Contains(exe, "qemu-system") {
			return pid
		}
	}
	t.Fatalf("no qemu child of owner %d", ownerPID)
	return 0
}

func waitGone(t *testing.T, pid int, what string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || strings.Contains(string(b), ") Z ") {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s (pid %d) still alive", what, pid)
}

func TestKillOwnerKillsQemu(t *testing.T) {
	env := testHome(t)
	must(t, env, "create", "--name", "k1", "--memory", "384")
	s := get(t, env, "k1")
	qemu := qemuPIDOf(t, s.Owner.PID)
	syscall.Kill(s.Owner.PID, syscall.SIGKILL)
	waitGone(t, s.Owner.PID, "owner")
	waitGone(t, qemu, "qemu after its owner was killed")
	out := must(t, env, "list")
	if !strings.Contains(out, "stopped (crashed)") {
		t.Fatalf("list after kill -9 of the owner:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(s.Dir, "owner.json")); !os.IsNotExist(err) {
		t.Fatal("stale owner.json kept")
	}
	// And it starts again.
	must(t, env, "start", "k1")
	must(t, env, "exec", "k1", "--", "true")
}

func TestKillQemuOwnerCleansUp(t *testing.T) {
	env := testHome(t)
	must(t, env, "create", "--name", "k2", "--memory", "384")
	s := get(t, env, "k2")
	qemu := qemuPIDOf(t, s.Owner.PID)
	syscall.Kill(qemu, syscall.SIGKILL)
	waitGone(t, s.Owner.PID, "owner after qemu was killed")
	if _, err := os.Stat(filepath.Join(s.Dir, "owner.json")); !os.IsNotExist(err) {
		t.Fatal("owner left owner.json")
	}
	s = get(t, env, "k2")
	if s.State != "stopped" || s.LastStop == nil || s.LastStop.Reason != "crashed" {
		t.Fatalf("after kill -9 of qemu: %+v", s)
	}
}

func TestTenSandboxesSideBySide(t *testing.T) {
	env := testHome(t)
	var wg sync.WaitGroup
	errs := make(chan string, 10)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			name := fmt.Sprintf("ten-%d", i)
			if out, errOut, code := runIn(env, "", "create", "--name", name, "--cpus", "1", "--memory", "256"); code != 0 {
				errs <- fmt.Sprintf("create %s: %s %s", name, out, errOut)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	ports := map[int]bool{}
	for i := 0; i < 10; i++ {
		name := fmt.Sprintf("ten-%d", i)
		must(t, env, "exec", name, "--", "sh", "-c", "echo "+name+" >/root/who")
		s := get(t, env, name)
		ports[s.Owner.SSHPort] = true
	}
	for i := 0; i < 10; i++ {
		name := fmt.Sprintf("ten-%d", i)
		if out := must(t, env, "exec", name, "--", "sh", "-c", "hostname; cat /root/who"); out != name+"\n"+name+"\n" {
			t.Errorf("%s answered %q", name, out)
		}
	}
	if len(ports) != 10 {
		t.Errorf("ssh ports not distinct: %v", ports)
	}
}
