package cli

import (
	"bytes"
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
	sb := &sandbox.Sandbox{Config: &sandbox.Config{ID: "abc123", Name: "box"}, Files: root.Sandbox("abc123")}
	got := SSHConfig(root, sb, &sandbox.OwnerInfo{SSHHost: "127.0.0.1", SSHPort: 2222})
	for _, want := range []string{"Host box\n", "HostName 127.0.0.1\n", "Port 2222\n", "User root\n", "IdentityFile /h/keys/id_ed25519\n",
		"UserKnownHostsFile /h/sandboxes/abc123/known_hosts\n", "HostKeyAlias heyvm-abc123\n", "StrictHostKeyChecking yes\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("ssh-config lacks %q:\n%s", want, got)
		}
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
	if err := root.Execute(); err != nil || !strings.Contains(out.String(), "build-default") {
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
