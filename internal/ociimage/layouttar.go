package ociimage

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/heyvm/heyvm/internal/fsutil"
)

// Export writes the artifact as an OCI image-layout tar to path
// (atomically: a temp file renamed into place). The tar itself is not
// compressed: every layer in it is zstd already.
func Export(ctx context.Context, a *Artifact, path string, prog Progress) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("export to %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := ExportTo(ctx, a, f, prog); err != nil {
		return fmt.Errorf("export to %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	return fsutil.SyncDir(dir)
}

// ExportTo writes the artifact as an OCI image-layout tar stream to w (a
// pipe, an SSH channel): the layout's small files first, then each layer
// once.
func ExportTo(ctx context.Context, a *Artifact, w io.Writer, prog Progress) error {
	idx, err := a.Index()
	if err != nil {
		return err
	}
	rawIndex, err := idx.RawManifest()
	if err != nil {
		return err
	}
	mdigest, err := a.digest()
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	now := time.Now()
	add := func(name string, size int64, r io.Reader) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: size, ModTime: now, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := io.Copy(tw, &ctxReader{ctx: ctx, r: r})
		return err
	}
	addBytes := func(name string, b []byte) error { return add(name, int64(len(b)), bytes.NewReader(b)) }
	if err := addBytes("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := addBytes("index.json", rawIndex); err != nil {
		return err
	}
	if err := addBytes("blobs/sha256/"+mdigest, a.manifest); err != nil {
		return err
	}
	m, err := a.parsedManifest()
	if err != nil {
		return err
	}
	if err := addBytes("blobs/sha256/"+m.Config.Digest.Hex, a.config); err != nil {
		return err
	}
	p := orNoProgress(prog)
	var total int64
	for _, l := range a.layers {
		total += l.desc.Size
	}
	p.Phase("export "+a.Image.Name, total)
	written := map[string]bool{}
	for _, ld := range m.Layers {
		d := a.layers[ld.Digest]
		if written[d.desc.Digest.Hex] {
			continue
		}
		written[d.desc.Digest.Hex] = true
		rc, err := d.Compressed()
		if err != nil {
			return err
		}
		err = add("blobs/sha256/"+d.desc.Digest.Hex, d.desc.Size, &progressReader{r: rc, p: p})
		rc.Close()
		if err != nil {
			return err
		}
	}
	p.Done()
	return tw.Close()
}

func (a *Artifact) digest() (string, error) {
	img, err := a.OCIImage()
	if err != nil {
		return "", err
	}
	h, err := img.Digest()
	return h.Hex, err
}

func (a *Artifact) parsedManifest() (*v1.Manifest, error) {
	var m v1.Manifest
	if err := json.Unmarshal(a.manifest, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// layoutEntry is what an OCI image layout may hold.
var layoutEntry = regexp.MustCompile(`^(oci-layout|index\.json|blobs/sha256/[0-9a-f]{64})$`)

// ExtractLayout unpacks an OCI image-layout tar file into dir and opens
// it.
func ExtractLayout(ctx context.Context, tarPath, dir string, prog Progress) (Source, error) {
	f, err := os.Open(tarPath)
	if err != nil {
		return Source{}, err
	}
	defer f.Close()
	fi, _ := f.Stat()
	return ExtractLayoutFrom(ctx, f, tarPath, fi.Size(), dir, prog)
}

// ExtractLayoutFrom unpacks an OCI image-layout tar stream (desc names it
// in errors; size is -1 when unknown) into dir and opens it. Only the
// layout's own files are accepted, so a crafted tar cannot write outside
// dir. Digests are checked when the image is installed.
func ExtractLayoutFrom(ctx context.Context, r io.Reader, desc string, size int64, dir string, prog Progress) (Source, error) {
	p := orNoProgress(prog)
	p.Phase("read "+filepath.Base(desc), size)
	tr := tar.NewReader(&progressReader{r: &ctxReader{ctx: ctx, r: r}, p: p})
	for entries := 0; ; entries++ {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) && entries == 0 {
			return Source{}, fmt.Errorf("%s is empty: give it what `heyvm images export` wrote", desc)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Source{}, fmt.Errorf("%s is not a readable tar (%v): make it with `heyvm images export`", desc, err)
		}
		name := filepath.ToSlash(filepath.Clean(h.Name))
		if h.Typeflag == tar.TypeDir {
			continue
		}
		if h.Typeflag != tar.TypeReg || !layoutEntry.MatchString(name) {
			return Source{}, fmt.Errorf("%s holds %q, which has no place in an OCI image layout: make it with `heyvm images export`", desc, h.Name)
		}
		out := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(out), 0o700); err != nil {
			return Source{}, err
		}
		w, err := os.OpenFile(out, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			return Source{}, err
		}
		_, err = io.Copy(w, tr)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return Source{}, fmt.Errorf("read %s: %w", desc, err)
		}
	}
	p.Done()
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return Source{}, fmt.Errorf("%s is not an OCI image layout (%v): make it with `heyvm images export`", desc, err)
	}
	return Source{Desc: desc, Index: idx}, nil
}
