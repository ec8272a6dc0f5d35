package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/agent"
	"github.com/bangerdev/banger/internal/agentclient"
	"github.com/bangerdev/banger/internal/agentproto"
	"github.com/bangerdev/banger/internal/initrd"
	"github.com/bangerdev/banger/internal/kernel/kerneltest"
	"github.com/bangerdev/banger/internal/vmdisk"
)

// guestFixture is everything a test boot needs.
type guestFixture struct {
	dir     string
	vmlinux string
	initrd  string
	base    string // read-only busybox rootfs
	overlay string
	work    string
}

// newGuestFixture builds banger-agent, an initrd with it as /init, a
// busybox base image and the per-VM disks.
func newGuestFixture(t *testing.T) *guestFixture {
	return newGuestFixtureWith(t, "")
}

// newGuestFixtureWith is newGuestFixture with another base image (shared,
// opened read-only by QEMU); "" builds the busybox one.
func newGuestFixtureWith(t *testing.T, base string) *guestFixture {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a VM")
	}
	for _, tool := range []string{"qemu-system-x86_64", "mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("busybox-static not installed")
	}
	k := kerneltest.DebianCloudKernel(t)
	f := &guestFixture{dir: t.TempDir(), vmlinux: k.Vmlinux}
	ctx := context.Background()
	f.initrd = filepath.Join(f.dir, "initrd.img")
	// The default module set includes button and evdev, which the power
	// button check below relies on.
	spec := initrd.Spec{AgentPath: buildAgent(t), ModulesDir: k.ModulesDir}
	if err := initrd.Build(ctx, spec, f.initrd); err != nil {
		t.Fatal(err)
	}
	f.base = base
	if base == "" {
		f.base = filepath.Join(f.dir, "base.ext4")
		makeBusyboxRoot(t, filepath.Join(f.dir, "rootfs"), f.base)
	}
	f.overlay = filepath.Join(f.dir, "overlay.ext4")
	f.work = filepath.Join(f.dir, "work.ext4")
	if err := vmdisk.CreateOverlay(ctx, f.overlay, 64<<20); err != nil {
		t.Fatal(err)
	}
	if err := vmdisk.CreateWork(ctx, f.work, 32<<20); err != nil {
		t.Fatal(err)
	}
	return f
}

func makeBusyboxRoot(t *testing.T, dir, img string) {
	t.Helper()
	for _, d := range []string{"bin", "sbin", "etc", "root/.config", "home/user", "usr/bin", "var", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	write := func(rel, content string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(dir, rel), []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(filepath.Join(dir, rel), mode)
	}
	write("bin/busybox", string(bb), 0o755)
	list, err := exec.Command("/bin/busybox", "--list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range strings.Fields(string(list)) {
		if a != "busybox" {
			os.Symlink("busybox", filepath.Join(dir, "bin", a))
		}
	}
	os.Symlink("/bin/busybox", filepath.Join(dir, "sbin/init"))
	write("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n", 0o644)
	write("etc/group", "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n", 0o644)
	write("root/hello.txt", "seeded from the image\n", 0o640)
	write("root/.config/rc", "x=1\n", 0o600)
	os.Chmod(filepath.Join(dir, "root"), 0o700)
	os.Chown(filepath.Join(dir, "home/user"), 1000, 1000)
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-L", "bangerbase", "-d", dir, img, "64M").CombinedOutput()
	if err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
}

// guest is a running QEMU.
type guest struct {
	cmd      *exec.Cmd
	chanSock string
	qmpSock  string
	console  *syncBuffer
	done     chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func hostKHz() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "cpu MHz" {
			if mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
				return int(mhz * 1000)
			}
		}
	}
	return 0
}

// boot starts QEMU (TCG microvm, as on hosts without usable KVM) with the
// fixture's disks, a virtio-serial agent port, user-mode networking and QMP.
func (f *guestFixture) boot(t *testing.T, extra string) *guest {
	t.Helper()
	run := t.TempDir()
	g := &guest{
		chanSock: filepath.Join(run, "agent.sock"),
		qmpSock:  filepath.Join(run, "qmp.sock"),
		console:  &syncBuffer{},
		done:     make(chan error, 1),
	}
	cmdline := "console=ttyS0 quiet cryptomgr.notests 8250.nr_uarts=1 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd random.trust_cpu=on audit=0 nowatchdog panic=-1" +
		" banger.root=/dev/vda banger.overlay=/dev/vdb banger.work=/dev/vdc banger.hostname=bangertest" +
		" banger.ip=10.0.2.15/24 banger.gw=10.0.2.2 banger.dns=10.0.2.3 banger.chan=serial:org.banger.agent banger.exit=poweroff"
	if khz := hostKHz(); khz > 0 {
		cmdline += " tsc_early_khz=" + strconv.Itoa(khz)
	}
	cmdline += " " + extra
	g.cmd = exec.Command("qemu-system-x86_64",
		"-M", "microvm,acpi=on,pit=on,pic=on,rtc=on", "-accel", "tcg", "-cpu", "max", "-m", "512", "-smp", "2",
		"-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio", "-no-reboot",
		"-kernel", f.vmlinux, "-initrd", f.initrd, "-append", cmdline,
		"-drive", "id=base,file="+f.base+",format=raw,if=none,readonly=on", "-device", "virtio-blk-device,drive=base",
		"-drive", "id=ovl,file="+f.overlay+",format=raw,if=none", "-device", "virtio-blk-device,drive=ovl",
		"-drive", "id=work,file="+f.work+",format=raw,if=none", "-device", "virtio-blk-device,drive=work",
		"-netdev", "user,id=n0", "-device", "virtio-net-device,netdev=n0",
		"-device", "virtio-serial-device",
		"-chardev", "socket,id=agent,path="+g.chanSock+",server=on,wait=off",
		"-device", "virtserialport,chardev=agent,name=org.banger.agent",
		"-qmp", "unix:"+g.qmpSock+",server=on,wait=off",
	)
	g.cmd.Stdout, g.cmd.Stderr = g.console, g.console
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { g.done <- g.cmd.Wait() }()
	t.Cleanup(func() {
		g.cmd.Process.Kill()
		<-g.done
		if t.Failed() {
			t.Logf("console:\n%s", g.console.String())
		}
	})
	return g
}

// connect dials QEMU's agent socket and runs the handshake.
func (g *guest) connect(t *testing.T) *agentclient.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var conn net.Conn
	for {
		c, err := net.Dial("unix", g.chanSock)
		if err == nil {
			conn = c
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("dialing %s: %v", g.chanSock, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c, err := agentclient.NewContext(ctx, conn)
	if err != nil {
		t.Fatalf("agent handshake: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (g *guest) waitExit(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case err := <-g.done:
		g.done <- err
		if err != nil {
			t.Fatalf("qemu exited with %v", err)
		}
	case <-time.After(within):
		t.Fatalf("qemu still running %v after shutdown", within)
	}
}

// qmp sends one QMP command.
func (g *guest) qmp(t *testing.T, command string) {
	t.Helper()
	c, err := net.Dial("unix", g.qmpSock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	r.ReadString('\n') // greeting
	for _, cmd := range []string{"qmp_capabilities", command} {
		fmt.Fprintf(c, `{"execute":%q}`+"\n", cmd)
		for {
			line, err := r.ReadString('\n')
			if err != nil || strings.Contains(line, `"error"`) {
				t.Fatalf("qmp %s: %q %v", cmd, line, err)
			}
			if strings.Contains(line, `"return"`) {
				break // events may come first
			}
		}
	}
}

func run(t *testing.T, c *agentclient.Client, req agentproto.ExecRequest) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code, err := c.Exec(ctx, req, nil, &out, &errb)
	if err != nil || code != 0 {
		t.Fatalf("exec %q: code %d err %v stderr %q stdout %q", req.Argv, code, err, errb.String(), out.String())
	}
	return out.String()
}

func sh(t *testing.T, c *agentclient.Client, script string) string {
	t.Helper()
	return run(t, c, agentproto.ExecRequest{Argv: []string{"sh", "-c", script}})
}

// TestBootQEMU boots the Debian cloud kernel with banger-agent as init and
// a busybox image, and drives it over the virtio-serial channel.
func TestBootQEMU(t *testing.T) {
	f := newGuestFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	start := time.Now()
	g := f.boot(t, "")
	c := g.connect(t)
	t.Logf("agent answered %v after QEMU start", time.Since(start).Round(time.Millisecond))

	h, err := c.Health(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h.InitMode != agent.ModeAgent || h.Hostname != "bangertest" || h.AgentVersion != "test" || !strings.HasPrefix(h.KernelRelease, "6.1.") {
		t.Errorf("health %+v", h)
	}

	// Root: overlay over the read-only base; /root on the seeded work disk.
	mounts := sh(t, c, "cat /proc/mounts")
	for _, want := range []string{"overlay / overlay", "/dev/vdc /root ext4", "/dev/vda " + agent.BaseMount + " ext4 ro", "/dev/vdb " + agent.RWMount + " ext4 rw",
		"tmpfs /tmp tmpfs", "devpts /dev/pts devpts", "tmpfs /dev/shm", "proc /proc", "sysfs /sys"} {
		if !strings.Contains(mounts, want) {
			t.Errorf("mounts lack %q:\n%s", want, mounts)
		}
	}
	if got := sh(t, c, "cat /root/hello.txt; stat -c '%a %u' /root /root/hello.txt /root/.config/rc; ls -a /root"); got !=
		"seeded from the image\n700 0\n640 0\n600 0\n.\n..\n.banger-seeded\n.config\nhello.txt\n" {
		t.Errorf("seeded /root: %q", got)
	}
	sh(t, c, "echo changed > /root/hello.txt; echo persisted > /etc/written; sync")

	// Identity and network.
	if got := sh(t, c, "hostname; cat /etc/resolv.conf; grep bangertest /etc/hosts"); got != "bangertest\nnameserver 10.0.2.3\n10.0.2.15\tbangertest\n" {
		t.Errorf("identity: %q", got)
	}
	routes := sh(t, c, "ip -4 addr show eth0; ip route")
	if !strings.Contains(routes, "inet 10.0.2.15/24") || !strings.Contains(routes, "default via 10.0.2.2 dev eth0") {
		t.Errorf("network:\n%s", routes)
	}
	// Guest → host TCP through QEMU's user network (10.0.2.2 is the host).
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hl.Close()
	go http.Serve(hl, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello guest") }))
	if got := sh(t, c, fmt.Sprintf("wget -q -O - http://10.0.2.2:%d/", hl.Addr().(*net.TCPAddr).Port)); got != "hello guest" {
		t.Errorf("guest to host http: %q", got)
	}

	// Users, stdin, PTY.
	if got := run(t, c, agentproto.ExecRequest{Argv: []string{"sh", "-c", "id -u; echo $HOME; pwd"}, User: "user"}); got != "1000\n/home/user\n/home/user\n" {
		t.Errorf("as user: %q", got)
	}
	var out bytes.Buffer
	code, err := c.Exec(ctx, agentproto.ExecRequest{Argv: []string{"sh", "-c", "wc -c; exit 5"}}, strings.NewReader(strings.Repeat("z", 300000)), &out, nil)
	if err != nil || code != 5 || strings.TrimSpace(out.String()) != "300000" {
		t.Errorf("stdin: code %d err %v out %q", code, err, out.String())
	}
	out.Reset()
	code, err = c.Exec(ctx, agentproto.ExecRequest{Argv: []string{"stty", "size"}, TTY: true, Rows: 33, Cols: 111}, nil, &out, nil)
	if err != nil || code != 0 || strings.TrimSpace(out.String()) != "33 111" {
		t.Errorf("pty: code %d err %v out %q", code, err, out.String())
	}
	code, _ = c.Exec(ctx, agentproto.ExecRequest{Argv: []string{"sh", "-c", "kill -9 $$"}}, nil, nil, nil)
	if code != 137 {
		t.Errorf("signal exit: %d", code)
	}

	// Files.
	var tarOut bytes.Buffer
	if err := c.GetTar(ctx, "/root/.config", &tarOut); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutTar(ctx, "/srv/copy", &tarOut, agentproto.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := sh(t, c, "cat /srv/copy/.config/rc; stat -c %a /srv/copy/.config/rc"); got != "x=1\n600\n" {
		t.Errorf("put/get: %q", got)
	}

	// Ports and forwarding.
	ec, err := c.OpenExec(ctx, agentproto.ExecRequest{Argv: []string{"sh", "-c", "while true; do echo pong | nc -l -p 8080; done"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ec.Close()
	var listed bool
	for i := 0; i < 100 && !listed; i++ {
		ports, err := c.Ports(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ports {
			listed = listed || (p.Proto == "tcp" && p.Port == 8080 && p.Process == "nc")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !listed {
		t.Error("nc on 8080 not listed")
	}
	fc, err := c.Dial(ctx, "tcp", 8080)
	if err != nil {
		t.Fatal(err)
	}
	fc.SetDeadline(time.Now().Add(20 * time.Second))
	b, _ := io.ReadAll(bufio.NewReader(fc))
	fc.Close()
	if string(b) != "pong\n" {
		t.Errorf("forwarded tcp: %q", b)
	}

	// A host that drops the channel and comes back gets a fresh session.
	c.Close()
	c = g.connect(t)
	if _, err := c.Health(ctx); err != nil {
		t.Fatalf("after reconnect: %v", err)
	}

	// Clean poweroff through the agent: QEMU exits.
	if err := c.Shutdown(ctx, agentproto.ShutdownPoweroff); err != nil {
		t.Fatal(err)
	}
	g.waitExit(t, 60*time.Second)
	if !strings.Contains(g.console.String(), "banger-agent:") || !strings.Contains(g.console.String(), "powering off") {
		t.Errorf("console lacks the agent's log")
	}
	checkFS(t, f.overlay)
	checkFS(t, f.work)

	// Second boot of the same VM: its writes persist, /root is not seeded
	// again, and the ACPI power button stops it the Firecracker way
	// (banger.exit=reboot: reboot(2), which QEMU -no-reboot turns into an exit).
	g2 := f.boot(t, "banger.exit=reboot")
	c2 := g2.connect(t)
	if got := sh(t, c2, "cat /root/hello.txt /etc/written"); got != "changed\npersisted\n" {
		t.Errorf("second boot: %q", got)
	}
	g2.qmp(t, "system_powerdown")
	g2.waitExit(t, 60*time.Second)
	if con := g2.console.String(); !strings.Contains(con, "power button pressed") || !strings.Contains(con, "rebooting") {
		t.Errorf("power button or reboot not seen:\n%s", con)
	}
	checkFS(t, f.overlay)
}

// checkFS runs e2fsck -fn on a disk image after the guest stopped.
func checkFS(t *testing.T, img string) {
	t.Helper()
	if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
		t.Errorf("e2fsck %s: %v\n%s", filepath.Base(img), err, out)
	}
}
