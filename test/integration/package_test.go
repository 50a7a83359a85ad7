package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// debToInstall is this machine's .deb from the release snapshot that
// scripts/test.sh built (HEYVM_TEST_DIST), or one built now.
func debToInstall(t *testing.T) string {
	t.Helper()
	dist := os.Getenv("HEYVM_TEST_DIST")
	if dist == "" {
		start := time.Now()
		if out, err := exec.Command("../../scripts/release-snapshot.sh").CombinedOutput(); err != nil {
			t.Fatalf("scripts/release-snapshot.sh: %v\n%s", err, out)
		}
		t.Logf("built the snapshot in %s", time.Since(start).Round(time.Second))
		dist = "../../dist"
	}
	m, _ := filepath.Glob(filepath.Join(dist, "heyvm_*_"+runtime.GOARCH+".deb"))
	if len(m) != 1 {
		t.Fatalf("want one heyvm_<version>_%s.deb in %s, found %v", runtime.GOARCH, dist, m)
	}
	abs, err := filepath.Abs(m[0])
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

func aptGet(t *testing.T, env []string, args ...string) string {
	t.Helper()
	c := exec.Command("apt-get", args...)
	c.Env = append(os.Environ(), append([]string{"DEBIAN_FRONTEND=noninteractive"}, env...)...)
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("apt-get %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func debInstalled() bool {
	out, _ := exec.Command("dpkg-query", "-W", "-f=${Status}", "heyvm").Output()
	return strings.Contains(string(out), "ok installed")
}

// asUser runs a command as the user with the environment of a login (no
// HEYO_HOME: heyvm uses ~/.heyo).
func asUser(ctx context.Context, u *user.User, argv ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, "runuser", append([]string{"-u", u.Username, "--"}, argv...)...)
	c.Env = []string{"HOME=" + u.HomeDir, "USER=" + u.Username, "LOGNAME=" + u.Username, "PATH=/usr/bin:/bin", "LC_ALL=C", "HEYVM_AUTO_WARM=0"}
	c.Dir = u.HomeDir
	return c
}

// treeOf records every file under dir: type, mode, owner, size and
// modification time.
func treeOf(t *testing.T, dir string) map[string]string {
	t.Helper()
	tree := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		tree[p] = fmt.Sprintf("%v %d:%d %d %d", fi.Mode(), st.Uid, st.Gid, fi.Size(), fi.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

// TestDebPackage is the Debian user's way in: `apt-get install ./heyvm_…deb`
// (the snapshot the suite built), then the installed /usr/bin/heyvm
// test-vm as an ordinary user with a ~/.heyo of their own, which builds the
// default image as on a fresh machine; bash completes a sandbox through the
// installed completion; `apt-get remove` takes heyvm away and leaves
// ~/.heyo exactly as it was.
//
// The Recommends are not installed here (--no-install-recommends): the CI
// machine has them from install-deps.sh, and installing them would also pull
// qemu-system-x86's own Recommends (a GUI). test/release checks the fields.
func TestDebPackage(t *testing.T) {
	needVM(t)
	if _, err := exec.LookPath("apt-get"); err != nil {
		t.Skip("not a Debian machine: no apt-get")
	}
	deb := debToInstall(t)
	if debInstalled() {
		t.Fatal("heyvm is installed as a package already (an earlier run cut short?): `apt-get remove heyvm` first")
	}
	p := makeUser(t, rootlessUser, true)
	defer p.cleanup()
	u, err := user.Lookup(rootlessUser)
	if err != nil {
		t.Fatal(err)
	}
	heyo := filepath.Join(u.HomeDir, ".heyo")
	os.RemoveAll(heyo) // an earlier run's
	t.Cleanup(func() {
		// Whatever happens, no VM of this test outlives it, then ~/.heyo goes.
		env := []string{"HEYO_HOME=" + heyo}
		out, _, _ := runIn(env, "", "list", "--json", "--all")
		var list []struct{ ID string }
		json.Unmarshal([]byte(out), &list)
		for _, s := range list {
			runIn(env, "", "rm", "--force", "--yes", s.ID)
		}
		os.RemoveAll(heyo)
	})
	t.Cleanup(func() {
		if debInstalled() {
			exec.Command("apt-get", "remove", "-y", "heyvm").Run()
		}
	})

	// SUDO_USER as `sudo apt-get install` sets it: the user has
	// subordinate ids, so the postinst has nothing to say.
	out := aptGet(t, []string{"SUDO_USER=" + rootlessUser}, "install", "-y", "--no-install-recommends", deb)
	t.Logf("apt-get install:\n%s", out)
	if strings.Contains(out, "heyvm: note:") {
		t.Errorf("the postinst spoke for a user with subordinate ids:\n%s", out)
	}
	listed, _ := exec.Command("dpkg", "-L", "heyvm").Output()
	for _, want := range []string{"/usr/bin/heyvm\n", "/usr/share/man/man1/heyvm-exec.1.gz\n", "/usr/share/bash-completion/completions/heyvm\n"} {
		if !strings.Contains(string(listed), want) {
			t.Errorf("dpkg -L heyvm lacks %s", want)
		}
	}
	if _, err := exec.LookPath("man"); err == nil {
		if out, err := exec.Command("man", "-w", "heyvm-exec").CombinedOutput(); err != nil {
			t.Errorf("man -w heyvm-exec: %v %s", err, out)
		}
	}
	vout, err := exec.Command("/usr/bin/heyvm", "version", "--json").Output()
	var v struct{ Commit string }
	if err != nil || json.Unmarshal(vout, &v) != nil || !regexp.MustCompile(`^[0-9a-f]{40}$`).MatchString(v.Commit) {
		t.Errorf("/usr/bin/heyvm version --json: %v %s", err, vout)
	}

	// The whole setup, as the user: heyvm test-vm.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	start := time.Now()
	c := asUser(ctx, u, "/usr/bin/heyvm", "test-vm")
	var tvOut bytes.Buffer
	c.Stdout, c.Stderr = &tvOut, &tvOut
	err = c.Run()
	t.Logf("heyvm test-vm as %s with an empty ~/.heyo (%s):\n%s", u.Username, time.Since(start).Round(time.Second), tvOut.String())
	if err != nil || !strings.Contains(tvOut.String(), "PASS: test-vm-") {
		t.Fatalf("the installed heyvm test-vm as %s: %v", u.Username, err)
	}
	if uid, _ := ownerOf(t, filepath.Join(heyo, "images", "qemu", "debian:12", "rootfs.img")); uid != p.uid {
		t.Errorf("the default image test-vm built belongs to uid %d, not the user", uid)
	}

	// The installed bash completion (loaded on demand by bash-completion,
	// as in an interactive shell) completes `heyvm exec <TAB>` with a
	// sandbox that exists: the suite's shared one.
	sh := `source /usr/share/bash-completion/bash_completion && __load_completion heyvm &&
COMP_WORDS=(heyvm exec ""); COMP_CWORD=2; COMP_LINE="heyvm exec "; COMP_POINT=${#COMP_LINE}
__start_heyvm heyvm "" exec; printf '%s\n' "${COMPREPLY[@]}"`
	cc := exec.Command("bash", "--norc", "--noprofile", "-c", sh)
	cc.Env = append(os.Environ(), "HEYO_HOME="+homeOf(sharedEnv), "PATH=/usr/bin:/bin") // the installed heyvm answers
	var ccErr bytes.Buffer
	cc.Stderr = &ccErr
	compl, err := cc.Output()
	if err != nil || !regexp.MustCompile(`(?m)^`+shared+`\b`).Match(compl) {
		t.Errorf("heyvm exec <TAB> through the installed completion: %v %q %s", err, compl, ccErr.String())
	}

	before := treeOf(t, heyo)
	out = aptGet(t, nil, "remove", "-y", "heyvm")
	t.Logf("apt-get remove:\n%s", out)
	if debInstalled() {
		t.Error("heyvm is still installed")
	}
	for _, gone := range []string{"/usr/bin/heyvm", "/usr/share/man/man1/heyvm.1.gz", "/usr/share/bash-completion/completions/heyvm"} {
		if _, err := os.Stat(gone); err == nil {
			t.Errorf("%s is still there after apt-get remove", gone)
		}
	}
	after := treeOf(t, heyo)
	for path, was := range before {
		if now, ok := after[path]; !ok {
			t.Errorf("apt-get remove took %s", path)
		} else if now != was {
			t.Errorf("apt-get remove changed %s: %s -> %s", path, was, now)
		}
	}
	for path := range after {
		if _, ok := before[path]; !ok {
			t.Errorf("apt-get remove added %s", path)
		}
	}
}
