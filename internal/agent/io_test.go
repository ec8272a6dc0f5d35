package agent_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/agent"
	"github.com/bangerdev/banger/internal/agentproto"
	"github.com/bangerdev/banger/internal/errkind"
)

func TestExecPTYSizeAndResize(t *testing.T) {
	c := startAgent(t, agent.Config{})
	var out bytes.Buffer
	code, err := c.Exec(testCtx(t), agentproto.ExecRequest{
		Argv: []string{"sh", "-c", "test -t 0 && test -t 1 && stty size && echo term=$TERM"},
		TTY:  true, Rows: 30, Cols: 100,
	}, nil, &out, nil)
	if err != nil || code != 0 {
		t.Fatalf("code %d err %v output %q", code, err, out.String())
	}
	if got := strings.ReplaceAll(out.String(), "\r", ""); got != "30 100\nterm=xterm-256color\n" {
		t.Fatalf("output %q", got)
	}

	// Resize while running: the shell reads a line, then prints the size.
	ec, err := c.OpenExec(testCtx(t), agentproto.ExecRequest{
		Argv: []string{"sh", "-c", "stty -echo; echo go; read x; stty size"},
		TTY:  true, Rows: 24, Cols: 80,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ec.Close()
	es := agentproto.NewExecStream(ec)
	pr, pw := io.Pipe()
	var collected bytes.Buffer
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		buf := make([]byte, 256)
		sent := false
		for {
			n, err := pr.Read(buf)
			collected.Write(buf[:n])
			if !sent && strings.Contains(collected.String(), "go") {
				sent = true
				_ = es.Resize(40, 120)
				_, _ = es.Write([]byte("\n"))
			}
			if err != nil {
				return
			}
		}
	}()
	st, err := es.Wait(pw, nil)
	pw.Close()
	<-readerDone
	if err != nil || st.Code != 0 {
		t.Fatalf("exit %+v err %v", st, err)
	}
	if !strings.Contains(collected.String(), "40 120") {
		t.Fatalf("after resize: %q", collected.String())
	}
}

func TestExecPTYBackgroundChildDoesNotHang(t *testing.T) {
	c := startAgent(t, agent.Config{})
	start := time.Now()
	var out bytes.Buffer
	// The background sleep keeps the terminal and a pipe open; the exec
	// must still finish when the shell exits.
	code, err := c.Exec(testCtx(t), agentproto.ExecRequest{Argv: []string{"sh", "-c", "sleep 30 & echo done"}}, nil, &out, nil)
	if err != nil || code != 0 || out.String() != "done\n" {
		t.Fatalf("code %d err %v out %q", code, err, out.String())
	}
	code, err = c.Exec(testCtx(t), agentproto.ExecRequest{Argv: []string{"sh", "-c", "sleep 30 & echo done"}, TTY: true}, nil, &out, nil)
	if err != nil || code != 0 {
		t.Fatalf("tty: code %d err %v", code, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestPutGetRoundTrip(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("owner checks need root")
	}
	c := startAgent(t, agent.Config{})
	ctx := testCtx(t)
	mtime := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	var in bytes.Buffer
	tw := tar.NewWriter(&in)
	entries := []*tar.Header{
		{Name: "repo/", Typeflag: tar.TypeDir, Mode: 0o750, Uid: 1000, Gid: 1000, ModTime: mtime},
		{Name: "repo/secret", Typeflag: tar.TypeReg, Mode: 0o600, Size: 6, Uid: 1000, Gid: 1000, ModTime: mtime},
		{Name: "repo/run.sh", Typeflag: tar.TypeReg, Mode: 0o755, Size: 10, Uid: 1000, Gid: 1000, ModTime: mtime},
		{Name: "repo/link", Typeflag: tar.TypeSymlink, Linkname: "secret", Uid: 1000, Gid: 1000, ModTime: mtime},
		{Name: "repo/hard", Typeflag: tar.TypeLink, Linkname: "repo/run.sh"},
		{Name: "repo/sub/deep.txt", Typeflag: tar.TypeReg, Mode: 0o644, Size: 4, Uid: 1000, Gid: 1000, ModTime: mtime},
	}
	bodies := map[string]string{"repo/secret": "hush!\n", "repo/run.sh": "#!/bin/sh\n", "repo/sub/deep.txt": "deep"}
	for _, h := range entries {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, bodies[h.Name])
	}
	tw.Close()

	dst := filepath.Join(t.TempDir(), "dst")
	res, err := c.PutTar(ctx, dst, bytes.NewReader(in.Bytes()), agentproto.PutOptions{PreserveOwners: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Entries != 6 || res.Bytes != 20 {
		t.Errorf("result %+v", res)
	}
	checkMode := func(rel string, want os.FileMode) {
		t.Helper()
		fi, err := os.Lstat(filepath.Join(dst, rel))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", rel, fi.Mode(), want)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != 1000 || st.Gid != 1000 {
			t.Errorf("%s: owner %d:%d", rel, st.Uid, st.Gid)
		}
	}
	checkMode("repo", os.ModeDir|0o750)
	checkMode("repo/secret", 0o600)
	checkMode("repo/run.sh", 0o755)
	checkMode("repo/link", os.ModeSymlink|0o777)
	if l, _ := os.Readlink(filepath.Join(dst, "repo/link")); l != "secret" {
		t.Errorf("symlink -> %q", l)
	}
	a, _ := os.Stat(filepath.Join(dst, "repo/run.sh"))
	b, _ := os.Stat(filepath.Join(dst, "repo/hard"))
	if !os.SameFile(a, b) {
		t.Error("hard link not preserved")
	}
	if fi, _ := os.Stat(filepath.Join(dst, "repo/secret")); !fi.ModTime().Equal(mtime) {
		t.Errorf("mtime %v", fi.ModTime())
	}

	// Without PreserveOwners everything belongs to the requested owner (root).
	dst2 := filepath.Join(t.TempDir(), "dst2")
	if _, err := c.PutTar(ctx, dst2, bytes.NewReader(in.Bytes()), agentproto.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Lstat(filepath.Join(dst2, "repo/secret")); fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Error("owner kept without PreserveOwners")
	}

	// Get it back and compare.
	var got bytes.Buffer
	if err := c.GetTar(ctx, filepath.Join(dst, "repo"), &got); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&got)
	seen := map[string]*tar.Header{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		want := bodies[h.Name]
		if h.Name == "repo/hard" {
			want = bodies["repo/run.sh"]
		}
		if h.Typeflag == tar.TypeReg && string(body) != want {
			t.Errorf("%s: body %q", h.Name, body)
		}
		seen[h.Name] = h
	}
	for name, check := range map[string]func(h *tar.Header) bool{
		"repo/":             func(h *tar.Header) bool { return h.Typeflag == tar.TypeDir && h.Mode&0o777 == 0o750 },
		"repo/secret":       func(h *tar.Header) bool { return h.Mode&0o777 == 0o600 && h.Uid == 1000 },
		"repo/link":         func(h *tar.Header) bool { return h.Typeflag == tar.TypeSymlink && h.Linkname == "secret" },
		"repo/sub/deep.txt": func(h *tar.Header) bool { return h.Size == 4 },
	} {
		h := seen[name]
		if h == nil || !check(h) {
			t.Errorf("get: entry %s = %+v", name, h)
		}
	}
	// One of run.sh/hard is stored as a hard link to the other.
	if seen["repo/hard"] == nil || seen["repo/run.sh"] == nil ||
		(seen["repo/hard"].Typeflag != tar.TypeLink && seen["repo/run.sh"].Typeflag != tar.TypeLink) {
		t.Errorf("get: hard link lost: %+v %+v", seen["repo/hard"], seen["repo/run.sh"])
	}

	// A single file is named by its base name.
	got.Reset()
	if err := c.GetTar(ctx, filepath.Join(dst, "repo/secret"), &got); err != nil {
		t.Fatal(err)
	}
	h, err := tar.NewReader(&got).Next()
	if err != nil || h.Name != "secret" || h.Size != 6 {
		t.Errorf("single file: %+v %v", h, err)
	}

	if err := c.GetTar(ctx, "/no/such/path", io.Discard); !errors.Is(err, errkind.NotFound) {
		t.Errorf("missing path: %v", err)
	}
}

func TestPutRejectsEscapes(t *testing.T) {
	c := startAgent(t, agent.Config{})
	root := t.TempDir()
	dst := filepath.Join(root, "dst")
	for _, entries := range [][]*tar.Header{
		{{Name: "../evil", Typeflag: tar.TypeReg, Mode: 0o644}},
		{{Name: "/abs", Typeflag: tar.TypeReg, Mode: 0o644}},
		{{Name: "out", Typeflag: tar.TypeSymlink, Linkname: root}, {Name: "out/evil", Typeflag: tar.TypeReg, Mode: 0o644}},
	} {
		var in bytes.Buffer
		tw := tar.NewWriter(&in)
		for _, h := range entries {
			tw.WriteHeader(h)
		}
		tw.Close()
		_, err := c.PutTar(testCtx(t), dst, &in, agentproto.PutOptions{})
		if !errors.Is(err, errkind.InvalidArgument) {
			t.Errorf("%s: %v, want invalid argument", entries[len(entries)-1].Name, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(root, "evil")); err == nil {
		t.Fatal("a file escaped the destination")
	}
}

func TestPorts(t *testing.T) {
	c := startAgent(t, agent.Config{})
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	ul, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	ports, err := c.Ports(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	find := func(proto string, port int) *agentproto.Port {
		for i := range ports {
			if ports[i].Proto == proto && ports[i].Port == port {
				return &ports[i]
			}
		}
		return nil
	}
	self, _ := os.Readlink("/proc/self/exe")
	for _, want := range []struct {
		proto string
		port  int
	}{{"tcp", tl.Addr().(*net.TCPAddr).Port}, {"udp", ul.LocalAddr().(*net.UDPAddr).Port}} {
		p := find(want.proto, want.port)
		if p == nil {
			t.Errorf("%s/%d not listed in %+v", want.proto, want.port, ports)
			continue
		}
		if p.Address != "127.0.0.1" || p.PID != os.Getpid() || !strings.HasPrefix(filepath.Base(self), p.Process) {
			t.Errorf("%s/%d: %+v (pid %d)", want.proto, want.port, *p, os.Getpid())
		}
	}
}

func TestDialTCP(t *testing.T) {
	c := startAgent(t, agent.Config{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				b, _ := io.ReadAll(conn) // until the client half-closes
				conn.Write([]byte(strings.ToUpper(string(b))))
			}()
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port
	conn, err := c.Dial(testCtx(t), "tcp", port)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	payload := strings.Repeat("forward me ", 100000)
	go func() {
		conn.Write([]byte(payload))
		conn.(interface{ CloseWrite() error }).CloseWrite()
	}()
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != strings.ToUpper(payload) {
		t.Fatalf("echo of %d bytes came back as %d bytes", len(payload), len(got))
	}

	// Nothing listening: a clear error.
	l2, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := l2.Addr().(*net.TCPAddr).Port
	l2.Close()
	if _, err := c.Dial(testCtx(t), "tcp", closed); !errors.Is(err, errkind.Unavailable) {
		t.Errorf("dial closed port: %v", err)
	}
}

func TestDialUDP(t *testing.T) {
	c := startAgent(t, agent.Config{})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 65535)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("echo:"), buf[:n]...), addr)
		}
	}()
	conn, err := c.Dial(testCtx(t), "udp", pc.LocalAddr().(*net.UDPAddr).Port)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for i, msg := range []string{"one", "two", strings.Repeat("x", 3000)} {
		if _, err := conn.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 65535)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if string(buf[:n]) != "echo:"+msg {
			t.Fatalf("datagram %d: got %d bytes %q", i, n, strconv.Quote(string(buf[:min(n, 20)])))
		}
	}
}
