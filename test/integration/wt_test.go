package integration

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// gitRepo makes a repository with one commit.
func gitRepo(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "proj")
	os.Mkdir(dir, 0o755)
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"config", "user.email", "t@t"}, {"config", "user.name", "t"}} {
		if out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v %s", args, err, out)
		}
	}
	os.WriteFile(filepath.Join(dir, "README"), []byte("hello\n"), 0o644)
	exec.Command("git", "-C", dir, "add", "README").Run()
	if out, err := exec.Command("git", "-C", dir, "commit", "-q", "-m", "first").CombinedOutput(); err != nil {
		t.Fatalf("commit: %v %s", err, out)
	}
	return dir
}

func TestMountRoundTrip(t *testing.T) {
	env := testHome(t)
	host := t.TempDir()
	os.WriteFile(filepath.Join(host, "from-host.txt"), []byte("host says hi\n"), 0o644)
	os.WriteFile(filepath.Join(host, "tool.sh"), []byte("#!/bin/sh\necho tool ran\n"), 0o755)
	ro := t.TempDir()
	must(t, env, "create", "--name", "mnt", "--memory", "512", "--mount", host+":/data", "--mount", ro+":/ro:ro")
	if out := must(t, env, "exec", "mnt", "--", "cat", "/data/from-host.txt"); out != "host says hi\n" {
		t.Fatalf("host file in guest: %q", out)
	}
	if out := must(t, env, "exec", "mnt", "--", "/data/tool.sh"); out != "tool ran\n" {
		t.Fatalf("executable bit lost: %q", out)
	}
	must(t, env, "exec", "mnt", "--", "sh", "-c", "echo guest wrote >/data/tmp.txt && mv /data/tmp.txt /data/from-guest.txt && printf '#!/bin/sh\\n' >/data/g.sh && chmod 755 /data/g.sh")
	if b, err := os.ReadFile(filepath.Join(host, "from-guest.txt")); err != nil || string(b) != "guest wrote\n" {
		t.Fatalf("guest write on host: %q %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(host, "tmp.txt")); !os.IsNotExist(err) {
		t.Fatal("rename in the guest left the old name on the host")
	}
	if fi, err := os.Stat(filepath.Join(host, "g.sh")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("guest chmod on host: %v %v", fi, err)
	}
	// Host edits show at once, renames included.
	os.WriteFile(filepath.Join(host, "later.txt"), []byte("v1\n"), 0o644)
	os.Rename(filepath.Join(host, "later.txt"), filepath.Join(host, "renamed.txt"))
	if out := must(t, env, "exec", "mnt", "--", "sh", "-c", "cat /data/renamed.txt; ls /data/later.txt 2>&1 || true"); !strings.HasPrefix(out, "v1\n") || !strings.Contains(out, "No such file") {
		t.Fatalf("host rename in guest: %q", out)
	}
	if _, _, code := runIn(env, "", "exec", "mnt", "--", "touch", "/ro/x"); code == 0 {
		t.Fatal("write to a read-only mount succeeded")
	}
	g := must(t, env, "get", "mnt")
	if !strings.Contains(g, host+" -> /data") || !strings.Contains(g, "/ro (read-only)") {
		t.Fatalf("get does not show mounts:\n%s", g)
	}
	fails(t, env, "does not exist", "create", "--mount", "/no/such/dir:/data")
	fails(t, env, "relative", "create", "--mount", host+":data")
	fails(t, env, "system directory", "create", "--mount", host+":/etc/foo")
}

func TestTTLExpiry(t *testing.T) {
	env := testHome(t)
	must(t, env, "create", "--name", "ttl", "--memory", "384", "--ttl-seconds", "12")
	if g := must(t, env, "get", "ttl"); !strings.Contains(g, "TTL:       12s (left: ") {
		t.Fatalf("get does not show the time left:\n%s", g)
	}
	s := get(t, env, "ttl")
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if held, _ := ownerAlive(s.Dir); !held {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	s = get(t, env, "ttl")
	if s.State != "stopped" || s.LastStop == nil || s.LastStop.Reason != "expired" {
		t.Fatalf("after the TTL: %+v", s)
	}
	if _, err := os.Stat(filepath.Join(s.Dir, "owner.json")); !os.IsNotExist(err) {
		t.Fatal("owner.json survives expiry")
	}
	if !strings.Contains(must(t, env, "list"), "stopped (expired)") {
		t.Fatal("list does not say why it stopped")
	}
}

// ownerAlive reports whether owner.lock is held (without taking it).
func ownerAlive(dir string) (bool, error) {
	err := exec.Command("flock", "-n", "-s", filepath.Join(dir, "owner.lock"), "true").Run()
	return err != nil, nil
}

// freePort is a port free on 127.0.0.1, below the kernel's ephemeral
// range: no connection made meanwhile (a sandbox's own, to its guest) can
// be given it before the test's sandbox binds it.
func freePort(t *testing.T) int {
	for i := 0; i < 100; i++ {
		port := 20000 + rand.IntN(12000)
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no free port on 127.0.0.1 between 20000 and 32000")
	return 0
}

func TestPortForward(t *testing.T) {
	env := testHome(t)
	port := freePort(t)
	must(t, env, "create", "--name", "web", "--memory", "384", "--port", fmt.Sprintf("%d:80", port))
	must(t, env, "exec", "web", "--", "sh", "-c", "mkdir -p /srv && echo served-by-guest >/srv/index.html && busybox httpd -p 80 -h /srv")
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/index.html", port))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "served-by-guest\n" {
		t.Fatalf("body %q", body)
	}
	if !strings.Contains(must(t, env, "list"), fmt.Sprintf("127.0.0.1:%d->80", port)) {
		t.Fatal("list does not show the forward")
	}
	// The same host port again is refused clearly, and leaves nothing.
	_, errOut, code := runIn(env, "", "create", "--name", "web2", "--memory", "384", "--port", fmt.Sprintf("%d:80", port))
	if code == 0 || !strings.Contains(errOut, fmt.Sprintf("port 127.0.0.1:%d is already in use", port)) {
		t.Fatalf("busy port: %d %s", code, errOut)
	}
	// Refused before anything was made.
	fails(t, env, "no such sandbox", "get", "web2")
	fails(t, env, "ports are numbers", "create", "--port", "99999")
}

func TestConsoleAndLogs(t *testing.T) {
	needVM(t)
	// Through the console (no SSH): run a command and read its output.
	out, _, code := runIn(sharedEnv, "echo console-$((6*7))\n", "console", shared)
	if code != 0 || !strings.Contains(out, "console-42") {
		t.Fatalf("console: %d %q", code, out)
	}
	// What a person types is echoed (heyvm's own console commands turn
	// echo off; an attach turns it back on).
	if !strings.Contains(out, "echo console-$((6*7))") {
		t.Errorf("the console did not echo the typed command: %q", out)
	}
	logs := must(t, sharedEnv, "logs", shared)
	if !strings.Contains(logs, "HEYVM-READY") || !strings.Contains(logs, "console-42") {
		t.Fatalf("console.log lacks the boot and the session:\n%s", logs)
	}
	if ol := must(t, sharedEnv, "logs", "--owner", shared); !strings.Contains(ol, "ssh ready") {
		t.Fatalf("owner.log:\n%s", ol)
	}
	fails(t, sharedEnv, "no such sandbox", "console", "nosuch")
}

// TestConsoleEscapeAndFollow attaches the way a user does, types a
// command, waits for its output, detaches with Ctrl-], and checks that
// `logs --follow` saw the same output as it happened.
func TestConsoleEscapeAndFollow(t *testing.T) {
	needVM(t)
	follow := exec.Command(heyvmBin, "logs", "--follow", shared)
	follow.Env = sharedEnv
	var followed syncBuffer
	follow.Stdout = &followed
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { follow.Process.Kill(); follow.Wait() }()

	cmd := exec.Command(heyvmBin, "console", shared)
	cmd.Env = sharedEnv
	stdin, _ := cmd.StdinPipe()
	var out, errOut syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	io.WriteString(stdin, "echo escape-test-$((40+2))\n")
	waitBuffer(t, &out, "escape-test-42")
	stdin.Write([]byte{0x1d}) // Ctrl-]
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil || !strings.Contains(errOut.String(), "Detached") {
			t.Fatalf("detach: %v %q", err, errOut.String())
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("Ctrl-] did not detach")
	}
	waitBuffer(t, &followed, "escape-test-42")
	if s := get(t, sharedEnv, shared); s.State != "running" {
		t.Fatalf("detaching stopped the VM: %+v", s)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitBuffer(t *testing.T, b *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(b.String(), want) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%q did not appear in %q", want, b.String())
}

func TestWtBadInputs(t *testing.T) {
	env := testHome(t)
	repo := gitRepo(t)
	_, errOut, code := runIn(env, "", "wt", "x", "--repo", t.TempDir())
	if code == 0 || !strings.Contains(errOut, "not inside a git repository") {
		t.Fatalf("outside a repo: %d %s", code, errOut)
	}
	fails(t, env, "git refuses the branch name", "wt", "--repo", repo, "bad..name")
	fails(t, env, "--memory 0 is too small", "wt", "--repo", repo, "--memory", "0", "ok-branch")
	if _, err := os.Stat(filepath.Join(filepath.Dir(repo), "proj.worktrees", "ok-branch")); !os.IsNotExist(err) {
		t.Fatal("a refused wt left a worktree")
	}
}

// tmuxSession runs a command in a detached tmux session of its own.
type tmuxSession struct {
	t    *testing.T
	name string
}

func newTmux(t *testing.T, env []string, command string) *tmuxSession {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("tmux is not installed")
	}
	s := &tmuxSession{t: t, name: fmt.Sprintf("heyvm-it-%d", time.Now().UnixNano())}
	cmd := exec.Command("tmux", "new-session", "-d", "-s", s.name, "-x", "160", "-y", "40", command)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tmux: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("tmux", "kill-session", "-t", s.name).Run() })
	return s
}

func (s *tmuxSession) screen() string {
	out, _ := exec.Command("tmux", "capture-pane", "-p", "-t", s.name, "-S", "-200").Output()
	return string(out)
}

func (s *tmuxSession) waitFor(want string, d time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if strings.Contains(s.screen(), want) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("tmux: %q did not appear:\n%s", want, s.screen())
}

func (s *tmuxSession) send(keys string) {
	exec.Command("tmux", "send-keys", "-t", s.name, keys, "Enter").Run()
}

func TestWtInteractive(t *testing.T) {
	env := testHome(t)
	repo := gitRepo(t)
	command := fmt.Sprintf("cd %s && %s wt feat/demo --memory 512; echo WT-EXIT-$?; sleep 600", repo, heyvmBin)
	s := newTmux(t, env, command)
	s.waitFor("/workspace#", 90*time.Second)
	s.send("stty size; pwd; cat README; git status --short --branch | head -1; echo made-in-vm > from-vm.txt; git add from-vm.txt; git -c user.name=vm -c user.email=vm@vm commit -qm vm-commit && echo COMMIT''TED")
	s.waitFor("COMMITTED", 30*time.Second)
	screen := s.screen()
	if !(strings.Contains(screen, "\n40 160\n") || strings.Contains(screen, "\n39 160\n")) || !strings.Contains(screen, "\n/workspace\n") || !strings.Contains(screen, "## feat/demo") {
		t.Fatalf("shell not on the worktree:\n%s", screen)
	}
	// A window-size change reaches the guest's pty.
	exec.Command("tmux", "resize-window", "-t", s.name, "-x", "100", "-y", "30").Run()
	time.Sleep(300 * time.Millisecond)
	s.send("echo SIZE-$(stty size | tr ' ' x)-''END")
	s.waitFor("-END", 20*time.Second)
	if sc := s.screen(); !strings.Contains(sc, "SIZE-30x100-END") && !strings.Contains(sc, "SIZE-29x100-END") {
		t.Fatalf("resize not forwarded:\n%s", sc)
	}
	s.send("exit")
	s.waitFor("WT-EXIT-0", 60*time.Second)
	wt := filepath.Join(filepath.Dir(repo), "proj.worktrees", "feat", "demo")
	if b, err := os.ReadFile(filepath.Join(wt, "from-vm.txt")); err != nil || string(b) != "made-in-vm\n" {
		t.Fatalf("file written in the VM: %q %v", b, err)
	}
	if out, _ := exec.Command("git", "-C", repo, "log", "--oneline", "feat/demo").Output(); !strings.Contains(string(out), "vm-commit") {
		t.Fatalf("commit made in the VM is not in the repository: %s", out)
	}
	sb := get(t, env, "proj-feat-demo")
	if sb.State != "stopped" {
		t.Fatalf("leaving the shell did not stop the VM: %+v", sb)
	}
	// Again: the same sandbox boots, with the file and the guest's own disk state.
	s2 := newTmux(t, env, fmt.Sprintf("cd %s && %s wt feat/demo; echo WT-EXIT-$?; sleep 600", repo, heyvmBin))
	s2.waitFor("/workspace#", 90*time.Second)
	s2.send("cat from-vm.txt; echo SECOND-''SHELL; exit")
	s2.waitFor("WT-EXIT-0", 60*time.Second)
	if !strings.Contains(s2.screen(), "made-in-vm\nSECOND-SHELL") {
		t.Fatalf("second wt:\n%s", s2.screen())
	}
	// --detach keeps it running; sh gets back in.
	out := must(t, env, "wt", "--repo", repo, "--detach", "feat/demo")
	if !strings.Contains(out, "heyvm sh proj-feat-demo") {
		t.Fatalf("detach: %s", out)
	}
	if o, _, code := runIn(env, "pwd; cat /workspace/from-vm.txt\n", "sh", "proj-feat-demo"); code != 0 || !strings.Contains(o, "made-in-vm") {
		t.Fatalf("sh after detach: %d %q", code, o)
	}
}
