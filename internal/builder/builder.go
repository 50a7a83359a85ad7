// Package builder runs `heyvm images build` inside a heyvm builder VM:
// Docker's engine (BuildKit) builds the Dockerfile there, and a script
// run as root in the guest turns the result into a bootable ext4 root
// file system, so the host needs neither Docker nor root. The CLI owns
// the builder sandbox's life; this package drives one build over SSH.
package builder

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/heyvm/heyvm/internal/sshclient"
)

//go:embed guest/prepare.sh
var prepareScript string

//go:embed guest/convert.sh
var convertScript string

// Guest paths of the builder's two shares.
const (
	GuestImagesDir = "/heyvm-images" // the host's image store, read-only
	GuestXferDir   = "/heyvm-xfer"   // per-build output, read-write
)

// guestWorkDir holds each build's context in the builder.
const guestWorkDir = "/var/lib/heyvm-build/work"

// Base is a heyvm image used as a FROM: the engine gets it once per
// rootfs digest, under Tag.
type Base struct {
	GuestDir string // the image's folder under GuestImagesDir
	Tag      string
}

// Pull is a base the engine pulls (Ref) and knows as Tag.
type Pull struct{ Ref, Tag string }

// PulledTag is the local-only name a pulled base gets.
func PulledTag(ref string) string {
	name, tag := ref, "latest"
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		name, tag = ref[:i], ref[i+1:]
	}
	name = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '/' || r == '-' || r == '_' || r == '.' {
			return r
		}
		if r >= 'A' && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return '-'
	}, name)
	return "heyvm-pulled/" + strings.ReplaceAll(name, ".", "-") + ":" + tag
}

// Request is one build.
type Request struct {
	ID             string // unique per build: names the guest's work
	Tag            string // the engine's name for the result (one per image name)
	Dockerfile     []byte // as BuildKit gets it (FROMs rewritten)
	DockerfileName string // the user's path, for messages
	ContextDir     string
	// HostOut is the host's side of GuestXferDir/ID.
	HostOut   string
	BuildArgs []string
	NoCache   bool
	SizeMB    int
	Bases     []Base
	// InsecureRegistries are host:port (as the guest sees them) the
	// engine may reach over plain HTTP.
	InsecureRegistries []string
	// Pulls are bases pulled by the engine's classic puller before the
	// build and tagged with a local-only name the Dockerfile then uses:
	// BuildKit in Docker's engine ignores insecure-registries when it
	// resolves a base in a registry (moby/moby#41080), but takes an image
	// the engine holds, if its platform matches, from the engine.
	Pulls []Pull
	// Arch is the build's (Debian) architecture.
	Arch string
	// DefaultImageGuestDir and DefaultKernelVersion name the image whose
	// kernel a root without one boots.
	DefaultImageGuestDir string
	DefaultKernelVersion string
	InitramfsModules     []string
	// Saved, when set, is an image already built elsewhere (`docker
	// save` of SavedTag by a Docker engine on the host): it is loaded and
	// converted instead of built.
	Saved    io.Reader
	SavedTag string
	// Unchanged, when set, is asked with the built image's id whether
	// the store already holds its conversion (an unchanged rebuild).
	Unchanged func(imageID string) bool
	// Out receives BuildKit's progress and the conversion's steps.
	Out io.Writer
}

// ImageConfig is what the built image says about running it, recorded in
// image.yaml for `images inspect`.
type ImageConfig struct {
	Cmd          []string          `json:"Cmd" yaml:"cmd,omitempty"`
	Entrypoint   []string          `json:"Entrypoint" yaml:"entrypoint,omitempty"`
	Env          []string          `json:"Env" yaml:"env,omitempty"`
	WorkingDir   string            `json:"WorkingDir" yaml:"working_dir,omitempty"`
	User         string            `json:"User" yaml:"user,omitempty"`
	ExposedPorts map[string]any    `json:"ExposedPorts" yaml:"-"`
	Expose       []string          `json:"-" yaml:"expose,omitempty"`
	Labels       map[string]string `json:"Labels" yaml:"labels,omitempty"`
}

// Result is what a finished conversion left in the build's folder.
type Result struct {
	Facts  map[string]string
	Config ImageConfig
	// BuildTime is BuildKit's part (or loading a saved image), and
	// ConvertTime the conversion's, writing the ext4 included.
	BuildTime, ConvertTime time.Duration
	// ImageID is the engine's id of the built image.
	ImageID string
	// Unchanged: Request.Unchanged said the store already holds this
	// build's result; nothing was converted.
	Unchanged bool
}

// ConvertKey identifies everything besides the built image that goes
// into a conversion's result: heyvm's script, the disk size, and the
// default image that gives a root without a kernel its kernel.
func ConvertKey(sizeMB int, defaultRootfsSHA256, defaultKernel string, modules []string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%d\n%s\n%s\n%v", convertScript, sizeMB, defaultRootfsSHA256, defaultKernel, modules)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// MissingError lists what a root lacks to boot under heyvm.
type MissingError struct{ Missing []string }

func (e *MissingError) Error() string {
	return "the image cannot boot under heyvm; it lacks:\n  - " + strings.Join(e.Missing, "\n  - ")
}

// TooSmallError: the root does not fit the requested disk size.
type TooSmallError struct{ UsedMB, SizeMB int }

func (e *TooSmallError) Error() string {
	return fmt.Sprintf("the built root holds %d MiB, too much for --size-mb %d: give --size-mb %d or more", e.UsedMB, e.SizeMB, e.UsedMB*5/4+128)
}

// Run builds req in the builder reached by c. The root file system is
// written to GuestXferDir/ID in the guest (the host's matching folder).
func Run(ctx context.Context, c *ssh.Client, req Request) (*Result, error) {
	daemon, _ := json.Marshal(map[string]any{
		"iptables": false, "bridge": "none", "log-level": "warn",
		"insecure-registries": append([]string{}, req.InsecureRegistries...),
	})
	prep := []string{string(daemon)}
	for _, b := range req.Bases {
		prep = append(prep, b.GuestDir, b.Tag)
	}
	if _, err := runScript(ctx, c, prepareScript, nil, req.Out, prep...); err != nil {
		return nil, fmt.Errorf("get the builder's Docker engine ready: %w", err)
	}
	for _, p := range req.Pulls {
		q := sshclient.ShellQuote
		out, err := runCommand(ctx, c, "docker pull -q "+q(p.Ref)+" >/dev/null && docker tag "+q(p.Ref)+" "+q(p.Tag)+" && docker image inspect --format '{{.Os}}/{{.Architecture}}' "+q(p.Tag), nil, nil)
		if err != nil {
			return nil, fmt.Errorf("pull the base image %s: %w", p.Ref, err)
		}
		if got := strings.TrimSpace(out); got != "linux/"+req.Arch {
			return nil, fmt.Errorf("the base image %s is for %q, not linux/%s: give a base built for linux/%s (its config's os and architecture)", p.Ref, got, req.Arch, req.Arch)
		}
	}
	work := guestWorkDir + "/" + req.ID
	// One tag per image name: a rebuild moves it, so nothing is left to
	// remove (the old image's layers stay in the step cache).
	tag := "heyvm-build/" + req.Tag
	q := sshclient.ShellQuote
	began := time.Now()
	inspect := "echo \"HEYVM-IMAGE $(docker image inspect --format '{{json .}}' " + q(tag) + ")\""
	var tail []string
	var err error
	if req.Saved != nil {
		tail, err = runLines(ctx, c, "docker load -q && docker tag "+q(req.SavedTag)+" "+q(tag)+" && docker rmi "+q(req.SavedTag)+" >/dev/null && "+inspect, req.Saved, req.Out)
		if err != nil {
			return nil, fmt.Errorf("load the image into the builder: %w", err)
		}
	} else if tail, err = buildImage(ctx, c, req, work, tag, inspect); err != nil {
		return nil, err
	}
	buildTime := time.Since(began)
	began = time.Now()

	var built struct {
		ID     string `json:"Id"`
		Config ImageConfig
	}
	if err := json.Unmarshal([]byte(lastWith(tail, "HEYVM-IMAGE ")), &built); err != nil || built.ID == "" {
		return nil, fmt.Errorf("read the built image's config: %v", err)
	}
	cfg := built.Config
	for p := range cfg.ExposedPorts {
		cfg.Expose = append(cfg.Expose, p)
	}
	sort.Strings(cfg.Expose)
	if req.Unchanged != nil && req.Unchanged(built.ID) {
		return &Result{Config: cfg, ImageID: built.ID, Unchanged: true, BuildTime: buildTime}, nil
	}

	args := append([]string{tag, GuestXferDir + "/" + req.ID, fmt.Sprint(req.SizeMB), req.DefaultImageGuestDir, req.DefaultKernelVersion}, req.InitramfsModules...)
	tail, err = runScript(ctx, c, convertScript, nil, req.Out, args...)
	if err != nil {
		return nil, convertError(tail, req.SizeMB, err)
	}
	res := &Result{Config: cfg, ImageID: built.ID, BuildTime: buildTime}
	facts, err := os.ReadFile(filepath.Join(req.HostOut, "facts"))
	if err != nil {
		return nil, fmt.Errorf("read the conversion's results: %w", err)
	}
	res.Facts = ParseFacts(string(facts))
	res.ConvertTime = time.Since(began)
	if res.Facts["done"] != "yes" {
		return nil, errors.New("the conversion did not finish: see its output above")
	}
	return res, nil
}

// buildImage sends the context and the Dockerfile in one tar stream and
// runs BuildKit on them, tagging the result and then running inspect
// (one SSH round trip: the context is removed at once after).
func buildImage(ctx context.Context, c *ssh.Client, req Request, work, tag, inspect string) ([]string, error) {
	q := sshclient.ShellQuote
	build := []string{"DOCKER_BUILDKIT=1", "docker", "build", "--progress=plain", "--network=host",
		"-f", work + "/Dockerfile", "-t", tag}
	for _, a := range req.BuildArgs {
		build = append(build, "--build-arg", a)
	}
	if req.NoCache {
		build = append(build, "--no-cache")
	}
	build = append(build, work+"/context")
	quoted := make([]string, len(build))
	for i, a := range build {
		quoted[i] = q(a)
	}
	quoted[0] = build[0]
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(ContextTar(req.ContextDir, req.Dockerfile, pw)) }()
	defer pr.Close()
	script := "rm -rf " + q(guestWorkDir) + " && mkdir -p " + q(work) + " && tar -x -C " + q(work) + " || exit 1\n" +
		strings.Join(quoted, " ") + " 2>&1\nrc=$?\nrm -rf " + q(work) + "\n[ $rc = 0 ] || exit $rc\n" + inspect
	tail, err := runLines(ctx, c, "bash -c "+q(script), pr, req.Out)
	if err != nil {
		return nil, buildError(req.DockerfileName, tail, err)
	}
	return tail, nil
}

// lastWith is the rest of the last line starting with prefix.
func lastWith(lines []string, prefix string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(lines[i], prefix); ok {
			return v
		}
	}
	return ""
}

// ParseFacts reads convert.sh's key=value lines; its last line, "done",
// counts as done=yes.
func ParseFacts(s string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(l)
		if l == "done" {
			m["done"] = "yes"
		} else if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m
}

// buildError turns a failed `docker build` into one error: BuildKit's
// last words, which name the Dockerfile line, the missing file or the
// failing command.
func buildError(dockerfile string, tail []string, err error) error {
	var msg []string
	for _, l := range tail {
		switch {
		case strings.Contains(l, "failed to solve"), strings.Contains(l, "ERROR:"),
			strings.HasPrefix(l, "error "), strings.Contains(l, "dockerfile parse error"):
			msg = append(msg, strings.TrimSpace(l))
		}
	}
	if len(msg) == 0 {
		msg = tail
	}
	if len(msg) > 3 {
		msg = msg[len(msg)-3:]
	}
	return fmt.Errorf("building %s failed (no image was made): %s", dockerfile, strings.Join(msg, "; "))
}

// convertError explains a failed conversion.
func convertError(tail []string, sizeMB int, err error) error {
	var missing []string
	for _, l := range tail {
		if m, ok := strings.CutPrefix(l, "HEYVM-MISSING "); ok {
			missing = append(missing, m)
		}
		if used, ok := strings.CutPrefix(l, "HEYVM-TOO-SMALL "); ok {
			var n int
			fmt.Sscan(used, &n)
			return &TooSmallError{UsedMB: n, SizeMB: sizeMB}
		}
	}
	if len(missing) > 0 {
		return &MissingError{Missing: missing}
	}
	return fmt.Errorf("making the image bootable failed: %w: %s", err, strings.Join(tail, "\n"))
}

// runScript runs a bash script (passed inline) with args.
func runScript(ctx context.Context, c *ssh.Client, script string, stdin io.Reader, out io.Writer, args ...string) ([]string, error) {
	q := sshclient.ShellQuote
	cmd := "bash -c " + q(script) + " heyvm"
	for _, a := range args {
		cmd += " " + q(a)
	}
	return runLines(ctx, c, cmd+" 2>&1", stdin, out)
}

// runCommand runs a command; it returns its output when out is nil (and
// streams it to out otherwise, returning the last lines).
func runCommand(ctx context.Context, c *ssh.Client, cmd string, stdin io.Reader, out io.Writer) (string, error) {
	if out != nil {
		tail, err := runLines(ctx, c, cmd, stdin, out)
		return strings.Join(tail, "\n"), err
	}
	var buf bytes.Buffer
	code, err := sshclient.Exec(ctx, c, sshclient.ExecOptions{Command: cmd, Stdin: stdin, Stdout: &buf, Stderr: &buf})
	if err == nil && code != 0 {
		err = fmt.Errorf("exit status %d: %s", code, strings.TrimSpace(lastLines(buf.String(), 10)))
	}
	return buf.String(), err
}

// runLines streams a command's output to out line by line and keeps the
// last lines for the error.
func runLines(ctx context.Context, c *ssh.Client, cmd string, stdin io.Reader, out io.Writer) ([]string, error) {
	if out == nil {
		out = io.Discard
	}
	pr, pw := io.Pipe()
	var tail []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			l := sc.Text()
			switch {
			case strings.HasPrefix(l, "HEYVM-STEP "):
				fmt.Fprintln(out, "--> "+strings.TrimPrefix(l, "HEYVM-STEP "))
			case strings.HasPrefix(l, "HEYVM-"):
				// a result for the error, not a line to show
			default:
				fmt.Fprintln(out, l)
			}
			tail = append(tail, l)
			if len(tail) > 40 {
				tail = tail[1:]
			}
		}
		io.Copy(io.Discard, pr)
	}()
	code, err := sshclient.Exec(ctx, c, sshclient.ExecOptions{Command: cmd, Stdin: stdin, Stdout: pw, Stderr: pw})
	pw.Close()
	<-done
	if err == nil && code != 0 {
		err = fmt.Errorf("exit status %d", code)
	}
	return tail, err
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
