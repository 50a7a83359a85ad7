package cli

import (
	"bytes"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/heyvm/heyvm/internal/layout"
	"github.com/heyvm/heyvm/internal/sandbox"
)

func TestCreateOptionsValidate(t *testing.T) {
	dir := t.TempDir()
	good := CreateOptions{CPUs: 2, MemoryMiB: 512, Env: []string{"A=1", "B="}, MountSpecs: []string{dir + ":/data:ro"}, PortSpecs: []string{"8080", "18080:80"}}
	if err := good.validate(); err != nil {
		t.Fatal(err)
	}
	if len(good.Mounts) != 1 || !good.Mounts[0].ReadOnly || len(good.Ports) != 2 || good.Ports[1].HostPort != 18080 {
		t.Fatalf("parsed: %+v", good)
	}
	for want, o := range map[string]CreateOptions{
		"--memory 0 is too small":  {CPUs: 1, MemoryMiB: 0},
		"--cpus 0 is out of range": {CPUs: 0, MemoryMiB: 512},
		"--disk-size -1":           {CPUs: 1, MemoryMiB: 512, DiskSizeMiB: -1},
		"not KEY=VALUE":            {CPUs: 1, MemoryMiB: 512, Env: []string{"=x"}},
		"given twice":              {CPUs: 1, MemoryMiB: 512, PortSpecs: []string{"80", "80:81"}},
		"invalid sandbox name":     {CPUs: 1, MemoryMiB: 512, Name: "Nope!"},
		"relative":                 {CPUs: 1, MemoryMiB: 512, MountSpecs: []string{dir + ":rel"}},
	} {
		if err := o.validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validate(%+v) = %v, want %q", o, err, want)
		}
	}
}

func TestSSHConfigBlock(t *testing.T) {
	root := layout.Root{Dir: "/h"}
	t.Setenv(layout.EnvHome, "/h")
	sb := &sandbox.Sandbox{Config: &sandbox.Config{ID: "abc123", Name: "box"}, Files: root.Sandbox("abc123")}
	got := SSHConfig(root, sb, "/usr/bin/heyvm")
	for _, want := range []string{"Host box\n", "User root\n", "IdentityFile /h/keys/id_ed25519\n", "ProxyCommand env HEYO_HOME=/h /usr/bin/heyvm ssh-proxy abc123\n",
		"UserKnownHostsFile /h/sandboxes/abc123/known_hosts\n", "HostKeyAlias heyvm-abc123\n", "StrictHostKeyChecking yes\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("ssh-config lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "Port ") {
		t.Errorf("ssh-config names a port, which changes at every start:\n%s", got)
	}
}

func TestCommandsWithoutATerminal(t *testing.T) {
	t.Setenv(layout.EnvHome, t.TempDir())
	var out, errOut bytes.Buffer
	root := NewRoot(IO{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	root.SetArgs([]string{"list"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "ID  ") {
		t.Fatalf("list on an empty store: %q", out.String())
	}
	out.Reset()
	root.SetArgs([]string{"images", "list"})
	if err := root.Execute(); err != nil || !strings.Contains(out.String(), "images pull default") {
		t.Fatalf("images list: %v %q", err, out.String())
	}
	root.SetArgs([]string{"exec", "nosuch", "--", "true"})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "no such sandbox") {
		t.Fatalf("exec on a missing sandbox: %v", err)
	}
}

func TestHumanFormats(t *testing.T) {
	if humanBytes(3<<30) != "3.0 GiB" || humanBytes(5<<20) != "5 MiB" || humanBytes(12) != "12 B" {
		t.Fatal("humanBytes")
	}
	if humanAge(time.Now().Add(-90*time.Minute)) != "1h" || humanAge(time.Now().Add(-72*time.Hour)) != "3d" {
		t.Fatal("humanAge")
	}
}

func TestUnknownSubcommandFails(t *testing.T) {
	t.Setenv(layout.EnvHome, t.TempDir())
	for _, args := range [][]string{{"images", "frobnicate"}, {"images", "lsit"}, {"images"}} {
		root := NewRoot(IO{In: strings.NewReader(""), Out: io.Discard, ErrOut: io.Discard})
		root.SetArgs(args)
		err := root.Execute()
		if err == nil {
			t.Fatalf("heyvm %v succeeded", args)
		}
		if args[len(args)-1] == "lsit" && !strings.Contains(err.Error(), `did you mean "list"`) {
			t.Errorf("heyvm %v: no suggestion in %q", args, err)
		}
	}
}

func TestNameFromRef(t *testing.T) {
	for ref, want := range map[string]string{
		"ghcr.io/acme/heyvm-base:1":                            "heyvm-base:1",
		"127.0.0.1:5000/heyvm/debian":                          "debian:latest",
		"ghcr.io/acme/base@sha256:" + strings.Repeat("ab", 32): "base:" + strings.Repeat("ab", 6),
	} {
		if got, err := nameFromRef(ref, "amd64", "qemu"); err != nil || got != want {
			t.Errorf("nameFromRef(%q) = %q, %v; want %q", ref, got, err, want)
		}
	}
	if got, _ := nameFromRef("ghcr.io/acme/base:1", "arm64", "qemu"); got != "base:1-arm64" && runtime.GOARCH == "amd64" {
		t.Errorf("foreign arch: %q", got)
	}
}

func TestStateTextShowsWhy(t *testing.T) {
	v := sandboxView{State: sandbox.Paused, Owner: &sandbox.OwnerInfo{Paused: &sandbox.PauseInfo{Reason: "host disk full: 3 MB free on /mnt"}}}
	if got := v.stateText(); got != "paused (host disk full: 3 MB free on /mnt)" {
		t.Fatalf("paused: %q", got)
	}
	v = sandboxView{State: sandbox.Running, Owner: &sandbox.OwnerInfo{BrokenShares: []string{"/data (/h): its virtiofsd exited"}}}
	if got := v.stateText(); !strings.HasPrefix(got, "running (shared folder broken: /data") {
		t.Fatalf("broken share: %q", got)
	}
}

func TestExitErrorMessage(t *testing.T) {
	if (ExitError{Code: 130, Msg: "gave up"}).Error() != "gave up" || (ExitError{Code: 3}).Error() != "exit status 3" {
		t.Fatal("ExitError text")
	}
}

// The interactive commands ask a context elsewhere for a pty.
func TestInteractiveCommandsWantTTY(t *testing.T) {
	root := NewRoot(IO{})
	for _, path := range [][]string{{"sh"}, {"console"}} {
		c, _, err := root.Find(path)
		if err != nil {
			t.Fatal(err)
		}
		if c.Annotations[annTTY] != "yes" {
			t.Errorf("%v does not ask for a pty on a context elsewhere", path)
		}
	}
}

// An ordinary user's PATH on Debian has no sbin folders, where
// mkfs.ext4 and depmod are: heyvm adds them, after the user's own.
func TestWithSystemDirs(t *testing.T) {
	cases := map[string]string{
		"/usr/local/bin:/usr/bin:/bin":           "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
		"/usr/sbin:/usr/bin:/sbin:/bin":          "/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/sbin",
		"":                                       "/usr/local/sbin:/usr/sbin:/sbin",
		"/usr/local/sbin:/usr/sbin:/sbin:/x/bin": "/usr/local/sbin:/usr/sbin:/sbin:/x/bin",
	}
	for in, want := range cases {
		if got := withSystemDirs(in); got != want {
			t.Errorf("withSystemDirs(%q) = %q, want %q", in, got, want)
		}
	}
}
