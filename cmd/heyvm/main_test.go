package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heyvm/heyvm/internal/layout"
	"github.com/heyvm/heyvm/internal/sandbox"
)

// With HEYVM_TEST_AS_HEYVM=1 the test binary is heyvm itself, so a shell
// can run it through a `heyvm` script on PATH without a separate build.
func TestMain(m *testing.M) {
	if os.Getenv("HEYVM_TEST_AS_HEYVM") == "1" {
		main()
	}
	os.Exit(m.Run())
}

// heyvmOnPath puts a `heyvm` that runs this test binary as heyvm first on
// PATH, and returns its path and the environment for it.
func heyvmOnPath(t *testing.T, heyoHome string) (string, []string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	script := "#!/bin/sh\nHEYVM_TEST_AS_HEYVM=1 exec '" + self + "' \"$@\"\n"
	if err := os.WriteFile(filepath.Join(dir, "heyvm"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "heyvm"), append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"), layout.EnvHome+"="+heyoHome)
}

// bash's completion of `heyvm exec <TAB>` lists the sandboxes that exist:
// the script `heyvm completion bash` prints, run as bash runs it (through
// the bash-completion package, as Debian's bash does), asks heyvm, which
// reads the store.
func TestBashCompletionOfExecListsSandboxes(t *testing.T) {
	const bashCompletion = "/usr/share/bash-completion/bash_completion"
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	if _, err := os.Stat(bashCompletion); err != nil {
		if os.Getenv("HEYVM_TEST_RELEASE") == "1" {
			t.Fatalf("%s is missing: apt-get install bash-completion (scripts/install-deps.sh does)", bashCompletion)
		}
		t.Skipf("%s is missing (apt-get install bash-completion)", bashCompletion)
	}
	home := t.TempDir()
	// A sandbox as `create` leaves it in the store, made through the
	// store's own Create; no disk and nothing booted, as completion reads
	// only sandbox.yaml.
	st := sandbox.Store{Root: layout.Root{Dir: home}}
	for _, name := range []string{"webapp", "worker"} {
		cfg := &sandbox.Config{Name: name, Image: "debian:12", Backend: "qemu", Arch: "amd64", CPUs: 1, MemoryMiB: 512}
		if _, err := st.Create(context.Background(), cfg, func(string) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	heyvm, env := heyvmOnPath(t, home)
	script := filepath.Join(t.TempDir(), "heyvm.bash")
	gen := exec.Command(heyvm, "completion", "bash")
	gen.Env = env
	out, err := gen.Output()
	if err != nil {
		t.Fatalf("heyvm completion bash: %v", err)
	}
	os.WriteFile(script, out, 0o644)

	complete := func(line string) []string {
		t.Helper()
		// What bash sets before calling the completion function for
		// `line<TAB>`.
		sh := `source ` + bashCompletion + ` && source "$1" && line="$2" &&
read -ra COMP_WORDS <<<"$line" && [ "${line: -1}" != " " ] || COMP_WORDS+=("")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMP_LINE="$line"; COMP_POINT=${#line}
__start_heyvm heyvm "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"`
		c := exec.Command("bash", "--norc", "--noprofile", "-c", sh, "bash", script, line)
		c.Env = env
		var stderr strings.Builder
		c.Stderr = &stderr // compopt says it runs outside a real completion: harmless
		b, err := c.Output()
		if err != nil {
			t.Fatalf("completing %q: %v\n%s", line, err, stderr.String())
		}
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				got = append(got, strings.Fields(l)[0]) // bash shows "name  (description)" when there are several
			}
		}
		return got
	}
	if got := strings.Join(complete("heyvm exec "), " "); got != "webapp worker" {
		t.Errorf("heyvm exec <TAB>: %q, want webapp worker", got)
	}
	if got := strings.Join(complete("heyvm exec we"), " "); got != "webapp" {
		t.Errorf("heyvm exec we<TAB>: %q, want webapp", got)
	}
}

// `heyvm version --json` parses and names the commit heyvm was built from:
// set by `make` (-ldflags, as GoReleaser does), and, for a plain `go build`
// in a clone, read from the build information Go records.
func TestVersionJSONNamesTheCommit(t *testing.T) {
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skip("not a git checkout: no commit to compare with")
	}
	want := strings.TrimSpace(string(head))
	dir := t.TempDir()
	check := func(how, bin string) {
		t.Helper()
		out, err := exec.Command(bin, "version", "--json").Output()
		if err != nil {
			t.Fatalf("%s: %v", how, err)
		}
		var v struct {
			Version   string `json:"version"`
			Commit    string `json:"commit"`
			Date      string `json:"date"`
			GoVersion string `json:"go_version"`
			OS        string `json:"os"`
			Arch      string `json:"arch"`
		}
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatalf("%s: version --json is not JSON: %v\n%s", how, err, out)
		}
		if v.Commit != want || v.Date == "" || v.Version == "" || v.GoVersion == "" || v.OS == "" || v.Arch == "" {
			t.Errorf("%s: version --json: %s (HEAD is %s)", how, out, want)
		}
	}
	if _, err := exec.LookPath("make"); err == nil {
		bin := filepath.Join(dir, "heyvm-make")
		if out, err := exec.Command("make", "-s", "-C", "../..", "build", "BIN="+bin).CombinedOutput(); err != nil {
			t.Fatalf("make build: %v\n%s", err, out)
		}
		check("make build", bin)
	}
	// Go stamps VCS information only where .git is a directory (not in a
	// `git worktree`).
	if fi, err := os.Stat("../../.git"); err == nil && fi.IsDir() {
		bin := filepath.Join(dir, "heyvm-go")
		// -buildvcs=true: the environment may turn stamping off (GOFLAGS).
		if out, err := exec.Command("go", "build", "-buildvcs=true", "-o", bin, ".").CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
		check("go build", bin)
	} else {
		t.Log("../../.git is not a directory (a worktree?): the go build check is left out")
	}
}

// heyvm links no cluster client: that weight lives in heyvm-kubevirt.
func TestNoClusterClientInHeyvm(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, p := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(p, "k8s.io/") || strings.HasPrefix(p, "kubevirt.io/") || strings.HasPrefix(p, "sigs.k8s.io/") {
			t.Fatalf("heyvm links %s: keep cluster code in heyvm-kubevirt (internal/kubevirt/kvcli)", p)
		}
	}
}
