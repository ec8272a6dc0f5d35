package agentproto

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func TestFrameRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	fw := NewFrameWriter(&buf)
	big := bytes.Repeat([]byte{'x'}, MaxFramePayload+10)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(fw.Stdin([]byte("hi")))
	must(fw.Resize(50, 132))
	must(fw.Signal(15))
	must(fw.WriteFrame(FrameStdout, big))
	must(fw.CloseStdin())
	must(fw.Exit(ExitStatus{Code: 143, Signal: 15, Message: "m"}))

	fr := NewFrameReader(&buf)
	next := func(want FrameType) []byte {
		t.Helper()
		f, err := fr.Next()
		if err != nil || f.Type != want {
			t.Fatalf("got %v %v, want %v", f.Type, err, want)
		}
		return append([]byte(nil), f.Payload...)
	}
	if p := next(FrameStdin); string(p) != "hi" {
		t.Errorf("stdin %q", p)
	}
	if r, c, err := ParseResize(next(FrameResize)); r != 50 || c != 132 || err != nil {
		t.Errorf("resize %d %d %v", r, c, err)
	}
	if s, err := ParseSignal(next(FrameSignal)); s != 15 || err != nil {
		t.Errorf("signal %d %v", s, err)
	}
	got := len(next(FrameStdout)) + len(next(FrameStdout))
	if got != len(big) {
		t.Errorf("split stdout carried %d bytes", got)
	}
	next(FrameStdinClose)
	if st, err := ParseExit(next(FrameExit)); err != nil || st != (ExitStatus{143, 15, "m"}) {
		t.Errorf("exit %+v %v", st, err)
	}
	if _, err := fr.Next(); err != io.EOF {
		t.Errorf("end: %v", err)
	}
	// A truncated frame is an error, not a clean EOF.
	if _, err := NewFrameReader(bytes.NewReader([]byte{3, 0, 0, 0, 9, 'a'})).Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated: %v", err)
	}
	if _, err := NewFrameReader(bytes.NewReader([]byte{3, 0xff, 0, 0, 0})).Next(); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("oversized: %v", err)
	}
}

func TestExecStreamWait(t *testing.T) {
	var buf bytes.Buffer
	fw := NewFrameWriter(&buf)
	fw.WriteFrame(FrameStdout, []byte("out"))
	fw.WriteFrame(FrameStderr, []byte("err"))
	fw.WriteFrame(FrameType(200), []byte("future"))
	fw.Exit(ExitStatus{Code: 7})
	var out, errb bytes.Buffer
	st, err := NewExecStream(struct {
		io.Reader
		io.Writer
	}{&buf, io.Discard}).Wait(&out, &errb)
	if err != nil || st.Code != 7 || out.String() != "out" || errb.String() != "err" {
		t.Fatalf("%+v %v %q %q", st, err, out.String(), errb.String())
	}
	_, err = NewExecStream(struct {
		io.Reader
		io.Writer
	}{strings.NewReader(""), io.Discard}).Wait(nil, nil)
	if !errors.Is(err, ErrNoExitStatus) {
		t.Errorf("no exit: %v", err)
	}
}

func TestDatagram(t *testing.T) {
	var buf bytes.Buffer
	WriteDatagram(&buf, []byte("hello world"))
	WriteDatagram(&buf, nil)
	WriteDatagram(&buf, []byte("next"))
	small := make([]byte, 5)
	if n, err := ReadDatagram(&buf, small); n != 5 || err != nil || string(small) != "hello" {
		t.Errorf("truncated read %d %v %q", n, err, small)
	}
	if n, err := ReadDatagram(&buf, small); n != 0 || err != nil {
		t.Errorf("empty datagram %d %v", n, err)
	}
	if n, err := ReadDatagram(&buf, small); n != 4 || err != nil || string(small[:n]) != "next" {
		t.Errorf("after truncation %d %v %q", n, err, small[:n])
	}
	if _, err := ReadDatagram(&buf, small); err != io.EOF {
		t.Errorf("end %v", err)
	}
	if err := WriteDatagram(io.Discard, make([]byte, MaxDatagram+1)); err == nil {
		t.Error("oversized datagram accepted")
	}
}

func TestHandshakeSkipsJunkAndDuplicateHellos(t *testing.T) {
	host, guest := net.Pipe()
	defer host.Close()
	defer guest.Close()
	type result struct {
		rest io.Reader
		err  error
	}
	res := make(chan result, 1)
	go func() {
		// Junk from an old session, with and without newlines, and a
		// stale START for a nonce nobody answered.
		junk := append(bytes.Repeat([]byte{0, 1, 0xff}, 3000), []byte("\n"+startWord+" deadbeef\n\x00\x02")...)
		r := io.MultiReader(bytes.NewReader(junk), guest)
		rest, err := ServerHandshake(struct {
			io.Reader
			io.Writer
		}{r, guest}, "v 1.0")
		res <- result{rest, err}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hello, conn, err := ClientHandshake(ctx, host)
	if err != nil {
		t.Fatal(err)
	}
	if hello.ProtocolVersion != ProtocolVersion || hello.AgentVersion != "v_1.0" {
		t.Errorf("hello %+v", hello)
	}
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	go conn.Write([]byte("payload"))
	b := make([]byte, 7)
	if _, err := io.ReadFull(r.rest, b); err != nil || string(b) != "payload" {
		t.Fatalf("after handshake: %q %v", b, err)
	}
}

func TestHandshakeTimesOut(t *testing.T) {
	host, guest := net.Pipe()
	defer host.Close()
	go io.Copy(io.Discard, guest) // a guest that never answers
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, _, err := ClientHandshake(ctx, host)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
}

func TestHandshakeVersionMismatch(t *testing.T) {
	host, guest := net.Pipe()
	defer host.Close()
	go func() {
		line, _ := readLine(guest)
		f := strings.Fields(string(line))
		guest.Write([]byte(readyWord + " 99 " + f[2] + " future\n"))
		io.Copy(io.Discard, guest)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _, err := ClientHandshake(ctx, host)
	if !errors.Is(err, ErrProtocolVersion) {
		t.Fatalf("got %v", err)
	}
}

func TestJSONLineDoesNotOverRead(t *testing.T) {
	r := strings.NewReader(`{"op":"exec","exec":{"argv":["ls"]}}` + "\nREST")
	var req Request
	if err := ReadJSONLine(r, &req); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(r)
	if req.Op != OpExec || req.Exec.Argv[0] != "ls" || string(rest) != "REST" {
		t.Fatalf("%+v rest %q", req, rest)
	}
	if err := ReadJSONLine(strings.NewReader(`{"op"`), &req); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated: %v", err)
	}
}
