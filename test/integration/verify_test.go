package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A sandbox of the default image on a small file system: create counts
// what it writes (an overlay on linked layers), not a whole clone, so two
// fit where one clone would not; a create that truly lacks room is
// refused in one line.
func TestCreateOnASmallFileSystem(t *testing.T) {
	needVM(t)
	dir := t.TempDir()
	fsFile := filepath.Join(dir, "fs.img")
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	for _, c := range [][]string{
		{"truncate", "-s", "900M", fsFile},
		{"mkfs.ext4", "-q", "-m", "0", fsFile},
		{"mount", "-o", "loop", fsFile, mnt},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", c, err, out)
		}
	}
	home := filepath.Join(mnt, "home")
	env := append(os.Environ(), "HEYO_HOME="+home)
	t.Cleanup(func() {
		cleanupHome(env)
		exec.Command("umount", mnt).Run()
	})
	// The default image, in the small file system's own store.
	img := filepath.Join(home, "images", "qemu", "debian:12")
	os.MkdirAll(img, 0o700)
	src := filepath.Join(cacheHome, "images", "qemu", "debian:12")
	for _, f := range []string{"vmlinuz", "initrd", "rootfs.img", "image.yaml"} {
		if out, err := exec.Command("cp", "--sparse=always", filepath.Join(src, f), img).CombinedOutput(); err != nil {
			t.Fatalf("copy the image: %v %s", err, out)
		}
	}
	var st syscall.Statfs_t
	syscall.Statfs(mnt, &st)
	free := int64(st.Bavail) * int64(st.Bsize) >> 20
	t.Logf("%d MB free on the 900 MB file system with the image in it", free)
	must(t, env, "create", "--name", "small1", "--memory", "384", "--cold")
	must(t, env, "create", "--name", "small2", "--memory", "384", "--cold")
	for _, n := range []string{"small1", "small2"} {
		if out := must(t, env, "exec", n, "--", "hostname"); out != n+"\n" {
			t.Errorf("%s: %q", n, out)
		}
	}
	must(t, env, "rm", "--force", "--yes", "small1", "small2")
	// Leave 100 MB: less than the working margin.
	syscall.Statfs(mnt, &st)
	fill := int64(st.Bavail)*int64(st.Bsize) - 100<<20
	if out, err := exec.Command("fallocate", "-l", strconv.FormatInt(fill, 10), filepath.Join(mnt, "filler")).CombinedOutput(); err != nil {
		t.Fatalf("fallocate: %v %s", err, out)
	}
	fails(t, env, "MB needed", "create", "--name", "small3", "--memory", "384")
}

// Killing a pty `heyvm sh` (SIGTERM; SIGHUP when a terminal closes)
// leaves the terminal as it was.
func TestShKilledRestoresTheTerminal(t *testing.T) {
	needVM(t)
	dir := t.TempDir()
	command := fmt.Sprintf(`cd %s && stty -g > before && sh -c 'echo $$ > pid; exec "$0" sh %s' %s; stty -g > after; echo SH-''ENDED; sleep 600`, dir, shared, heyvmBin)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGHUP} {
		os.Remove(filepath.Join(dir, "after"))
		s := newTmux(t, sharedEnv, command)
		s.waitFor("shared:~#", 30*time.Second)
		b, _ := os.ReadFile(filepath.Join(dir, "pid"))
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatalf("pid file: %q", b)
		}
		syscall.Kill(pid, sig)
		s.waitFor("SH-ENDED", 20*time.Second)
		before, _ := os.ReadFile(filepath.Join(dir, "before"))
		after, _ := os.ReadFile(filepath.Join(dir, "after"))
		if len(before) == 0 || string(before) != string(after) {
			t.Errorf("after %v the terminal's mode is %q, before it was %q", sig, after, before)
		}
	}
}

// The default image has what a developer's shell expects: TLS roots and
// curl (the Debian archive is the one HTTPS server reachable here), rsync
// (so `rsync -e ssh` into a sandbox works), a pager, an editor and the rest.
func TestDefaultImageTools(t *testing.T) {
	needVM(t)
	// This machine's egress re-signs TLS with a CA of its own, which the
	// host trusts (in /usr/local/share/ca-certificates) and no public
	// bundle holds: the sandbox is given those too, as a user behind such
	// a proxy would do. Verification stays on.
	local, _ := filepath.Glob("/usr/local/share/ca-certificates/*.crt")
	for _, crt := range local {
		b, _ := os.ReadFile(crt)
		if _, errOut, code := runIn(sharedEnv, string(b), "exec", shared, "--", "sh", "-c", "cat >/usr/local/share/ca-certificates/host-"+filepath.Base(crt)); code != 0 {
			t.Fatalf("copy %s into the sandbox: %s", crt, errOut)
		}
	}
	if len(local) > 0 {
		must(t, sharedEnv, "exec", shared, "--", "update-ca-certificates")
	}
	if out, errOut, code := runIn(sharedEnv, "", "exec", shared, "--", "curl", "-fsSI", "https://deb.debian.org/debian/"); code != 0 || !strings.Contains(out, "HTTP/") {
		t.Errorf("curl over verified TLS in a sandbox: exit %d\n%s\n%s", code, out, errOut)
	}
	if out, errOut, code := runIn(sharedEnv, "", "exec", shared, "--", "sh", "-c",
		"for c in curl rsync less vi ip ps xz unzip sudo git; do command -v $c >/dev/null || echo missing $c; done"); code != 0 || out != "" {
		t.Errorf("tools missing from the default image: %q %q", out, errOut)
	}
	if _, err := exec.LookPath("rsync"); err != nil {
		t.Skip("rsync is not installed on this host")
	}
	cfg := filepath.Join(t.TempDir(), "config")
	os.WriteFile(cfg, []byte(must(t, sharedEnv, "ssh-config", shared)), 0o600)
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "a.txt"), []byte("synced\n"), 0o644)
	if out, err := exec.Command("rsync", "-a", "-e", "ssh -F "+cfg, src+"/", shared+":/tmp/rsynced/").CombinedOutput(); err != nil {
		t.Fatalf("rsync -e ssh into a sandbox: %v %s", err, out)
	}
	if out := must(t, sharedEnv, "exec", shared, "--", "cat", "/tmp/rsynced/a.txt"); out != "synced\n" {
		t.Errorf("rsync'ed file: %q", out)
	}
}

// The README's first command works as root without sudo, and for a user
// who has sudo it asks sudo for root itself.
func TestInstallDepsWithAndWithoutSudo(t *testing.T) {
	needVM(t)
	script, _ := filepath.Abs("../../scripts/install-deps.sh")
	// Root, with every command of this host on PATH but sudo.
	bin := t.TempDir()
	for _, d := range strings.Split(os.Getenv("PATH"), ":") {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if e.Name() != "sudo" {
				os.Symlink(filepath.Join(d, e.Name()), filepath.Join(bin, e.Name()))
			}
		}
	}
	cmd := exec.Command(script)
	cmd.Env = append(os.Environ(), "PATH="+bin)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "install-deps: ok") {
		t.Fatalf("install-deps as root without sudo: %v\n%s", err, out)
	}
	// An ordinary user: the script runs itself again through sudo (a
	// stand-in that records how it was called), keeping PATH for Go.
	p := makeUser(t, rootlessUser, true)
	defer p.cleanup()
	mine := filepath.Join(p.dir, "install-deps.sh")
	b, _ := os.ReadFile(script)
	os.WriteFile(mine, b, 0o755)
	fake := filepath.Join(p.dir, "fakebin")
	os.Mkdir(fake, 0o755)
	record := filepath.Join(p.dir, "sudo-args")
	os.WriteFile(filepath.Join(fake, "sudo"), []byte("#!/bin/sh\necho \"$@\" > "+record+"\n"), 0o755)
	os.Chown(p.dir, p.uid, p.gid)
	out := p.sh(t, "", "PATH="+fake+":$PATH "+mine+" && echo done")
	args, _ := os.ReadFile(record)
	if !strings.Contains(out, "done") || !strings.HasPrefix(string(args), "env PATH="+fake+":") || !strings.HasSuffix(strings.TrimSpace(string(args)), mine) {
		t.Errorf("install-deps as a user with sudo: %q, sudo called with %q", out, args)
	}
}
