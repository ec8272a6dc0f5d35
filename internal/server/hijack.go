package server

import (
	"bufio"
	"io"
	"net"
	"net/http"

	"github.com/bangerdev/banger/internal/errkind"
)

// upgrade switches the connection of r to a raw byte stream (HTTP 101) and
// returns it with any bytes the client already sent.
func upgrade(w http.ResponseWriter, r *http.Request, proto string) (net.Conn, *bufio.Reader, error) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return nil, nil, errkind.New(errkind.InvalidArgument, "connection cannot be upgraded")
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	_, err = io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: "+proto+"\r\nConnection: Upgrade\r\n\r\n")
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, brw.Reader, nil
}

// wantsUpgrade reports whether r asks for the given upgrade protocol.
func wantsUpgrade(r *http.Request, proto string) error {
	if r.Header.Get("Upgrade") != proto {
		return errkind.New(errkind.InvalidArgument, "this route needs `Upgrade: %s`", proto)
	}
	return nil
}

// splice copies both ways between the client and the guest stream until
// the guest side ends, then closes both.
func splice(client net.Conn, clientR io.Reader, guest io.ReadWriteCloser) {
	go func() {
		_, _ = io.Copy(guest, clientR)
		// The client went away (or half-closed): the guest stream stays
		// open until the process exits or the client conn closes.
	}()
	_, _ = io.Copy(client, guest)
	client.Close()
	guest.Close()
}
