package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heyvm/heyvm/internal/hostinfo"
)

// smallFS makes and mounts an ext4 file system of sizeMiB for HEYO_HOME,
// removed when the test ends. The images stay on the big cache (a
// symlink), so only sandbox disks land on the small one.
func smallFS(t *testing.T, sizeMiB int) (mnt string, env []string) {
	t.Helper()
	needVM(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.img")
	mnt = filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o700)
	for _, c := range [][]string{
		{"truncate", "-s", fmt.Sprintf("%dM", sizeMiB), img},
		{"mkfs.ext4", "-q", "-m", "0", img},
		{"mount", "-o", "loop", img, mnt},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Skipf("cannot make a loop-mounted file system (%s: %v: %s)", c[0], err, out)
		}
	}
	home := filepath.Join(mnt, "home")
	os.Mkdir(home, 0o700)
	os.Symlink(filepath.Join(cacheHome, "images"), filepath.Join(home, "images"))
	env = append(os.Environ(), "HEYO_HOME="+home)
	t.Cleanup(func() {
		cleanupHome(env)
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			exec.Command("umount", "-l", mnt).Run()
			t.Logf("umount %s: %v: %s", mnt, err, out)
		}
	})
	return mnt, env
}

func ballast(t *testing.T, path string, mib int) {
	t.Helper()
	if out, err := exec.Command("fallocate", "-l", fmt.Sprintf("%dM", mib), path).CombinedOutput(); err != nil {
		t.Fatalf("fallocate: %v: %s", err, out)
	}
}

func freeMiB(t *testing.T, path string) int64 {
	sp, err := hostinfo.FreeSpace(path)
	if err != nil {
		t.Fatal(err)
	}
	return sp.Free / hostinfo.MiB
}

type pausedJSON struct {
	State string `json:"state"`
	Owner *struct {
		Paused *struct {
			Reason string `json:"reason"`
		} `json:"paused"`
		BrokenShares []string `json:"broken_shares"`
	} `json:"owner"`
}

func getPaused(t *testing.T, env []string, name string) pausedJSON {
	var p pausedJSON
	out, _, _ := runIn(env, "", "get", "--json", name)
	json.Unmarshal([]byte(out), &p)
	return p
}

// TestHostDiskFull fills the host file system from the guest: the VM is
// paused and shown so, the exec in flight ends, and with space back it
// resumes with nothing lost. Then a create that cannot fit fails at once.
func TestHostDiskFull(t *testing.T) {
	mnt, env := smallFS(t, 1200)
	ballast(t, filepath.Join(mnt, "ballast"), 400)
	must(t, env, "create", "--name", "full", "--memory", "512")
	must(t, env, "exec", "full", "--", "sh", "-c", "echo keep > /root/keep && sync")
	t.Logf("free after create: %d MiB", freeMiB(t, mnt))

	// Write more than is left; the exec streams until the VM pauses.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, heyvmBin, "exec", "full", "--", "dd", "if=/dev/zero", "of=/big", "bs=1M", "count=600", "conv=fsync")
	cmd.Env = env
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	execDone := make(chan error, 1)
	go func() { execDone <- cmd.Wait() }()

	var fullAt, pausedAt time.Time
	deadline := time.Now().Add(2 * time.Minute)
	for pausedAt.IsZero() {
		if time.Now().After(deadline) {
			t.Fatalf("the VM was never shown paused; free %d MiB; exec: %s", freeMiB(t, mnt), errb.String())
		}
		if fullAt.IsZero() && freeMiB(t, mnt) < 2 {
			fullAt = time.Now()
		}
		if p := getPaused(t, env, "full"); p.State == "paused" {
			pausedAt = time.Now()
			if p.Owner == nil || p.Owner.Paused == nil || !strings.Contains(p.Owner.Paused.Reason, "host disk full") || !strings.Contains(p.Owner.Paused.Reason, "free on "+mnt) {
				t.Fatalf("paused state: %+v", p)
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	if !fullAt.IsZero() && pausedAt.Sub(fullAt) > 10*time.Second {
		t.Errorf("shown paused %s after the disk filled, want within 10 s", pausedAt.Sub(fullAt).Round(time.Second))
	}
	if out := must(t, env, "list"); !strings.Contains(out, "paused (host disk full:") {
		t.Errorf("list:\n%s", out)
	}
	select {
	case <-execDone:
		if !strings.Contains(errb.String(), "lost the connection to sandbox full") || !strings.Contains(errb.String(), "paused (host disk full") {
			t.Errorf("the exec in flight ended with: %q", errb.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the exec in flight did not end within 30 s of the pause")
	}
	// An exec now says why at once; start refuses while the disk is full.
	fails(t, env, "is paused (host disk full", "exec", "full", "--", "true")
	fails(t, env, "not enough free space on "+mnt, "start", "full")

	// Space back: start (or the owner itself) resumes, nothing is lost.
	os.Remove(filepath.Join(mnt, "ballast"))
	out, errOut, code := runIn(env, "", "start", "full")
	if code != 0 {
		t.Fatalf("start after freeing space: %s %s", out, errOut)
	}
	deadline = time.Now().Add(30 * time.Second)
	for getPaused(t, env, "full").State != "running" {
		if time.Now().After(deadline) {
			t.Fatalf("still %+v after start", getPaused(t, env, "full"))
		}
		time.Sleep(250 * time.Millisecond)
	}
	// The owner's lines written while the disk was full reach owner.log
	// once there is room.
	time.Sleep(3 * time.Second)
	log, _ := os.ReadFile(filepath.Join(get(t, env, "full").Dir, "owner.log"))
	if !strings.Contains(string(log), "owner: VM paused: host disk full") || !strings.Contains(string(log), "owner: VM resumed") {
		t.Errorf("owner.log does not tell the pause and the resume:\n%s", log)
	}
	if got := strings.TrimSpace(must(t, env, "exec", "full", "--", "cat", "/root/keep")); got != "keep" {
		t.Errorf("the guest's earlier file reads %q", got)
	}
	must(t, env, "exec", "full", "--", "sh", "-c", "rm -f /big && sync && echo ok")

	// A create that cannot fit fails at once and leaves nothing.
	if free := freeMiB(t, mnt); free > 300 {
		ballast(t, filepath.Join(mnt, "ballast2"), int(free)-300)
	}
	start := time.Now()
	fails(t, env, "not enough free space on "+mnt, "create", "--name", "nofit")
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the refused create took %s", d)
	}
	if des, _ := os.ReadDir(filepath.Join(homeOf(env), "sandboxes")); len(des) != 2 { // full + .store.lock
		var names []string
		for _, d := range des {
			names = append(names, d.Name())
		}
		t.Errorf("sandboxes after a refused create: %v", names)
	}
}

// qemuOf is the pid of the sandbox's qemu.
func qemuOf(t *testing.T, env []string, name string) int {
	t.Helper()
	s := get(t, env, name)
	for _, k := range childrenOf(s.Owner.PID) {
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", k)); strings.HasPrefix(string(comm), "qemu-system") {
			return k
		}
	}
	t.Fatalf("no qemu under owner %d", s.Owner.PID)
	return 0
}

// TestFrozenVM: exec never hangs on a frozen VM. Two Ctrl-Cs end it at
// once; without any, keepalives end it with the sandbox's state.
func TestFrozenVM(t *testing.T) {
	env := testHome(t)
	must(t, env, "create", "--name", "frozen", "--memory", "512")
	q := qemuOf(t, env, "frozen")
	defer syscall.Kill(q, syscall.SIGCONT)

	start := func() (*exec.Cmd, *bytes.Buffer, chan error) {
		cmd := exec.Command(heyvmBin, "exec", "frozen", "--", "sleep", "100")
		cmd.Env = env
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		time.Sleep(2 * time.Second) // the remote sleep runs
		return cmd, &errb, done
	}

	cmd, errb, done := start()
	syscall.Kill(q, syscall.SIGSTOP)
	cmd.Process.Signal(syscall.SIGINT)
	time.Sleep(500 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGINT)
	second := time.Now()
	select {
	case <-done:
		if d := time.Since(second); d > time.Second {
			t.Errorf("heyvm ended %s after the second Ctrl-C, want within 1 s", d)
		}
		if code := cmd.ProcessState.ExitCode(); code != 130 {
			t.Errorf("exit %d after two Ctrl-Cs, want 130", code)
		}
		if !strings.Contains(errb.String(), "may still be running") {
			t.Errorf("stderr: %q", errb.String())
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("heyvm exec did not end after two Ctrl-Cs on a frozen VM")
	}

	// One SIGTERM: heyvm gives up 3 s later with 143.
	syscall.Kill(q, syscall.SIGCONT)
	cmd, errb, done = start()
	syscall.Kill(q, syscall.SIGSTOP)
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		if code := cmd.ProcessState.ExitCode(); code != 143 {
			t.Errorf("exit %d after SIGTERM, want 143 (%q)", code, errb.String())
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("heyvm exec did not end 3 s after SIGTERM on a frozen VM")
	}

	// No signal at all: keepalives end it within about 15 s.
	syscall.Kill(q, syscall.SIGCONT)
	_, errb, done = start()
	syscall.Kill(q, syscall.SIGSTOP)
	frozenAt := time.Now()
	select {
	case <-done:
		t.Logf("keepalive ended exec %s after the freeze", time.Since(frozenAt).Round(time.Second))
		if !strings.Contains(errb.String(), "lost the connection to sandbox frozen: no answer for 15s") {
			t.Errorf("stderr: %q", errb.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("heyvm exec hung on a frozen VM for 30 s")
	}
}

func TestMemoryAboveHostIsRefused(t *testing.T) {
	env := testHome(t)
	total, err := hostinfo.TotalMemory()
	if err != nil {
		t.Fatal(err)
	}
	fails(t, env, fmt.Sprintf("more than this host has (%d MiB", total/hostinfo.MiB), "create", "--name", "huge", "--memory", fmt.Sprint(total/hostinfo.MiB+1024))
	if des, _ := os.ReadDir(filepath.Join(homeOf(env), "sandboxes")); len(des) > 1 {
		t.Errorf("a refused create left %d entries", len(des))
	}
}

// TestShareServerDies: virtiofsd killed under a running sandbox is
// reported, and the VM keeps running.
func TestShareServerDies(t *testing.T) {
	env := testHome(t)
	share := t.TempDir()
	must(t, env, "create", "--name", "vfs", "--memory", "512", "--mount", share+":/data")
	s := get(t, env, "vfs")
	var vfs int
	for _, k := range childrenOf(s.Owner.PID) {
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", k)); strings.HasPrefix(string(comm), "virtiofsd") {
			vfs = k
		}
	}
	if vfs == 0 {
		t.Fatal("no virtiofsd under the owner")
	}
	syscall.Kill(vfs, syscall.SIGKILL)
	deadline := time.Now().Add(15 * time.Second)
	for {
		p := getPaused(t, env, "vfs")
		if p.Owner != nil && len(p.Owner.BrokenShares) == 1 && strings.Contains(p.Owner.BrokenShares[0], "/data ("+share+")") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the broken share is not reported: %+v", p)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if out := must(t, env, "list"); !strings.Contains(out, "shared folder broken: /data") {
		t.Errorf("list:\n%s", out)
	}
	if got := strings.TrimSpace(must(t, env, "exec", "vfs", "--", "echo", "alive")); got != "alive" {
		t.Errorf("exec after the share broke: %q", got)
	}
}
