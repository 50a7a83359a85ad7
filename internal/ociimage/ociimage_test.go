package ociimage

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"github.com/klauspost/compress/zstd"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/heyvm/heyvm/internal/fsutil"
	"github.com/heyvm/heyvm/internal/image"
	"github.com/heyvm/heyvm/internal/layout"
	"github.com/heyvm/heyvm/internal/ociimage/ocitest"
)

// fakeImage writes a small image whose rootfs has data, zero blocks and a
// Chunks with the same content share one blob: the empty ones of a big
// sparse disk, and here two with the same data at the same place in the
// chunk. The pull fetches such a blob once and writes it at each offset.
func TestPullWritesSharedBlobsAtEachOffset(t *testing.T) {
	ctx := context.Background()
	src := layout.Root{Dir: t.TempDir()}
	im := fakeImage(t, src, "base:1", "amd64", 4*ChunkSize)
	f, err := os.OpenFile(filepath.Join(im.Dir, layout.ImageRootfs), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 6<<20)
	f.ReadAt(head, 0)
	fsutil.PunchHole(f, 4*ChunkSize-1<<20, 1<<20)
	f.WriteAt(head, 3*ChunkSize) // chunk 3 = chunk 0; chunks 1 and 2 empty
	f.Close()
	im.Meta.SHA256[layout.ImageRootfs], _ = image.FileSHA256(filepath.Join(im.Dir, layout.ImageRootfs))
	image.WriteMetadata(im.Dir, im.Meta)
	reg := ocitest.Start(t)
	ref := reg.Host + "/heyvm/base:1"
	pushImage(t, im, PackOptions{WorkDir: filepath.Join(t.TempDir(), "w")}, ref)
	s, err := testRegistry().Fetch(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	sel, err := s.Select("amd64")
	if err != nil {
		t.Fatal(err)
	}
	m, err := sel.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	digests := map[string]int{}
	for _, l := range m.Layers {
		digests[l.Digest.String()]++
	}
	if len(digests) != len(m.Layers)-2 {
		t.Fatalf("%d layers, %d blobs: want two shared", len(m.Layers), len(digests))
	}
	dst := image.Store{Root: layout.Root{Dir: t.TempDir()}, Backend: "qemu"}
	got, _, err := Install(ctx, s, InstallOptions{Store: dst, Arch: "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	if a, b := sum(t, filepath.Join(im.Dir, layout.ImageRootfs)), sum(t, filepath.Join(got.Dir, layout.ImageRootfs)); a != b {
		t.Error("the rootfs differs after the round trip")
	}
	if used := image.DiskUsage(got.Dir); used > 16<<20 {
		t.Errorf("pulled image takes %d KiB: holes were filled", used>>10)
	}
}

// hole, and returns it from a store.
func fakeImage(t *testing.T, root layout.Root, name, arch string, rootfsSize int64) *image.Image {
	t.Helper()
	st := image.Store{Root: root, Backend: "qemu"}
	dir := root.ImageDir("qemu", name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	kernel := make([]byte, 300<<10)
	rand.Read(kernel)
	os.WriteFile(filepath.Join(dir, layout.ImageKernel), kernel, 0o644)
	os.WriteFile(filepath.Join(dir, layout.ImageInitrd), bytes.Repeat([]byte("initrd"), 10000), 0o644)
	f, err := os.Create(filepath.Join(dir, layout.ImageRootfs))
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(rootfsSize)
	data := make([]byte, 1<<20)
	rand.Read(data)
	for _, off := range []int64{0, 5 << 20, rootfsSize - 1<<20} {
		f.WriteAt(data, off)
	}
	f.WriteAt(make([]byte, 64<<10), 3<<20) // explicit zeros, allocated
	f.Close()
	m := &image.Metadata{Name: name, Backend: "qemu", Arch: arch, RootfsSize: rootfsSize, Created: time.Now(), SHA256: map[string]string{}}
	for _, fn := range image.Files {
		m.SHA256[fn], _ = image.FileSHA256(filepath.Join(dir, fn))
	}
	if err := image.WriteMetadata(dir, m); err != nil {
		t.Fatal(err)
	}
	im, err := st.Resolve(name)
	if err != nil {
		t.Fatal(err)
	}
	return im
}

func sum(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// pushImage packs im and pushes it to ref.
func pushImage(t *testing.T, im *image.Image, o PackOptions, ref string) {
	t.Helper()
	ctx := context.Background()
	a, err := Pack(ctx, im, o)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := testRegistry().Push(ctx, a, ref, nil); err != nil {
		t.Fatal(err)
	}
}

func testRegistry() Registry { return Registry{Insecure: true, Keychain: authn.NewMultiKeychain()} }

func TestPushPullRoundTrip(t *testing.T) {
	ctx := context.Background()
	src := layout.Root{Dir: t.TempDir()}
	im := fakeImage(t, src, "base:1", "amd64", 40<<20)
	reg := ocitest.Start(t)
	host := reg.Host
	ref := host + "/heyvm/base:1"

	pushImage(t, im, PackOptions{WorkDir: filepath.Join(t.TempDir(), "w"), CacheFile: filepath.Join(src.Dir, "cache.json")}, ref)
	first := reg.Uploads()
	if first == 0 {
		t.Fatal("first push uploaded nothing")
	}
	// A second push (from the pack cache) uploads no blob.
	a, err := Pack(ctx, im, PackOptions{WorkDir: filepath.Join(t.TempDir(), "w"), CacheFile: filepath.Join(src.Dir, "cache.json")})
	if err != nil {
		t.Fatal(err)
	}
	if a.workDir != "" {
		t.Error("second pack compressed again instead of using the cache")
	}
	if _, err := testRegistry().Push(ctx, a, ref, nil); err != nil {
		t.Fatal(err)
	}
	if n := reg.Uploads() - first; n != 0 {
		t.Errorf("second push started %d uploads, want 0", n)
	}

	dst := image.Store{Root: layout.Root{Dir: t.TempDir()}, Backend: "qemu"}
	s, err := testRegistry().Fetch(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	got, installed, err := Install(ctx, s, InstallOptions{Store: dst, Arch: "amd64"})
	if err != nil || !installed {
		t.Fatalf("install: %v %v", installed, err)
	}
	if got.Name != "base:1" || got.Meta.Pulled == nil || got.Meta.Backend != "qemu" {
		t.Fatalf("pulled image: %+v", got.Meta)
	}
	for _, f := range image.Files {
		if a, b := sum(t, filepath.Join(im.Dir, f)), sum(t, filepath.Join(got.Dir, f)); a != b {
			t.Errorf("%s differs after the round trip", f)
		}
	}
	if used := image.DiskUsage(got.Dir); used > 8<<20 {
		t.Errorf("pulled image takes %d KiB: the rootfs holes were filled", used>>10)
	}
	// Pulling again is a no-op.
	if _, installed, err := Install(ctx, s, InstallOptions{Store: dst, Arch: "amd64"}); err != nil || installed {
		t.Fatalf("second install: %v %v", installed, err)
	}
	// A missing arch says which ones exist.
	if _, _, err := Install(ctx, s, InstallOptions{Store: dst, Arch: "arm64"}); err == nil || !strings.Contains(err.Error(), "no arm64 image (it has amd64)") {
		t.Fatalf("arm64: %v", err)
	}
	// An arm64 image pushed to the same ref joins the index.
	arm := fakeImage(t, src, "base-arm", "arm64", 8<<20)
	pushImage(t, arm, PackOptions{WorkDir: filepath.Join(t.TempDir(), "w")}, ref)
	s, _ = testRegistry().Fetch(ctx, ref)
	for _, arch := range []string{"amd64", "arm64"} {
		if _, err := s.Select(arch); err != nil {
			t.Errorf("after the arm64 push: %v", err)
		}
	}
}

func TestPullResumesAndRejectsCorruption(t *testing.T) {
	ctx := context.Background()
	src := layout.Root{Dir: t.TempDir()}
	im := fakeImage(t, src, "base:1", "amd64", 3*ChunkSize/2)
	reg := ocitest.Start(t)
	host := reg.Host
	ref := host + "/heyvm/base:1"
	a, err := Pack(ctx, im, PackOptions{WorkDir: filepath.Join(t.TempDir(), "w")})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := testRegistry().Push(ctx, a, ref, nil); err != nil {
		t.Fatal(err)
	}
	m, _ := a.parsedManifest()
	last := m.Layers[len(m.Layers)-1].Digest.Hex

	dst := image.Store{Root: layout.Root{Dir: t.TempDir()}, Backend: "qemu"}
	s, _ := testRegistry().Fetch(ctx, ref)
	reg.Fail(last, true)
	if _, _, err := Install(ctx, s, InstallOptions{Store: dst, Arch: "amd64"}); err == nil {
		t.Fatal("install with a missing blob succeeded")
	}
	if list, _ := dst.List(); len(list) != 0 {
		t.Fatalf("a failed pull is listed: %+v", list)
	}
	reg.Fail(last, false)
	reg.Corrupt(last, true)
	reg.ResetGets()
	if _, _, err := Install(ctx, s, InstallOptions{Store: dst, Arch: "amd64"}); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt blob: %v", err)
	}
	for _, l := range m.Layers {
		if n := reg.Gets(l.Digest.Hex); (n != 0) != (l.Digest.Hex == last) {
			t.Errorf("the resumed pull fetched layer %s %d times; only the one that failed should be fetched again", l.Digest.Hex[:12], n)
		}
	}
	if list, _ := dst.List(); len(list) != 0 {
		t.Fatalf("a corrupt pull is listed: %+v", list)
	}
	reg.Corrupt(last, false)
	got, _, err := Install(ctx, s, InstallOptions{Store: dst, Arch: "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	if sum(t, filepath.Join(got.Dir, "rootfs.img")) != im.Meta.SHA256["rootfs.img"] {
		t.Fatal("resumed rootfs differs")
	}
	if des, _ := filepath.Glob(filepath.Join(dst.Dir(), ".pull-*")); len(des) != 0 {
		t.Errorf("staging left behind: %v", des)
	}
}

func TestExportImport(t *testing.T) {
	ctx := context.Background()
	src := layout.Root{Dir: t.TempDir()}
	im := fakeImage(t, src, "base:1", "amd64", 16<<20)
	a, err := Pack(ctx, im, PackOptions{WorkDir: filepath.Join(t.TempDir(), "w"), KeepFiles: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	tarPath := filepath.Join(t.TempDir(), "base.tar")
	if err := Export(ctx, a, tarPath, nil); err != nil {
		t.Fatal(err)
	}
	s, err := ExtractLayout(ctx, tarPath, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	dst := image.Store{Root: layout.Root{Dir: t.TempDir()}, Backend: "qemu"}
	got, _, err := Install(ctx, s, InstallOptions{Store: dst, Arch: "amd64", Name: "copy"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "copy" || sum(t, filepath.Join(got.Dir, "rootfs.img")) != im.Meta.SHA256["rootfs.img"] {
		t.Fatalf("imported image: %+v", got.Meta)
	}
	// The same name with other content needs --force.
	other := fakeImage(t, src, "other", "amd64", 4<<20)
	a3, _ := Pack(ctx, other, PackOptions{WorkDir: filepath.Join(t.TempDir(), "w"), KeepFiles: true})
	defer a3.Close()
	tar2 := filepath.Join(t.TempDir(), "other.tar")
	Export(ctx, a3, tar2, nil)
	s2, _ := ExtractLayout(ctx, tar2, t.TempDir(), nil)
	if _, _, err := Install(ctx, s2, InstallOptions{Store: dst, Arch: "amd64", Name: "copy"}); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("overwrite without force: %v", err)
	}
	// A tar that is not a layout is refused with a hint.
	bad := filepath.Join(t.TempDir(), "bad.tar")
	os.WriteFile(bad, []byte("not a tar"), 0o600)
	if _, err := ExtractLayout(ctx, bad, t.TempDir(), nil); err == nil || !strings.Contains(err.Error(), "heyvm images export") {
		t.Fatalf("bad tar: %v", err)
	}
}

func TestRegistryRules(t *testing.T) {
	for host, want := range map[string]bool{"localhost:5000": true, "127.0.0.1:5000": true, "[::1]:5000": true, "127.1.2.3": true, "10.0.0.1:5000": false, "ghcr.io": false, "localhost.example.com": false} {
		if got := IsLoopbackHost(host); got != want {
			t.Errorf("IsLoopbackHost(%q) = %v", host, got)
		}
	}
	if _, err := (Registry{Insecure: true}).ParseRef("10.1.2.3:5000/x:1"); err == nil || !strings.Contains(err.Error(), "only for a registry on this machine") {
		t.Fatalf("insecure private-range registry: %v", err)
	}
	if _, err := (Registry{}).ParseRef("Bad Ref"); err == nil {
		t.Fatal("bad ref accepted")
	}
	// Without --insecure, a plain-HTTP registry on loopback is refused
	// with the hint (go-containerregistry alone would fall back to HTTP).
	host := ocitest.Start(t).Host
	_, err := Registry{Keychain: authn.NewMultiKeychain()}.Fetch(context.Background(), host+"/x:1")
	if err == nil || !strings.Contains(err.Error(), "pass --insecure") {
		t.Fatalf("plain HTTP without --insecure: %v", err)
	}
	// A registry demanding auth.
	reg := ocitest.Start(t)
	reg.Private("private/")
	_, err = testRegistry().Fetch(context.Background(), reg.Host+"/private/x:1")
	if err == nil || !strings.Contains(err.Error(), "docker login") {
		t.Fatalf("auth: %v", err)
	}
	// An unknown ref.
	host = reg.Host
	if _, err := testRegistry().Fetch(context.Background(), host+"/nosuch:1"); err == nil || !strings.Contains(err.Error(), "no image at") {
		t.Fatalf("unknown ref: %v", err)
	}
}

func TestPlanPiecesCoverage(t *testing.T) {
	sizes := map[string]int64{layout.ImageKernel: 10, layout.ImageInitrd: 20, layout.ImageRootfs: 2*ChunkSize + 5}
	ps := planPieces(sizes, ChunkSize)
	if len(ps) != 5 || ps[4].Size != 5 || ps[4].Offset != 2*ChunkSize {
		t.Fatalf("pieces: %+v", ps)
	}
	if err := checkCoverage(ps, sizes[layout.ImageRootfs]); err != nil {
		t.Fatal(err)
	}
	if err := checkCoverage(ps[:4], sizes[layout.ImageRootfs]); err == nil {
		t.Fatal("a missing last chunk passed")
	}
	gap := append([]piece{}, ps...)
	gap[3].Offset++
	if err := checkCoverage(gap, sizes[layout.ImageRootfs]); err == nil {
		t.Fatal("a gap passed")
	}
}

func TestSparseChunkPayload(t *testing.T) {
	dir := t.TempDir()
	sparse := filepath.Join(dir, "sparse")
	f, _ := os.Create(sparse)
	f.Truncate(8 << 20)
	data := make([]byte, 10000) // not block-aligned in length
	rand.Read(data)
	f.WriteAt(data, 4096*3)
	f.WriteAt(make([]byte, 1<<20), 2<<20) // allocated zeros: no extent
	f.WriteAt([]byte("tail"), 8<<20-4)    // a partial last block
	f.Close()
	// The same bytes with every block allocated: same payload.
	dense := filepath.Join(dir, "dense")
	b, _ := os.ReadFile(sparse)
	os.WriteFile(dense, b, 0o644)

	var payloads [2]bytes.Buffer
	for i, p := range []string{sparse, dense} {
		if _, _, err := compressRange(&payloads[i], p, 0, 8<<20, true, nil); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(payloads[0].Bytes(), payloads[1].Bytes()) {
		t.Fatal("the payload depends on how the file is allocated")
	}
	fh, _ := os.Open(sparse)
	exts, err := chunkExtents(fh, 0, 8<<20)
	fh.Close()
	if err != nil || len(exts) != 2 || exts[0].Off != 3*4096 || exts[1].Off != 8<<20-4096 {
		t.Fatalf("extents: %+v %v", exts, err)
	}

	// Decode into a fresh file: identical content.
	dec, _ := zstd.NewReader(bytes.NewReader(payloads[0].Bytes()))
	out := filepath.Join(dir, "out")
	of, _ := os.Create(out)
	of.Truncate(8 << 20)
	err = readSparsePayload(bufio.NewReader(dec), 8<<20, func(p []byte, at int64) error { _, err := of.WriteAt(p, at); return err })
	of.Close()
	if err != nil {
		t.Fatal(err)
	}
	if sum(t, out) != sum(t, sparse) {
		t.Fatal("decoded chunk differs")
	}
	// Malformed payloads are refused.
	for _, bad := range []string{
		"nonsense\n",
		sparseMagic + "1\n0 100\nshort",
		sparseMagic + "2\n100 10\n50 10\n" + strings.Repeat("x", 20),
		sparseMagic + "1\n0 10\n" + strings.Repeat("x", 11),
		sparseMagic + "1\n0 99999999\n",
	} {
		err := readSparsePayload(bufio.NewReader(strings.NewReader(bad)), 1<<20, func([]byte, int64) error { return nil })
		if err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}
