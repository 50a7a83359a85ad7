package imagebuild

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/heyvm/heyvm/internal/userns"
)

// The assemble step, run as an ordinary user: heyvm runs its own hidden
// assemble command (Options.SelfExec) as root of a user namespace. The
// spec goes in as a file, the result comes back as one, and the child's
// stdout carries its progress ("stage N TOTAL what" or a detail line).

const (
	specFile   = "assemble.json"
	resultFile = "assemble-result.json"
)

func assembleInNamespace(ctx context.Context, o Options, spec AssembleSpec) (*AssembleResult, error) {
	if len(o.SelfExec) == 0 {
		return nil, errors.New("building an image as an ordinary user needs the heyvm binary's assemble command")
	}
	cfg, err := userns.ThisHost().Check()
	if err != nil {
		return nil, err
	}
	b, _ := json.Marshal(spec)
	sp := filepath.Join(spec.Out, specFile)
	if err := os.WriteFile(sp, b, 0o600); err != nil {
		return nil, err
	}
	argv := append(append([]string(nil), o.SelfExec...), sp)
	cmd := cfg.Command(ctx, argv...)
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	var stderr strings.Builder
	cmd.Stderr = &stderr
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			if f := strings.SplitN(line, " ", 4); len(f) == 4 && f[0] == "stage" {
				n, _ := strconv.Atoi(f[1])
				total, _ := strconv.Atoi(f[2])
				o.Progress.Stage(n, total, f[3])
				continue
			}
			o.Progress.Detail(line)
		}
	}()
	err = cmd.Run()
	pw.Close()
	<-done
	if err != nil {
		return nil, fmt.Errorf("assemble the root file system in a user namespace: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	rb, err := os.ReadFile(filepath.Join(spec.Out, resultFile))
	if err != nil {
		return nil, err
	}
	var res AssembleResult
	if err := json.Unmarshal(rb, &res); err != nil {
		return nil, err
	}
	os.Remove(sp)
	os.Remove(filepath.Join(spec.Out, resultFile))
	return &res, nil
}

// AssembleMain is the hidden assemble command's body, running as root of
// the user namespace: it reads the spec, assembles, writes the result.
func AssembleMain(ctx context.Context, specPath string, stdout io.Writer) error {
	b, err := os.ReadFile(specPath)
	if err != nil {
		return err
	}
	var spec AssembleSpec
	if err := json.Unmarshal(b, &spec); err != nil {
		return err
	}
	res, err := Assemble(ctx, spec, lineProgress{stdout})
	if err != nil {
		return err
	}
	rb, _ := json.Marshal(res)
	return os.WriteFile(filepath.Join(spec.Out, resultFile), rb, 0o644)
}

type lineProgress struct{ w io.Writer }

func (l lineProgress) Stage(n, total int, what string) {
	fmt.Fprintf(l.w, "stage %d %d %s\n", n, total, what)
}
func (l lineProgress) Detail(line string) { fmt.Fprintln(l.w, line) }
