// Command forward benchmarks banger's port forwarding: TCP throughput from
// the host to a guest through a forward (host listener → agent channel →
// guest loopback) against the same guest server reached directly at the
// guest's address over the bridge, in the same run.
//
//	go run ./bench/forward [-n 5] [-mib 64] [-cpus 1]
//
// It needs root (bridge and taps), QEMU, busybox-static and the Debian
// cloud kernel package (the test cache, or -kernel-deb). The guest server
// is busybox nc running `cat >/dev/null; echo ok` per connection; a run
// ends when the guest has read everything and answered, so both paths
// measure delivered bytes. Runs alternate between the paths. The forward
// is measured twice: as configured by default (TCP goes straight to the
// guest's bridge address when the port answers there) and, after a daemon
// restart with forward_direct = false, over the agent channel only.
package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

func main() {
	n := flag.Int("n", 5, "measured runs per path")
	mib := flag.Int("mib", 64, "MiB sent per run")
	cpus := flag.Int("cpus", 1, "guest vCPUs")
	deb := flag.String("kernel-deb", "", "Debian cloud kernel .deb (default: newest in /var/cache/banger-test/kernel)")
	keep := flag.Bool("keep", false, "keep the VM and BANGER_HOME afterwards")
	flag.Parse()
	if err := run(*n, *mib, *cpus, *deb, *keep); err != nil {
		logf("bench: %v", err)
		os.Exit(1)
	}
}

type bench struct {
	home, bin string
	env       []string
}

func (b *bench) banger(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(b.bin, "banger"), args...)
	cmd.Env = b.env
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("banger %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

func run(n, mib, cpus int, deb string, keep bool) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (bridge and taps)")
	}
	if deb == "" {
		m, _ := filepath.Glob("/var/cache/banger-test/kernel/linux-image-*cloud-amd64*.deb")
		sort.Strings(m)
		if len(m) == 0 {
			return fmt.Errorf("no kernel package; pass -kernel-deb")
		}
		deb = m[len(m)-1]
	}
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "bgfwd")
	if err != nil {
		return err
	}
	b := &bench{home: filepath.Join(tmp, "home"), bin: filepath.Join(tmp, "bin")}
	b.env = append(os.Environ(), "BANGER_HOME="+b.home, "BANGER_DAEMON_BIN="+filepath.Join(b.bin, "bangerd"))
	var bridge string
	defer func() {
		if keep {
			logf("kept %s (BANGER_HOME=%s)", tmp, b.home)
			return
		}
		b.banger("vm", "delete", "-f", "fwbench")
		b.banger("daemon", "stop")
		if bridge != "" {
			exec.Command("ip", "link", "del", bridge).Run()
			exec.Command("nft", "delete", "table", "ip", "banger_"+bridge).Run()
			exec.Command("nft", "delete", "table", "bridge", "banger_"+bridge).Run()
		}
		os.RemoveAll(tmp)
	}()
	logf("building binaries")
	for _, p := range []struct{ pkg, out, cgo string }{
		{"./cmd/banger", "banger", "1"}, {"./cmd/bangerd", "bangerd", "1"}, {"./cmd/banger-agent", "banger-agent", "0"},
	} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(b.bin, p.out), p.pkg)
		cmd.Dir, cmd.Env = root, append(os.Environ(), "CGO_ENABLED="+p.cgo)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("building %s: %v\n%s", p.pkg, err, out)
		}
	}
	subnet, err := freeSubnet()
	if err != nil {
		return err
	}
	id := make([]byte, 2)
	rand.Read(id)
	bridge = "bgfw" + hex.EncodeToString(id)
	cfg := fmt.Sprintf("[network]\nbridge = %q\ncidr = %q\ndns_listen = \"\"\n", bridge, subnet)
	if err := os.MkdirAll(filepath.Join(b.home, "config"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(b.home, "config", "config.toml"), []byte(cfg), 0o644); err != nil {
		return err
	}
	logf("importing kernel %s and the busybox image", filepath.Base(deb))
	if _, err := b.banger("kernel", "import", "cloud", "--from-deb", deb); err != nil {
		return err
	}
	rootfs := filepath.Join(tmp, "busybox.ext4")
	if out, err := exec.Command(filepath.Join(root, "scripts/lib/busybox-rootfs.sh"), rootfs).CombinedOutput(); err != nil {
		return fmt.Errorf("busybox rootfs: %v\n%s", err, out)
	}
	if _, err := b.banger("image", "register", "--name", "busybox", "--rootfs", rootfs, "--kernel-ref", "cloud"); err != nil {
		return err
	}
	logf("booting the guest")
	out, err := b.banger("vm", "create", "--name", "fwbench", "--image", "busybox", "--memory", "512",
		"--cpus", fmt.Sprint(cpus), "--net", "private", "-o", "json")
	if err != nil {
		return err
	}
	var vm struct {
		Accel   string `json:"accel"`
		Network struct {
			IP string `json:"ip"`
		} `json:"network"`
	}
	if err := json.Unmarshal([]byte(out), &vm); err != nil {
		return err
	}
	if _, err := b.banger("vm", "exec", "fwbench", "--", "sh", "-c",
		"setsid nc -ll -p 5001 -e sh -c 'cat >/dev/null; echo ok' </dev/null >/dev/null 2>&1 &"); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	if _, err := b.banger("vm", "forward", "fwbench", fmt.Sprintf("%d:5001", port)); err != nil {
		return err
	}
	direct := net.JoinHostPort(vm.Network.IP, "5001")
	forward := fmt.Sprintf("127.0.0.1:%d", port)
	size := int64(mib) << 20
	if err := warmUp(direct, forward); err != nil {
		return err
	}
	paths := []path{{name: "direct", addr: direct}, {name: "forward", addr: forward}}
	if err := measure(paths, n, size); err != nil {
		return err
	}
	// Same guest, same server: restart the daemon with forward_direct off
	// so the forward goes over the agent channel only.
	logf("restarting the daemon with forward_direct = false")
	if err := os.WriteFile(filepath.Join(b.home, "config", "config.toml"), []byte(cfg+"forward_direct = false\n"), 0o644); err != nil {
		return err
	}
	if _, err := b.banger("daemon", "stop"); err != nil {
		return err
	}
	if _, err := b.banger("vm", "list"); err != nil {
		return err
	}
	if err := warmUp(forward); err != nil {
		return err
	}
	agent := []path{{name: "direct", addr: direct}, {name: "agent", addr: forward}}
	if err := measure(agent, n, size); err != nil {
		return err
	}
	md, mf, ma := median(paths[0].mbs), median(paths[1].mbs), median(agent[1].mbs)
	fmt.Printf("guest: %d vCPU, accel %s, %d MiB per run, %d runs per path\n", cpus, vm.Accel, mib, n)
	fmt.Printf("direct to %s over the bridge: median %6.1f MB/s (%s)\n", direct, md, list(paths[0].mbs))
	fmt.Printf("forward %s (default):       median %6.1f MB/s (%s)\n", forward, mf, list(paths[1].mbs))
	fmt.Printf("forward over the agent channel only:   median %6.1f MB/s (%s; direct in that phase: %s)\n", ma, list(agent[1].mbs), list(agent[0].mbs))
	fmt.Printf("ratio forward/direct: %.2f (agent channel only: %.2f)\n", mf/md, ma/median(agent[0].mbs))
	return nil
}

type path struct {
	name, addr string
	mbs        []float64
}

// warmUp waits for each address to carry a small transfer.
func warmUp(addrs ...string) error {
	for _, addr := range addrs {
		var err error
		for range 100 {
			if _, err = transfer(addr, 1<<20); err == nil {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			return fmt.Errorf("warm-up %s: %w", addr, err)
		}
	}
	return nil
}

// measure runs n transfers per path, alternating paths.
func measure(paths []path, n int, size int64) error {
	for i := range n {
		for j := range paths {
			p := &paths[j]
			el, err := transfer(p.addr, size)
			if err != nil {
				return fmt.Errorf("%s run %d: %w", p.name, i+1, err)
			}
			mbs := float64(size) / el.Seconds() / 1e6
			p.mbs = append(p.mbs, mbs)
			logf("run %d %-7s %6.1f MB/s (%v)", i+1, p.name, mbs, el.Round(time.Millisecond))
		}
	}
	return nil
}

// transfer sends size bytes, half-closes, and waits for the guest's "ok"
// (sent after it has read everything).
func transfer(addr string, size int64) (time.Duration, error) {
	start := time.Now()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Minute))
	if _, err := io.CopyN(c, zeros{}, size); err != nil {
		return 0, err
	}
	c.(*net.TCPConn).CloseWrite()
	ans, err := io.ReadAll(c)
	if err != nil {
		return 0, err
	}
	if strings.TrimSpace(string(ans)) != "ok" {
		return 0, fmt.Errorf("guest answered %q", ans)
	}
	return time.Since(start), nil
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func list(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%.1f", x)
	}
	return strings.Join(parts, " ")
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("run from inside the banger module")
	}
	return filepath.Dir(mod), nil
}

// freeSubnet picks a 172.30.N.0/24 that no host route overlaps.
func freeSubnet() (netip.Prefix, error) {
	out, err := exec.Command("ip", "-4", "route", "show", "table", "all").Output()
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("ip route: %w", err)
	}
	var used []netip.Prefix
	for _, w := range strings.Fields(string(out)) {
		if p, err := netip.ParsePrefix(w); err == nil {
			used = append(used, p)
		} else if a, err := netip.ParseAddr(w); err == nil {
			used = append(used, netip.PrefixFrom(a, 32))
		}
	}
	for i := 200; i < 255; i++ {
		p := netip.MustParsePrefix(fmt.Sprintf("172.30.%d.0/24", i))
		free := true
		for _, u := range used {
			free = free && !u.Overlaps(p)
		}
		if free {
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("no free 172.30.N.0/24")
}
