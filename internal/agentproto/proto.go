// Package agentproto is the wire protocol between the host (bangerd, banger)
// and banger-agent inside a guest.
//
// One byte stream (virtio-serial port or vsock connection) carries a short
// line-based handshake, then a yamux session. The host is the yamux client
// and opens one stream per operation. Every stream starts with a JSON request
// line (Request) written by the host; what follows depends on the operation
// (see docs/agent-protocol.md). The package depends only on the standard
// library so that the CLI can speak the exec frame format without pulling in
// the client.
package agentproto

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// ProtocolVersion is bumped on incompatible changes to anything in this package.
const ProtocolVersion = 1

// MaxHeaderSize bounds a JSON request or response line.
const MaxHeaderSize = 1 << 20

// Operation names (Request.Op).
const (
	OpHealth   = "health"
	OpExec     = "exec"
	OpPut      = "put"
	OpGet      = "get"
	OpPorts    = "ports"
	OpDial     = "dial"
	OpShutdown = "shutdown"
)

// Request is the first line of every stream.
type Request struct {
	Op       string           `json:"op"`
	Exec     *ExecRequest     `json:"exec,omitempty"`
	Put      *PutRequest      `json:"put,omitempty"`
	Get      *GetRequest      `json:"get,omitempty"`
	Dial     *DialRequest     `json:"dial,omitempty"`
	Shutdown *ShutdownRequest `json:"shutdown,omitempty"`
}

// Error kinds carried in Response.Kind. The host maps them onto errkind.
const (
	KindNotFound        = "not_found"
	KindInvalidArgument = "invalid_argument"
	KindAlreadyExists   = "already_exists"
	KindConflict        = "conflict"
	KindUnavailable     = "unavailable"
	KindInternal        = "internal"
)

// Response is the agent's reply line. Error is empty on success.
type Response struct {
	Error  string       `json:"error,omitempty"`
	Kind   string       `json:"kind,omitempty"`
	Health *Health      `json:"health,omitempty"`
	Exec   *ExecStarted `json:"exec,omitempty"`
	Put    *PutResult   `json:"put,omitempty"`
	Ports  []Port       `json:"ports,omitempty"`
}

// Err returns the response's error, or nil.
func (r *Response) Err() error {
	if r.Error == "" {
		return nil
	}
	return &RemoteError{Kind: r.Kind, Msg: r.Error}
}

// RemoteError is an error reported by the agent.
type RemoteError struct {
	Kind string // one of the Kind* constants
	Msg  string
}

func (e *RemoteError) Error() string { return "agent: " + e.Msg }

// Health describes the running guest.
type Health struct {
	BootID          string  `json:"boot_id"`
	UptimeSeconds   float64 `json:"uptime_seconds"`
	KernelRelease   string  `json:"kernel_release"`
	Hostname        string  `json:"hostname"`
	InitMode        string  `json:"init_mode"` // "agent" (agent is PID 1), "systemd", or "standalone"
	AgentVersion    string  `json:"agent_version"`
	ProtocolVersion int     `json:"protocol_version"`
}

// ExecRequest starts a process in the guest.
type ExecRequest struct {
	// Argv is the command. Empty means the user's login shell.
	Argv []string `json:"argv,omitempty"`
	// Env entries (KEY=VALUE) override the agent's default environment
	// (PATH, HOME, USER, LOGNAME, SHELL, TERM when TTY).
	Env []string `json:"env,omitempty"`
	// Cwd defaults to the user's home directory (or / when it is missing).
	Cwd string `json:"cwd,omitempty"`
	// User is a name or uid, optionally followed by :group or :gid. Empty means root.
	User string `json:"user,omitempty"`
	// TTY runs the process on a new pseudo-terminal of Rows×Cols; stderr is
	// then merged into stdout.
	TTY  bool   `json:"tty,omitempty"`
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
}

// ExecStarted is the response to a successful exec.
type ExecStarted struct {
	PID int `json:"pid"`
}

// PutRequest extracts a tar stream into Dir (created if missing).
type PutRequest struct {
	Dir string `json:"dir"`
	// PreserveOwners keeps the uid/gid recorded in the archive; otherwise
	// everything is owned by UID:GID (default root).
	PreserveOwners bool `json:"preserve_owners,omitempty"`
	UID            int  `json:"uid,omitempty"`
	GID            int  `json:"gid,omitempty"`
}

// PutOptions are the caller-chosen fields of PutRequest.
type PutOptions struct {
	PreserveOwners bool
	UID, GID       int
}

// PutResult reports what was extracted.
type PutResult struct {
	Entries int   `json:"entries"`
	Bytes   int64 `json:"bytes"`
}

// GetRequest asks for a tar stream of Path. Entries are named relative to
// Path's parent directory (a file "/etc/hosts" becomes "hosts", a
// directory "/root/repo" becomes "repo", "repo/…").
type GetRequest struct {
	Path string `json:"path"`
}

// DialRequest connects to a guest port. Host defaults to 127.0.0.1 (TCP
// falls back to ::1 when refused).
type DialRequest struct {
	Network string `json:"network"` // "tcp" or "udp"
	Port    int    `json:"port"`
	Host    string `json:"host,omitempty"`
}

// ShutdownMode says how the guest stops.
type ShutdownMode string

// Shutdown modes. Poweroff stops the VM the way the kernel command line's
// banger.exit says (ACPI poweroff on QEMU, reboot syscall on Firecracker);
// Reboot restarts the guest kernel.
const (
	ShutdownPoweroff ShutdownMode = "poweroff"
	ShutdownReboot   ShutdownMode = "reboot"
)

// ShutdownRequest asks the guest to sync and stop.
type ShutdownRequest struct {
	Mode ShutdownMode `json:"mode"`
}

// Port is one listening socket in the guest.
type Port struct {
	Proto   string `json:"proto"` // "tcp" or "udp"
	Address string `json:"address"`
	Port    int    `json:"port"`
	Inode   uint64 `json:"inode,omitempty"`
	PID     int    `json:"pid,omitempty"`
	Process string `json:"process,omitempty"`
}

// WriteJSONLine writes v as one JSON line.
func WriteJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding header: %w", err)
	}
	b = append(b, '\n')
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("writing header: %w", err)
	}
	return nil
}

// ErrHeaderTooLong is returned when a header line exceeds MaxHeaderSize.
var ErrHeaderTooLong = errors.New("header line too long")

// ReadJSONLine reads one JSON line into v. It reads byte by byte so that
// nothing after the newline is consumed: the rest of r belongs to the
// operation's payload.
func ReadJSONLine(r io.Reader, v any) error {
	line, err := readLine(r)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(line, v); err != nil {
		return fmt.Errorf("decoding header: %w", err)
	}
	return nil
}

func readLine(r io.Reader) ([]byte, error) {
	if br, ok := r.(*bufio.Reader); ok {
		var line []byte
		for {
			frag, err := br.ReadSlice('\n')
			line = append(line, frag...)
			if len(line) > MaxHeaderSize {
				return nil, ErrHeaderTooLong
			}
			if err == nil {
				return line[:len(line)-1], nil
			}
			if err != bufio.ErrBufferFull {
				return nil, headerErr(err, len(line))
			}
		}
	}
	var line []byte
	var b [1]byte
	for {
		n, err := r.Read(b[:])
		if n == 1 {
			if b[0] == '\n' {
				return line, nil
			}
			line = append(line, b[0])
			if len(line) > MaxHeaderSize {
				return nil, ErrHeaderTooLong
			}
			continue
		}
		if err != nil {
			return nil, headerErr(err, len(line))
		}
	}
}

func headerErr(err error, n int) error {
	if err == io.EOF && n > 0 {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("reading header: %w", err)
}
