package e2e

import (
	"archive/tar"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/miekg/dns"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/testenv"
)

// netEnv is a vmEnv whose daemon owns a bridge, subnet, nftables table
// and DNS ports of its own, resolves guests' other names through a DNS
// server of the test, and has a network namespace ("the outside") with
// two web servers: one the egress test allows, one it denies.
type netEnv struct {
	*env
	bridge   string
	subnet   netip.Prefix
	table    string
	hostDNS  string
	ns       string
	allowed  string // address of the allowed server in the namespace
	denied   string // address of the denied one
	upstream *dns.Server
}

const netImage = "netbox"

func newNetEnv(t *testing.T) *netEnv {
	t.Helper()
	testenv.RequireRoot(t)
	for _, tool := range []string{"ip", "nft", "busybox"} {
		testenv.RequireBinary(t, tool)
	}
	e := newBareVMEnv(t)
	ne := &netEnv{env: e}
	id := randHex(t, 3)
	ne.bridge = "bge" + id // 9 characters: taps are bge<id>-N
	ne.table = "banger_" + ne.bridge
	ne.subnet = freeSubnet(t)
	ne.setupOutside(t, id)
	ne.startUpstream(t)
	ne.hostDNS = "127.0.0.1:" + strconv.Itoa(freeUDPPort(t))
	cfg := fmt.Sprintf("[network]\nbridge = %q\ncidr = %q\ndns_listen = %q\nupstream_dns = [%q]\ntap_pool = 1\n",
		ne.bridge, ne.subnet, ne.hostDNS, ne.upstream.PacketConn.LocalAddr().String())
	if err := os.MkdirAll(filepath.Join(e.home, "config"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.home, "config", "config.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Whatever the test left, the bridge and table go with it.
		e.stopDaemon()
		out, _ := exec.Command("ip", "-o", "link").CombinedOutput()
		for _, l := range strings.Split(string(out), "\n") {
			if f := strings.Fields(l); len(f) > 1 && strings.HasPrefix(f[1], ne.bridge) {
				name := strings.TrimSuffix(strings.SplitN(f[1], "@", 2)[0], ":")
				exec.Command("ip", "link", "del", name).Run()
			}
		}
		exec.Command("nft", "delete", "table", "ip", ne.table).Run()
		exec.Command("nft", "delete", "table", "bridge", ne.table).Run()
	})
	e.importKernel(t)
	reg := testenv.StartRegistry(t)
	entries := append(testenv.BusyboxEntries(t), testenv.Entry{Path: "/bin/udpecho", Type: tar.TypeReg, Mode: 0o755, Data: buildUDPEcho(t)})
	img, err := testenv.ImageFromEntries(entries, v1.Config{Env: []string{"PATH=" + testenv.BusyboxPath}})
	if err != nil {
		t.Fatal(err)
	}
	e.must("image", "pull", testenv.PushImage(t, reg, "netbox:latest", img), "--name", netImage, "--kernel-ref", "cloud")
	return ne
}

func randHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// freeSubnet picks a 172.30.N.0/24 no host route overlaps.
func freeSubnet(t *testing.T) netip.Prefix {
	t.Helper()
	out, err := exec.Command("ip", "-4", "route", "show", "table", "all").CombinedOutput()
	if err != nil {
		t.Fatalf("ip route: %v %s", err, out)
	}
	var used []netip.Prefix
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		for _, w := range f {
			if p, err := netip.ParsePrefix(w); err == nil {
				used = append(used, p)
			} else if a, err := netip.ParseAddr(w); err == nil {
				used = append(used, netip.PrefixFrom(a, 32))
			}
		}
	}
	for range 200 {
		b := make([]byte, 1)
		rand.Read(b)
		p := netip.MustParsePrefix(fmt.Sprintf("172.30.%d.0/24", 100+int(b[0])%150))
		free := true
		for _, u := range used {
			free = free && !u.Overlaps(p)
		}
		if free {
			return p
		}
	}
	t.Fatal("no free 172.30.N.0/24 subnet")
	return netip.Prefix{}
}

func freeUDPPort(t *testing.T) int {
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		pc.Close()
		if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			ln.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

func freeTCPPort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// setupOutside makes the namespace: a veth pair, the namespace side with
// two addresses, a web server on each answering its own name.
func (ne *netEnv) setupOutside(t *testing.T, id string) {
	t.Helper()
	ne.ns = "bgte-" + id
	hostIf := "bgte" + id + "h"
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	// 10.213.X.0/24, X the VM subnet's third octet, keeps parallel runs apart.
	x := ne.subnet.Addr().As4()[2]
	ne.allowed = fmt.Sprintf("10.213.%d.2", x)
	ne.denied = fmt.Sprintf("10.213.%d.3", x)
	run("ip", "netns", "add", ne.ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ne.ns).Run() })
	run("ip", "link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", ne.ns)
	t.Cleanup(func() { exec.Command("ip", "link", "del", hostIf).Run() })
	run("ip", "addr", "add", fmt.Sprintf("10.213.%d.1/24", x), "dev", hostIf)
	run("ip", "link", "set", hostIf, "up")
	for _, a := range []string{ne.allowed, ne.denied} {
		run("ip", "-n", ne.ns, "addr", "add", a+"/24", "dev", "eth0")
	}
	run("ip", "-n", ne.ns, "link", "set", "eth0", "up")
	run("ip", "-n", ne.ns, "link", "set", "lo", "up")
	for _, a := range []string{ne.allowed, ne.denied} {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "index.html"), []byte("outside "+a+"\n"), 0o644)
		cmd := exec.Command("ip", "netns", "exec", ne.ns, "busybox", "httpd", "-f", "-p", a+":8080", "-h", dir)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	}
}

// startUpstream runs the resolver the daemon forwards guests' queries to:
// allowed.test and denied.test name the two outside servers.
func (ne *netEnv) startUpstream(t *testing.T) {
	t.Helper()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		var ip string
		switch strings.ToLower(q.Name) {
		case "allowed.test.", "www.allowed.test.":
			ip = ne.allowed
		case "denied.test.":
			ip = ne.denied
		}
		if ip == "" {
			m.SetRcode(r, dns.RcodeNameError)
		} else if q.Qtype == dns.TypeA {
			rr, _ := dns.NewRR(q.Name + " 60 IN A " + ip)
			m.Answer = append(m.Answer, rr)
		}
		w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ne.upstream = &dns.Server{PacketConn: pc, Handler: h}
	started := make(chan struct{})
	ne.upstream.NotifyStartedFunc = func() { close(started) }
	go ne.upstream.ActivateAndServe()
	<-started
	t.Cleanup(func() { ne.upstream.Shutdown() })
}

// buildUDPEcho compiles e2e/testdata/udpecho statically.
func buildUDPEcho(t *testing.T) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "udpecho")
	cmd := exec.Command("go", "build", "-o", out, "./testdata/udpecho")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building udpecho: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (ne *netEnv) create(name string, extra ...string) api.VMInfo {
	ne.t.Helper()
	var vm api.VMInfo
	args := append([]string{"vm", "create", "--name", name, "--image", netImage, "--memory", vmMemory, "-o", "json"}, extra...)
	if err := json.Unmarshal([]byte(ne.must(args...)), &vm); err != nil {
		ne.t.Fatal(err)
	}
	return vm
}

// serve starts busybox httpd on port in a guest, answering body.
func (ne *netEnv) serve(name string, port int, body string) {
	ne.t.Helper()
	ne.guest(name, "sh", "-c", fmt.Sprintf("mkdir -p /www%d && echo %s > /www%d/index.html && httpd -p %d -h /www%d", port, body, port, port, port))
}

// resolveHost asks the daemon's host DNS listener for name.
func (ne *netEnv) resolveHost(name string) (string, int) {
	ne.t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	r, err := dns.Exchange(m, ne.hostDNS)
	if err != nil {
		ne.t.Fatalf("resolving %s at %s: %v", name, ne.hostDNS, err)
	}
	if len(r.Answer) == 0 {
		return "", r.Rcode
	}
	return r.Answer[0].(*dns.A).A.String(), r.Rcode
}

func httpGet(url string) (string, error) {
	c := &http.Client{Timeout: 20 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// eventually retries fn (guest servers take a moment to start under TCG).
func eventually(t *testing.T, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func TestNetworking(t *testing.T) {
	ne := newNetEnv(t)
	e := ne.env
	var info api.NetworkInfo
	if err := json.Unmarshal([]byte(e.must("network", "-o", "json")), &info); err != nil || !info.Available {
		t.Fatalf("network unavailable: %+v %v\n%s", info, err, e.daemonLog())
	}
	if info.Bridge != ne.bridge || info.CIDR != ne.subnet.String() || info.HostDNS != ne.hostDNS || info.DefaultMode != "nat" {
		t.Fatalf("network info: %+v", info)
	}
	a := ne.create("web")
	ne.create("client")
	if a.Network.Mode != "nat" || !ne.subnet.Contains(netip.MustParseAddr(a.Network.IP)) || a.Network.Tap == "" {
		t.Fatalf("vm network: %+v", a.Network)
	}
	ne.serve("web", 80, "hello-from-web")

	e.sub(t, "vm-to-vm-by-name", func(t *testing.T) {
		// DNS is UDP: under emulation a datagram can be late or lost and
		// busybox's nslookup does not retry, so ask again a few times.
		eventually(t, "nslookup web.vm in client", func() error {
			r := e.run("vm", "exec", "client", "--", "nslookup", "web.vm")
			if !strings.Contains(r.stdout, a.Network.IP) {
				return fmt.Errorf("exit %d: %s %s", r.code, r.stdout, r.stderr)
			}
			return nil
		})
		eventually(t, "client → web.vm:80", func() error {
			r := e.run("vm", "exec", "client", "--", "timeout", "15", "wget", "-qO-", "http://web.vm/")
			if r.code != 0 || strings.TrimSpace(r.stdout) != "hello-from-web" {
				return fmt.Errorf("exit %d: %s %s", r.code, r.stdout, r.stderr)
			}
			return nil
		})
	})

	e.sub(t, "host-reaches-name.vm", func(t *testing.T) {
		ip, _ := ne.resolveHost("web.vm")
		if ip != a.Network.IP {
			t.Fatalf("web.vm resolves to %q on the host, want %s", ip, a.Network.IP)
		}
		if _, rcode := ne.resolveHost("nosuchvm.vm"); rcode != dns.RcodeNameError {
			t.Fatalf("unknown name: rcode %d", rcode)
		}
		body, err := httpGet("http://" + ip + "/")
		if err != nil || strings.TrimSpace(body) != "hello-from-web" {
			t.Fatalf("host → web.vm: %q %v", body, err)
		}
	})

	e.sub(t, "ports", func(t *testing.T) {
		var ports []api.VMPorts
		if err := json.Unmarshal([]byte(e.must("vm", "ports", "web", "-o", "json")), &ports); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, p := range ports[0].Ports {
			found = found || (p.Proto == "tcp" && p.Port == 80 && p.Endpoint == "web.vm:80" && p.Process == "httpd")
		}
		if !found {
			t.Fatalf("vm ports web: %+v", ports)
		}
	})

	e.sub(t, "tcp-forward", func(t *testing.T) {
		port := freeTCPPort(t)
		e.must("vm", "forward", "web", fmt.Sprintf("%d:80", port))
		body, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil || strings.TrimSpace(body) != "hello-from-web" {
			t.Fatalf("through the forward: %q %v", body, err)
		}
		// The port is taken now: a second forward to it is refused.
		r := e.run("vm", "forward", "client", fmt.Sprintf("%d:80", port))
		if r.code == 0 || !strings.Contains(r.stderr, "already") {
			t.Fatalf("second forward to a bound port: %+v", r)
		}
		// Forwards come back after a daemon crash.
		pid := e.daemonPID()
		syscall.Kill(pid, syscall.SIGKILL)
		if !waitGone(pid, 10*time.Second) {
			t.Fatalf("daemon pid %d did not die", pid)
		}
		e.must("vm", "list")
		eventually(t, "forward after daemon restart", func() error {
			body, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", port))
			if err == nil && strings.TrimSpace(body) != "hello-from-web" {
				err = fmt.Errorf("answer %q", body)
			}
			return err
		})
	})

	e.sub(t, "stop-start-is-idempotent", func(t *testing.T) {
		port := freeTCPPort(t)
		e.must("vm", "forward", "web", fmt.Sprintf("%d:80", port))
		e.must("vm", "stop", "web")
		if _, rcode := ne.resolveHost("web.vm"); rcode != dns.RcodeNameError {
			t.Error("web.vm resolves while stopped")
		}
		rs, _ := exec.Command("nft", "list", "ruleset").CombinedOutput()
		if strings.Contains(string(rs), a.ID) {
			t.Errorf("rules of a stopped vm:\n%s", rs)
		}
		if _, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			t.Error("forward listens while the vm is stopped")
		}
		e.must("vm", "start", "web")
		again := e.showVM("web")
		if again.Network.IP != a.Network.IP || again.Network.MAC != a.Network.MAC {
			t.Fatalf("address changed across stop/start: %+v → %+v", a.Network, again.Network)
		}
		rs, _ = exec.Command("nft", "list", "table", "ip", ne.table).CombinedOutput()
		if n := strings.Count(string(rs), "jump vm_"+a.ID); n != 1 {
			t.Fatalf("%d jumps to the vm chain after restart:\n%s", n, rs)
		}
		ne.serve("web", 80, "hello-from-web")
		eventually(t, "forward after vm restart", func() error {
			body, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", port))
			if err == nil && strings.TrimSpace(body) != "hello-from-web" {
				err = fmt.Errorf("answer %q", body)
			}
			return err
		})
		if ip, _ := ne.resolveHost("web.vm"); ip != a.Network.IP {
			t.Fatalf("web.vm after restart: %q", ip)
		}
	})

	e.sub(t, "colliding-subnet-refused", func(t *testing.T) {
		// A second installation whose subnet overlaps the outside's route.
		other := newEnv(t)
		x := ne.subnet.Addr().As4()[2]
		cfg := fmt.Sprintf("[network]\nbridge = \"bgc%s\"\ncidr = \"10.213.%d.128/25\"\ndns_listen = \"\"\n", randHex(t, 3), x)
		os.MkdirAll(filepath.Join(other.home, "config"), 0o755)
		os.WriteFile(filepath.Join(other.home, "config", "config.toml"), []byte(cfg), 0o644)
		var info api.NetworkInfo
		if err := json.Unmarshal([]byte(other.must("network", "-o", "json")), &info); err != nil {
			t.Fatal(err)
		}
		route := fmt.Sprintf("10.213.%d.0/24 dev bgte", x)
		if info.Available || !strings.Contains(info.Reason, route) || info.DefaultMode != "none" {
			t.Fatalf("network info with a colliding subnet: %+v", info)
		}
		r := other.run("vm", "create", "--net", "nat", "--name", "x")
		if r.code == 0 || !strings.Contains(r.stderr, route) {
			t.Fatalf("vm create --net nat on a colliding subnet: %+v", r)
		}
		if out, _ := exec.Command("ip", "-o", "link").CombinedOutput(); strings.Contains(string(out), "bgc") {
			t.Fatalf("a bridge was made despite the collision:\n%s", out)
		}
	})

	e.sub(t, "none-udp-forward", func(t *testing.T) {
		port, tport := freeUDPPort(t), freeTCPPort(t)
		vm := ne.create("isolated", "--net", "none", "--publish", fmt.Sprintf("%d:7/udp", port), "-p", fmt.Sprintf("%d:80", tport))
		if vm.Network.Mode != "none" || vm.Network.IP != "" || vm.Network.Tap != "" {
			t.Fatalf("--net none vm: %+v", vm.Network)
		}
		if ifs := strings.Fields(e.guest("isolated", "ls", "/sys/class/net")); len(ifs) != 1 || ifs[0] != "lo" {
			t.Fatalf("--net none guest has interfaces %v", ifs)
		}
		// TCP over the agent channel (no NIC to take a shortcut through).
		ne.serve("isolated", 80, "hello-isolated")
		eventually(t, "tcp forward to a --net none vm", func() error {
			body, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", tport))
			if err == nil && strings.TrimSpace(body) != "hello-isolated" {
				err = fmt.Errorf("answer %q", body)
			}
			return err
		})
		e.guest("isolated", "sh", "-c", "setsid udpecho 7 </dev/null >/dev/null 2>&1 &")
		c, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		eventually(t, "udp echo through the forward", func() error {
			c.Write([]byte("ping"))
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			buf := make([]byte, 100)
			n, err := c.Read(buf)
			if err == nil && string(buf[:n]) != "echo:ping" {
				err = fmt.Errorf("answer %q", buf[:n])
			}
			return err
		})
	})

	e.sub(t, "egress-allow-list", func(t *testing.T) {
		fetch := func(vm, url string) (string, bool) {
			r := e.run("vm", "exec", vm, "--", "timeout", "15", "wget", "-qO-", url)
			return strings.TrimSpace(r.stdout), r.code == 0
		}
		// Unrestricted: both outside servers answer (so a refusal below is
		// the policy, not the plumbing).
		eventually(t, "nat vm reaches the outside", func() error {
			for _, ip := range []string{ne.allowed, ne.denied} {
				if out, ok := fetch("client", "http://"+ip+":8080/"); !ok || out != "outside "+ip {
					return fmt.Errorf("%s: %q", ip, out)
				}
			}
			return nil
		})
		ne.create("locked", "--allow-host", "allowed.test")
		if out, ok := fetch("locked", "http://allowed.test:8080/"); !ok || out != "outside "+ne.allowed {
			t.Fatalf("allowed host: %q ok=%v\n%s", out, ok, e.daemonLog())
		}
		if out, ok := fetch("locked", "http://denied.test:8080/"); ok {
			t.Fatalf("denied host answered: %q", out)
		}
		if out, ok := fetch("locked", "http://"+ne.denied+":8080/"); ok {
			t.Fatalf("denied address answered: %q", out)
		}
		rs, _ := exec.Command("nft", "list", "table", "ip", ne.table).CombinedOutput()
		if !strings.Contains(string(rs), ne.allowed) || strings.Contains(string(rs), ne.denied) {
			t.Fatalf("allow set:\n%s", rs)
		}
	})

	e.sub(t, "auto-forward", func(t *testing.T) {
		port := freeTCPPort(t)
		ne.create("auto", "--net", "private", "--auto-forward")
		ne.serve("auto", port, "hello-auto")
		eventually(t, "auto-forward of a new guest port", func() error {
			body, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", port))
			if err == nil && strings.TrimSpace(body) != "hello-auto" {
				err = fmt.Errorf("answer %q", body)
			}
			return err
		})
		eventually(t, "auto forward in vm show", func() error {
			for _, f := range e.showVM("auto").Network.Forwards {
				if f.Auto && f.HostPort == port && f.GuestPort == port {
					return nil
				}
			}
			return fmt.Errorf("not listed")
		})
		// --net private: the host and other VMs only.
		r := e.run("vm", "exec", "auto", "--", "timeout", "15", "wget", "-qO-", "http://"+ne.allowed+":8080/")
		if r.code == 0 {
			t.Fatalf("private vm reached the outside: %s", r.stdout)
		}
	})

	e.sub(t, "delete-leaves-nothing", func(t *testing.T) {
		vms := e.listVMs()
		var names []string
		for _, vm := range vms {
			names = append(names, vm.Name)
		}
		e.must(append([]string{"vm", "delete", "-f"}, names...)...)
		rs, _ := exec.Command("nft", "list", "ruleset").CombinedOutput()
		links, _ := exec.Command("ip", "-o", "link").CombinedOutput()
		for _, vm := range vms {
			for _, s := range []string{vm.ID, vm.Network.IP} {
				if s != "" && strings.Contains(string(rs), s) {
					t.Errorf("nft ruleset still mentions vm %s (%s):\n%s", vm.Name, s, rs)
				}
			}
			if vm.Network.Tap != "" && strings.Contains(string(links), vm.Network.Tap+":") {
				t.Errorf("tap %s of vm %s still exists", vm.Network.Tap, vm.Name)
			}
		}
		if _, rcode := ne.resolveHost("web.vm"); rcode != dns.RcodeNameError {
			t.Error("web.vm still resolves after delete")
		}
	})
}
