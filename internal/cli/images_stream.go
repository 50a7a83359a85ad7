package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// images export and import on a context elsewhere: the image stays where
// the sandboxes are, the tar file is on this machine, and the bytes go
// through the context's connection as a stream (`images export NAME -`
// there into this file; this file into `images import -` there), the way
// `docker save -o` writes on the client.

// contextTargetOf is the target of the command's context (nil for this
// machine), for commands that run here and reach the context themselves.
func contextTargetOf(c *cobra.Command) (target, string, error) {
	if servingCall {
		return nil, "", nil
	}
	name, _ := c.Flags().GetString("context")
	return resolveTarget(name)
}

// exportFrom writes an image of the context's store to file ("-":
// standard output) here.
func exportFrom(ctx context.Context, ios IO, t target, ctxName string, o TransferOptions, imageName, file string) error {
	argv := append([]string{"images", "export", imageName, "-"}, backendArgs(o)...)
	if file == "-" {
		if isTTY(ios.Out) {
			return errors.New("images export NAME -: standard output is a terminal: pipe it or give a file name")
		}
		return ranOn(ctxName)(t.run(ctx, ios, argv, false))
	}
	if fi, err := os.Stat(file); err == nil && fi.IsDir() {
		return fmt.Errorf("%s is a directory: give a file name, like %s", file, filepath.Join(file, "image.tar"))
	}
	dir := filepath.Dir(file)
	f, err := os.CreateTemp(dir, "."+filepath.Base(file)+".tmp-*")
	if err != nil {
		return fmt.Errorf("cannot write %s: %w", file, err)
	}
	defer os.Remove(f.Name())
	code, err := t.run(ctx, IO{In: ios.In, Out: f, ErrOut: ios.ErrOut}, argv, false)
	if cerr := f.Close(); err == nil && code == 0 {
		err = cerr
	}
	if err != nil || code != 0 {
		return ranOn(ctxName)(code, err)
	}
	if err := os.Rename(f.Name(), file); err != nil {
		return err
	}
	fmt.Fprintf(ios.Out, "exported %s from context %s to %s\n", imageName, ctxName, file)
	return nil
}

// importTo adds the image in file ("-": standard input) here to the
// context's store.
func importTo(ctx context.Context, ios IO, t target, ctxName string, o TransferOptions, file string) error {
	argv := append([]string{"images", "import", "-"}, backendArgs(o)...)
	if o.Name != "" {
		argv = append(argv, "--name", o.Name)
	}
	if o.Arch != "" {
		argv = append(argv, "--arch", o.Arch)
	}
	if o.Force {
		argv = append(argv, "--force")
	}
	in := ios.In
	if file == "-" {
		if isTTY(ios.In) {
			return errors.New("images import -: standard input is a terminal: pipe an image into it or give a file")
		}
	} else {
		f, err := os.Open(file)
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		defer f.Close()
		in = f
	}
	return ranOn(ctxName)(t.run(ctx, IO{In: in, Out: ios.Out, ErrOut: ios.ErrOut}, argv, false))
}

func backendArgs(o TransferOptions) []string {
	if o.Backend == "" {
		return nil
	}
	return []string{"--backend", o.Backend}
}

// ranOn turns a target's result into the command's: its exit status, or
// the connection's error naming the context.
func ranOn(ctxName string) func(int, error) error {
	return func(code int, err error) error {
		switch {
		case err != nil:
			return fmt.Errorf("context %s: %w", ctxName, err)
		case code != 0:
			return errRanElsewhere{code}
		}
		return nil
	}
}

// isTTY says whether a stream is a terminal (not just any character
// device: /dev/null is one too).
func isTTY(s any) bool {
	f, ok := s.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
