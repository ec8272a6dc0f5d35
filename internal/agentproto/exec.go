package agentproto

import (
	"errors"
	"fmt"
	"io"
)

// ExecStream speaks the exec frame format on an exec stream whose request
// header (and response header) have already been exchanged. The CLI uses it
// on a connection the daemon has spliced to the agent; the host client uses
// it on a yamux stream.
type ExecStream struct {
	w *FrameWriter
	r *FrameReader
}

// NewExecStream wraps rw.
func NewExecStream(rw io.ReadWriter) *ExecStream {
	return &ExecStream{w: NewFrameWriter(rw), r: NewFrameReader(rw)}
}

// Write sends p as stdin, so an ExecStream can be the destination of io.Copy.
func (s *ExecStream) Write(p []byte) (int, error) {
	if err := s.w.Stdin(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// CloseStdin closes the process's stdin (on a TTY it sends ^D).
func (s *ExecStream) CloseStdin() error { return s.w.CloseStdin() }

// Resize changes the terminal size of a TTY exec.
func (s *ExecStream) Resize(rows, cols uint16) error { return s.w.Resize(rows, cols) }

// Signal delivers a signal (Linux numbering) to the process group (or, on a
// TTY, to the terminal's foreground process group).
func (s *ExecStream) Signal(sig int) error { return s.w.Signal(sig) }

// SendStdin copies r to the process's stdin, then closes it.
func (s *ExecStream) SendStdin(r io.Reader) error {
	if r != nil {
		if _, err := io.Copy(s, r); err != nil {
			return fmt.Errorf("sending stdin: %w", err)
		}
	}
	return s.CloseStdin()
}

// ErrNoExitStatus is returned by Wait when the stream ends before an exit frame.
var ErrNoExitStatus = errors.New("exec stream ended without an exit status")

// Wait copies stdout and stderr frames to stdout and stderr (either may be
// nil to discard) until the exit frame arrives, and returns it.
func (s *ExecStream) Wait(stdout, stderr io.Writer) (ExitStatus, error) {
	for {
		f, err := s.r.Next()
		if err != nil {
			if err == io.EOF {
				return ExitStatus{}, ErrNoExitStatus
			}
			return ExitStatus{}, fmt.Errorf("reading exec stream: %w", err)
		}
		switch f.Type {
		case FrameStdout, FrameStderr:
			w := stdout
			if f.Type == FrameStderr {
				w = stderr
			}
			if w == nil {
				continue
			}
			if _, err := w.Write(f.Payload); err != nil {
				return ExitStatus{}, fmt.Errorf("writing %s: %w", f.Type, err)
			}
		case FrameExit:
			return ParseExit(f.Payload)
		default:
			// Unknown frame types are ignored so that newer agents can add some.
		}
	}
}
