package worktree

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func gitRepo(t *testing.T, commit bool) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	dir := filepath.Join(t.TempDir(), "proj")
	os.Mkdir(dir, 0o755)
	run := func(args ...string) {
		cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v %s", args, err, out)
		}
	}
	run("init", "-q", "-b", "main")
	if commit {
		os.WriteFile(filepath.Join(dir, "README"), []byte("hi\n"), 0o644)
		run("add", "README")
		run("commit", "-q", "-m", "first")
	}
	return dir
}

func TestEnsureCreatesAndReuses(t *testing.T) {
	ctx := context.Background()
	dir := gitRepo(t, true)
	r, err := Find(ctx, filepath.Join(dir))
	if err != nil {
		t.Fatal(err)
	}
	if r.Name != "proj" || r.CommonDir != filepath.Join(dir, ".git") {
		t.Fatalf("%+v", r)
	}
	p, created, err := r.Ensure(ctx, "feat/x")
	if err != nil || !created || p != filepath.Join(filepath.Dir(dir), "proj.worktrees", "feat", "x") {
		t.Fatalf("%s %v %v", p, created, err)
	}
	if _, err := os.Stat(filepath.Join(p, "README")); err != nil {
		t.Fatal("worktree has no checkout")
	}
	p2, created, err := r.Ensure(ctx, "feat/x")
	if err != nil || created || p2 != p {
		t.Fatalf("reuse: %s %v %v", p2, created, err)
	}
	// From inside the worktree, Find still names the main repository.
	r2, err := Find(ctx, p)
	if err != nil || r2.Top != dir {
		t.Fatalf("find from worktree: %+v %v", r2, err)
	}
	// The main worktree's own branch is reused in place.
	if p, _, err := r.Ensure(ctx, "main"); err != nil || p != dir {
		t.Fatalf("main: %s %v", p, err)
	}
}

func TestBadRepoAndBranch(t *testing.T) {
	ctx := context.Background()
	if _, err := Find(ctx, t.TempDir()); err == nil || !strings.Contains(err.Error(), "not inside a git repository") {
		t.Fatalf("outside a repo: %v", err)
	}
	r, err := Find(ctx, gitRepo(t, true))
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"a..b", "bad name", "x~1", "-x", "", "end."} {
		if err := r.ValidateBranch(ctx, b); err == nil {
			t.Errorf("branch %q accepted", b)
		}
	}
	empty, _ := Find(ctx, gitRepo(t, false))
	if _, _, err := empty.Ensure(ctx, "x"); err == nil || !strings.Contains(err.Error(), "no commits") {
		t.Fatalf("empty repo: %v", err)
	}
}
