// Command gendocs writes heyvm's man pages and shell completions from the
// cobra command tree, so they never drift from the commands:
//
//	go run ./tools/gendocs -out DIR [-version V] [-date YYYY-MM-DD] [-gzip]
//
// DIR/man/heyvm.1, heyvm-create.1, … (one page per command; .1.gz with
// -gzip, as Debian ships them) and DIR/completions/heyvm.bash, _heyvm
// (zsh), heyvm.fish. GoReleaser runs it before packaging; the Homebrew
// formula runs it after building. The output depends only on the
// commands, -version and -date (default: $SOURCE_DATE_EPOCH, else today).
package main

import (
	"bytes"
	"compress/gzip"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/heyvm/heyvm/internal/cli"
)

func main() {
	out := flag.String("out", "", "directory to write man/ and completions/ into")
	ver := flag.String("version", "", "version for the man pages' footer")
	date := flag.String("date", "", "date for the man pages (YYYY-MM-DD or RFC 3339; default $SOURCE_DATE_EPOCH, else today)")
	gz := flag.Bool("gzip", false, "gzip the man pages (name.1.gz)")
	flag.Parse()
	if *out == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: gendocs -out DIR [-version V] [-date YYYY-MM-DD] [-gzip]")
		os.Exit(2)
	}
	if err := run(*out, *ver, *date, *gz); err != nil {
		fmt.Fprintln(os.Stderr, "gendocs:", err)
		os.Exit(1)
	}
}

func run(out, ver, date string, gz bool) error {
	when, err := docDate(date)
	if err != nil {
		return err
	}
	root := cli.NewRoot(cli.IO{In: os.Stdin, Out: io.Discard, ErrOut: io.Discard})
	// What Execute would add: `heyvm completion …` gets a page too.
	root.InitDefaultCompletionCmd()
	disableAutoGenTag(root)

	manDir := filepath.Join(out, "man")
	compDir := filepath.Join(out, "completions")
	for _, d := range []string{manDir, compDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	source := "heyvm"
	if ver != "" {
		source += " " + strings.TrimPrefix(ver, "v")
	}
	header := &doc.GenManHeader{Section: "1", Date: &when, Source: source, Manual: "heyvm manual"}
	if err := manTree(root, header, manDir, gz); err != nil {
		return err
	}
	for name, gen := range map[string]func(io.Writer) error{
		"heyvm.bash": func(w io.Writer) error { return root.GenBashCompletionV2(w, true) },
		"_heyvm":     root.GenZshCompletion,
		"heyvm.fish": func(w io.Writer) error { return root.GenFishCompletion(w, true) },
	} {
		var b bytes.Buffer
		if err := gen(&b); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(compDir, name), b.Bytes(), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// manTree is doc.GenManTree with optional gzip: one page per available
// command, named by its path (heyvm-images-build.1).
func manTree(c *cobra.Command, header *doc.GenManHeader, dir string, gz bool) error {
	for _, sub := range c.Commands() {
		if !sub.IsAvailableCommand() || sub.IsAdditionalHelpTopicCommand() {
			continue
		}
		if err := manTree(sub, header, dir, gz); err != nil {
			return err
		}
	}
	var page bytes.Buffer
	h := *header
	if err := doc.GenMan(c, &h, &page); err != nil {
		return err
	}
	name := filepath.Join(dir, strings.ReplaceAll(c.CommandPath(), " ", "-")+".1")
	if !gz {
		return os.WriteFile(name, page.Bytes(), 0o644)
	}
	var z bytes.Buffer
	w, _ := gzip.NewWriterLevel(&z, gzip.BestCompression) // no name, no time: reproducible
	w.Write(page.Bytes())
	if err := w.Close(); err != nil {
		return err
	}
	return os.WriteFile(name+".gz", z.Bytes(), 0o644)
}

// disableAutoGenTag drops cobra's "generated on <date>" lines.
func disableAutoGenTag(c *cobra.Command) {
	c.DisableAutoGenTag = true
	for _, sub := range c.Commands() {
		disableAutoGenTag(sub)
	}
}

func docDate(s string) (time.Time, error) {
	if s == "" {
		if e := os.Getenv("SOURCE_DATE_EPOCH"); e != "" {
			n, err := strconv.ParseInt(e, 10, 64)
			if err != nil {
				return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: %v", e, err)
			}
			return time.Unix(n, 0).UTC(), nil
		}
		return time.Now().UTC(), nil
	}
	for _, layout := range []string{time.RFC3339, "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("-date %q: want YYYY-MM-DD or RFC 3339", s)
}
