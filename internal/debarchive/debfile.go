package debarchive

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"

	"pault.ag/go/debian/deb"
)

// DebControl reads the control stanza of the .deb at file.
func DebControl(file string) (*deb.Control, error) {
	d, closer, err := deb.LoadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", file, err)
	}
	defer closer()
	return &d.Control, nil
}

// WalkDeb calls fn for each entry of the data archive of the .deb at file
// (data.tar, uncompressed or .xz, .gz, .zst, .bz2, .lzma), in archive
// order. name is the entry's cleaned path without a leading "./" or "/"
// ("boot/vmlinuz-6.1.0-50-cloud-amd64"); the archive's root entry is left
// out. For a regular file, r reads its content. If fn returns fs.SkipAll,
// WalkDeb stops and returns nil; any other error stops it and is returned.
func WalkDeb(file string, fn func(name string, hdr *tar.Header, r io.Reader) error) error {
	d, closer, err := deb.LoadFile(file)
	if err != nil {
		return fmt.Errorf("reading %s: %w", file, err)
	}
	defer closer()
	for {
		hdr, err := d.Data.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading data.tar%s of %s: %w", d.DataExt, file, err)
		}
		name := debEntryName(hdr.Name)
		if name == "" {
			continue
		}
		if err := fn(name, hdr, d.Data); err != nil {
			if errors.Is(err, fs.SkipAll) {
				return nil
			}
			return err
		}
	}
}

// debEntryName cleans a data.tar entry name: "./usr/bin/" -> "usr/bin";
// "" for the root.
func debEntryName(name string) string {
	clean := path.Clean("/" + name)
	if clean == "/" {
		return ""
	}
	return clean[1:]
}

// ExtractDeb extracts the data entries of the .deb at file for which
// match(name) is true (name as WalkDeb gives it) into the existing
// directory dir, and returns the names extracted. Directories, regular
// files (owner read/write added to their mode), symbolic and hard links are
// extracted; device nodes and the like are skipped. Everything is written
// through an os.Root, so no entry, even through a symlink, lands outside
// dir.
//
// For example, the kernel of a linux-image package:
//
//	ExtractDeb(path, dir, func(name string) bool {
//		return strings.HasPrefix(name, "boot/vmlinuz-") || strings.HasPrefix(name, "lib/modules/")
//	})
func ExtractDeb(file, dir string, match func(name string) bool) ([]string, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	var names []string
	err = WalkDeb(file, func(name string, hdr *tar.Header, r io.Reader) error {
		if !match(name) {
			return nil
		}
		done, err := extractEntry(root, name, hdr, r)
		if err != nil {
			return fmt.Errorf("extracting %s from %s: %w", name, file, err)
		}
		if done {
			names = append(names, name)
		}
		return nil
	})
	return names, err
}

// extractEntry writes one entry below root; false if it is of a kind that
// is skipped.
func extractEntry(root *os.Root, name string, hdr *tar.Header, r io.Reader) (bool, error) {
	mode := hdr.FileInfo().Mode().Perm()
	if hdr.Typeflag == tar.TypeDir {
		return true, root.MkdirAll(name, mode|0o700)
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeSymlink, tar.TypeLink:
	default:
		return false, nil
	}
	if dir := path.Dir(name); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return false, err
		}
	}
	if err := root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	switch hdr.Typeflag {
	case tar.TypeSymlink:
		return true, root.Symlink(hdr.Linkname, name)
	case tar.TypeLink:
		return true, root.Link(debEntryName(hdr.Linkname), name)
	}
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode|0o600)
	if err != nil {
		return false, err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return false, err
	}
	return true, f.Close()
}
