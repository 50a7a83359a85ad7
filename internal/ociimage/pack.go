package ociimage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"

	"github.com/heyvm/heyvm/internal/fsutil"
	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/layout"
)

// Progress hears about long byte-counted work (compressing, uploading,
// downloading). Implementations must be safe for concurrent Add calls.
type Progress interface {
	Phase(what string, total int64)
	Add(n int64)
	Done()
}

type noProgress struct{}

func (noProgress) Phase(string, int64) {}
func (noProgress) Add(int64)           {}
func (noProgress) Done()               {}

func orNoProgress(p Progress) Progress {
	if p == nil {
		return noProgress{}
	}
	return p
}

// Artifact is one local image as an OCI image: a v1.Image whose layers
// are read from compressed files in a work directory or, when the
// descriptors came from the pack cache, compressed again only if a
// registry turns out to lack them.
type Artifact struct {
	Image    *image.Image
	config   []byte
	manifest []byte
	layers   map[v1.Hash]*layerBlob
	workDir  string
}

// layerBlob is one layer: partial.CompressedLayer over a compressed file,
// or over a byte range of an image file compressed on demand.
type layerBlob struct {
	desc     v1.Descriptor
	path     string // compressed bytes on disk; "" to compress on demand
	src      string // the image file
	off, len int64
}

func (l *layerBlob) Digest() (v1.Hash, error)            { return l.desc.Digest, nil }
func (l *layerBlob) Size() (int64, error)                { return l.desc.Size, nil }
func (l *layerBlob) MediaType() (types.MediaType, error) { return l.desc.MediaType, nil }

func (l *layerBlob) Compressed() (io.ReadCloser, error) {
	if l.path != "" {
		return os.Open(l.path)
	}
	pr, pw := io.Pipe()
	go func() {
		h := sha256.New()
		n, _, err := compressRange(io.MultiWriter(pw, h), l.src, l.off, l.len, l.desc.MediaType == MediaTypeRootfsChunk, nil)
		if err == nil && (n != l.desc.Size || "sha256:"+hex.EncodeToString(h.Sum(nil)) != l.desc.Digest.String()) {
			err = fmt.Errorf("%s changed since it was packed: push again", l.src)
		}
		pw.CloseWithError(err)
	}()
	return pr, nil
}

// Methods of partial.CompressedImageCore.
func (a *Artifact) RawConfigFile() ([]byte, error)      { return a.config, nil }
func (a *Artifact) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
func (a *Artifact) RawManifest() ([]byte, error)        { return a.manifest, nil }
func (a *Artifact) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if l, ok := a.layers[h]; ok {
		return l, nil
	}
	return nil, fmt.Errorf("layer %s is not part of image %s", h, a.Image.Name)
}

// OCIImage is the artifact as a go-containerregistry image.
func (a *Artifact) OCIImage() (v1.Image, error) { return partial.CompressedToImage(a) }

// Index wraps the artifact in an OCI index with its platform, plus other
// manifests to keep (other architectures of the same ref).
func (a *Artifact) Index(keep ...mutate.IndexAddendum) (v1.ImageIndex, error) {
	img, err := a.OCIImage()
	if err != nil {
		return nil, err
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	adds := append(keep, mutate.IndexAddendum{
		Add: img,
		Descriptor: v1.Descriptor{
			MediaType:    types.OCIManifestSchema1,
			ArtifactType: ArtifactType,
			Platform:     &v1.Platform{OS: "linux", Architecture: a.Image.Meta.Arch},
		},
	})
	return mutate.AppendManifests(idx, adds...), nil
}

// Close removes the compressed files.
func (a *Artifact) Close() error {
	if a.workDir == "" {
		return nil
	}
	return os.RemoveAll(a.workDir)
}

// PackOptions tune Pack.
type PackOptions struct {
	// WorkDir holds the compressed layers until Close (required).
	WorkDir string
	// CacheFile, if set, remembers the manifest of this exact image so a
	// later push need not compress anything the registry already has.
	CacheFile string
	// KeepFiles forces compressed files on disk even on a cache hit
	// (export reads every layer anyway).
	KeepFiles bool
	Progress  Progress
}

// packCache is what the pack cache file records.
type packCache struct {
	ImageYAMLSHA256 string          `json:"image_yaml_sha256"`
	Manifest        json.RawMessage `json:"manifest"`
}

// Pack turns an image in the store into an Artifact. The image's files are
// read, never written.
func Pack(ctx context.Context, im *image.Image, o PackOptions) (*Artifact, error) {
	config, err := os.ReadFile(filepath.Join(im.Dir, "image.yaml"))
	if err != nil {
		return nil, err
	}
	cfgSum := sha256.Sum256(config)
	cfgHex := hex.EncodeToString(cfgSum[:])
	a := &Artifact{Image: im, config: config, layers: map[v1.Hash]*layerBlob{}}

	if o.CacheFile != "" && !o.KeepFiles {
		if b, err := os.ReadFile(o.CacheFile); err == nil {
			var pc packCache
			if json.Unmarshal(b, &pc) == nil && pc.ImageYAMLSHA256 == cfgHex {
				var m v1.Manifest
				if err := json.Unmarshal(pc.Manifest, &m); err == nil {
					a.manifest = pc.Manifest
					for _, d := range m.Layers {
						p, err := pieceOf(d)
						if err != nil {
							break
						}
						a.layers[d.Digest] = &layerBlob{desc: d, src: filepath.Join(im.Dir, p.File), off: p.Offset, len: p.Size}
					}
					if len(a.layers) > 0 {
						return a, nil
					}
				}
			}
		}
	}

	sizes := map[string]int64{}
	for _, f := range image.Files {
		fi, err := os.Stat(filepath.Join(im.Dir, f))
		if err != nil {
			return nil, err
		}
		sizes[f] = fi.Size()
	}
	pieces := planPieces(sizes, ChunkSize)
	if err := os.MkdirAll(o.WorkDir, 0o700); err != nil {
		return nil, err
	}
	a.workDir = o.WorkDir
	prog := orNoProgress(o.Progress)
	var total int64
	for _, p := range pieces {
		total += p.Size
	}
	prog.Phase("compress "+im.Name, total)
	descs := make([]v1.Descriptor, len(pieces))
	blobs := make([]*layerBlob, len(pieces))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.NumCPU())
	for i, p := range pieces {
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err
			}
			src := filepath.Join(im.Dir, p.File)
			out := filepath.Join(o.WorkDir, strconv.Itoa(i)+".zst")
			d, rawSHA, err := compressToFile(out, src, p.Offset, p.Size, p.File == layout.ImageRootfs, prog)
			if err != nil {
				return err
			}
			p.SHA256 = rawSHA
			d.MediaType = mediaTypeOf(p.File)
			d.Annotations = p.annotations()
			descs[i] = d
			blobs[i] = &layerBlob{desc: d, path: out, src: src, off: p.Offset, len: p.Size}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		a.Close()
		return nil, fmt.Errorf("compress image %s: %w", im.Name, err)
	}
	prog.Done()
	for _, b := range blobs {
		a.layers[b.desc.Digest] = b
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  ArtifactType,
		Config: v1.Descriptor{
			MediaType: MediaTypeConfig,
			Size:      int64(len(config)),
			Digest:    v1.Hash{Algorithm: "sha256", Hex: cfgHex},
		},
		Layers: descs,
		Annotations: map[string]string{
			AnnotationFileSize:                   strconv.FormatInt(sizes["rootfs.img"], 10),
			AnnotationImageName:                  im.Name,
			"org.opencontainers.image.created":   im.Meta.Created.UTC().Format("2006-01-02T15:04:05Z"),
			"org.opencontainers.image.title":     "heyvm image " + im.Name,
			"org.opencontainers.image.base.name": im.Meta.Build.Recipe,
		},
	}
	if a.manifest, err = json.Marshal(m); err != nil {
		a.Close()
		return nil, err
	}
	if o.CacheFile != "" {
		b, _ := json.Marshal(packCache{ImageYAMLSHA256: cfgHex, Manifest: a.manifest})
		if err := os.MkdirAll(filepath.Dir(o.CacheFile), 0o700); err == nil {
			_ = fsutil.WriteFileAtomic(o.CacheFile, b, 0o600) // only a speed-up
		}
	}
	return a, nil
}

// compressRange zstd-compresses n bytes of src from off into w (as a
// sparse chunk payload if sparse), returning the compressed size and the
// sha256 of the uncompressed payload. One encoder goroutine per call keeps
// the output deterministic, so a range compressed again gives the same
// digest; parallelism comes from compressing chunks side by side.
func compressRange(w io.Writer, src string, off, n int64, sparse bool, prog Progress) (int64, string, error) {
	f, err := os.Open(src)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	cw := &countingWriter{w: w}
	enc, err := zstd.NewWriter(cw, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		return 0, "", err
	}
	h := sha256.New()
	if sparse {
		exts, err := chunkExtents(f, off, n)
		if err == nil {
			err = writeSparsePayload(io.MultiWriter(enc, h), f, off, exts)
		}
		if cerr := enc.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return 0, "", err
		}
		if prog != nil {
			prog.Add(n)
		}
		return cw.n, hex.EncodeToString(h.Sum(nil)), nil
	}
	buf := make([]byte, 1<<20)
	var r io.Reader = io.NewSectionReader(f, off, n)
	if prog != nil {
		r = &progressReader{r: r, p: prog}
	}
	if _, err := io.CopyBuffer(io.MultiWriter(enc, h), r, buf); err != nil {
		enc.Close()
		return 0, "", err
	}
	if err := enc.Close(); err != nil {
		return 0, "", err
	}
	return cw.n, hex.EncodeToString(h.Sum(nil)), nil
}

// compressToFile compresses one piece into out and describes the result.
func compressToFile(out, src string, off, n int64, sparse bool, prog Progress) (v1.Descriptor, string, error) {
	f, err := os.OpenFile(out, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return v1.Descriptor{}, "", err
	}
	h := sha256.New()
	size, rawSHA, err := compressRange(io.MultiWriter(f, h), src, off, n, sparse, prog)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return v1.Descriptor{}, "", err
	}
	return v1.Descriptor{Size: size, Digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}}, rawSHA, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// progressReader reports bytes as they are read.
type progressReader struct {
	r io.Reader
	p Progress
}

func (r *progressReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	r.p.Add(int64(n))
	return n, err
}

// isZero reports whether b (at most 1 MiB) holds only zero bytes.
func isZero(b []byte) bool { return bytes.Equal(b, zeroPage[:len(b)]) }

var zeroPage = make([]byte, 1<<20)
