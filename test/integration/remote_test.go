package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A second host made by the test, for SSH contexts: a network namespace
// with its own address on a veth pair, a real OpenSSH sshd in it on that
// address (run as the host's user, so it needs no privilege separation
// user), that user with its own home and heyvm's default image in it.
// Only addresses inside the namespace the test made are used.
type secondHost struct {
	ns, addr string
	port     int
	user     *plainUser
	sshd     *exec.Cmd
	hostKey  string // the sshd's public host key line
	dir      string
}

const (
	remoteNS   = "heyvm-it-rh"
	remoteAddr = "10.231.7.2"
	hostAddr   = "10.231.7.1"
	remoteUser = "heyvm-remote"
)

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v %s", strings.Join(args, " "), err, out)
	}
}

func startSecondHost(t *testing.T) *secondHost {
	t.Helper()
	// The sshd runs as another user, so it lives where that user can reach.
	sshdCmd := exec.Command("../../scripts/test-sshd.sh")
	sshdCmd.Env = append(os.Environ(), "HEYVM_TEST_SSHD_DIR=/var/tmp/heyvm-test-sshd")
	sshdBin, err := sshdCmd.Output()
	if err != nil {
		t.Skipf("no sshd for the second host: %v", err)
	}
	h := &secondHost{ns: remoteNS, addr: remoteAddr, port: 2222}
	// A namespace and a veth pair into it, made afresh.
	exec.Command("ip", "netns", "del", h.ns).Run()
	exec.Command("ip", "link", "del", "hvrh0").Run()
	ipCmd(t, "netns", "add", h.ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", h.ns).Run() })
	ipCmd(t, "link", "add", "hvrh0", "type", "veth", "peer", "name", "hvrh1")
	t.Cleanup(func() { exec.Command("ip", "link", "del", "hvrh0").Run() })
	ipCmd(t, "link", "set", "hvrh1", "netns", h.ns)
	ipCmd(t, "addr", "add", hostAddr+"/24", "dev", "hvrh0")
	ipCmd(t, "link", "set", "hvrh0", "up")
	ipCmd(t, "-n", h.ns, "addr", "add", h.addr+"/24", "dev", "hvrh1")
	ipCmd(t, "-n", h.ns, "link", "set", "hvrh1", "up")
	ipCmd(t, "-n", h.ns, "link", "set", "lo", "up")
	ipCmd(t, "-n", h.ns, "route", "add", "default", "via", hostAddr)

	// The host's user, with the default image in its own store. Its sshd
	// runs as that user, and gives a session's pty to group tty, which
	// only a member may do.
	h.user = makeUser(t, remoteUser, true)
	// Last of the cleanups (they run in reverse): the user's folder.
	t.Cleanup(func() { os.RemoveAll(h.user.dir) })
	if out, err := exec.Command("usermod", "-aG", "tty", remoteUser).CombinedOutput(); err != nil {
		t.Fatalf("usermod -aG tty: %v %s", err, out)
	}
	home := "/home/" + remoteUser
	os.RemoveAll(filepath.Join(home, ".heyo"))
	os.RemoveAll(filepath.Join(home, ".local"))
	img := filepath.Join(home, ".heyo", "images", "qemu", "debian:12")
	os.MkdirAll(img, 0o700)
	for _, f := range []string{"vmlinuz", "initrd", "rootfs.img", "image.yaml"} {
		if out, err := exec.Command("cp", "--sparse=always", filepath.Join(cacheHome, "images", "qemu", "debian:12", f), img).CombinedOutput(); err != nil {
			t.Fatalf("copy the image: %v %s", err, out)
		}
	}
	exec.Command("chown", "-R", fmt.Sprintf("%d:%d", h.user.uid, h.user.gid), filepath.Join(home, ".heyo")).Run()

	// sshd, as that user, on the namespace's address.
	h.dir = filepath.Join(h.user.dir, "sshd")
	os.MkdirAll(h.dir, 0o700)
	key := filepath.Join(h.dir, "host_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v %s", err, out)
	}
	pub, _ := os.ReadFile(key + ".pub")
	f := strings.Fields(string(pub))
	h.hostKey = f[0] + " " + f[1]
	cfg := filepath.Join(h.dir, "sshd_config")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`ListenAddress %s:%d
HostKey %s
PidFile %s/sshd.pid
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
ClientAliveInterval 3
ClientAliveCountMax 3
MaxSessions 64
MaxStartups 64
SetEnv HEYVM_AUTO_WARM=0
`, h.addr, h.port, key, h.dir)), 0o600)
	exec.Command("chown", "-R", fmt.Sprintf("%d:%d", h.user.uid, h.user.gid), h.user.dir).Run()
	h.sshd = exec.Command("ip", "netns", "exec", h.ns, "runuser", "-u", remoteUser, "--", strings.TrimSpace(string(sshdBin)), "-D", "-e", "-f", cfg)
	log, _ := os.Create(filepath.Join(t.TempDir(), "sshd.log"))
	h.sshd.Stdout, h.sshd.Stderr = log, log
	if err := h.sshd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The host's sandboxes go first, by its own heyvm, as its user.
		if bin := filepath.Join(home, ".local", "bin", "heyvm"); fileExists(bin) {
			out, _ := exec.Command("ip", "netns", "exec", h.ns, "runuser", "-u", remoteUser, "--", bin, "list", "--json", "--all").Output()
			for _, id := range jsonIDs(string(out)) {
				exec.Command("ip", "netns", "exec", h.ns, "runuser", "-u", remoteUser, "--", bin, "rm", "--force", "--yes", id).Run()
			}
		}
		// sshd itself (runuser's child, which a kill of runuser leaves
		// running), then runuser.
		if b, err := os.ReadFile(filepath.Join(h.dir, "sshd.pid")); err == nil {
			if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 1 {
				syscall.Kill(pid, syscall.SIGTERM)
			}
		}
		h.sshd.Process.Kill()
		h.sshd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(h.addr, strconv.Itoa(h.port)), time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(log.Name())
			t.Fatalf("sshd in the namespace does not answer: %v\n%s", err, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return h
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func jsonIDs(js string) []string {
	var ids []string
	for _, l := range strings.Split(js, "\n") {
		if i := strings.Index(l, `"id": "`); i >= 0 {
			ids = append(ids, strings.TrimSuffix(strings.TrimSpace(l[i+7:]), `",`))
		}
	}
	return ids
}

// laptop sets up the ordinary user who runs heyvm here: an SSH key the
// second host accepts, and (if known) its host key in known_hosts.
func laptop(t *testing.T, h *secondHost, knowHost bool) *plainUser {
	t.Helper()
	p := makeUser(t, rootlessUser, true)
	ssh := "/home/" + p.name + "/.ssh"
	os.RemoveAll(ssh)
	os.MkdirAll(ssh, 0o700)
	key := filepath.Join(ssh, "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v %s", err, out)
	}
	if knowHost {
		os.WriteFile(filepath.Join(ssh, "known_hosts"), []byte(fmt.Sprintf("[%s]:%d %s\n", h.addr, h.port, h.hostKey)), 0o600)
	}
	exec.Command("chown", "-R", fmt.Sprintf("%d:%d", p.uid, p.gid), ssh).Run()
	rssh := "/home/" + remoteUser + "/.ssh"
	os.MkdirAll(rssh, 0o700)
	pub, _ := os.ReadFile(key + ".pub")
	os.WriteFile(filepath.Join(rssh, "authorized_keys"), pub, 0o600)
	exec.Command("chown", "-R", fmt.Sprintf("%d:%d", h.user.uid, h.user.gid), rssh).Run()
	return p
}

func (h *secondHost) url() string {
	return fmt.Sprintf("ssh://%s@%s:%d", remoteUser, h.addr, h.port)
}

// Through an SSH context, the commands act on the second host's
// sandboxes as if they were here: create, exec with its exit status and
// stdin, a pty sh, ports reached from this side, ssh-config for OpenSSH
// and rsync, stop, start, rm; and the faults say what to do.
func TestRemoteContext(t *testing.T) {
	needVM(t)
	h := startSecondHost(t)
	p := laptop(t, h, false)
	defer func() { p.cleanup() }() // the last p: it is made again below

	// An unknown host key is refused, never accepted.
	_, errOut, code := p.run("", "context", "create", "box", "--host", h.url(), "--install")
	if code == 0 || !strings.Contains(errOut, "not in your known_hosts") {
		t.Fatalf("context create with an unknown host key: exit %d %q", code, errOut)
	}
	p.cleanup()
	p = laptop(t, h, true)
	// No heyvm there: says what to do.
	_, errOut, code = p.run("", "context", "create", "box", "--host", h.url())
	if code == 0 || !strings.Contains(errOut, "has no heyvm: add --install") {
		t.Fatalf("context create without heyvm there: exit %d %q", code, errOut)
	}
	// Nothing listens: one line.
	_, errOut, code = p.run("", "context", "create", "nobody", "--host", fmt.Sprintf("ssh://%s@%s:2299", remoteUser, h.addr))
	if code == 0 || !strings.Contains(errOut, "refused the connection") || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
		t.Fatalf("context create of a host where nothing listens: exit %d %q", code, errOut)
	}
	p.must(t, "", "context", "create", "box", "--host", h.url(), "--install")
	if out := p.must(t, "", "context", "ls"); !strings.Contains(out, "box") || !strings.Contains(out, h.url()) {
		t.Fatalf("context ls:\n%s", out)
	}

	// create and list, there.
	start := time.Now()
	out, errOut, code := p.run("", "--context", "box", "create", "--name", "rs", "--memory", "384")
	t.Logf("create through the context: %s", time.Since(start).Round(time.Millisecond))
	id := strings.TrimSpace(out)
	if code != 0 || len(id) != 12 {
		t.Fatalf("create: exit %d, id %q\n%s", code, id, errOut)
	}
	// Its hints name the context the command named.
	if !strings.Contains(errOut, "`heyvm --context box sh rs`") {
		t.Errorf("create's hint does not name the context:\n%s", errOut)
	}
	if out := p.must(t, "", "--context", "box", "list"); !strings.Contains(out, "rs") || !strings.Contains(out, "running") {
		t.Fatalf("list:\n%s", out)
	}
	if out := p.must(t, "", "list"); strings.Contains(out, "rs") {
		t.Fatalf("the sandbox shows on this machine too:\n%s", out)
	}
	// exec: stdin, stdout, stderr and the exit status cross.
	out, errOut, code = p.runStdin("line1\nline2\n", "--context", "box", "exec", "rs", "--", "sh", "-c", "wc -l; echo err >&2; exit 7")
	if code != 7 || strings.TrimSpace(out) != "2" || strings.TrimSpace(errOut) != "err" {
		t.Fatalf("exec through the context: %d %q %q", code, out, errOut)
	}
	// HEYVM_CONTEXT chooses it too; and the current context.
	p.env = append(p.env, "HEYVM_CONTEXT=box")
	if out := p.must(t, "", "exec", "rs", "--", "hostname"); out != "rs\n" {
		t.Errorf("HEYVM_CONTEXT=box exec: %q", out)
	}
	p.env = nil
	p.must(t, "", "context", "use", "box")
	if out := p.must(t, "", "exec", "rs", "--", "hostname"); out != "rs\n" {
		t.Errorf("exec on the current context: %q", out)
	}
	p.must(t, "", "context", "use", "default")

	// Ctrl-C reaches the remote command.
	cmd := p.cmd(context.Background(), "", p.bin, "--context", "box", "exec", "rs", "--", "sh", "-c", `trap 'echo got-int; exit 42' INT; echo armed; while :; do sleep 0.1; done`)
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(stdout)
	if l, _ := rd.ReadString('\n'); l != "armed\n" {
		t.Fatalf("got %q", l)
	}
	// Ctrl-C, to heyvm itself.
	signalHeyvm(t, cmd, syscall.SIGINT)
	rest, _ := rd.ReadString('\n')
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 42 || rest != "got-int\n" {
		t.Errorf("Ctrl-C through the context: %v %q", err, rest)
	}

	// sh in a pty.
	s := newTmux(t, os.Environ(), fmt.Sprintf("runuser -u %s -- env HOME=/home/%s HEYO_HOME=%s %s --context box sh rs; echo SH-EXIT-$?; sleep 600", p.name, p.name, p.home, p.bin))
	s.waitFor("rs:~#", 60*time.Second)
	s.send("echo PTY-$((6*7)); tty")
	s.waitFor("PTY-42", 20*time.Second)
	// tty's answer: a pty's name.
	s.waitFor("/dev/pts/", 20*time.Second)
	s.send("exit 5")
	s.waitFor("SH-EXIT-5", 20*time.Second)

	// A port there, reached from here.
	p.must(t, "", "--context", "box", "port", "add", "rs", "18481:8080")
	p.must(t, "", "--context", "box", "exec", "rs", "--", "sh", "-c", startHTTPD)
	local := freePort(t)
	fwd := p.cmd(context.Background(), "", p.bin, "--context", "box", "port", "forward", "rs", fmt.Sprintf("%d:18481", local))
	if err := fwd.Start(); err != nil {
		t.Fatal(err)
	}
	if got := httpGet(t, local); !strings.Contains(got, "served") {
		t.Errorf("a port of the remote sandbox, from here: %q", got)
	}
	fwd.Process.Signal(syscall.SIGTERM)
	fwd.Wait()

	// OpenSSH and rsync through ssh-config.
	cfg := filepath.Join(p.dir, "ssh-config")
	os.WriteFile(cfg, []byte(p.must(t, "", "--context", "box", "ssh-config", "rs")), 0o644)
	if out := p.sh(t, "", "ssh -F "+cfg+" rs hostname"); out != "rs\n" {
		t.Errorf("OpenSSH through ssh-config: %q", out)
	}
	p.sh(t, "", "mkdir -p "+p.dir+"/sync && echo synced > "+p.dir+"/sync/a && rsync -a -e 'ssh -F "+cfg+"' "+p.dir+"/sync/ rs:/tmp/synced/")
	if out := p.must(t, "", "--context", "box", "exec", "rs", "--", "cat", "/tmp/synced/a"); out != "synced\n" {
		t.Errorf("rsync through ssh-config: %q", out)
	}

	// stop, start, rm.
	p.must(t, "", "--context", "box", "stop", "rs")
	if out := p.must(t, "", "--context", "box", "list"); !strings.Contains(out, "stopped") {
		t.Errorf("after stop:\n%s", out)
	}
	p.must(t, "", "--context", "box", "start", "rs")
	p.must(t, "", "--context", "box", "exec", "rs", "--", "true")
	p.must(t, "", "--context", "box", "rm", "--force", "--yes", "rs")
	if out := p.must(t, "", "--context", "box", "list", "--json"); strings.Contains(out, id) {
		t.Errorf("rm left it:\n%s", out)
	}
	p.must(t, "", "context", "rm", "box")
}

// controlMaster is the pid of the laptop user's shared SSH connection to
// the second host (heyvm started it), from OpenSSH's own answer.
func controlMaster(t *testing.T, p *plainUser, h *secondHost) int {
	t.Helper()
	ctl := filepath.Join(p.home, "run", "ssh", "cm-%C")
	out, _ := p.cmd(context.Background(), "", "ssh", "-o", "ControlPath="+ctl, "-p", strconv.Itoa(h.port), "-l", remoteUser, "-O", "check", h.addr).CombinedOutput()
	var pid int
	if i := strings.Index(string(out), "pid="); i >= 0 {
		fmt.Sscanf(string(out)[i+4:], "%d", &pid)
	}
	if pid == 0 {
		t.Fatalf("no shared connection to the second host: %s", out)
	}
	return pid
}

// wt --deploy: the branch's history and its uncommitted files reach the
// second host's sandbox in /workspace; a commit made there comes back
// with --pull; a second deploy updates it; and a connection that drops in
// the middle leaves no half-made sandbox and says what happened.
func TestRemoteDeploy(t *testing.T) {
	needVM(t)
	h := startSecondHost(t)
	p := laptop(t, h, true)
	defer p.cleanup()
	p.must(t, "", "context", "create", "box", "--host", h.url(), "--install")
	repo := filepath.Join(p.dir, "proj")
	p.sh(t, "", "git init -q -b main "+repo+" && cd "+repo+" && git config user.email u@x && git config user.name u && "+
		"echo one > committed.txt && echo gone > deleted.txt && printf 'build/\\n' > .gitignore && git add . && git commit -qm first")

	// A worktree with work not committed: a changed file, a new one, a
	// deleted one, an ignored one (which stays here).
	p.must(t, repo, "--context", "box", "wt", "feat", "--deploy", "--memory", "384")
	wt := filepath.Join(p.dir, "proj.worktrees", "feat")
	p.sh(t, wt, "echo two > committed.txt && echo new > untracked.txt && rm deleted.txt && mkdir -p build && echo obj > build/x.o")
	out := p.must(t, repo, "--context", "box", "wt", "feat", "--deploy")
	if !strings.Contains(out, "2 uncommitted files, 1 deleted") || !strings.Contains(out, "updated") {
		t.Errorf("the second deploy: %q", out)
	}
	files := p.must(t, "", "--context", "box", "exec", "proj-feat", "--", "sh", "-c",
		"cd /workspace && cat committed.txt untracked.txt; ls deleted.txt build 2>&1 | wc -l; git log --format=%s -1; git status --short | sort | tr '\\n' ' '")
	if !strings.HasPrefix(files, "two\nnew\n2\nfirst\n") || !strings.Contains(files, "M committed.txt") || !strings.Contains(files, "D deleted.txt") || !strings.Contains(files, "?? untracked.txt") {
		t.Errorf("/workspace in the remote sandbox:\n%s", files)
	}

	// A commit made there comes back as a fetch and a fast-forward.
	p.must(t, "", "--context", "box", "exec", "proj-feat", "--", "sh", "-c",
		"cd /workspace && git stash -q -u && echo remote > remote.txt && git add remote.txt && git -c user.name=vm -c user.email=vm@x commit -qm from-the-sandbox")
	p.sh(t, wt, "git stash -q -u")
	if out := p.must(t, repo, "--context", "box", "wt", "feat", "--deploy", "--pull"); !strings.Contains(out, "moved forward by 1") {
		t.Errorf("--pull: %q", out)
	}
	if got := p.sh(t, wt, "git log --format=%s -1; cat remote.txt"); got != "from-the-sandbox\nremote\n" {
		t.Errorf("the local branch after --pull: %q", got)
	}
	// And a deploy after that goes on from there.
	p.sh(t, wt, "echo three > third.txt && git add third.txt && git commit -qm third")
	p.must(t, repo, "--context", "box", "wt", "feat", "--deploy")
	if got := p.must(t, "", "--context", "box", "exec", "proj-feat", "--", "sh", "-c", "cd /workspace && git log --format=%s -1 && cat third.txt"); got != "third\nthree\n" {
		t.Errorf("the third deploy: %q", got)
	}

	// The connection drops in the middle of an exec: one line here, and
	// the command there ends.
	cmd := p.cmd(context.Background(), "", p.bin, "--context", "box", "exec", "proj-feat", "--", "sh", "-c", "echo started; exec sleep 1000")
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	bufio.NewReader(stdout).ReadString('\n')
	syscall.Kill(controlMaster(t, p, h), syscall.SIGKILL)
	err := cmd.Wait()
	if err == nil || !strings.Contains(stderr.String(), "lost the connection") || strings.Count(strings.TrimSpace(stderr.String()), "\n") > 0 {
		out, _ := p.cmd(context.Background(), "", "ps", "-eo", "pid,ppid,args").CombinedOutput()
		t.Errorf("exec whose connection dropped: %v %q\n%s", err, stderr.String(), out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		left := p.must(t, "", "--context", "box", "exec", "proj-feat", "--", "sh", "-c", "ps -eo args | grep -c '^sleep 1000$' || true")
		if strings.TrimSpace(left) == "0" {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("the remote command still runs after its connection dropped")
			break
		}
		time.Sleep(time.Second)
	}

	// ... and in the middle of a deploy that creates its sandbox: no
	// half-made sandbox is left there.
	dep := p.cmd(context.Background(), repo, p.bin, "--context", "box", "wt", "other", "--deploy", "--memory", "384")
	var depErr strings.Builder
	dep.Stderr = &depErr
	if err := dep.Start(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if l := p.must(t, "", "--context", "box", "list", "--all"); strings.Contains(l, "proj-other") {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	syscall.Kill(controlMaster(t, p, h), syscall.SIGKILL)
	if err := dep.Wait(); err == nil {
		t.Errorf("a deploy whose connection dropped succeeded")
	}
	deadline = time.Now().Add(60 * time.Second)
	for {
		l := p.must(t, "", "--context", "box", "list", "--all")
		if !strings.Contains(l, "proj-other") {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("a deploy cut off while creating left a sandbox there:\n%s\n(deploy said %q)", l, depErr.String())
			break
		}
		time.Sleep(time.Second)
	}
}

// wt --deploy --publish-image, with no registry on the context: an image
// made here is streamed to the second host (images export - into images
// import - over the context's connection) and the deployed sandbox boots
// it; a second deploy finds it there already. images export and import
// through the context move a tar between this machine and that store.
func TestRemotePublishImage(t *testing.T) {
	needVM(t)
	h := startSecondHost(t)
	p := laptop(t, h, true)
	defer p.cleanup()
	p.must(t, "", "context", "create", "box", "--host", h.url(), "--install")

	// An image of this machine's own: the default one with a kernel
	// argument of its own, which the guest shows in /proc/cmdline.
	tar := filepath.Join(p.dir, "default.tar")
	if out, errOut, code := runIn(append(os.Environ(), "HEYO_HOME="+cacheHome), "", "images", "export", "debian:12", tar); code != 0 {
		t.Fatalf("images export: %s %s", out, errOut)
	}
	os.Chown(tar, p.uid, p.gid)
	p.must(t, "", "images", "import", tar, "--name", "team-base")
	meta := filepath.Join(p.home, "images", "qemu", "team-base", "image.yaml")
	b, err := os.ReadFile(meta)
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.Replace(b, []byte("kernel_cmdline: console=hvc0"), []byte("kernel_cmdline: heyvm.team=base console=hvc0"), 1)
	if err := os.WriteFile(meta, b, 0o600); err != nil {
		t.Fatal(err)
	}

	repo := filepath.Join(p.dir, "proj")
	p.sh(t, "", "git init -q -b main "+repo+" && cd "+repo+" && git config user.email u@x && git config user.name u && echo one > a.txt && git add . && git commit -qm first")
	_, errOut, code := p.run(repo, "--context", "box", "wt", "img", "--deploy", "--publish-image", "--memory", "384")
	if code == 0 || !strings.Contains(errOut, "--image") {
		t.Errorf("--publish-image without --image: exit %d %q", code, errOut)
	}
	out, errOut, code := p.run(repo, "--context", "box", "wt", "img", "--deploy", "--publish-image", "--image", "team-base", "--memory", "384")
	if code != 0 {
		t.Fatalf("wt --deploy --publish-image: exit %d\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "publishing team-base to box over its connection") {
		t.Errorf("the publish did not stream: %q", errOut)
	}
	if got := p.must(t, "", "--context", "box", "exec", "proj-img", "--", "sh", "-c", "cat /proc/cmdline; cat /workspace/a.txt"); !strings.Contains(got, "heyvm.team=base") || !strings.HasSuffix(got, "one\n") {
		t.Errorf("the deployed sandbox does not run the published image: %q", got)
	}
	if l := p.must(t, "", "--context", "box", "images", "list"); !strings.Contains(l, "team-base") {
		t.Errorf("images list there:\n%s", l)
	}
	// Again: it is there already, as it is here.
	_, errOut, code = p.run(repo, "--context", "box", "wt", "img", "--deploy", "--publish-image", "--image", "team-base")
	if code != 0 || !strings.Contains(errOut, "on box already") {
		t.Errorf("a second publish: exit %d %q", code, errOut)
	}

	// images export there into a file here, and import from here.
	back := filepath.Join(p.dir, "back.tar")
	p.must(t, "", "--context", "box", "images", "export", "team-base", back)
	if fi, err := os.Stat(back); err != nil || fi.Size() < 1<<20 {
		t.Fatalf("images export through the context wrote no tar here: %v %v", fi, err)
	}
	p.must(t, "", "--context", "box", "images", "import", back, "--name", "team-copy")
	if l := p.must(t, "", "--context", "box", "images", "list"); !strings.Contains(l, "team-copy") {
		t.Errorf("images import through the context:\n%s", l)
	}
	if l := p.must(t, "", "images", "list"); strings.Contains(l, "team-copy") {
		t.Errorf("images import through the context imported here:\n%s", l)
	}
}
