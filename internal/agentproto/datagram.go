package agentproto

import (
	"encoding/binary"
	"fmt"
	"io"
)

// MaxDatagram is the largest datagram a UDP dial stream carries.
const MaxDatagram = 65535

// WriteDatagram writes p with a uint16 big-endian length prefix, in a single
// Write call.
func WriteDatagram(w io.Writer, p []byte) error {
	if len(p) > MaxDatagram {
		return fmt.Errorf("datagram of %d bytes exceeds %d", len(p), MaxDatagram)
	}
	b := make([]byte, 2+len(p))
	binary.BigEndian.PutUint16(b, uint16(len(p)))
	copy(b[2:], p)
	_, err := w.Write(b)
	return err
}

// ReadDatagram reads one length-prefixed datagram into buf and returns its
// length. A datagram longer than buf is truncated (the rest is discarded),
// as a UDP socket would do. It returns io.EOF at a clean boundary.
func ReadDatagram(r io.Reader, buf []byte) (int, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, err
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	m := min(n, len(buf))
	if _, err := io.ReadFull(r, buf[:m]); err != nil {
		return 0, unexpected(err)
	}
	if n > m {
		if _, err := io.CopyN(io.Discard, r, int64(n-m)); err != nil {
			return 0, unexpected(err)
		}
	}
	return m, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
