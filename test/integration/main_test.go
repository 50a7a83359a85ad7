// Package integration boots real VMs under QEMU and talks SSH to them
// through the real heyvm binary. It runs as root (CI does) so it can make
// the ordinary user the rootless tests run as, and needs qemu-system and
// mmdebstrap; without them each test skips and says why.
//
// The default image is built once per machine into $HEYVM_TEST_IMAGE_CACHE
// (default /var/tmp/heyvm-test-cache) and shared by every test run.
package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/imagebuild"
)

var (
	heyvmBin  string
	cacheHome string // HEYO_HOME holding the cached images
	skipWhy   string
	shared    string // name of a sandbox shared by read-only tests
	sharedEnv []string
	sharedDir string // the run's scratch folder
)

func TestMain(m *testing.M) {
	code := func() int {
		if os.Geteuid() != 0 {
			skipWhy = "integration tests need root (they create an ordinary user for the rootless tests)"
		} else if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
			skipWhy = "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
		} else if _, err := exec.LookPath("mmdebstrap"); err != nil {
			skipWhy = "mmdebstrap is not installed (apt-get install mmdebstrap)"
		}
		if skipWhy != "" {
			fmt.Println("integration: skipping:", skipWhy)
			return m.Run()
		}
		// No ready snapshots made in the background behind a test's back
		// (they would outlive it): the warm-start test turns it on.
		os.Setenv("HEYVM_AUTO_WARM", "0")
		dir, err := os.MkdirTemp("", "heyvm-it-")
		if err != nil {
			panic(err)
		}
		defer os.RemoveAll(dir)
		heyvmBin = filepath.Join(dir, "heyvm")
		if out, err := exec.Command("go", "build", "-o", heyvmBin, "../../cmd/heyvm").CombinedOutput(); err != nil {
			fmt.Printf("build heyvm: %v\n%s", err, out)
			return 1
		}
		cacheHome = os.Getenv("HEYVM_TEST_IMAGE_CACHE")
		if cacheHome == "" {
			cacheHome = "/var/tmp/heyvm-test-cache"
		}
		start := time.Now()
		if err := ensureImage("", os.Stdout); err != nil {
			fmt.Printf("build the default image: %v\n", err)
			return 1
		}
		fmt.Printf("integration: default image ready in %s (cache %s)\n", time.Since(start).Round(time.Second), cacheHome)

		// One detached sandbox, shared by the tests that only run commands.
		sharedEnv = newHome(dir)
		shared = "shared"
		out, errOut, code := runIn(sharedEnv, "", "create", "--name", shared, "--memory", "512", "--env", "SANDBOX_ENV=from-create")
		if code != 0 {
			fmt.Printf("create shared sandbox: %s %s\n", out, errOut)
			return 1
		}
		defer cleanupHome(sharedEnv)
		sharedDir = dir
		defer func() {
			if buildEnv != nil {
				cleanupHome(buildEnv)
			}
		}()
		return m.Run()
	}()
	os.Exit(code)
}

// ensureImage builds the default image for arch ("" for the host's) into
// the cache, rebuilding it when the recipe changed since it was built.
func ensureImage(arch string, out io.Writer) error {
	name, args := image.DefaultName, []string{"images", "build-default"}
	if arch != "" {
		name = image.DefaultNameFor("qemu", arch)
		args = append(args, "--arch", arch)
	}
	if m, err := image.ReadMetadata(filepath.Join(cacheHome, "images", "qemu", name)); err == nil && m.Build.RecipeHash != imagebuild.RecipeHash() {
		fmt.Fprintf(out, "integration: the cached %s image was built by another recipe; rebuilding\n", name)
		args = append(args, "--force")
	}
	cmd := exec.Command(heyvmBin, args...)
	cmd.Env = append(os.Environ(), "HEYO_HOME="+cacheHome)
	cmd.Stdout, cmd.Stderr = out, out
	return cmd.Run()
}

// newHome makes a fresh HEYO_HOME whose images are the cached ones.
func newHome(parent string) []string {
	home, err := os.MkdirTemp(parent, "home-")
	if err != nil {
		panic(err)
	}
	if err := os.Symlink(filepath.Join(cacheHome, "images"), filepath.Join(home, "images")); err != nil {
		panic(err)
	}
	return append(os.Environ(), "HEYO_HOME="+home)
}

func homeOf(env []string) string {
	for _, e := range env {
		if strings.HasPrefix(e, "HEYO_HOME=") {
			return strings.TrimPrefix(e, "HEYO_HOME=")
		}
	}
	return ""
}

// cleanupHome stops and removes every sandbox in a home, so no VM or
// owner this test run started outlives it.
func cleanupHome(env []string) {
	out, _, _ := runIn(env, "", "list", "--json", "--all")
	var list []struct{ ID string }
	json.Unmarshal([]byte(out), &list)
	for _, s := range list {
		runIn(env, "", "rm", "--force", "--yes", s.ID)
	}
}

// testHome gives a test its own HEYO_HOME, cleaned up after it.
func testHome(t *testing.T) []string {
	t.Helper()
	needVM(t)
	env := newHome(t.TempDir())
	t.Cleanup(func() { cleanupHome(env) })
	return env
}

func needVM(t *testing.T) {
	t.Helper()
	if skipWhy != "" {
		t.Skip(skipWhy)
	}
}

// runIn runs heyvm with env and stdin, returning stdout, stderr and the
// exit code.
func runIn(env []string, stdin string, args ...string) (string, string, int) {
	return runWithin(5*time.Minute, env, stdin, args...)
}

// runWithin is runIn with its own time limit.
func runWithin(limit time.Duration, env []string, stdin string, args ...string) (string, string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, heyvmBin, args...)
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
	}
	return out.String(), errb.String(), code
}

// must runs heyvm and fails the test unless it exits 0.
func must(t *testing.T, env []string, args ...string) string {
	t.Helper()
	out, errOut, code := runIn(env, "", args...)
	if code != 0 {
		t.Fatalf("heyvm %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// fails runs heyvm, expects a non-zero exit and a one-line error
// containing want.
func fails(t *testing.T, env []string, want string, args ...string) {
	t.Helper()
	out, errOut, code := runIn(env, "", args...)
	if code == 0 {
		t.Fatalf("heyvm %s succeeded, want failure\n%s", strings.Join(args, " "), out)
	}
	if !strings.Contains(errOut, want) {
		t.Fatalf("heyvm %s: stderr %q does not contain %q", strings.Join(args, " "), errOut, want)
	}
	if n := strings.Count(strings.TrimSpace(errOut), "\n"); n > 1 {
		t.Errorf("heyvm %s: error is %d lines, want one:\n%s", strings.Join(args, " "), n+1, errOut)
	}
}

type sandboxJSON struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	State string `json:"state"`
	Dir   string `json:"dir"`
	Owner *struct {
		PID         int    `json:"pid"`
		SSHPort     int    `json:"ssh_port"`
		Accelerator string `json:"accelerator"`
	} `json:"owner"`
	LastStop *struct {
		Reason string `json:"reason"`
	} `json:"last_stop"`
}

func get(t *testing.T, env []string, ref string) sandboxJSON {
	t.Helper()
	var s sandboxJSON
	if err := json.Unmarshal([]byte(must(t, env, "get", "--json", ref)), &s); err != nil {
		t.Fatal(err)
	}
	return s
}
