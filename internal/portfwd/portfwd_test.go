package portfwd_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/portfwd"
)

func TestParseSpec(t *testing.T) {
	good := map[string]string{
		"8080:80":               "127.0.0.1:8080:80/tcp",
		"8080:80/tcp":           "127.0.0.1:8080:80/tcp",
		"5353:53/udp":           "127.0.0.1:5353:53/udp",
		"5353:53/UDP":           "127.0.0.1:5353:53/udp",
		"0.0.0.0:8080:80":       "0.0.0.0:8080:80/tcp",
		"192.0.2.5:1:65535/udp": "192.0.2.5:1:65535/udp",
		"[::1]:8080:80":         "[::1]:8080:80/tcp",
		"127.0.0.1:2222:22/tcp": "127.0.0.1:2222:22/tcp",
	}
	for in, want := range good {
		s, err := portfwd.ParseSpec(in)
		if err != nil {
			t.Errorf("ParseSpec(%q): %v", in, err)
			continue
		}
		if s.String() != want {
			t.Errorf("ParseSpec(%q) = %s, want %s", in, s, want)
		}
		if again, err := portfwd.ParseSpec(s.String()); err != nil || again != s {
			t.Errorf("round trip of %s: %v %v", s, again, err)
		}
	}
	for _, bad := range []string{"", "80", "0:80", "80:0", "80:70000", "a:80", "80:80/sctp", "x.y:80:80", "1.2.3.4:5.6.7.8:1:2", "[::1:80:80", "1:2:3:4"} {
		if _, err := portfwd.ParseSpec(bad); errkind.Of(err) != errkind.InvalidArgument {
			t.Errorf("ParseSpec(%q) = %v, want invalid argument", bad, err)
		}
	}
	a, _ := portfwd.ParseSpec("0.0.0.0:80:1")
	b, _ := portfwd.ParseSpec("127.0.0.1:80:2")
	c, _ := portfwd.ParseSpec("127.0.0.1:80:2/udp")
	if !a.Conflicts(b) || b.Conflicts(c) {
		t.Fatal("Conflicts wrong")
	}
}

// loopbackDial stands in for the agent: "guest port" P is 127.0.0.1:P on
// the host.
func loopbackDial(ctx context.Context, network string, port int) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, "127.0.0.1:"+strconv.Itoa(port))
}

// tcpServer accepts connections and runs fn on each.
func tcpServer(t *testing.T, fn func(net.Conn)) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); fn(c) }()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

func freeSpec(t *testing.T, proto string, guest int) portfwd.Spec {
	t.Helper()
	var port int
	if proto == "tcp" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	} else {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port = pc.LocalAddr().(*net.UDPAddr).Port
		pc.Close()
	}
	s, err := portfwd.ParseSpec(fmt.Sprintf("%d:%d/%s", port, guest, proto))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestTCPForwardWithHalfClose(t *testing.T) {
	// The "guest" reads everything, then answers with the byte count.
	guest := tcpServer(t, func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		fmt.Fprintf(c, "got %d\n", n)
	})
	f, err := portfwd.Start(freeSpec(t, "tcp", guest), loopbackDial, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", f.Addr().String())
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			size := (i + 1) << 20
			if _, err := c.Write(make([]byte, size)); err != nil {
				t.Error(err)
				return
			}
			c.(*net.TCPConn).CloseWrite()
			b, err := io.ReadAll(c)
			if err != nil || string(b) != fmt.Sprintf("got %d\n", size) {
				t.Errorf("answer %q, %v", b, err)
			}
		}()
	}
	wg.Wait()
	if f.Accepted() != 5 {
		t.Fatalf("accepted %d", f.Accepted())
	}
}

func TestForwardToBusyPortIsConflict(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	spec, _ := portfwd.ParseSpec(fmt.Sprintf("%d:80", ln.Addr().(*net.TCPAddr).Port))
	_, err = portfwd.Start(spec, loopbackDial, nil)
	if errkind.Of(err) != errkind.Conflict || !strings.Contains(err.Error(), "already in use") {
		t.Fatalf("got %v", err)
	}
	spec, _ = portfwd.ParseSpec("192.0.2.250:8080:80")
	if _, err := portfwd.Start(spec, loopbackDial, nil); errkind.Of(err) != errkind.InvalidArgument {
		t.Fatalf("non-local address: %v", err)
	}
}

func TestGuestDialFailureClosesHostConnection(t *testing.T) {
	dial := func(ctx context.Context, network string, port int) (net.Conn, error) {
		return nil, errors.New("connecting to guest port tcp/80: connection refused")
	}
	f, err := portfwd.Start(freeSpec(t, "tcp", 80), dial, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := net.Dial("tcp", f.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read %d, %v; want EOF", n, err)
	}
}

func TestGuestChannelClosedMidForward(t *testing.T) {
	// The "agent channel" is a pipe the test breaks while data flows.
	var guestEnd atomic.Pointer[net.Conn]
	dial := func(ctx context.Context, network string, port int) (net.Conn, error) {
		a, b := net.Pipe()
		guestEnd.Store(&b)
		go io.Copy(io.Discard, b)
		return a, nil
	}
	f, err := portfwd.Start(freeSpec(t, "tcp", 80), dial, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := net.Dial("tcp", f.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	for guestEnd.Load() == nil {
		time.Sleep(time.Millisecond)
	}
	(*guestEnd.Load()).Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, errTimeout) || isTimeout(err) {
		t.Fatalf("host connection not closed after the channel broke: %v", err)
	}
	// The forward keeps serving new connections.
	if c2, err := net.Dial("tcp", f.Addr().String()); err != nil {
		t.Fatalf("forward dead after a broken stream: %v", err)
	} else {
		c2.Close()
	}
}

var errTimeout = errors.New("timeout")

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func udpEcho(t *testing.T) int {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, a, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("echo:"), buf[:n]...), a)
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr).Port
}

func TestUDPForwardKeepsPeersApart(t *testing.T) {
	f, err := portfwd.Start(freeSpec(t, "udp", udpEcho(t)), loopbackDial, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var peers []net.Conn
	for range 3 {
		c, err := net.Dial("udp", f.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		peers = append(peers, c)
	}
	for round := range 3 {
		for i, c := range peers {
			msg := fmt.Sprintf("peer %d round %d", i, round)
			if _, err := c.Write([]byte(msg)); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 100)
			n, err := c.Read(buf)
			if err != nil || string(buf[:n]) != "echo:"+msg {
				t.Fatalf("peer %d got %q, %v", i, buf[:n], err)
			}
		}
	}
	// A large datagram keeps its boundaries.
	big := strings.Repeat("x", 60000)
	peers[0].Write([]byte(big))
	buf := make([]byte, 65535)
	n, err := peers[0].Read(buf)
	if err != nil || n != len(big)+5 {
		t.Fatalf("big datagram: %d %v", n, err)
	}
	if f.Accepted() != 3 {
		t.Fatalf("peers = %d", f.Accepted())
	}
}

func TestManager(t *testing.T) {
	m := portfwd.NewManager(nil)
	defer m.Close()
	guest := tcpServer(t, func(c net.Conn) { io.WriteString(c, "hi\n") })
	spec := freeSpec(t, "tcp", guest)
	if err := m.Add("vm1", spec, loopbackDial); err != nil {
		t.Fatal(err)
	}
	if err := m.Add("vm1", spec, loopbackDial); err != nil {
		t.Fatalf("re-adding the same forward: %v", err)
	}
	other := spec
	other.GuestPort = 9
	if err := m.Add("vm2", other, loopbackDial); errkind.Of(err) != errkind.Conflict || !strings.Contains(err.Error(), "vm vm1") {
		t.Fatalf("conflicting forward: %v", err)
	}
	wild, _ := portfwd.ParseSpec(fmt.Sprintf("0.0.0.0:%d:1", spec.HostPort))
	if err := m.Add("vm2", wild, loopbackDial); errkind.Of(err) != errkind.Conflict {
		t.Fatalf("wildcard over a bound port: %v", err)
	}
	if l := m.List("vm1"); len(l) != 1 || l[0].Spec != spec || l[0].Auto {
		t.Fatalf("List = %+v", l)
	}
	c, err := net.Dial("tcp", spec.HostEndpoint())
	if err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if line != "hi\n" {
		t.Fatalf("through the manager: %q", line)
	}
	m.StopVM("vm1")
	if _, err := net.Dial("tcp", spec.HostEndpoint()); err == nil {
		t.Fatal("forward still listening after StopVM")
	}
	if err := m.Remove("vm1", spec); errkind.Of(err) != errkind.NotFound {
		t.Fatalf("Remove of a stopped forward: %v", err)
	}
	if err := m.Add("vm2", other, loopbackDial); err != nil {
		t.Fatalf("port not reusable after StopVM: %v", err)
	}
	if err := m.Remove("vm2", other); err != nil {
		t.Fatal(err)
	}
}

func TestAutoForward(t *testing.T) {
	m := portfwd.NewManager(nil)
	defer m.Close()
	g1 := tcpServer(t, func(c net.Conn) { io.WriteString(c, "one\n") })
	g2 := tcpServer(t, func(c net.Conn) { io.WriteString(c, "two\n") })
	// The fake agent reports guest ports free1/free2 (free on the host, so
	// they can be auto-forwarded) and serves them with g1/g2. Guest port g1
	// is also reported: its host twin is busy (g1 listens there), so it is
	// skipped.
	var mu sync.Mutex
	var listening []portfwd.GuestPort
	set := func(ps ...portfwd.GuestPort) { mu.Lock(); listening = ps; mu.Unlock() }
	ports := func(ctx context.Context) ([]portfwd.GuestPort, error) {
		mu.Lock()
		defer mu.Unlock()
		return append([]portfwd.GuestPort(nil), listening...), nil
	}
	// Guest port P is served by the g1/g2 servers through this dialer.
	free1 := freeSpec(t, "tcp", 1).HostPort
	free2 := freeSpec(t, "tcp", 1).HostPort
	route := map[int]int{free1: g1, free2: g2}
	dial := func(ctx context.Context, network string, port int) (net.Conn, error) {
		return loopbackDial(ctx, network, route[port])
	}
	changes := make(chan []portfwd.Spec, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	set(portfwd.GuestPort{Proto: "tcp", Address: "0.0.0.0", Port: free1},
		portfwd.GuestPort{Proto: "tcp", Address: "172.30.0.2", Port: free2}, // not on loopback: skipped
		portfwd.GuestPort{Proto: "udp", Address: "0.0.0.0", Port: free2},    // UDP: not automatic
		portfwd.GuestPort{Proto: "tcp", Address: "127.0.0.1", Port: g1})     // host port busy: skipped
	go func() {
		defer close(done)
		m.AutoForward(ctx, "vm", ports, dial, 20*time.Millisecond, func(s []portfwd.Spec) { changes <- s })
	}()
	expect := func(want ...int) {
		t.Helper()
		select {
		case got := <-changes:
			var ports []int
			for _, s := range got {
				ports = append(ports, s.HostPort)
			}
			if fmt.Sprint(ports) != fmt.Sprint(want) {
				t.Fatalf("auto forwards %v, want %v", ports, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no change reported (want %v)", want)
		}
	}
	expect(free1)
	read := func(port int) string {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return err.Error()
		}
		defer c.Close()
		line, _ := bufio.NewReader(c).ReadString('\n')
		return line
	}
	if got := read(free1); got != "one\n" {
		t.Fatalf("auto forward answered %q", got)
	}
	set(portfwd.GuestPort{Proto: "tcp", Address: "::", Port: free2})
	expect(free2)
	if got := read(free2); got != "two\n" {
		t.Fatalf("auto forward answered %q", got)
	}
	if _, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", free1)); err == nil {
		t.Fatal("forward of a closed guest port still listens")
	}
	cancel()
	<-done
	if len(m.List("vm")) != 0 {
		t.Fatalf("automatic forwards left after stop: %+v", m.List("vm"))
	}
}
