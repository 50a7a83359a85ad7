// Package deploy is `heyvm wt BRANCH --deploy`: a branch's worktree sent
// to a sandbox that runs elsewhere (a context's host), into its
// /workspace, and commits made there brought back.
//
// The history goes by git itself, over heyvm: git's ssh is heyvm's
// `__git-ssh`, which runs git's remote half (git-receive-pack,
// git-upload-pack) in the sandbox with `heyvm exec` on the context, so
// only objects the sandbox lacks cross, and no .git internals are copied.
// The worktree's uncommitted, not-ignored files follow as a tar stream
// (and deleted ones are deleted), so the sandbox holds what the worktree
// holds. Commits made in the sandbox come back with --pull as a fetch
// into refs/remotes/heyvm/<context>/<branch>, and the local branch moves
// only where that is a fast-forward: local history is never rewritten.
package deploy

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/heyvm/heyvm/internal/sshclient"
)

// Workspace is where the worktree goes in the sandbox.
const Workspace = "/workspace"

// Runner runs a heyvm command where the sandbox is (the context's
// target), on the given streams, and returns its exit status.
type Runner func(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer, argv []string) (int, error)

// output runs a heyvm command there and returns its standard output; a
// failure is an error with its last line of standard error.
func (r Runner) output(ctx context.Context, argv ...string) ([]byte, error) {
	var out, errb bytes.Buffer
	code, err := r(ctx, strings.NewReader(""), &out, &errb, argv)
	if err != nil {
		return nil, err
	}
	if code != 0 {
		msg := strings.TrimPrefix(lastLine(errb.String()), "heyvm: ")
		if msg == "" {
			msg = fmt.Sprintf("exit status %d", code)
		}
		return nil, errors.New(msg)
	}
	return out.Bytes(), nil
}

// Options say what to deploy where.
type Options struct {
	Context  string // the context's name
	Sandbox  string
	Worktree string // the branch's worktree here
	Branch   string
	// GitSSH is the command git runs as ssh for the sandbox: this heyvm's
	// `--context C __git-ssh SANDBOX`.
	GitSSH string
	// CreateArgs create the sandbox when it is not there (image, shape).
	CreateArgs []string
	Log        io.Writer
}

// Result says what a deploy did.
type Result struct {
	Created bool
	Commit  string
	Files   int // uncommitted files sent
	Deleted int // deleted files removed there
}

// sandboxState is what `get --json` says of a remote sandbox.
type sandboxState struct {
	ID    string `json:"id"`
	State string `json:"state"`
}

// Deploy sends the worktree's branch and its uncommitted files to the
// sandbox, creating or starting it first.
func Deploy(ctx context.Context, r Runner, o Options) (*Result, error) {
	res := &Result{}
	head, err := git(ctx, o.Worktree, "rev-parse", "HEAD")
	if err != nil {
		return nil, err
	}
	res.Commit = head
	created, err := ensureRunning(ctx, r, o)
	if err != nil {
		return nil, err
	}
	res.Created = created
	// The sandbox's repository: made once; pushes update its branch, and
	// the files are set from the commit below.
	prep := "set -e; mkdir -p " + Workspace + "; cd " + Workspace + "; " +
		"[ -d .git ] || git init -q -b " + sshclient.ShellQuote(o.Branch) + "; " +
		"git config receive.denyCurrentBranch ignore; git config gc.auto 0; " +
		"git rev-parse -q --verify " + sshclient.ShellQuote("refs/heads/"+o.Branch) + " || true"
	out, err := r.output(ctx, "exec", o.Sandbox, "--", "sh", "-c", prep)
	if err != nil {
		return nil, fmt.Errorf("prepare %s in %s: %w", Workspace, o.Sandbox, err)
	}
	if there := strings.TrimSpace(string(out)); there != "" && there != head {
		// Commits made there that are not here would be lost.
		if _, err := git(ctx, o.Worktree, "merge-base", "--is-ancestor", there, head); err != nil {
			return nil, fmt.Errorf("sandbox %s has commits on %s that are not here (its head %.12s): bring them back first with `heyvm wt %s --deploy --pull`", o.Sandbox, o.Branch, there, o.Branch)
		}
	}
	if err := push(ctx, o, head); err != nil {
		return nil, err
	}
	// The worktree as the commit, then the files not committed here.
	files, deleted, err := changes(ctx, o.Worktree)
	if err != nil {
		return nil, err
	}
	res.Files, res.Deleted = len(files), len(deleted)
	set := "set -e; cd " + Workspace + "; git symbolic-ref HEAD " + sshclient.ShellQuote("refs/heads/"+o.Branch) +
		"; git reset -q --hard " + head + "; git clean -q -fd; tar -x -f -"
	if len(deleted) > 0 {
		set += "; xargs -0 rm -f < .git/heyvm-deleted; rm -f .git/heyvm-deleted"
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeTar(pw, o.Worktree, files, deleted)) }()
	var errb bytes.Buffer
	code, err := r(ctx, pr, o.Log, &errb, []string{"exec", o.Sandbox, "--", "sh", "-c", set})
	pr.Close()
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return nil, fmt.Errorf("set the files in %s: exit %d: %s", o.Sandbox, code, lastLine(errb.String()))
	}
	return res, nil
}

// ensureRunning creates the sandbox, or starts it if it is stopped.
func ensureRunning(ctx context.Context, r Runner, o Options) (created bool, err error) {
	out, err := r.output(ctx, "list", "--json")
	if err != nil {
		return false, err
	}
	var list []struct {
		sandboxState
		Name string `json:"name"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return false, fmt.Errorf("the context's list: %w", err)
	}
	for _, s := range list {
		if s.Name != o.Sandbox {
			continue
		}
		if s.State == "running" {
			return false, nil
		}
		_, err := r.output(ctx, "start", o.Sandbox)
		return false, err
	}
	args := append([]string{"create", "--name", o.Sandbox}, o.CreateArgs...)
	if _, err := r.output(ctx, args...); err != nil {
		return false, err
	}
	return true, nil
}

// push sends the branch's history to the sandbox with git.
func push(ctx context.Context, o Options, head string) error {
	cmd := exec.CommandContext(ctx, "git", "-C", o.Worktree, "push", "-q", "--no-verify",
		"heyvm-sandbox:"+Workspace, head+":refs/heads/"+o.Branch)
	cmd.Env = gitEnv(o)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("git push to %s: %s", o.Sandbox, lastLine(errb.String()))
	}
	return nil
}

// gitEnv makes git reach the sandbox through heyvm.
func gitEnv(o Options) []string {
	return append(os.Environ(), "GIT_SSH_COMMAND="+o.GitSSH, "GIT_SSH_VARIANT=simple")
}

// changes lists the worktree's files that differ from its commit and
// are not ignored (modified and new), and those deleted.
func changes(ctx context.Context, wt string) (files, deleted []string, err error) {
	out, err := git(ctx, wt, "ls-files", "-z", "--modified", "--others", "--exclude-standard")
	if err != nil {
		return nil, nil, err
	}
	del, err := git(ctx, wt, "ls-files", "-z", "--deleted")
	if err != nil {
		return nil, nil, err
	}
	gone := map[string]bool{}
	for _, f := range split0(del) {
		gone[f] = true
		deleted = append(deleted, f)
	}
	for _, f := range split0(out) {
		if !gone[f] { // a deleted tracked file is also "modified"
			files = append(files, f)
		}
	}
	return files, deleted, nil
}

func split0(s string) []string {
	var out []string
	for _, f := range strings.Split(s, "\x00") {
		if f != "" {
			out = append(out, f)
		}
	}
	return out
}

// writeTar writes files (relative to dir) as a tar stream, and the list
// of deleted ones as .git/heyvm-deleted.
func writeTar(w io.Writer, dir string, files, deleted []string) error {
	tw := tar.NewWriter(w)
	for _, f := range files {
		p := filepath.Join(dir, f)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&os.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		} else if !fi.Mode().IsRegular() {
			continue
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		h.Name, h.Uid, h.Gid, h.Uname, h.Gname = filepath.ToSlash(f), 0, 0, "", ""
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			in, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, in)
			in.Close()
			if err != nil {
				return err
			}
		}
	}
	if len(deleted) > 0 {
		list := []byte(strings.Join(deleted, "\x00") + "\x00")
		if err := tw.WriteHeader(&tar.Header{Name: ".git/heyvm-deleted", Mode: 0o644, Size: int64(len(list)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		if _, err := tw.Write(list); err != nil {
			return err
		}
	}
	return tw.Close()
}

// Pull fetches the sandbox's branch into refs/remotes/heyvm/<context>/
// <branch> and fast-forwards the local branch to it when it can; it
// returns what it did, in a sentence.
func Pull(ctx context.Context, o Options) (string, error) {
	track := "refs/remotes/heyvm/" + o.Context + "/" + o.Branch
	cmd := exec.CommandContext(ctx, "git", "-C", o.Worktree, "fetch", "-q", "--no-tags", "heyvm-sandbox:"+Workspace, "+refs/heads/"+o.Branch+":"+track)
	cmd.Env = gitEnv(o)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git fetch from %s: %s", o.Sandbox, lastLine(errb.String()))
	}
	there, err := git(ctx, o.Worktree, "rev-parse", track)
	if err != nil {
		return "", err
	}
	here, err := git(ctx, o.Worktree, "rev-parse", "HEAD")
	if err != nil {
		return "", err
	}
	switch {
	case there == here:
		return fmt.Sprintf("%s is up to date with sandbox %s", o.Branch, o.Sandbox), nil
	case isAncestor(ctx, o.Worktree, there, here):
		return fmt.Sprintf("sandbox %s has nothing %s lacks", o.Sandbox, o.Branch), nil
	case !isAncestor(ctx, o.Worktree, here, there):
		return "", fmt.Errorf("%s and sandbox %s have diverged: their commits are in %s; merge or rebase them yourself", o.Branch, o.Sandbox, track)
	}
	if _, err := git(ctx, o.Worktree, "merge", "-q", "--ff-only", track); err != nil {
		return "", fmt.Errorf("fetched sandbox %s's commits into %s, but %s cannot move to them here: %w", o.Sandbox, track, o.Branch, err)
	}
	n, _ := git(ctx, o.Worktree, "rev-list", "--count", here+".."+there)
	return fmt.Sprintf("%s moved forward by %s commit(s) from sandbox %s (%.12s)", o.Branch, n, o.Sandbox, there), nil
}

func isAncestor(ctx context.Context, dir, a, b string) bool {
	_, err := git(ctx, dir, "merge-base", "--is-ancestor", a, b)
	return err == nil
}

func git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		msg := lastLine(errb.String())
		if msg == "" {
			msg = err.Error()
		}
		return "", errors.New(strings.TrimPrefix(msg, "fatal: "))
	}
	return strings.TrimRight(out.String(), "\n"), nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
