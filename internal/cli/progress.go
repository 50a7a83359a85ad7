package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

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
		p.bar = progressbar.NewOptions(1,
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
	p.bar.ChangeMax(total)
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

// byteProgress shows byte-counted work (push, pull, export, import): a
// bar with bytes, rate and ETA on a terminal, a line at each quarter
// otherwise.
type byteProgress struct {
	w     io.Writer
	tty   bool
	mu    sync.Mutex
	bar   *progressbar.ProgressBar
	what  string
	total int64
	done  int64
	shown int // quarters printed (plain mode)
	start time.Time
}

func newByteProgress(w io.Writer) *byteProgress {
	f, ok := w.(*os.File)
	return &byteProgress{w: w, tty: ok && term.IsTerminal(int(f.Fd()))}
}

func (p *byteProgress) Phase(what string, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.what, p.total, p.done, p.shown, p.start = what, total, 0, 0, time.Now()
	if p.tty {
		p.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(p.w),
			progressbar.OptionSetDescription(what),
			progressbar.OptionShowBytes(true),
			progressbar.OptionSetWidth(25),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
		return
	}
	if total < 0 { // a stream of unknown length
		fmt.Fprintf(p.w, "%s\n", what)
		return
	}
	fmt.Fprintf(p.w, "%s: %s\n", what, humanBytes(total))
}

func (p *byteProgress) Add(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	if p.bar != nil {
		p.bar.Add64(n)
		return
	}
	if p.total > 0 {
		for q := int(p.done * 4 / p.total); p.shown < q && p.shown < 3; {
			p.shown++
			fmt.Fprintf(p.w, "%s: %d%% (%s of %s)\n", p.what, p.shown*25, humanBytes(p.done), humanBytes(p.total))
		}
	}
}

func (p *byteProgress) Done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		p.bar.Finish()
		p.bar = nil
	}
	secs := time.Since(p.start).Seconds()
	rate := ""
	if secs > 0.01 {
		rate = fmt.Sprintf(", %s/s", humanBytes(int64(float64(p.done)/secs)))
	}
	fmt.Fprintf(p.w, "%s: done, %s in %.1fs%s\n", p.what, humanBytes(p.done), secs, rate)
}
