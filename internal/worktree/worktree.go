// Package worktree finds a git repository and creates or reuses the
// worktree for a branch, the way `heyvm wt` needs it. It drives the git
// command line, so git's own rules and messages apply.
package worktree

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Repo is a git repository on the host.
type Repo struct {
	Top       string // the main worktree's top directory
	Name      string // its base name
	CommonDir string // the shared .git directory
}

func git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(errb.String())
		msg = strings.TrimPrefix(msg, "fatal: ")
		if msg == "" {
			msg = err.Error()
		}
		return "", errors.New(strings.ReplaceAll(msg, "\n", "; "))
	}
	return strings.TrimSpace(out.String()), nil
}

// Find returns the repository that holds dir.
func Find(ctx context.Context, dir string) (*Repo, error) {
	if _, err := exec.LookPath("git"); err != nil {
		return nil, errors.New("git is not installed: run `sudo apt-get install git`")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("%s does not exist", abs)
	}
	common, err := git(ctx, abs, "rev-parse", "--path-format=absolute", "--git-common-dir")
	if err != nil {
		return nil, fmt.Errorf("%s is not inside a git repository: cd into one or pass --repo DIR (for a sandbox without a repository, use `heyvm create`)", abs)
	}
	// The main worktree is the parent of the common dir for ordinary
	// repositories; linked worktrees share it.
	top := filepath.Dir(common)
	if filepath.Base(common) != ".git" {
		return nil, fmt.Errorf("%s is a bare repository: heyvm wt needs a repository with a working tree", common)
	}
	return &Repo{Top: top, Name: filepath.Base(top), CommonDir: common}, nil
}

// ValidateBranch checks a branch name with git's own rules.
func (r *Repo) ValidateBranch(ctx context.Context, branch string) error {
	if branch == "" || strings.HasPrefix(branch, "-") {
		return fmt.Errorf("invalid branch name %q", branch)
	}
	if _, err := git(ctx, r.Top, "check-ref-format", "--branch", branch); err != nil {
		return fmt.Errorf("git refuses the branch name %q: %v", branch, err)
	}
	return nil
}

// DefaultPath is where heyvm puts a new worktree: beside the repository,
// in <repo>.worktrees/<branch>.
func (r *Repo) DefaultPath(branch string) string {
	return filepath.Join(filepath.Dir(r.Top), r.Name+".worktrees", filepath.FromSlash(branch))
}

// Ensure returns the worktree for branch, creating it (and the branch,
// from HEAD) if needed. An existing worktree of the branch is reused
// wherever it is.
func (r *Repo) Ensure(ctx context.Context, branch string) (path string, created bool, err error) {
	list, err := git(ctx, r.Top, "worktree", "list", "--porcelain")
	if err != nil {
		return "", false, err
	}
	if p := findWorktree(list, branch); p != "" {
		return p, false, nil
	}
	path = r.DefaultPath(branch)
	if _, err := os.Stat(path); err == nil {
		return "", false, fmt.Errorf("%s exists but is not a worktree of branch %s: move it away or remove it", path, branch)
	}
	if _, err := git(ctx, r.Top, "show-ref", "--verify", "--quiet", "refs/heads/"+branch); err == nil {
		_, err = git(ctx, r.Top, "worktree", "add", path, branch)
		if err != nil {
			return "", false, fmt.Errorf("git worktree add: %v", err)
		}
		return path, true, nil
	}
	if _, err := git(ctx, r.Top, "rev-parse", "--verify", "--quiet", "HEAD"); err != nil {
		return "", false, fmt.Errorf("the repository %s has no commits yet, so branch %s cannot start from HEAD: make a first commit", r.Top, branch)
	}
	if _, err := git(ctx, r.Top, "worktree", "add", "-b", branch, path, "HEAD"); err != nil {
		return "", false, fmt.Errorf("git worktree add: %v", err)
	}
	return path, true, nil
}

// findWorktree finds branch in `git worktree list --porcelain` output.
func findWorktree(porcelain, branch string) string {
	var path string
	for _, l := range strings.Split(porcelain, "\n") {
		switch {
		case strings.HasPrefix(l, "worktree "):
			path = strings.TrimPrefix(l, "worktree ")
		case l == "branch refs/heads/"+branch:
			return path
		}
	}
	return ""
}
