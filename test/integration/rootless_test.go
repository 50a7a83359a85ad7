package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// An ordinary user made by the suite: no sudo, subordinate ids from
// useradd (as on any Debian machine), its own HEYO_HOME and heyvm copy.
type plainUser struct {
	name     string
	uid, gid int
	dir      string // 0755, holds bin and home
	bin      string
	home     string   // HEYO_HOME
	path     string   // PATH ("" for /usr/sbin:/usr/bin:/sbin:/bin)
	env      []string // more of the environment
	// hide: files its commands see as /dev/null (in a mount namespace of
	// their own), programs this machine has that the test takes away.
	hide []string
}

const rootlessUser = "heyvm-it"

func makeUser(t *testing.T, name string, subids bool) *plainUser {
	t.Helper()
	if _, err := user.Lookup(name); err != nil {
		if out, err := exec.Command("useradd", "--create-home", "--shell", "/bin/sh", name).CombinedOutput(); err != nil {
			t.Fatalf("useradd %s: %v: %s", name, err, out)
		}
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	has := func(file string) bool {
		b, _ := os.ReadFile(file)
		return bytes.Contains(b, []byte("\n"+name+":")) || bytes.HasPrefix(b, []byte(name+":"))
	}
	switch {
	case subids && !(has("/etc/subuid") && has("/etc/subgid")):
		// useradd gives ranges on Debian; add them where it did not.
		base := 300000 + 70000*(len(name)%7)
		r := fmt.Sprintf("%d-%d", base, base+65535)
		if out, err := exec.Command("usermod", "--add-subuids", r, "--add-subgids", r, name).CombinedOutput(); err != nil {
			t.Fatalf("usermod: %v: %s", err, out)
		}
	case !subids:
		for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
			b, _ := os.ReadFile(f)
			var keep []string
			for _, l := range strings.Split(string(b), "\n") {
				if !strings.HasPrefix(l, name+":") {
					keep = append(keep, l)
				}
			}
			os.WriteFile(f, []byte(strings.Join(keep, "\n")), 0o644)
		}
	}
	p := &plainUser{name: name}
	p.uid, _ = strconv.Atoi(u.Uid)
	p.gid, _ = strconv.Atoi(u.Gid)
	p.dir, err = os.MkdirTemp("/tmp", "heyvm-"+name+"-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(p.dir, 0o755)
	os.Chown(p.dir, p.uid, p.gid)
	p.bin = filepath.Join(p.dir, "heyvm")
	b, _ := os.ReadFile(heyvmBin)
	os.WriteFile(p.bin, b, 0o755)
	p.home = filepath.Join(p.dir, "home")
	os.Mkdir(p.home, 0o700)
	os.Chown(p.home, p.uid, p.gid)
	return p
}

// cleanup removes the user's sandboxes (as the user) and its files.
func (p *plainUser) cleanup() {
	out, _, _ := p.run("", "list", "--json")
	var list []struct{ ID string }
	json.Unmarshal([]byte(out), &list)
	for _, s := range list {
		p.run("", "rm", "--force", "--yes", s.ID)
	}
	// Image builds and guest-made files may belong to subordinate ids.
	os.RemoveAll(p.dir)
}

// signalHeyvm sends sig to the heyvm that cmd (p.cmd: runuser) started,
// as a terminal would: runuser itself kills a child still cleaning up
// after 2 s.
func signalHeyvm(t *testing.T, cmd *exec.Cmd, sig syscall.Signal) {
	t.Helper()
	kids := childrenOf(cmd.Process.Pid)
	if len(kids) != 1 {
		t.Fatalf("runuser's children: %v", kids)
	}
	syscall.Kill(kids[0], sig)
}

// cmd is a command run as the user, with a clean environment.
func (p *plainUser) cmd(ctx context.Context, dir string, argv ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, "runuser", append([]string{"-u", p.name, "--"}, argv...)...)
	if len(p.hide) > 0 {
		// unshare and sh exec into runuser: the pid stays runuser's.
		script := ""
		for _, f := range p.hide {
			script += "mount --bind /dev/null " + f + " && "
		}
		c = exec.CommandContext(ctx, "unshare", append([]string{"-m", "--propagation", "private", "sh", "-c", script + `exec "$@"`, "sh", "runuser", "-u", p.name, "--"}, argv...)...)
	}
	path := p.path
	if path == "" {
		path = "/usr/sbin:/usr/bin:/sbin:/bin"
	}
	c.Env = append([]string{"HOME=/home/" + p.name, "USER=" + p.name, "PATH=" + path, "HEYO_HOME=" + p.home, "LC_ALL=C", "HEYVM_AUTO_WARM=0"}, p.env...)
	c.Dir = dir
	return c
}

// run runs heyvm as the user.
func (p *plainUser) run(dir string, args ...string) (string, string, int) {
	return p.runWithin(5*time.Minute, dir, args...)
}

// runStdin is run with stdin.
func (p *plainUser) runStdin(stdin string, args ...string) (string, string, int) {
	return p.runWith(5*time.Minute, "", strings.NewReader(stdin), args...)
}

// runWithin is run with its own time limit.
func (p *plainUser) runWithin(limit time.Duration, dir string, args ...string) (string, string, int) {
	return p.runWith(limit, dir, nil, args...)
}

func (p *plainUser) runWith(limit time.Duration, dir string, stdin io.Reader, args ...string) (string, string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	c := p.cmd(ctx, dir, append([]string{p.bin}, args...)...)
	c.Stdin = stdin
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
	}
	return out.String(), errb.String(), code
}

func (p *plainUser) must(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, errOut, code := p.run(dir, args...)
	if code != 0 {
		t.Fatalf("as %s: heyvm %s: exit %d\n%s\n%s", p.name, strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func (p *plainUser) sh(t *testing.T, dir, script string) string {
	t.Helper()
	out, err := p.cmd(context.Background(), dir, "sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("as %s: %s: %v\n%s", p.name, script, err, out)
	}
	return string(out)
}

func ownerOf(t *testing.T, path string) (int, int) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid)
}

func procUID(pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" {
			n, _ := strconv.Atoi(f[2]) // effective
			return n
		}
	}
	return -1
}

// TestRootless is the whole rootless story as an ordinary user: build the
// default image, a sandbox with a share, a read-only share and a port,
// ownership both ways, no process as root, and wt with git.
func TestRootless(t *testing.T) {
	needVM(t)
	p := makeUser(t, rootlessUser, true)
	defer p.cleanup()

	start := time.Now()
	p.must(t, "", "images", "build-default")
	t.Logf("build-default as %s: %s", p.name, time.Since(start).Round(time.Second))
	img := filepath.Join(p.home, "images", "qemu", "debian:12")
	for _, f := range []string{"rootfs.img", "vmlinuz", "initrd", "image.yaml"} {
		if uid, _ := ownerOf(t, filepath.Join(img, f)); uid != p.uid {
			t.Errorf("%s is owned by uid %d, not the user", f, uid)
		}
	}
	// Owners and setuid bits inside the image are real.
	out, _ := exec.Command("debugfs", "-R", "stat /usr/bin/passwd", filepath.Join(img, "rootfs.img")).Output()
	if !strings.Contains(string(out), "Mode:  04755") || !strings.Contains(string(out), "User:     0") {
		t.Errorf("/usr/bin/passwd in the rootless image:\n%s", out)
	}
	if left, _ := filepath.Glob(filepath.Join(p.home, "images", "qemu", ".build-*")); len(left) > 0 {
		t.Errorf("build left %v", left)
	}

	share := filepath.Join(p.dir, "share")
	ro := filepath.Join(p.dir, "ro")
	p.sh(t, "", "mkdir -p "+share+" "+ro+" && echo mine > "+share+"/mine.txt && echo ro > "+ro+"/r.txt")
	port := freePort(t)
	p.must(t, "", "create", "--name", "rl", "--memory", "512",
		"--mount", share+":/data", "--mount", ro+":/ro:ro", "--port", fmt.Sprintf("%d:8080", port))

	// Guest root writes: the user owns it on the host.
	p.must(t, "", "exec", "rl", "--", "sh", "-c", "echo hi > /data/fromguest && mkdir /data/d1000 && chown 1000:1000 /data/d1000")
	if uid, gid := ownerOf(t, filepath.Join(share, "fromguest")); uid != p.uid || gid != p.gid {
		t.Errorf("a file the guest's root wrote is %d:%d on the host, want the user %d:%d", uid, gid, p.uid, p.gid)
	}
	if uid, _ := ownerOf(t, filepath.Join(share, "d1000")); uid == p.uid || uid == 0 || uid < 65536 {
		t.Errorf("guest uid 1000 became host uid %d, want one in the user's subordinate range", uid)
	}
	// The user's own file is root's in the guest.
	if got := strings.TrimSpace(p.must(t, "", "exec", "rl", "--", "stat", "-c", "%u", "/data/mine.txt")); got != "0" {
		t.Errorf("the user's file shows as uid %s in the guest, want 0", got)
	}
	// Host writes are seen by the guest.
	p.sh(t, "", "echo host-side > "+share+"/fromhost")
	if got := strings.TrimSpace(p.must(t, "", "exec", "rl", "--", "cat", "/data/fromhost")); got != "host-side" {
		t.Errorf("guest reads %q", got)
	}
	// :ro refuses writes.
	if _, errOut, code := p.run("", "exec", "rl", "--", "touch", "/ro/x"); code == 0 || !strings.Contains(errOut, "Read-only") {
		t.Errorf("write to a :ro share: exit %d %q", code, errOut)
	}
	// The port forward serves.
	p.must(t, "", "exec", "rl", "--", "sh", "-c", "mkdir -p /srv && echo served > /srv/index.html && (busybox httpd -p 8080 -h /srv &)")
	if got := httpGet(t, port); !strings.Contains(got, "served") {
		t.Errorf("port forward: %q", got)
	}
	// No process of the sandbox runs as root.
	var info struct{ Owner struct{ PID int } }
	json.Unmarshal([]byte(p.must(t, "", "get", "--json", "rl")), &info)
	procs := append([]int{info.Owner.PID}, childrenOf(info.Owner.PID)...)
	if len(procs) < 4 { // owner, qemu, two virtiofsd
		t.Errorf("owner and children: %v", procs)
	}
	for _, pid := range procs {
		if uid := procUID(pid); uid != p.uid {
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			t.Errorf("process %d (%s) runs as uid %d, not the user", pid, strings.TrimSpace(string(comm)), uid)
		}
	}
	// stop and start as the user; the share comes back with the VM.
	p.must(t, "", "stop", "rl")
	p.must(t, "", "start", "rl")
	if got := strings.TrimSpace(p.must(t, "", "exec", "rl", "--", "cat", "/data/fromguest")); got != "hi" {
		t.Errorf("after stop and start the share reads %q", got)
	}
	p.must(t, "", "rm", "--force", "--yes", "rl")

	// wt: a commit made in the guest leaves .git owned by the user.
	repo := filepath.Join(p.dir, "repo")
	p.sh(t, "", "git init -q -b main "+repo+" && cd "+repo+" && git config user.email u@x && git config user.name u && echo a > a && git add a && git commit -qm init && git branch feature")
	p.must(t, repo, "wt", "feature", "--detach", "--memory", "512")
	p.must(t, repo, "exec", "repo-feature", "--", "sh", "-c", "cd /workspace && echo b > b && git add b && git -c user.email=g@x -c user.name=guest commit -qm from-guest")
	if got := p.sh(t, repo, "git log --format=%s feature -1"); strings.TrimSpace(got) != "from-guest" {
		t.Errorf("the host's git sees %q as feature's last commit", got)
	}
	if notMine := p.sh(t, repo, "find .git ! -user "+p.name); strings.TrimSpace(notMine) != "" {
		t.Errorf("files in .git not owned by the user after a guest commit:\n%s", notMine)
	}
	p.sh(t, repo, "git fsck --no-progress && git status --short >/dev/null")
}

// TestRootlessErrors: a user without subordinate ids is told what to run,
// before anything is created.
func TestRootlessErrors(t *testing.T) {
	needVM(t)
	p := makeUser(t, "heyvm-it-nosub", false)
	defer p.cleanup()
	// The share is checked before the image is looked up or anything made.
	share := filepath.Join(p.dir, "share")
	p.sh(t, "", "mkdir -p "+share)
	_, errOut, code := p.run("", "create", "--name", "x", "--mount", share+":/data")
	if code == 0 || !strings.Contains(errOut, "/etc/subuid has no range for heyvm-it-nosub") || !strings.Contains(errOut, "usermod --add-subuids") {
		t.Fatalf("create --mount without subordinate ids: %d %q", code, errOut)
	}
	// The range it suggests is one nobody has.
	var lo, hi int
	if i := strings.Index(errOut, "--add-subuids "); i < 0 {
		t.Fatalf("no range in %q", errOut)
	} else if _, err := fmt.Sscanf(errOut[i:], "--add-subuids %d-%d", &lo, &hi); err != nil || hi-lo != 65535 {
		t.Fatalf("the suggested range in %q: %v", errOut, err)
	}
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		b, _ := os.ReadFile(f)
		for _, l := range strings.Split(string(b), "\n") {
			var who string
			var start, count int
			if n, _ := fmt.Sscanf(strings.ReplaceAll(l, ":", " "), "%s %d %d", &who, &start, &count); n == 3 && start <= hi && lo < start+count {
				t.Errorf("the suggested range %d-%d overlaps %s's %d-%d in %s", lo, hi, who, start, start+count-1, f)
			}
		}
	}
	// A privileged host port is named as such, not as "in use".
	if b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start"); strings.TrimSpace(string(b)) == "1024" {
		_, errOut, code = p.run("", "create", "--name", "x", "--port", "80")
		if code == 0 || !strings.Contains(errOut, "host port 80 is privileged") || strings.Contains(errOut, "in use") {
			t.Errorf("create --port 80 as an ordinary user: %d %q", code, errOut)
		}
	}
	if n := strings.Count(strings.TrimSpace(errOut), "\n"); n > 0 {
		t.Errorf("error is %d lines", n+1)
	}
	if des, _ := os.ReadDir(filepath.Join(p.home, "sandboxes")); len(des) > 1 {
		t.Fatalf("a refused create left %v", des)
	}
	// A sandbox whose files the user cannot read: a clear line, no crash.
	bad := filepath.Join(p.home, "sandboxes", "abc123abc123")
	os.MkdirAll(bad, 0o700)
	os.WriteFile(filepath.Join(bad, "sandbox.yaml"), []byte("id: abc123abc123\nname: unr\nimage: debian:12\nbackend: qemu\n"), 0o000)
	exec.Command("chown", "-R", fmt.Sprintf("%d:%d", p.uid, p.gid), filepath.Join(p.home, "sandboxes")).Run()
	if out, errOut, code := p.run("", "list"); code != 0 || !strings.Contains(out, "damaged: ") || !strings.Contains(out, "permission denied") {
		t.Errorf("list with an unreadable sandbox: %d %q %q", code, out, errOut)
	}
	_, errOut, code = p.run("", "get", "abc123abc123")
	if code == 0 || !strings.Contains(errOut, "sandbox.yaml (permission denied)") || !strings.Contains(errOut, "heyvm rm --force abc123abc123") || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
		t.Errorf("get of an unreadable sandbox: %d %q", code, errOut)
	}
	p.must(t, "", "rm", "--yes", "--force", "abc123abc123")

	// Without subordinate ids the host build cannot run: the image is
	// built in a VM instead, saying why (stopped here: TestImagesBuildInVM
	// follows such a build to its end).
	cmd := p.cmd(context.Background(), "", p.bin, "images", "build-default", "--force")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	first, _ := bufio.NewReader(stderr).ReadString('\n')
	signalHeyvm(t, cmd, syscall.SIGTERM)
	go io.Copy(io.Discard, stderr)
	cmd.Wait()
	if !strings.Contains(first, "building the default image in a qemu VM") || !strings.Contains(first, "has no range for heyvm-it-nosub") {
		t.Errorf("build-default without subordinate ids: %q", first)
	}
	if left, _ := filepath.Glob(filepath.Join(p.home, "images", "qemu", "*")); len(left) > 0 {
		t.Errorf("a stopped build left %v", left)
	}
}

// httpGet fetches 127.0.0.1:port, retrying while the guest server starts.
func httpGet(t *testing.T, port int) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET 127.0.0.1:%d: %v", port, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}
