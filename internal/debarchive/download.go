package debarchive

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sync/errgroup"
)

// DefaultConcurrency is how many packages Download fetches at once unless
// told otherwise.
const DefaultConcurrency = 4

// DownloadOptions configures Client.Download.
type DownloadOptions struct {
	// CacheDir holds the packages as <sha256>.deb. It must exist.
	CacheDir string
	// Concurrency is how many packages are checked or fetched at once;
	// DefaultConcurrency if zero.
	Concurrency int
	// Progress, if set, is called as bytes arrive, never concurrently.
	Progress func(Progress)
}

// Progress reports a Download's network progress. Reused cache entries
// count in neither Done nor Total.
type Progress struct {
	File       string // the package file (path under the mirror) that just advanced
	Done       int64  // bytes fetched so far
	Total      int64  // bytes to fetch in all
	FilesDone  int    // packages fetched and verified so far
	FilesTotal int    // packages to fetch in all
}

// DownloadResult tells what Download did.
type DownloadResult struct {
	Reused       int   // packages already in the cache, verified again
	Fetched      int   // packages downloaded
	BytesFetched int64 // bytes downloaded
}

// CachePath is where Download keeps p in cacheDir: <sha256>.deb.
func CachePath(cacheDir string, p *Package) string {
	return filepath.Join(cacheDir, p.SHA256+".deb")
}

// Download makes sure every package of pkgs is in opts.CacheDir, verified
// against its size and SHA256 from the Packages index. A cache entry is
// hashed again before it is reused, and replaced if it no longer matches
// (so nothing needs an fsync). A package is fetched into a temporary file
// in the cache directory, hashed as it streams, and renamed to its final
// name (mode 0644) only once verified; on any failure the temporary file
// is removed. The first failure cancels the other transfers and is
// returned: a *VerifyError names the .deb and the mirror.
func (c *Client) Download(ctx context.Context, pkgs []*Package, opts DownloadOptions) (*DownloadResult, error) {
	if opts.CacheDir == "" {
		return nil, errors.New("debarchive: Download needs a cache directory")
	}
	workers := opts.Concurrency
	if workers <= 0 {
		workers = DefaultConcurrency
	}
	unique := uniqueByDigest(pkgs)

	// First see which are cached already, so the progress total is known.
	missing := make([]bool, len(unique))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	for i, p := range unique {
		g.Go(func() error {
			ok, err := cached(gctx, CachePath(opts.CacheDir, p), p)
			missing[i] = !ok
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}

	res := &DownloadResult{}
	prog := &progressReporter{fn: opts.Progress}
	var todo []*Package
	for i, p := range unique {
		if missing[i] {
			todo = append(todo, p)
			prog.p.Total += p.Size
		}
	}
	res.Reused = len(unique) - len(todo)
	prog.p.FilesTotal = len(todo)

	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(workers)
	for _, p := range todo {
		g.Go(func() error { return c.downloadOne(gctx, opts.CacheDir, p, prog) })
	}
	err := g.Wait()
	res.Fetched, res.BytesFetched = prog.p.FilesDone, prog.p.Done
	if err != nil {
		return res, err
	}
	return res, nil
}

// uniqueByDigest drops packages whose file another one already names.
func uniqueByDigest(pkgs []*Package) []*Package {
	seen := make(map[string]bool, len(pkgs))
	var out []*Package
	for _, p := range pkgs {
		if !seen[p.SHA256] {
			seen[p.SHA256] = true
			out = append(out, p)
		}
	}
	return out
}

// cached reports whether path holds p's file. A file of the wrong size or
// hash is removed.
func cached(ctx context.Context, path string, p *Package) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	if fi.Mode().IsRegular() && fi.Size() == p.Size {
		h := sha256.New()
		if _, err := io.Copy(h, ctxReader{ctx, f}); err != nil {
			return false, err
		}
		if hex.EncodeToString(h.Sum(nil)) == p.SHA256 {
			return true, nil
		}
	}
	if err := os.Remove(path); err != nil {
		return false, fmt.Errorf("removing the damaged cache entry %s: %w", path, err)
	}
	return false, nil
}

// downloadOne fetches p into the cache.
func (c *Client) downloadOne(ctx context.Context, cacheDir string, p *Package, prog *progressReporter) (err error) {
	resp, err := c.get(ctx, p.Filename)
	if err != nil {
		return err
	}
	defer resp.Body.Close()

	tmp, err := os.CreateTemp(cacheDir, "."+p.SHA256+".*.part")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()

	v := c.newVerifier(p.Filename, &fileCheck{Checksum{p.Size, p.SHA256}, "the Packages index"})
	counter := &progressWriter{prog: prog, file: p.Filename}
	_, err = io.Copy(io.MultiWriter(tmp, v, counter), io.LimitReader(resp.Body, p.Size+1))
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return fmt.Errorf("writing %s: %w", tmp.Name(), err)
		}
		return c.transportError(ctx, p.Filename, err)
	}
	if err = v.verify(); err != nil {
		return err
	}
	if err = tmp.Chmod(0o644); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), CachePath(cacheDir, p)); err != nil {
		return err
	}
	prog.fileDone(p.Filename)
	return nil
}

// progressReporter serializes progress reports from concurrent downloads.
type progressReporter struct {
	mu sync.Mutex
	fn func(Progress)
	p  Progress
}

func (r *progressReporter) add(file string, n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.p.Done += n
	r.p.File = file
	if r.fn != nil {
		r.fn(r.p)
	}
}

func (r *progressReporter) fileDone(file string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.p.FilesDone++
	r.p.File = file
	if r.fn != nil {
		r.fn(r.p)
	}
}

// progressWriter counts the bytes of one file into a progressReporter.
type progressWriter struct {
	prog *progressReporter
	file string
}

func (w *progressWriter) Write(p []byte) (int, error) {
	w.prog.add(w.file, int64(len(p)))
	return len(p), nil
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
