package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"
)

// QMP is a connection to a QEMU monitor in control mode. QEMU serves one
// QMP client per socket at a time, so callers connect per operation and
// close promptly.
type QMP struct {
	conn net.Conn
	r    *bufio.Reader
	// Version is the QEMU version from the greeting ("7.2.22").
	Version string
}

// QMPError is an error returned by a QMP command.
type QMPError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *QMPError) Error() string { return "qmp: " + e.Class + ": " + e.Desc }

type qmpMessage struct {
	QMP *struct {
		Version struct {
			Qemu struct {
				Major, Minor, Micro int
			} `json:"qemu"`
		} `json:"version"`
	} `json:"QMP,omitempty"`
	Return json.RawMessage `json:"return,omitempty"`
	Error  *QMPError       `json:"error,omitempty"`
	Event  string          `json:"event,omitempty"`
}

// DialQMP connects to the QMP socket at path and negotiates capabilities.
func DialQMP(ctx context.Context, path string) (*QMP, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connecting to qmp: %w", err)
	}
	q := &QMP{conn: conn, r: bufio.NewReader(conn)}
	stop := q.bind(ctx)
	defer stop()
	var greet qmpMessage
	if err := q.read(&greet); err != nil {
		conn.Close()
		return nil, fmt.Errorf("reading qmp greeting: %w", err)
	}
	if greet.QMP == nil {
		conn.Close()
		return nil, errors.New("reading qmp greeting: not a qmp server")
	}
	v := greet.QMP.Version.Qemu
	q.Version = fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro)
	if err := q.exec("qmp_capabilities", nil, nil); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

// bind applies ctx's deadline and cancellation to the connection.
func (q *QMP) bind(ctx context.Context) (stop func()) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(30 * time.Second)
	}
	_ = q.conn.SetDeadline(deadline)
	unbind := context.AfterFunc(ctx, func() { _ = q.conn.SetDeadline(time.Unix(1, 0)) })
	return func() { unbind() }
}

// Close closes the connection.
func (q *QMP) Close() error { return q.conn.Close() }

// Execute runs a command with optional arguments and decodes its return
// value into out (when not nil). Asynchronous events are skipped.
func (q *QMP) Execute(ctx context.Context, command string, args, out any) error {
	stop := q.bind(ctx)
	defer stop()
	return q.exec(command, args, out)
}

func (q *QMP) exec(command string, args, out any) error {
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	for {
		var m qmpMessage
		if err := q.read(&m); err != nil {
			return fmt.Errorf("qmp %s: %w", command, err)
		}
		switch {
		case m.Event != "":
			continue
		case m.Error != nil:
			return fmt.Errorf("qmp %s: %w", command, m.Error)
		case m.Return != nil:
			if out != nil {
				if err := json.Unmarshal(m.Return, out); err != nil {
					return fmt.Errorf("qmp %s: decoding result: %w", command, err)
				}
			}
			return nil
		}
	}
}

func (q *QMP) read(m *qmpMessage) error {
	line, err := q.r.ReadBytes('\n')
	if err != nil {
		return err
	}
	return json.Unmarshal(line, m)
}

// Status is the result of query-status.
type Status struct {
	Status  string `json:"status"`
	Running bool   `json:"running"`
}

// QueryStatus returns the VM run state.
func (q *QMP) QueryStatus(ctx context.Context) (Status, error) {
	var s Status
	err := q.Execute(ctx, "query-status", nil, &s)
	return s, err
}

// qmpDo connects, runs one command and disconnects.
func qmpDo(ctx context.Context, path, command string, out any) error {
	q, err := DialQMP(ctx, path)
	if err != nil {
		return err
	}
	defer q.Close()
	return q.Execute(ctx, command, nil, out)
}
