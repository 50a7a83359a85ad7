package autostart

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"howett.net/plist"

	"github.com/heyvm/heyvm/internal/layout"
)

// fakeBinary is an executable file, since systemd-analyze checks that
// ExecStart names one.
func fakeBinary(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "heyvm")
	if err := os.WriteFile(p, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSystemdUnitVerifies(t *testing.T) {
	bin := fakeBinary(t)
	for _, kind := range []Kind{SystemdUser, SystemdSystem} {
		dir := t.TempDir()
		u := Unit{Kind: kind, Dir: dir, Name: "heyvm-autostart-test.service", Binary: bin, Home: "/home/u/.heyo"}
		b, err := u.Content()
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"ExecStart=" + bin + " autostart run", "ExecStop=" + bin + " autostart stop", "Environment=HEYO_HOME=/home/u/.heyo", "Type=oneshot", "RemainAfterExit=yes"} {
			if !strings.Contains(string(b), want+"\n") {
				t.Errorf("%s unit lacks %q:\n%s", kind, want, b)
			}
		}
		if _, err := u.Install(); err != nil {
			t.Fatal(err)
		}
		link, err := os.Readlink(filepath.Join(dir, u.wantedBy()+".wants", u.Name))
		if err != nil || link != u.Path() {
			t.Fatalf("not enabled: %v %q", err, link)
		}
		if _, err := exec.LookPath("systemd-analyze"); err != nil {
			t.Log("systemd-analyze is not installed (apt-get install systemd): skipping verify")
		} else {
			args := []string{"verify", u.Path()}
			if kind == SystemdUser {
				args = []string{"--user", "verify", u.Path()}
			}
			cmd := exec.Command("systemd-analyze", args...)
			// A user manager needs a runtime directory, even for verify.
			cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+t.TempDir())
			out, err := cmd.CombinedOutput()
			if err != nil || strings.Contains(string(out), u.Name) {
				t.Errorf("systemd-analyze %v: %v\n%s", args, err, out)
			}
		}
		if _, err := exec.LookPath("systemd-analyze"); err == nil {
			// The check discriminates: a unit whose program is missing fails.
			broken := Unit{Kind: kind, Dir: t.TempDir(), Name: u.Name, Binary: "/nonexistent/heyvm", Home: u.Home}
			broken.Install()
			cmd := exec.Command("systemd-analyze", "--user", "verify", broken.Path())
			cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+t.TempDir())
			if out, err := cmd.CombinedOutput(); err == nil {
				t.Errorf("systemd-analyze passed a unit with a missing program:\n%s", out)
			}
		}
		if err := u.Remove(); err != nil || u.Installed() {
			t.Fatalf("remove: %v", err)
		}
		if _, err := os.Lstat(filepath.Join(dir, u.wantedBy()+".wants", u.Name)); err == nil {
			t.Error("the enable link outlived the unit")
		}
	}
}

func TestLaunchAgentParses(t *testing.T) {
	u := Unit{Kind: Launchd, Dir: t.TempDir(), Name: "dev.heyvm.autostart.plist", Binary: "/usr/local/bin/heyvm", Home: "/Users/u/.heyo"}
	b, err := u.Content()
	if err != nil {
		t.Fatal(err)
	}
	label, args, runAtLoad, err := ParseLaunchAgent(b)
	if err != nil {
		t.Fatalf("not a property list: %v\n%s", err, b)
	}
	if label != "dev.heyvm.autostart" || strings.Join(args, " ") != "/usr/local/bin/heyvm autostart run" || !runAtLoad {
		t.Fatalf("plist: %q %q %v", label, args, runAtLoad)
	}
	if !strings.Contains(string(b), "<!DOCTYPE plist") || !strings.Contains(string(b), "<key>HEYO_HOME</key>") {
		t.Fatalf("plist text:\n%s", b)
	}
	// ProcessType is Interactive: the sandboxes' VMs, started by the job,
	// run under its resource class and must not be throttled.
	var la launchAgent
	if _, err := plist.Unmarshal(b, &la); err != nil || la.ProcessType != "Interactive" {
		t.Fatalf("ProcessType %q (%v)", la.ProcessType, err)
	}
	// Python's plistlib, an independent reader, where it is installed.
	if py, err := exec.LookPath("python3"); err == nil {
		p := filepath.Join(t.TempDir(), "a.plist")
		os.WriteFile(p, b, 0o644)
		out, err := exec.Command(py, "-c", "import plistlib,sys; d=plistlib.load(open(sys.argv[1],'rb')); print(' '.join(d['ProgramArguments']), d['RunAtLoad'], d['ProcessType'])", p).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "/usr/local/bin/heyvm autostart run True Interactive" {
			t.Fatalf("plistlib: %v %s", err, out)
		}
	}
}

func TestUnitNamesAndRefusals(t *testing.T) {
	t.Setenv("HOME", "/home/u")
	t.Setenv(EnvUnitDir, "")
	t.Setenv("XDG_CONFIG_HOME", "/home/u/cfg")
	def, err := For(layout.Root{Dir: "/home/u/.heyo"}, "/bin/heyvm")
	if err != nil {
		t.Fatal(err)
	}
	other, _ := For(layout.Root{Dir: "/srv/heyo"}, "/bin/heyvm")
	if def.Name == other.Name {
		t.Fatalf("two state roots share the unit name %s", def.Name)
	}
	if os.Geteuid() != 0 && def.Dir != "/home/u/cfg/systemd/user" {
		t.Errorf("user unit dir %s", def.Dir)
	}
	bad := Unit{Kind: SystemdUser, Binary: "/my bin/heyvm", Home: "/h"}
	if _, err := bad.Content(); err == nil {
		t.Fatal("a path with a space was accepted")
	}
}
