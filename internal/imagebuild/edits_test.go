package imagebuild

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// fakeRoot makes a small installed root with what the edits touch.
func fakeRoot(t *testing.T, dir string) {
	t.Helper()
	files := map[string]string{
		"etc/shadow":                      "root::19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n",
		"etc/ssh/ssh_host_rsa_key":        "secret",
		"etc/ssh/ssh_host_ed25519_key":    "secret",
		"etc/ssh/sshd_config":             "Port 22\n",
		"usr/share/doc/bash/copyright":    "GPL",
		"usr/share/man/man1/ls.1.gz":      "man",
		"usr/share/locale/de/LC_MESSAGES": "x",
		"var/lib/apt/lists/deb_Packages":  "pkgs",
		"var/lib/apt/lists/lock":          "",
		"var/log/dpkg.log":                "log",
		"etc/machine-id":                  "0123456789abcdef0123456789abcdef\n",
		"bin/busybox":                     "bb",
	}
	for p, data := range files {
		f := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte(data), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(dir, "sbin"), 0o755)
	os.Symlink("/bin/systemctl", filepath.Join(dir, "sbin/reboot")) // present: kept
	os.Symlink("/run/resolv.conf", filepath.Join(dir, "etc/resolv.conf"))
}

// treeOf lists a tree: path, type, mode, link target or content digest.
func treeOf(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		line := fmt.Sprintf("%s %v", rel, fi.Mode())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			line += " -> " + target
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			line += fmt.Sprintf(" %x", sha256.Sum256(b))
		}
		out = append(out, line)
		return nil
	})
	sort.Strings(out)
	return out
}

// The host build's edits (Go) and the build VM's (the same list as a
// busybox script) leave the same root.
func TestEditsScriptMatchesApplyEdits(t *testing.T) {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("busybox is not installed (apt-get install busybox-static)")
	}
	goRoot, shRoot := t.TempDir(), t.TempDir()
	fakeRoot(t, goRoot)
	fakeRoot(t, shRoot)
	if err := ApplyEdits(goRoot, GuestEdits()); err != nil {
		t.Fatal(err)
	}
	script := EditsScript(GuestEdits())
	// busybox's applets only, as in the build VM.
	bin := t.TempDir()
	for _, a := range []string{"sh", "mkdir", "rm", "chmod", "ln", "base64", "awk", "cat", "dirname"} {
		os.Symlink(bb, filepath.Join(bin, a))
	}
	cmd := exec.Command(bb, "sh", "-c", script)
	cmd.Env = []string{"PATH=" + bin, "R=" + shRoot}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the edits script: %v\n%s", err, out)
	}
	g, s := treeOf(t, goRoot), treeOf(t, shRoot)
	if strings.Join(g, "\n") != strings.Join(s, "\n") {
		t.Errorf("the roots differ:\nGo:\n%s\n\nscript:\n%s", strings.Join(g, "\n"), strings.Join(s, "\n"))
	}
	// And the edits did what they are for.
	tree := strings.Join(g, "\n")
	for _, want := range []string{"sbin/init Lrwxrwxrwx -> /bin/busybox", "sbin/reboot Lrwxrwxrwx -> /bin/systemctl", "sbin/poweroff Lrwxrwxrwx -> /bin/busybox", "etc/machine-id -r--r--r--", "etc/heyvm/rc.sysinit -rwxr-xr-x"} {
		if !strings.Contains(tree, want) {
			t.Errorf("the edited root lacks %q:\n%s", want, tree)
		}
	}
	for _, gone := range []string{"ssh_host_", "usr/share/doc/bash", "deb_Packages", "dpkg.log"} {
		if strings.Contains(tree, gone) {
			t.Errorf("the edited root still has %q", gone)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(shRoot, "etc/shadow")); !strings.HasPrefix(string(b), "root:*:19000:") {
		t.Errorf("root's password is not locked: %q", b)
	}
}
