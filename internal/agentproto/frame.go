package agentproto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// FrameType identifies a frame on an exec or get stream.
type FrameType byte

// Frame types. Host→guest: Stdin, StdinClose, Resize, Signal.
// Guest→host: Stdout, Stderr, Exit (exec); Data, End (get).
const (
	FrameStdin      FrameType = 1 // payload: bytes for the process's stdin
	FrameStdinClose FrameType = 2 // no payload: close stdin (sends ^D on a TTY)
	FrameStdout     FrameType = 3 // payload: output bytes
	FrameStderr     FrameType = 4 // payload: output bytes
	FrameResize     FrameType = 5 // payload: uint16 rows, uint16 cols
	FrameSignal     FrameType = 6 // payload: uint32 Linux signal number
	FrameExit       FrameType = 7 // payload: int32 code, int32 signal, optional message
	FrameData       FrameType = 8 // payload: bytes (get)
	FrameEnd        FrameType = 9 // payload: empty on success, else an error message (get)
)

func (t FrameType) String() string {
	switch t {
	case FrameStdin:
		return "stdin"
	case FrameStdinClose:
		return "stdin-close"
	case FrameStdout:
		return "stdout"
	case FrameStderr:
		return "stderr"
	case FrameResize:
		return "resize"
	case FrameSignal:
		return "signal"
	case FrameExit:
		return "exit"
	case FrameData:
		return "data"
	case FrameEnd:
		return "end"
	}
	return fmt.Sprintf("frame(%d)", byte(t))
}

// FrameHeaderSize is the size of {type byte, len uint32 big-endian}.
const FrameHeaderSize = 5

// MaxFramePayload bounds one frame's payload. Writers split larger data.
const MaxFramePayload = 1 << 20

// ErrFrameTooLarge is returned for a frame whose length exceeds MaxFramePayload.
var ErrFrameTooLarge = errors.New("frame payload too large")

// Frame is one decoded frame. Payload is only valid until the next call to
// FrameReader.Next.
type Frame struct {
	Type    FrameType
	Payload []byte
}

// FrameWriter encodes frames. It is safe for concurrent use; each frame is
// written with a single Write call.
type FrameWriter struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

// NewFrameWriter returns a FrameWriter on w.
func NewFrameWriter(w io.Writer) *FrameWriter { return &FrameWriter{w: w} }

// WriteFrame writes one frame. Payloads longer than MaxFramePayload are
// split into several frames of the same type.
func (fw *FrameWriter) WriteFrame(t FrameType, payload []byte) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	for {
		chunk := payload
		if len(chunk) > MaxFramePayload {
			chunk = chunk[:MaxFramePayload]
		}
		fw.buf = append(fw.buf[:0], byte(t), 0, 0, 0, 0)
		binary.BigEndian.PutUint32(fw.buf[1:5], uint32(len(chunk)))
		fw.buf = append(fw.buf, chunk...)
		if _, err := fw.w.Write(fw.buf); err != nil {
			return fmt.Errorf("writing %s frame: %w", t, err)
		}
		payload = payload[len(chunk):]
		if len(payload) == 0 {
			return nil
		}
	}
}

// Stdin sends a stdin frame.
func (fw *FrameWriter) Stdin(p []byte) error { return fw.WriteFrame(FrameStdin, p) }

// CloseStdin sends a stdin-close frame.
func (fw *FrameWriter) CloseStdin() error { return fw.WriteFrame(FrameStdinClose, nil) }

// Resize sends a terminal size.
func (fw *FrameWriter) Resize(rows, cols uint16) error {
	var p [4]byte
	binary.BigEndian.PutUint16(p[0:2], rows)
	binary.BigEndian.PutUint16(p[2:4], cols)
	return fw.WriteFrame(FrameResize, p[:])
}

// Signal sends a signal number (Linux numbering).
func (fw *FrameWriter) Signal(sig int) error {
	var p [4]byte
	binary.BigEndian.PutUint32(p[:], uint32(sig))
	return fw.WriteFrame(FrameSignal, p[:])
}

// Exit sends the exit status.
func (fw *FrameWriter) Exit(st ExitStatus) error {
	return fw.WriteFrame(FrameExit, st.encode())
}

// FrameReader decodes frames.
type FrameReader struct {
	r   io.Reader
	hdr [FrameHeaderSize]byte
	buf []byte
}

// NewFrameReader returns a FrameReader on r.
func NewFrameReader(r io.Reader) *FrameReader { return &FrameReader{r: r} }

// Next reads the next frame. It returns io.EOF only at a clean frame boundary.
func (fr *FrameReader) Next() (Frame, error) {
	if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		return Frame{}, err
	}
	n := binary.BigEndian.Uint32(fr.hdr[1:5])
	if n > MaxFramePayload {
		return Frame{}, ErrFrameTooLarge
	}
	if cap(fr.buf) < int(n) {
		fr.buf = make([]byte, n)
	}
	fr.buf = fr.buf[:n]
	if _, err := io.ReadFull(fr.r, fr.buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	return Frame{Type: FrameType(fr.hdr[0]), Payload: fr.buf}, nil
}

// ParseResize decodes a resize payload.
func ParseResize(p []byte) (rows, cols uint16, err error) {
	if len(p) != 4 {
		return 0, 0, fmt.Errorf("resize payload of %d bytes", len(p))
	}
	return binary.BigEndian.Uint16(p[0:2]), binary.BigEndian.Uint16(p[2:4]), nil
}

// ParseSignal decodes a signal payload.
func ParseSignal(p []byte) (int, error) {
	if len(p) != 4 {
		return 0, fmt.Errorf("signal payload of %d bytes", len(p))
	}
	return int(binary.BigEndian.Uint32(p)), nil
}

// ExitStatus is the payload of an exit frame.
type ExitStatus struct {
	// Code is the exit code; for a process killed by signal N it is 128+N.
	Code int
	// Signal is the terminating signal, 0 if the process exited normally.
	Signal int
	// Message is set when the agent could not wait for the process.
	Message string
}

func (st ExitStatus) encode() []byte {
	p := make([]byte, 8, 8+len(st.Message))
	binary.BigEndian.PutUint32(p[0:4], uint32(int32(st.Code)))
	binary.BigEndian.PutUint32(p[4:8], uint32(int32(st.Signal)))
	return append(p, st.Message...)
}

// ParseExit decodes an exit payload.
func ParseExit(p []byte) (ExitStatus, error) {
	if len(p) < 8 {
		return ExitStatus{}, fmt.Errorf("exit payload of %d bytes", len(p))
	}
	return ExitStatus{
		Code:    int(int32(binary.BigEndian.Uint32(p[0:4]))),
		Signal:  int(int32(binary.BigEndian.Uint32(p[4:8]))),
		Message: string(p[8:]),
	}, nil
}
