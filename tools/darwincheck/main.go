// Command darwincheck type-checks heyvm for darwin/arm64 with cgo on,
// from Linux, where no macOS SDK exists and `go vet` cannot build the
// cgo-only apple_virt backend. It parses each package as go/build sees it
// for darwin/arm64 with cgo (so the cgo files are included), type-checks
// it with go/types using FakeImportC, imports the standard library from
// source for darwin with cgo off, and reports errors in heyvm's own
// packages (errors inside dependencies are ignored: their C parts cannot
// be checked without the SDK).
//
//	go run ./tools/darwincheck ./cmd/heyvm
package main

import (
	"fmt"
	"go/ast"
	"go/build"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"os"
	"path/filepath"
	"strings"
)

const ownPrefix = "github.com/heyvm/heyvm"

type checker struct {
	fset    *token.FileSet
	cgoCtx  build.Context
	std     types.ImporterFrom
	pkgs    map[string]*types.Package
	errs    []error
	checked []string
}

func newChecker() *checker {
	cgoCtx := build.Default
	cgoCtx.GOOS, cgoCtx.GOARCH, cgoCtx.CgoEnabled = "darwin", "arm64", true
	// The standard library is type-checked from source for darwin with cgo
	// off: its pure-Go fallbacks stand in for the C parts.
	build.Default.GOOS, build.Default.GOARCH, build.Default.CgoEnabled = "darwin", "arm64", false
	fset := token.NewFileSet()
	return &checker{
		fset:   fset,
		cgoCtx: cgoCtx,
		std:    importer.ForCompiler(fset, "source", nil).(types.ImporterFrom),
		pkgs:   map[string]*types.Package{},
	}
}

func (c *checker) Import(path string) (*types.Package, error) { return c.ImportFrom(path, ".", 0) }

func (c *checker) ImportFrom(path, dir string, _ types.ImportMode) (*types.Package, error) {
	if p, ok := c.pkgs[path]; ok {
		return p, nil
	}
	bp, err := c.cgoCtx.Import(path, dir, 0)
	if err != nil {
		return nil, err
	}
	if bp.Goroot {
		p, err := c.std.ImportFrom(path, dir, 0)
		if err == nil {
			c.pkgs[path] = p
		}
		return p, err
	}
	return c.checkPackage(bp)
}

func (c *checker) checkPackage(bp *build.Package) (*types.Package, error) {
	var files []*ast.File
	for _, name := range append(append([]string{}, bp.GoFiles...), bp.CgoFiles...) {
		f, err := parser.ParseFile(c.fset, filepath.Join(bp.Dir, name), nil, parser.AllErrors)
		if err != nil {
			c.record(bp.ImportPath, err)
			continue
		}
		files = append(files, f)
	}
	conf := types.Config{
		FakeImportC: true,
		Importer:    c,
		Error:       func(err error) { c.record(bp.ImportPath, err) },
	}
	pkg, _ := conf.Check(bp.ImportPath, c.fset, files, nil)
	c.pkgs[bp.ImportPath] = pkg
	if own(bp.ImportPath) {
		c.checked = append(c.checked, bp.ImportPath)
	}
	return pkg, nil
}

func own(path string) bool { return path == ownPrefix || strings.HasPrefix(path, ownPrefix+"/") }

func (c *checker) record(pkg string, err error) {
	if own(pkg) || strings.HasPrefix(pkg, "testdata") || pkg == "." || strings.HasPrefix(pkg, "_") {
		c.errs = append(c.errs, err)
	}
}

// Check type-checks the package in dir and everything it imports.
func Check(dir string) (checked []string, errs []error) {
	c := newChecker()
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, []error{err}
	}
	bp, err := c.cgoCtx.ImportDir(abs, 0)
	if err != nil {
		return nil, []error{err}
	}
	if bp.ImportPath == "." || bp.ImportPath == "" {
		bp.ImportPath = "_" + abs
	}
	c.checkPackage(bp)
	return c.checked, c.errs
}

func main() {
	dirs := os.Args[1:]
	if len(dirs) == 0 {
		dirs = []string{"./cmd/heyvm"}
	}
	failed := false
	for _, d := range dirs {
		checked, errs := Check(d)
		for _, e := range errs {
			fmt.Fprintln(os.Stderr, e)
			failed = true
		}
		fmt.Printf("darwincheck %s: %d heyvm packages type-checked for darwin/arm64 with cgo, %d errors\n", d, len(checked), len(errs))
	}
	if failed {
		os.Exit(1)
	}
}
