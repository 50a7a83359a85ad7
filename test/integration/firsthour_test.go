package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// execEnding runs `heyvm exec shared -- cat` with stdin at its end in one
// of three ways and says how it went; it must end within 5 s, with no
// output and exit 0.
func execEnding(env []string, way int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var cmd *exec.Cmd
	switch way {
	case 0: // stdin is /dev/null
		cmd = exec.CommandContext(ctx, heyvmBin, "exec", shared, "--", "cat")
		null, err := os.Open(os.DevNull)
		if err != nil {
			return err
		}
		defer null.Close()
		cmd.Stdin = null
	case 1: // an empty pipe, closed at once
		cmd = exec.CommandContext(ctx, heyvmBin, "exec", shared, "--", "cat")
		cmd.Stdin = strings.NewReader("")
	case 2: // no stdin at all: fd 0 closed
		cmd = exec.CommandContext(ctx, "sh", "-c", `exec "$0" exec "$1" -- cat <&-`, heyvmBin, shared)
	}
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return fmt.Errorf("still running after 5 s")
	}
	if err != nil || len(out) != 0 {
		return fmt.Errorf("%v: %q", err, out)
	}
	return nil
}

// EOF on stdin reaches the remote command every time, whatever the
// timing: through the owner's shared connection and directly.
func TestExecEOFNeverHangs(t *testing.T) {
	needVM(t)
	ways := []string{"stdin from /dev/null", "an empty pipe", "stdin closed"}
	for _, path := range []string{"shared", "direct"} {
		env := sharedEnv
		if path == "direct" {
			env = append(append([]string(nil), sharedEnv...), "HEYVM_SSH_DIRECT=1")
		}
		const runs, parallel = 200, 4
		var mu sync.Mutex
		var failures []string
		var wg sync.WaitGroup
		next := make(chan int)
		for w := 0; w < parallel; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					if err := execEnding(env, i%3); err != nil {
						mu.Lock()
						failures = append(failures, fmt.Sprintf("run %d (%s): %v", i, ways[i%3], err))
						mu.Unlock()
					}
				}
			}()
		}
		start := time.Now()
		for i := 0; i < runs; i++ {
			next <- i
		}
		close(next)
		wg.Wait()
		t.Logf("%s connection: %d runs of exec -- cat with stdin at its end in %s", path, runs, time.Since(start).Round(time.Millisecond))
		if len(failures) > 0 {
			t.Errorf("%s connection: %d of %d runs failed, e.g.:\n%s", path, len(failures), runs, strings.Join(failures[:min(len(failures), 5)], "\n"))
		}
	}
	// sh with stdin at its end ends too (a login shell that reads EOF).
	for _, direct := range []bool{false, true} {
		env := sharedEnv
		if direct {
			env = append(append([]string(nil), sharedEnv...), "HEYVM_SSH_DIRECT=1")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		cmd := exec.CommandContext(ctx, "sh", "-c", `exec "$0" sh "$1" </dev/null`, heyvmBin, shared)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if ctx.Err() != nil || err != nil {
			t.Errorf("sh </dev/null (direct %v): %v %v %q", direct, ctx.Err(), err, out)
		}
		cancel()
	}
}

// The faults a new user met in the first hour, through the binary.
func TestFirstHourFaults(t *testing.T) {
	env := testHome(t)
	noSandboxes := func(when string) {
		t.Helper()
		if des, _ := os.ReadDir(filepath.Join(homeOf(env), "sandboxes")); len(des) > 0 {
			for _, d := range des {
				if !strings.HasPrefix(d.Name(), ".") {
					t.Fatalf("%s left sandbox %s", when, d.Name())
				}
			}
		}
	}
	// A disk smaller than the image's, or absurdly large: refused first.
	fails(t, env, "smaller than image debian:12's disk (4096 MiB): give at least 4096", "create", "--disk-size", "100")
	fails(t, env, "more than heyvm supports", "create", "--disk-size", "99999999999")
	// TTL flags that make no sense.
	fails(t, env, "give a positive number of seconds", "create", "--ttl-seconds", "-1")
	fails(t, env, "give a positive duration", "create", "--ttl", "0")
	fails(t, env, "not both", "create", "--ttl", "1m", "--ttl-seconds", "5")
	// A taken host port: refused before anything is made.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	taken := ln.Addr().(*net.TCPAddr).Port
	fails(t, env, fmt.Sprintf("host port 127.0.0.1:%d is already in use", taken), "create", "--name", "p2", "--port", fmt.Sprintf("%d:80", taken))
	ln.Close()
	noSandboxes("the refused creates")

	// The same name with a free port now works.
	must(t, env, "create", "--name", "p2", "--memory", "384", "--port", fmt.Sprintf("%d:80", freePort(t)))
	id := get(t, env, "p2").ID

	// Names that would shadow an id are refused.
	fails(t, env, "would shadow it", "create", "--name", id)
	fails(t, env, "would shadow it", "create", "--name", id[:5])

	// heyvm's flags after the id, before the command.
	if out := must(t, env, "exec", "p2", "--env", "A=1", "--cwd", "/tmp", "--", "sh", "-c", "echo $A $PWD"); out != "1 /tmp\n" {
		t.Errorf("exec ID --env A=1 --cwd /tmp -- ...: %q", out)
	}
	fails(t, env, "no command given", "exec", "p2")
	fails(t, env, "exec needs a sandbox and a command", "exec")

	// A cold sandbox has its own machine id and its name in /etc/hostname.
	mine := strings.Fields(must(t, env, "exec", "p2", "--", "sh", "-c", "cat /etc/machine-id /etc/hostname"))
	theirs := strings.TrimSpace(must(t, sharedEnv, "exec", shared, "--", "cat", "/etc/machine-id"))
	if len(mine) != 2 || len(mine[0]) != 32 || mine[0] == theirs || mine[1] != "p2" {
		t.Errorf("machine-id and hostname of a cold sandbox: %q (the shared sandbox's id: %q)", mine, theirs)
	}

	// A damaged owner.json on a running sandbox: the owner writes it again.
	dir := get(t, env, "p2").Dir
	os.WriteFile(filepath.Join(dir, "owner.json"), []byte("{garbage"), 0o600)
	if s := get(t, env, "p2"); s.State != "running" || s.Owner == nil {
		t.Errorf("a damaged owner.json: %+v", s)
	}
	if out := must(t, env, "exec", "p2", "--", "echo", "ok"); out != "ok\n" {
		t.Errorf("exec after a damaged owner.json: %q", out)
	}

	// A deleted disk: start says so in one line.
	must(t, env, "stop", "p2")
	if out := must(t, env, "list"); !strings.Contains(out, " stopped ") || strings.Contains(out, "stopped (stopped)") {
		t.Errorf("list after stop:\n%s", out)
	}
	os.Remove(filepath.Join(dir, "rootfs.qcow2"))
	fails(t, env, "rootfs.qcow2 is missing", "start", "p2")

	// Naming it twice removes it once, and succeeds.
	must(t, env, "rm", "--yes", "p2", id, "p2")
	noSandboxes("rm p2 id p2")
}
