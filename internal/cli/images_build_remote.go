package cli

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/heyvm/heyvm/internal/builder"
	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/layout"
)

// `images build` on a context elsewhere: the Dockerfile and the build
// context are here, the builder VM and the store there. This heyvm sends
// them as one tar (the one the builder VM gets, .dockerignore applied)
// into `images build --context-stream -` there, as the Docker CLI sends a
// context to a remote engine.

// buildElsewhere runs the build on the context's host.
func buildElsewhere(ctx context.Context, ios IO, t target, ctxName string, o *ImagesBuildOptions) error {
	if o.ContextStream != "" {
		return errors.New("--context-stream is heyvm's own (between two heyvms)")
	}
	if o.Name == "" {
		return errors.New("--name is required: give the name of the image to make")
	}
	if err := image.ValidateName(o.Name); err != nil {
		return err
	}
	if o.File == "" {
		return errors.New("--file is required: give the Dockerfile to build")
	}
	file, err := filepath.Abs(o.File)
	if err != nil {
		return err
	}
	dockerfile, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("--file %s: no such Dockerfile", o.File)
	}
	dir := o.Context
	if dir == "" {
		dir = filepath.Dir(file)
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return err
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("the build context %s is not a folder", dir)
	}
	host, _ := os.Hostname()
	argv := []string{"images", "build", "--context-stream", "-", "--name", o.Name,
		"--file", "Dockerfile", "--origin", host + ":" + file + "\n" + host + ":" + dir,
		"--size-mb", strconv.Itoa(o.SizeMB), "--engine", o.Engine}
	for _, f := range []struct{ flag, v string }{{"--backend", o.Backend}, {"--backend-type", o.BackendType}, {"--arch", o.Arch}} {
		if f.v != "" {
			argv = append(argv, f.flag, f.v)
		}
	}
	for _, a := range o.BuildArgs {
		argv = append(argv, "--build-arg", a)
	}
	if o.NoCache {
		argv = append(argv, "--no-cache")
	}
	if o.InsecureRegistry {
		argv = append(argv, "--insecure-registry")
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(builder.ContextTar(dir, dockerfile, pw)) }()
	defer pr.Close()
	fmt.Fprintf(ios.ErrOut, "sending the build context %s to context %s\n", dir, ctxName)
	return ranOn(ctxName)(t.run(ctx, IO{In: pr, Out: ios.Out, ErrOut: ios.ErrOut}, argv, false))
}

// maxContextStream bounds what a build context sent from elsewhere may
// hold once unpacked.
const maxContextStream = 64 << 30

// receiveContext unpacks the tar on standard input (context/... and
// Dockerfile) into a scratch folder and points the build at it; done
// removes it.
func (o *ImagesBuildOptions) receiveContext(ios IO) (done func(), err error) {
	if o.ContextStream != "-" {
		return nil, fmt.Errorf("--context-stream %q: only - (standard input) is known", o.ContextStream)
	}
	root, err := layout.Open()
	if err != nil {
		return nil, err
	}
	if err := layout.EnsureDir(root.CacheDir()); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(root.CacheDir(), "buildctx-")
	if err != nil {
		return nil, err
	}
	done = func() { os.RemoveAll(dir) }
	if err := unpackContext(ios.In, dir); err != nil {
		done()
		return nil, fmt.Errorf("the build context sent here: %w", err)
	}
	o.File = filepath.Join(dir, "Dockerfile")
	o.Context = filepath.Join(dir, "context")
	return done, nil
}

// unpackContext writes a context tar into dir through an os.Root, so no
// entry (a path with .., a symlink in the tar followed by a file through
// it) reaches outside dir.
func unpackContext(r io.Reader, dir string) error {
	if err := os.Mkdir(filepath.Join(dir, "context"), 0o755); err != nil {
		return err
	}
	rt, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer rt.Close()
	tr := tar.NewReader(r)
	var total int64
	sawDockerfile := false
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		name := path.Clean(h.Name)
		if name != "Dockerfile" && !strings.HasPrefix(name, "context/") || !fs.ValidPath(name) {
			return fmt.Errorf("it holds %q, which is not part of a build context", h.Name)
		}
		mode := h.FileInfo().Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := rt.MkdirAll(name, 0o755); err != nil {
				return err
			}
			if err := rt.Chmod(name, mode|0o700); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := rt.Symlink(h.Linkname, name); err != nil {
				return err
			}
		case tar.TypeReg:
			if total += h.Size; total > maxContextStream {
				return fmt.Errorf("it holds more than %d GiB", maxContextStream>>30)
			}
			f, err := rt.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode|0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			sawDockerfile = sawDockerfile || name == "Dockerfile"
		default:
			return fmt.Errorf("it holds %q, of a kind no build context has", h.Name)
		}
	}
	if !sawDockerfile {
		return errors.New("it has no Dockerfile")
	}
	return nil
}
