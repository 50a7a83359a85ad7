package ociimage

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/zstd"
	"go.yaml.in/yaml/v3"
	"golang.org/x/sync/errgroup"

	"github.com/heyvm/heyvm/internal/fsutil"
	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/layout"
)

// Source is an image artifact to install: an index (a registry ref or a
// layout) or a single manifest.
type Source struct {
	Desc  string // the ref or file, for messages and image.yaml
	Index v1.ImageIndex
	Image v1.Image
	// BlobsVerified: the source itself checks each blob's digest as it
	// streams (go-containerregistry's remote reader does), so hashing it
	// again would only cost time.
	BlobsVerified bool
}

// Select picks the manifest for arch.
func (s Source) Select(arch string) (v1.Image, error) {
	if s.Index == nil {
		return s.Image, nil
	}
	var have []string
	img, err := selectFrom(s.Index, arch, &have)
	if err != nil {
		return nil, err
	}
	if img == nil {
		if len(have) == 0 {
			return nil, fmt.Errorf("%s holds no heyvm image for linux (no manifest names a platform): push it with `heyvm images push`", s.Desc)
		}
		return nil, fmt.Errorf("%s has no %s image (it has %s): pass --arch %s, or push an %s image to it", s.Desc, arch, strings.Join(have, ", "), have[0], arch)
	}
	return img, nil
}

func selectFrom(idx v1.ImageIndex, arch string, have *[]string) (v1.Image, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, d := range im.Manifests {
		if d.MediaType.IsIndex() {
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return nil, err
			}
			if img, err := selectFrom(child, arch, have); img != nil || err != nil {
				return img, err
			}
			continue
		}
		if d.Platform == nil || d.Platform.OS != "linux" {
			continue
		}
		if a, err := image.NormalizeArch(d.Platform.Architecture); err == nil && a == arch {
			img, err := idx.Image(d.Digest)
			if err != nil {
				return nil, err
			}
			if got, err := img.Digest(); err != nil || got != d.Digest {
				return nil, fmt.Errorf("the %s manifest does not match its digest %s: it is corrupt", arch, d.Digest)
			}
			return img, nil
		}
		*have = append(*have, d.Platform.Architecture)
	}
	return nil, nil
}

// InstallOptions say where a pulled or imported image goes.
type InstallOptions struct {
	Store image.Store
	// Name is the image's name in the store; "" keeps the name it was
	// pushed with.
	Name string
	Arch string
	// Replace swaps out an image of the same name that holds something else.
	Replace  bool
	Progress Progress
	// Verb names the work in progress reports: "pull" (the default) or
	// "import".
	Verb string
}

// ErrExists means an image of that name exists and holds another artifact.
var ErrExists = errors.New("image exists")

// Install writes the arch's image from src into the store. Layers are
// fetched and written concurrently, each verified (compressed and
// uncompressed digest) before it counts; an interrupted install resumes
// from the verified layers, and the image appears in the store only once
// complete.
func Install(ctx context.Context, src Source, o InstallOptions) (*image.Image, bool, error) {
	img, err := src.Select(o.Arch)
	if err != nil {
		return nil, false, err
	}
	digest, err := img.Digest()
	if err != nil {
		return nil, false, err
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, false, err
	}
	if m.Config.MediaType != MediaTypeConfig {
		return nil, false, fmt.Errorf("%s is not a heyvm image (its config is %s, want %s)", src.Desc, m.Config.MediaType, MediaTypeConfig)
	}
	rawCfg, err := img.RawConfigFile()
	if err != nil {
		return nil, false, err
	}
	if sum := sha256.Sum256(rawCfg); "sha256:"+hex.EncodeToString(sum[:]) != m.Config.Digest.String() {
		return nil, false, fmt.Errorf("%s: the image config does not match its digest %s", src.Desc, m.Config.Digest)
	}
	var meta image.Metadata
	if err := yaml.Unmarshal(rawCfg, &meta); err != nil || meta.Arch == "" {
		return nil, false, fmt.Errorf("%s: its image.yaml is unreadable (%v)", src.Desc, err)
	}
	if a, _ := image.NormalizeArch(meta.Arch); a != o.Arch {
		return nil, false, fmt.Errorf("%s: the %s manifest holds an %s image", src.Desc, o.Arch, meta.Arch)
	}
	rootfsSize, err := strconv.ParseInt(m.Annotations[AnnotationFileSize], 10, 64)
	if err != nil || rootfsSize <= 0 {
		return nil, false, fmt.Errorf("%s: the manifest has no valid %s annotation", src.Desc, AnnotationFileSize)
	}
	pieces := make([]piece, len(m.Layers))
	for i, d := range m.Layers {
		if pieces[i], err = pieceOf(d); err != nil {
			return nil, false, fmt.Errorf("%s: %w", src.Desc, err)
		}
	}
	if err := checkCoverage(pieces, rootfsSize); err != nil {
		return nil, false, fmt.Errorf("%s: %w", src.Desc, err)
	}

	name := o.Name
	if name == "" {
		name = m.Annotations[AnnotationImageName]
	}
	if name == "" {
		name = meta.Name
	}
	if err := image.ValidateName(name); err != nil {
		return nil, false, err
	}
	if im, err := o.Store.Resolve(name); err == nil && im.Name == name {
		if im.Meta.Pulled != nil && im.Meta.Pulled.Digest == digest.String() {
			return im, false, nil // already there
		}
		if !o.Replace {
			return nil, false, fmt.Errorf("%w: image %q already exists with other content: pass --force to replace it, or --name to keep both", ErrExists, name)
		}
	}

	if err := layout.EnsureDir(o.Store.Dir()); err != nil {
		return nil, false, err
	}
	cleanAbandonedPulls(o.Store.Dir(), 7*24*time.Hour)
	staging := filepath.Join(o.Store.Dir(), ".pull-"+digest.Hex[:24])
	if err := os.MkdirAll(filepath.Join(staging, "image"), 0o700); err != nil {
		return nil, false, err
	}
	lock, err := fsutil.TryLock(filepath.Join(staging, "lock"))
	if errors.Is(err, fsutil.ErrLocked) {
		return nil, false, fmt.Errorf("another pull of %s is in progress: wait for it", src.Desc)
	}
	if err != nil {
		return nil, false, err
	}
	defer lock.Unlock()

	rec, err := openRecord(filepath.Join(staging, "verified"))
	if err != nil {
		return nil, false, err
	}
	defer rec.Close()

	files := map[string]*os.File{}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, f := range image.Files {
		fh, err := os.OpenFile(filepath.Join(staging, "image", f), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			return nil, false, err
		}
		files[f] = fh
		var size int64
		for _, p := range pieces {
			if p.File == f {
				size = max(size, p.Offset+p.Size)
			}
		}
		if err := fh.Truncate(size); err != nil {
			return nil, false, err
		}
	}

	// Pieces with the same blob (a 4 GiB disk's empty chunks all have
	// one) are fetched and decoded once and written at each offset.
	type job struct {
		first int     // the piece fetched
		also  []piece // pieces written from the same blob
	}
	jobs := map[v1.Hash]*job{}
	var order []*job
	var total int64
	for i, p := range pieces {
		if rec.has(p.key()) {
			continue
		}
		total += p.Size
		d := m.Layers[i].Digest
		if j := jobs[d]; j != nil && pieces[j.first].File == p.File && pieces[j.first].Size == p.Size {
			j.also = append(j.also, p)
			continue
		}
		j := &job{first: i}
		if jobs[d] == nil {
			jobs[d] = j
		}
		order = append(order, j)
	}
	// Largest first, so the last worker is not left with a big chunk.
	sort.SliceStable(order, func(a, b int) bool { return m.Layers[order[a].first].Size > m.Layers[order[b].first].Size })
	prog := orNoProgress(o.Progress)
	verb := o.Verb
	if verb == "" {
		verb = "pull"
	}
	prog.Phase(verb+" "+name, total)
	// One failed layer does not cancel the others: what they verify is
	// kept for the next attempt.
	var g errgroup.Group
	g.SetLimit(runtime.NumCPU())
	gctx := ctx
	for _, j := range order {
		p, d, also := pieces[j.first], m.Layers[j.first], j.also
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err
			}
			if err := fetchPiece(gctx, img, d, p, also, files[p.File], rec.resumed, !src.BlobsVerified, prog); err != nil {
				return fmt.Errorf("layer %s (%s at %d): %w", d.Digest.Hex[:12], p.File, p.Offset, err)
			}
			for _, q := range append([]piece{p}, also...) {
				if err := rec.add(q.key()); err != nil {
					return err
				}
			}
			return nil
		})
	}
	err = g.Wait()
	if err != nil {
		return nil, false, err
	}
	prog.Done()

	meta.Name = name
	meta.Backend = o.Store.Backend
	meta.Pulled = &image.PullInfo{From: src.Desc, Digest: digest.String(), At: time.Now().UTC()}
	if err := image.WriteMetadata(filepath.Join(staging, "image"), &meta); err != nil {
		return nil, false, err
	}
	if err := o.Store.Install(ctx, filepath.Join(staging, "image"), name, o.Replace); err != nil {
		return nil, false, err
	}
	lock.Unlock()
	os.RemoveAll(staging)
	im, err := o.Store.Resolve(name)
	return im, true, err
}

// cleanAbandonedPulls removes the staging areas of pulls that nobody has
// resumed for a week (and that no pull holds now).
func cleanAbandonedPulls(dir string, age time.Duration) {
	old, _ := filepath.Glob(filepath.Join(dir, ".pull-*"))
	for _, d := range old {
		fi, err := os.Stat(filepath.Join(d, "verified"))
		if err != nil || time.Since(fi.ModTime()) < age {
			continue
		}
		if l, err := fsutil.TryLock(filepath.Join(d, "lock")); err == nil {
			os.RemoveAll(d)
			l.Unlock()
		}
	}
}

// fetchPiece downloads one layer, decompresses it into f at its offset
// (and at the offsets of also, pieces with the same blob), and checks the
// blob's digest. That digest pins the compressed bytes, and decompression
// is a pure function of them, so the uncompressed sha256 in the
// annotations is not recomputed: hashing the zeros of a sparse 4 GiB disk
// would cost more than the rest of the pull. Zero blocks are not written,
// so the file keeps its holes.
func fetchPiece(ctx context.Context, img v1.Image, d v1.Descriptor, p piece, also []piece, f *os.File, resumed, verify bool, prog Progress) error {
	l, err := img.LayerByDigest(d.Digest)
	if err != nil {
		return err
	}
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	zh := sha256.New()
	var in io.Reader = rc
	if verify {
		in = io.TeeReader(rc, zh)
	}
	zr := &ctxReader{ctx: ctx, r: in}
	dec, err := decoders.get(zr)
	if err != nil {
		return err
	}
	defer decoders.put(dec)
	offsets := []int64{p.Offset}
	for _, q := range also {
		offsets = append(offsets, q.Offset)
	}
	if resumed {
		// A layer that was half written before an interruption may have
		// left bytes where this pass leaves a hole.
		for _, off := range offsets {
			if err := fsutil.PunchHole(f, off, p.Size); err != nil {
				return err
			}
		}
	}
	if p.File == layout.ImageRootfs {
		// Only the extents are written; the rest stays a hole.
		br := bufio.NewReaderSize(dec, 1<<20)
		err := readSparsePayload(br, p.Size, func(b []byte, at int64) error {
			for _, off := range offsets {
				if _, err := f.WriteAt(b, off+at); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("the blob does not decode (%w): it is corrupt or its download broke off; run the pull again to resume", err)
		}
		prog.Add(p.Size * int64(len(offsets)))
	} else {
		// The kernel and initrd are small and dense: written as they come.
		var ws []io.Writer
		for _, off := range offsets {
			ws = append(ws, io.NewOffsetWriter(f, off))
		}
		n, err := io.CopyBuffer(io.MultiWriter(ws...), &progressReader{r: io.LimitReader(dec, p.Size+1), p: prog}, make([]byte, 1<<20))
		if err != nil {
			return fmt.Errorf("cannot decompress the blob: it is corrupt or its download broke off (%w); run the pull again to resume", err)
		}
		if n != p.Size {
			return fmt.Errorf("decompressed to %d bytes, the manifest says %d", n, p.Size)
		}
		prog.Add(p.Size * int64(len(also)))
	}
	if _, err := io.Copy(io.Discard, zr); err != nil {
		return fmt.Errorf("the downloaded blob is corrupt or broke off (%w); run the pull again to resume", err)
	}
	if got := "sha256:" + hex.EncodeToString(zh.Sum(nil)); verify && got != d.Digest.String() {
		return fmt.Errorf("the downloaded blob has digest %s, not %s: it is corrupt (run the pull again)", got, d.Digest)
	}
	// No fsync per layer (it would cost more than the pull): a killed
	// pull's page cache survives, and after a host crash the record is
	// discarded (see openRecord).
	return nil
}

// decoders keeps zstd decoders for reuse: a new one allocates its
// window buffers, which showed up in a pull's profile.
var decoders decoderPool

type decoderPool struct{ p sync.Pool }

func (d *decoderPool) get(r io.Reader) (*zstd.Decoder, error) {
	if dec, ok := d.p.Get().(*zstd.Decoder); ok {
		if err := dec.Reset(r); err == nil {
			return dec, nil
		}
		dec.Close()
	}
	// zstd's own checksum (xxhash) is not checked: the blob's sha256 is,
	// and that pins every byte the decoder sees.
	return zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(false), zstd.IgnoreChecksum(true))
}

// put returns a decoder; one left mid-stream (an error) is reset on its
// next get.
func (d *decoderPool) put(dec *zstd.Decoder) { d.p.Put(dec) }

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r *ctxReader) Read(b []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(b)
}

// record is the list of verified layers of a pull, appended and synced
// after each one, so an interrupted pull knows what it need not fetch.
type record struct {
	mu      sync.Mutex
	f       *os.File
	done    map[string]bool
	resumed bool // the staging area existed before this run
}

// Layers are not fsynced, so the record starts with the host's boot id:
// a record from before a reboot may name layers whose data never reached
// the disk, and is thrown away.
func openRecord(path string) (*record, error) {
	r := &record{done: map[string]bool{}}
	boot := "boot " + bootID()
	if b, err := os.Open(path); err == nil {
		r.resumed = true
		sc := bufio.NewScanner(b)
		if sc.Scan() && sc.Text() == boot {
			for sc.Scan() {
				r.done[sc.Text()] = true
			}
		}
		b.Close()
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	r.f = f
	lines := []string{boot}
	for k := range r.done {
		lines = append(lines, k)
	}
	if _, err := f.WriteString(strings.Join(lines, "\n") + "\n"); err != nil {
		f.Close()
		return nil, err
	}
	return r, nil
}

func (r *record) has(k string) bool { return r.done[k] }

func (r *record) add(k string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, err := r.f.WriteString(k + "\n")
	return err
}

func (r *record) Close() error { return r.f.Close() }
