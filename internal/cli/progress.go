package cli

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// buildProgress shows an image build: a bar over the build stages on a
// terminal, one line per stage otherwise (logs, CI).
type buildProgress struct {
	w     io.Writer
	bar   *progressbar.ProgressBar
	stage string
}

func newBuildProgress(w io.Writer) *buildProgress {
	p := &buildProgress{w: w}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.bar = progressbar.NewOptions(6,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetWidth(20),
			progressbar.OptionShowCount(),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionClearOnFinish(),
		)
	}
	return p
}

func (p *buildProgress) Stage(n, total int, what string) {
	p.stage = fmt.Sprintf("[%d/%d] %s", n, total, what)
	if p.bar == nil {
		fmt.Fprintf(p.w, "building image: %s\n", p.stage)
		return
	}
	p.bar.Describe(p.stage)
	p.bar.Set(n - 1)
}

func (p *buildProgress) Detail(line string) {
	if p.bar == nil {
		return
	}
	line = strings.TrimSpace(line)
	if len(line) > 50 {
		line = line[:50]
	}
	p.bar.Describe(p.stage + ": " + line)
}

func (p *buildProgress) Done() {
	if p.bar != nil {
		p.bar.Finish()
		fmt.Fprintln(p.w)
	}
}
