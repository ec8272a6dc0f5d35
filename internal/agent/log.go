package agent

import (
	"fmt"
	"io"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Logger writes "banger-agent: [uptime] message" lines, to the console
// when the agent is init.
type Logger struct {
	mu sync.Mutex
	w  io.Writer
}

// NewLogger returns a Logger on w.
func NewLogger(w io.Writer) *Logger { return &Logger{w: w} }

// Logf logs one line.
func (l *Logger) Logf(format string, args ...any) {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	msg := strings.TrimRight(fmt.Sprintf(format, args...), "\n")
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "banger-agent: [%5d.%03d] %s\n", ts.Sec, ts.Nsec/1e6, msg)
}
