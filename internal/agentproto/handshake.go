package agentproto

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Handshake lines. The host repeats HELLO until it sees READY with its
// nonce, then sends START; both sides then run yamux on the rest of the
// stream. Anything else on the stream before these lines (for example the
// remains of an earlier session on a virtio-serial port) is skipped.
//
//	host  → guest: BANGER-HELLO <protocol-version> <nonce>\n
//	guest → host:  BANGER-READY <protocol-version> <nonce> <agent-version>\n
//	host  → guest: BANGER-START <nonce>\n
const (
	helloWord = "BANGER-HELLO"
	readyWord = "BANGER-READY"
	startWord = "BANGER-START"
)

// HelloResend is how often the host repeats HELLO while it waits for READY.
const HelloResend = 250 * time.Millisecond

// Hello is what the guest reported during the handshake.
type Hello struct {
	ProtocolVersion int
	AgentVersion    string
}

// ErrProtocolVersion is wrapped by ClientHandshake when the guest speaks
// another protocol version.
var ErrProtocolVersion = errors.New("agent protocol version mismatch")

// bufConn is a net.Conn whose reads first drain a bufio.Reader.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// ClientHandshake runs the host side of the handshake on conn and returns a
// connection on which the yamux client can start. ctx bounds the wait for
// the guest (which may still be booting).
func ClientHandshake(ctx context.Context, conn net.Conn) (Hello, net.Conn, error) {
	// The nonce only tells this connection's READY from older ones; it
	// need not be secret.
	nonce := strconv.FormatUint(rand.Uint64(), 16)

	// Interrupt blocking reads and writes when ctx ends.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	var writeMu sync.Mutex
	done := make(chan struct{})
	sendErr := make(chan error, 1)
	go func() {
		hello := fmt.Sprintf("%s %d %s\n", helloWord, ProtocolVersion, nonce)
		t := time.NewTicker(HelloResend)
		defer t.Stop()
		for {
			writeMu.Lock()
			select {
			case <-done:
				writeMu.Unlock()
				return
			default:
			}
			_, err := io.WriteString(conn, hello)
			writeMu.Unlock()
			if err != nil {
				sendErr <- err
				return
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	stopSender := func() {
		writeMu.Lock()
		select {
		case <-done:
		default:
			close(done)
		}
		writeMu.Unlock()
	}
	defer stopSender()

	br := bufio.NewReaderSize(conn, 64<<10)
	for {
		fields, err := scanFor(br, readyWord)
		if err != nil {
			if ctx.Err() != nil {
				return Hello{}, nil, fmt.Errorf("waiting for agent hello: %w", ctx.Err())
			}
			select {
			case werr := <-sendErr:
				return Hello{}, nil, fmt.Errorf("sending agent hello: %w", werr)
			default:
			}
			return Hello{}, nil, fmt.Errorf("waiting for agent hello: %w", err)
		}
		// fields: version nonce agent-version
		if len(fields) < 3 || fields[1] != nonce {
			continue
		}
		v, err := strconv.Atoi(fields[0])
		if err != nil {
			continue
		}
		h := Hello{ProtocolVersion: v, AgentVersion: fields[2]}
		stopSender()
		if v != ProtocolVersion {
			return h, nil, fmt.Errorf("%w: agent %s speaks v%d, host v%d", ErrProtocolVersion, h.AgentVersion, v, ProtocolVersion)
		}
		if _, err := fmt.Fprintf(conn, "%s %s\n", startWord, nonce); err != nil {
			return h, nil, fmt.Errorf("sending agent start: %w", err)
		}
		stop()
		if err := conn.SetDeadline(time.Time{}); err != nil {
			return h, nil, fmt.Errorf("clearing deadline: %w", err)
		}
		if ctx.Err() != nil {
			return h, nil, ctx.Err()
		}
		return h, &bufConn{Conn: conn, r: br}, nil
	}
}

// ServerHandshake runs the guest side of the handshake on rw. It skips
// everything until a HELLO, answers it (once per nonce), and returns when
// START arrives for the answered nonce. The returned reader holds the bytes
// that follow START and must be used for all further reads.
func ServerHandshake(rw io.ReadWriter, agentVersion string) (io.Reader, error) {
	agentVersion = strings.Join(strings.Fields(agentVersion), "_")
	if agentVersion == "" {
		agentVersion = "unknown"
	}
	br := bufio.NewReaderSize(rw, 64<<10)
	answered := ""
	for {
		word, fields, err := scanLine(br)
		if err != nil {
			return nil, err
		}
		switch word {
		case helloWord:
			if len(fields) < 2 || fields[1] == answered {
				continue
			}
			answered = fields[1]
			if _, err := fmt.Fprintf(rw, "%s %d %s %s\n", readyWord, ProtocolVersion, answered, agentVersion); err != nil {
				return nil, fmt.Errorf("sending ready: %w", err)
			}
		case startWord:
			if len(fields) >= 1 && answered != "" && fields[0] == answered {
				return br, nil
			}
		}
	}
}

// scanFor reads lines until one contains word and returns the fields after it.
func scanFor(br *bufio.Reader, word string) ([]string, error) {
	for {
		w, fields, err := scanLine(br)
		if err != nil {
			return nil, err
		}
		if w == word {
			return fields, nil
		}
	}
}

const (
	maxScanLine = 4096
	keepTail    = 256
)

// scanLine reads one line (tolerating arbitrary binary junk before it) and
// returns the last handshake word found in it with the fields that follow.
func scanLine(br *bufio.Reader) (string, []string, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		line = append(line, frag...)
		if len(line) > maxScanLine {
			line = append(line[:0], line[len(line)-keepTail:]...)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return "", nil, err
		}
		break
	}
	best, at := "", -1
	for _, w := range []string{helloWord, readyWord, startWord} {
		if i := bytes.LastIndex(line, []byte(w+" ")); i > at {
			best, at = w, i
		}
	}
	if at < 0 {
		return "", nil, nil
	}
	rest := string(line[at+len(best):])
	return best, strings.Fields(rest), nil
}
