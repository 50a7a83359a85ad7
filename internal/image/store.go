package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/heyvm/heyvm/internal/fsutil"
	"github.com/heyvm/heyvm/internal/layout"
	"github.com/heyvm/heyvm/internal/userns"
)

// ErrNotFound means no image by that name exists for the backend.
var ErrNotFound = errors.New("image not found")

// Store is the set of images of one backend.
type Store struct {
	Root    layout.Root
	Backend string
}

// Image is one image on disk.
type Image struct {
	Name string // canonical name (the directory name)
	Dir  string
	Meta *Metadata
}

func (im *Image) Kernel() string { return filepath.Join(im.Dir, layout.ImageKernel) }
func (im *Image) Initrd() string { return filepath.Join(im.Dir, layout.ImageInitrd) }
func (im *Image) Rootfs() string { return filepath.Join(im.Dir, layout.ImageRootfs) }

// Dir is the directory this backend's images live in.
func (s Store) Dir() string { return s.Root.BackendImagesDir(s.Backend) }

// buildPrefix marks directories of builds in progress. They start with a
// dot, which no valid image name may, so a half-built image can never be
// mistaken for a real one.
const buildPrefix = ".build-"

// BuildLock serialises builds and the cleanup of interrupted ones.
func (s Store) BuildLock() string { return filepath.Join(s.Dir(), ".build.lock") }

// Canonical maps an alias to the image name it stands for.
func Canonical(name string) string {
	if target, ok := Aliases[name]; ok {
		return target
	}
	return name
}

// Resolve finds an image by name or alias. A missing image gives an error
// wrapping ErrNotFound that tells the user how to get it.
func (s Store) Resolve(name string) (*Image, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	canonical := Canonical(name)
	im, err := s.open(canonical)
	if errors.Is(err, ErrNotFound) && canonical == DefaultName {
		for _, legacy := range LegacyDirs {
			if im, lerr := s.open(legacy); lerr == nil {
				return im, nil
			}
		}
	}
	if errors.Is(err, ErrNotFound) {
		if canonical == DefaultName || strings.HasPrefix(canonical, DefaultName+"-") {
			return nil, fmt.Errorf("%w: %q is not built yet: run `heyvm images build-default`", ErrNotFound, name)
		}
		return nil, fmt.Errorf("%w: no image %q for backend %s: see `heyvm images list`", ErrNotFound, name, s.Backend)
	}
	return im, err
}

func (s Store) open(name string) (*Image, error) {
	dir := s.Root.ImageDir(s.Backend, name)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotFound
	}
	m, err := ReadMetadata(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("image %q in %s has no image.yaml: remove it with `heyvm images rm --force %s` and rebuild", name, dir, name)
	}
	if err != nil {
		return nil, err
	}
	for _, f := range Files {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return nil, fmt.Errorf("image %q is missing %s: rebuild it", name, f)
		}
	}
	return &Image{Name: name, Dir: dir, Meta: m}, nil
}

// Entry is one row of `images list`.
type Entry struct {
	Image
	Aliases []string `json:"aliases"`
	Size    int64    `json:"size_bytes"`
	Err     error    `json:"-"`
}

// List returns every image of the backend, sorted by name, with the
// aliases that resolve to each. Broken image directories are listed with
// their error so the user can see and remove them.
func (s Store) List() ([]Entry, error) {
	des, err := os.ReadDir(s.Dir())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, de := range des {
		if !de.IsDir() || strings.HasPrefix(de.Name(), ".") {
			continue
		}
		e := Entry{Image: Image{Name: de.Name(), Dir: filepath.Join(s.Dir(), de.Name())}}
		im, err := s.open(de.Name())
		if err != nil {
			e.Err = err
		} else {
			e.Image = *im
		}
		e.Size = DiskUsage(e.Dir)
		out = append(out, e)
	}
	for alias := range Aliases {
		im, err := s.Resolve(alias)
		if err != nil {
			continue
		}
		for i := range out {
			if out[i].Name == im.Name {
				out[i].Aliases = append(out[i].Aliases, alias)
			}
		}
	}
	for i := range out {
		sort.Strings(out[i].Aliases)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Remove deletes an image directory. The caller checks that no sandbox
// uses it. Aliases are refused: removing "default" would be ambiguous.
func (s Store) Remove(name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if target, ok := Aliases[name]; ok {
		if _, err := os.Stat(s.Root.ImageDir(s.Backend, name)); err != nil {
			return fmt.Errorf("%q is an alias of %q: remove %q instead", name, target, target)
		}
	}
	dir := s.Root.ImageDir(s.Backend, name)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: no image %q for backend %s: see `heyvm images list`", ErrNotFound, name, s.Backend)
	}
	// Rename first so the image vanishes at once, then delete at leisure.
	trash := filepath.Join(s.Dir(), ".rm-"+name)
	os.RemoveAll(trash)
	if err := os.Rename(dir, trash); err != nil {
		return fmt.Errorf("remove image %q: %w", name, err)
	}
	return os.RemoveAll(trash)
}

// BeginBuild prepares a fresh staging directory for an image build while
// holding the build lock, after removing what interrupted builds left.
// The lock is held until Commit or Abort.
type Build struct {
	store Store
	Name  string
	Dir   string
	lock  *fsutil.Lock
}

// BeginBuild starts a build of name. It fails if another build of this
// backend's images is in progress.
func (s Store) BeginBuild(name string) (*Build, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	if err := layout.EnsureDir(s.Dir()); err != nil {
		return nil, err
	}
	lock, err := fsutil.TryLock(s.BuildLock())
	if errors.Is(err, fsutil.ErrLocked) {
		return nil, errors.New("another image build is running: wait for it to finish")
	}
	if err != nil {
		return nil, err
	}
	if err := s.CleanStaleBuilds(); err != nil {
		lock.Unlock()
		return nil, err
	}
	dir, err := os.MkdirTemp(s.Dir(), buildPrefix+strings.ReplaceAll(name, ":", "_")+"-")
	if err != nil {
		lock.Unlock()
		return nil, err
	}
	return &Build{store: s, Name: name, Dir: dir, lock: lock}, nil
}

// CleanStaleBuilds removes staging and trash directories that an
// interrupted build or removal left behind. Call it only with the build
// lock held, so a live build's directory is never touched.
func (s Store) CleanStaleBuilds() error {
	des, err := os.ReadDir(s.Dir())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, de := range des {
		n := de.Name()
		if strings.HasPrefix(n, buildPrefix) || strings.HasPrefix(n, ".rm-") || strings.HasPrefix(n, ".old-") {
			if err := removeBuildDir(filepath.Join(s.Dir(), n)); err != nil {
				return fmt.Errorf("remove leftover of an interrupted build %s: %w", n, err)
			}
		}
	}
	return nil
}

// Commit moves the finished image into place atomically. With replace, an
// existing image of that name is swapped out; without, its presence is an
// error.
func (b *Build) Commit(replace bool) error {
	defer b.lock.Unlock()
	if err := b.store.moveIntoPlace(b.Dir, b.Name, replace); err != nil {
		os.RemoveAll(b.Dir)
		return err
	}
	return nil
}

// Install moves a complete image directory made elsewhere (a pull or an
// import) into the store under name, with the build lock held for the
// rename only.
func (s Store) Install(ctx context.Context, dir, name string, replace bool) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	lock, err := fsutil.LockContext(ctx, s.BuildLock())
	if err != nil {
		return err
	}
	defer lock.Unlock()
	return s.moveIntoPlace(dir, name, replace)
}

func (s Store) moveIntoPlace(dir, name string, replace bool) error {
	final := s.Root.ImageDir(s.Backend, name)
	if _, err := os.Stat(final); err == nil {
		if !replace {
			return fmt.Errorf("image %q already exists: use --force to replace it", name)
		}
		old := filepath.Join(s.Dir(), ".old-"+name)
		os.RemoveAll(old)
		if err := os.Rename(final, old); err != nil {
			return err
		}
		defer os.RemoveAll(old)
	}
	if err := os.Rename(dir, final); err != nil {
		return fmt.Errorf("move image into place: %w", err)
	}
	return fsutil.SyncDir(s.Dir())
}

// removeBuildDir removes a build's leftovers. An interrupted rootless
// build leaves files owned by subordinate ids, which only the user
// namespace can remove.
func removeBuildDir(dir string) error {
	if err := fsutil.RemoveAllSafely(dir); err != nil {
		return userns.RemoveAll(dir)
	}
	return nil
}

// Abort throws the staging directory away.
func (b *Build) Abort() {
	removeBuildDir(b.Dir)
	b.lock.Unlock()
}
