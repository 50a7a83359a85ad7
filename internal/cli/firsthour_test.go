package cli

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/heyvm/heyvm/internal/backend"
	"github.com/heyvm/heyvm/internal/layout"
	"github.com/heyvm/heyvm/internal/sandbox"
)

// The exec command takes heyvm's flags after the id, up to the command.
func TestExecFlagsAfterID(t *testing.T) {
	for _, c := range []struct {
		args    []string
		argv    string
		env     string
		cwd     string
		wantErr string
	}{
		{args: []string{"box", "--", "ls", "-la"}, argv: "ls -la"},
		{args: []string{"box", "ls", "-la"}, argv: "ls -la"},
		{args: []string{"box", "--env", "A=1", "--", "sh", "-c", "echo $A"}, argv: "sh -c echo $A", env: "A=1"},
		{args: []string{"box", "--env", "A=1", "--cwd", "/tmp", "env"}, argv: "env", env: "A=1", cwd: "/tmp"},
		{args: []string{"--env", "B=2", "box", "--env", "A=1", "--", "true"}, argv: "true", env: "B=2,A=1"},
		{args: []string{"box", "--", "--env", "A=1"}, argv: "--env A=1"},
		{args: []string{"box", "--bogus", "--", "true"}, wantErr: "unknown flag: --bogus"},
		{args: []string{"box"}, wantErr: "no command given"},
		{args: []string{"box", "--env", "A=1"}, wantErr: "no command given"},
		{args: nil, wantErr: "exec needs a sandbox and a command"},
	} {
		cmd := newExecCmd(IO{In: strings.NewReader(""), Out: io.Discard, ErrOut: io.Discard})
		var got *ExecOptions
		cmd.RunE = wrapExecRunE(cmd, &got)
		cmd.SetArgs(c.args)
		cmd.SetOut(io.Discard)
		cmd.SetErr(io.Discard)
		err := cmd.Execute()
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("exec %q: %v, want %q", c.args, err, c.wantErr)
			}
			continue
		}
		if err != nil || got == nil {
			t.Errorf("exec %q: %v", c.args, err)
			continue
		}
		if strings.Join(got.Argv, " ") != c.argv || strings.Join(got.Env, ",") != c.env || got.Cwd != c.cwd || got.Ref != "box" {
			t.Errorf("exec %q: %+v", c.args, got)
		}
	}
}

// wrapExecRunE replaces exec's run with one that records the options it
// would run with.
func wrapExecRunE(cmd *cobra.Command, got **ExecOptions) func(*cobra.Command, []string) error {
	return func(c *cobra.Command, args []string) error {
		argv, err := commandAfterID(c, args[1:])
		if err != nil {
			return err
		}
		if len(argv) == 0 {
			return errors.New("no command given")
		}
		env, _ := c.Flags().GetStringArray("env")
		cwd, _ := c.Flags().GetString("cwd")
		*got = &ExecOptions{Ref: args[0], Argv: argv, Env: env, Cwd: cwd}
		return nil
	}
}

func TestTTLFlags(t *testing.T) {
	for _, c := range []struct {
		args    []string
		want    time.Duration
		wantErr string
	}{
		{args: nil, want: 0},
		{args: []string{"--ttl", "90m"}, want: 90 * time.Minute},
		{args: []string{"--ttl-seconds", "30"}, want: 30 * time.Second},
		{args: []string{"--ttl", "0"}, wantErr: "--ttl 0s: give a positive duration"},
		{args: []string{"--ttl", "-5m"}, wantErr: "give a positive duration"},
		{args: []string{"--ttl-seconds", "-1"}, wantErr: "--ttl-seconds -1: give a positive number"},
		{args: []string{"--ttl-seconds", "0"}, wantErr: "--ttl-seconds 0"},
		{args: []string{"--ttl", "1m", "--ttl-seconds", "5"}, wantErr: "not both"},
	} {
		var ttl time.Duration
		cmd := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error { return nil }}
		resolve := addTTLFlags(cmd, &ttl)
		cmd.RunE = func(*cobra.Command, []string) error { return resolve() }
		cmd.SetArgs(c.args)
		cmd.SetOut(io.Discard)
		cmd.SetErr(io.Discard)
		err := cmd.Execute()
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%q: %v, want %q", c.args, err, c.wantErr)
			}
		} else if err != nil || ttl != c.want {
			t.Errorf("%q: %v %v, want %v", c.args, ttl, err, c.want)
		}
	}
}

func TestStateTextAndPorts(t *testing.T) {
	cfg := &sandbox.Config{Ports: []backend.PortForward{{HostPort: 8080, GuestPort: 80}}}
	stopped := sandboxView{Config: cfg, State: sandbox.Stopped, LastStop: &sandbox.StopInfo{Reason: sandbox.StopRequested}}
	if got := stopped.stateText(); got != "stopped" {
		t.Errorf("a requested stop: %q", got)
	}
	stopped.LastStop.Reason = sandbox.StopExpired
	if got := stopped.stateText(); got != "stopped (expired)" {
		t.Errorf("expired: %q", got)
	}
	if got := stopped.portsText(); got != "127.0.0.1:8080->80" {
		t.Errorf("stopped ports: %q", got)
	}
	// A running sandbox shows its owner's forwards, --once and auto ones too.
	running := sandboxView{Config: cfg, State: sandbox.Running, Owner: &sandbox.OwnerInfo{Ports: []backend.PortForward{
		{HostPort: 8080, GuestPort: 80}, {HostPort: 9000, GuestPort: 9000, Once: true}, {HostPort: 3000, GuestPort: 3000, Auto: true}}}}
	if got := running.portsText(); got != "127.0.0.1:8080->80,127.0.0.1:9000->9000 (once),127.0.0.1:3000->3000 (auto)" {
		t.Errorf("running ports: %q", got)
	}
	damaged := sandboxView{Config: cfg, State: sandbox.Running, OwnerDamaged: "/x/owner.json is damaged"}
	if got := damaged.stateText(); !strings.HasPrefix(got, "running (owner file damaged: /x/owner.json is damaged") {
		t.Errorf("damaged owner file: %q", got)
	}
	broken := brokenView(sandbox.Broken{ID: "abc", Dir: "/x/abc", Err: errors.New("sandbox.yaml is corrupt")})
	if got := broken.stateText(); got != "damaged: sandbox.yaml is corrupt" || broken.ID != "abc" || broken.Error == "" {
		t.Errorf("broken: %q %+v", got, broken)
	}
}

// list shows a sandbox whose sandbox.yaml is damaged as a row, in the
// table and in JSON.
func TestListShowsDamagedSandbox(t *testing.T) {
	home := t.TempDir()
	t.Setenv(layout.EnvHome, home)
	root, err := layout.Open()
	if err != nil {
		t.Fatal(err)
	}
	files := root.Sandbox("bad000000000")
	if err := layout.EnsureDir(files.Dir); err != nil {
		t.Fatal(err)
	}
	if err := writeFileForTest(files.Config(), "id: bad000000000\nname: [trunc"); err != nil {
		t.Fatal(err)
	}
	out := runForTest(t, "list")
	if !strings.Contains(out, "bad000000000") || !strings.Contains(out, "damaged: ") {
		t.Errorf("list:\n%s", out)
	}
	js := runForTest(t, "list", "--json")
	if !strings.Contains(js, `"state": "damaged"`) || !strings.Contains(js, `"error": "`) || !strings.Contains(js, `"id": "bad000000000"`) {
		t.Errorf("list --json:\n%s", js)
	}
}

func writeFileForTest(path, text string) error { return os.WriteFile(path, []byte(text), 0o600) }

// runForTest runs heyvm's command tree and returns its standard output.
func runForTest(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	root := NewRoot(IO{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		t.Fatalf("heyvm %v: %v\n%s", args, err, errOut.String())
	}
	return out.String()
}
