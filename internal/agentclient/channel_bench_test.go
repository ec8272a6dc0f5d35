package agentclient_test

import (
	"bytes"
	"context"
	"io"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangerdev/banger/internal/agentclient"
	"github.com/bangerdev/banger/internal/agentproto"
	"github.com/bangerdev/banger/internal/vmdisk"
	"github.com/bangerdev/banger/internal/vmm"
	"github.com/bangerdev/banger/internal/vmm/qemu"
	"github.com/bangerdev/banger/internal/vmm/vmmtest"
)

// channelBenchBytes is what each direction moves per iteration.
const channelBenchBytes = 64 << 20

// BenchmarkChannelQEMU measures the agent channel itself on a QEMU guest
// (virtio-serial, the real agent, busybox): MB/s guest→host (exec
// `dd if=/dev/zero`), host→guest (exec `dd of=/dev/null` fed N bytes of
// stdin) and host→guest through a dial to a guest TCP port (the path of a
// forward with forward_direct off), and how busy the guest's CPU was
// meanwhile. Run with -benchtime=Nx.
func BenchmarkChannelQEMU(b *testing.B) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		b.Skip("qemu-system-x86_64 not installed")
	}
	guest := vmmtest.BuildGuest(b)
	c := bootChannelGuest(b, guest)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	blocks := "count=" + strconv.Itoa(channelBenchBytes>>16)
	var out bytes.Buffer
	if code, err := c.Exec(ctx, agentproto.ExecRequest{Argv: []string{"sh", "-c",
		"ip link set lo up; setsid nc -ll -p 5001 -e sh -c 'cat >/dev/null; echo ok' </dev/null >/dev/null 2>&1 &"}},
		nil, &out, &out); err != nil || code != 0 {
		b.Fatalf("starting guest nc: code %d, %v: %s", code, err, out.String())
	}
	var up, down, dial time.Duration
	var upBusy, downBusy, dialBusy float64
	for b.Loop() {
		up += timed(b, c, &upBusy, func() error {
			var cw countWriter
			code, err := c.Exec(ctx, agentproto.ExecRequest{Argv: []string{"dd", "if=/dev/zero", "bs=64k", blocks}}, nil, &cw, io.Discard)
			if err == nil && (code != 0 || cw.n != channelBenchBytes) {
				b.Fatalf("dd: code %d, %d bytes", code, cw.n)
			}
			return err
		})
		down += timed(b, c, &downBusy, func() error {
			code, err := c.Exec(ctx, agentproto.ExecRequest{Argv: []string{"dd", "of=/dev/null", "bs=64k"}},
				io.LimitReader(zeros{}, channelBenchBytes), io.Discard, io.Discard)
			if err == nil && code != 0 {
				b.Fatalf("dd: code %d", code)
			}
			return err
		})
		dial += timed(b, c, &dialBusy, func() error { return dialTransfer(ctx, c) })
	}
	mbs := func(d time.Duration) float64 {
		return float64(channelBenchBytes) * float64(b.N) / d.Seconds() / 1e6
	}
	b.ReportMetric(mbs(up), "up-MB/s")
	b.ReportMetric(mbs(down), "down-MB/s")
	b.ReportMetric(mbs(dial), "dial-MB/s")
	b.ReportMetric(upBusy/float64(b.N), "up-guest-busy-%")
	b.ReportMetric(downBusy/float64(b.N), "down-guest-busy-%")
	b.ReportMetric(dialBusy/float64(b.N), "dial-guest-busy-%")
}

// timed runs f and returns how long it took; it adds to busy the share
// (in percent) of the guest's CPU time that was not idle meanwhile.
func timed(b *testing.B, c *agentclient.Client, busy *float64, f func() error) time.Duration {
	before := guestCPU(b, c)
	start := time.Now()
	if err := f(); err != nil {
		b.Fatal(err)
	}
	d := time.Since(start)
	after := guestCPU(b, c)
	total, idle := after[0]-before[0], after[1]-before[1]
	if total > 0 {
		*busy += 100 * (total - idle) / total
	}
	return d
}

// guestCPU returns the guest's total and idle (idle+iowait) jiffies.
func guestCPU(b *testing.B, c *agentclient.Client) [2]float64 {
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.Exec(ctx, agentproto.ExecRequest{Argv: []string{"head", "-n", "1", "/proc/stat"}}, nil, &out, nil); err != nil {
		b.Fatal(err)
	}
	var r [2]float64
	for i, f := range strings.Fields(out.String())[1:] {
		v, _ := strconv.ParseFloat(f, 64)
		r[0] += v
		if i == 3 || i == 4 {
			r[1] += v
		}
	}
	return r
}

// dialTransfer sends channelBenchBytes to the guest's nc on port 5001 and
// waits for its "ok", retrying the dial while nc is not listening yet.
func dialTransfer(ctx context.Context, c *agentclient.Client) error {
	var conn interface {
		io.ReadWriteCloser
		CloseWrite() error
	}
	for i := 0; ; i++ {
		nc, err := c.Dial(ctx, "tcp", 5001)
		if err == nil {
			conn = nc.(interface {
				io.ReadWriteCloser
				CloseWrite() error
			})
			break
		}
		if i == 100 {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	defer conn.Close()
	if _, err := io.Copy(conn, io.LimitReader(zeros{}, channelBenchBytes)); err != nil {
		return err
	}
	_ = conn.CloseWrite()
	ans, err := io.ReadAll(conn)
	if err != nil {
		return err
	}
	if string(bytes.TrimSpace(ans)) != "ok" {
		return io.ErrUnexpectedEOF
	}
	return nil
}

func bootChannelGuest(b testing.TB, guest vmmtest.GuestArtifacts) *agentclient.Client {
	dir := b.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	overlay, work := filepath.Join(dir, "overlay.ext4"), filepath.Join(dir, "work.ext4")
	if err := vmdisk.CreateOverlay(ctx, overlay, 1<<30); err != nil {
		b.Fatal(err)
	}
	if err := vmdisk.CreateWork(ctx, work, 1<<30); err != nil {
		b.Fatal(err)
	}
	spec := vmm.Spec{ID: "chbench", Name: "chbench", RunDir: filepath.Join(dir, "run"),
		Kernel: guest.Kernel, Initrd: guest.Initrd, Cmdline: guest.Cmdline, CPUs: 1, MemoryMiB: 512,
		Disks: []vmm.Disk{{Path: guest.BaseDisk, ReadOnly: true}, {Path: overlay}, {Path: work}}}
	inst, err := qemu.New(qemu.Options{}).Boot(ctx, spec)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = inst.Kill(syscall.SIGKILL)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = inst.Wait(ctx)
	})
	conn, err := inst.DialAgent(ctx)
	if err != nil {
		b.Fatal(err)
	}
	c, err := agentclient.NewContext(ctx, conn)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

type countWriter struct{ n int64 }

func (w *countWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	return len(p), nil
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
