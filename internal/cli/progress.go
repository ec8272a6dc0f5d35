package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/bytesize"
)

// progress renders streamed events on stderr: a live, redrawn line with a
// bar on a terminal; nothing otherwise (scripts get clean output).
type progress struct {
	mu      sync.Mutex
	w       io.Writer
	tty     bool
	started time.Time
	last    string
	lastAt  time.Time
}

func (a *App) newProgress() *progress {
	tty := false
	if f, ok := a.Stderr.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	return &progress{w: a.Stderr, tty: tty, started: time.Now()}
}

func (p *progress) event(e api.Event) {
	if !p.tty {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	line := e.Stage
	if e.Message != "" {
		line += ": " + e.Message
	}
	if e.Total > 0 {
		frac := float64(e.Current) / float64(e.Total)
		frac = min(max(frac, 0), 1)
		const width = 24
		n := int(frac * width)
		bar := strings.Repeat("█", n) + strings.Repeat("░", width-n)
		if e.Unit == "bytes" {
			line += fmt.Sprintf(" %s %s/%s", bar, bytesize.Format(e.Current), bytesize.Format(e.Total))
		} else {
			line += fmt.Sprintf(" %s %d/%d", bar, e.Current, e.Total)
		}
	}
	if line == p.last || (e.Total > 0 && time.Since(p.lastAt) < 50*time.Millisecond && e.Current < e.Total) {
		return
	}
	p.last, p.lastAt = line, time.Now()
	fmt.Fprintf(p.w, "\r\033[K%s %s", dim(fmt.Sprintf("[%4.1fs]", time.Since(p.started).Seconds())), line)
}

// done clears the live line.
func (p *progress) done() {
	if !p.tty {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last != "" {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

func dim(s string) string {
	if os.Getenv("NO_COLOR") != "" {
		return s
	}
	return "\033[2m" + s + "\033[0m"
}
