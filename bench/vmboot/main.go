// Command vmboot benchmarks banger's cold VM path against a raw QEMU boot
// of the same guest:
//
//	go run ./bench/vmboot [-n 5] [-writes=false]
//
// (a) banger: `banger vm create` + `banger vm exec NAME -- true` +
// `banger vm delete -f NAME` on the busybox image, three CLI processes
// against a real bangerd (what `banger vm run` does).
//
// (b) raw QEMU, the peer: the exact QEMU command line the driver used
// (read from /proc/PID/cmdline of a warm-up VM), with the per-VM paths
// moved to a fresh directory holding freshly made overlay and work disks
// (made before the clock starts). The clock runs from the QEMU exec until
// QEMU exits: the agent answers, runs `true`, and powers the guest off.
// Same kernel, initrd, base disk, memory, CPUs and devices. Both sides run
// without a NIC (--net none): a tap belongs to the daemon's pool and
// cannot be replayed by hand, and host networking may be taken by another
// daemon on a shared host.
//
// The runs alternate (banger first on even runs, raw first on odd ones)
// after one warm-up of each. The daemon's own time comes from its
// "vm running" log line: request → VMM exec, and agent answered → response.
// Then bytes written by `vm create` for a 256 MiB and a 4 GiB image, from
// /proc/PID/io of bangerd (which includes the mkfs it runs) and of QEMU,
// and the blocks allocated in the VM's directory.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

func main() {
	n := flag.Int("n", 5, "alternating runs of each side (at least 5 for the report)")
	writes := flag.Bool("writes", true, "also measure bytes written by vm create for 256 MiB and 4 GiB images")
	cache := flag.String("cache", defaultCache(), "directory with the cached Debian cloud kernel .deb")
	keep := flag.Bool("keep", false, "keep the temporary BANGER_HOME (for inspection)")
	flag.Parse()
	if err := run(context.Background(), *n, *writes, *cache, *keep); err != nil {
		logf("vmboot: %v", err)
		os.Exit(1)
	}
}

func defaultCache() string {
	if d := os.Getenv("BANGER_TEST_CACHE"); d != "" {
		return d
	}
	return "/var/cache/banger-test"
}

func run(ctx context.Context, n int, writes bool, cache string, keep bool) error {
	if n < 1 {
		return fmt.Errorf("-n must be at least 1")
	}
	for _, tool := range []string{"qemu-system-x86_64", "mkfs.ext4", "resize2fs", "debugfs", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not installed (run scripts/setup.sh)", tool)
		}
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "vmb")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(tmp)
	} else {
		logf("keeping %s", tmp)
	}
	in := &install{bin: filepath.Join(tmp, "bin"), home: filepath.Join(tmp, "home")}
	defer in.close()

	// Leave the host network alone (the sides run without a NIC anyway).
	if err := os.MkdirAll(filepath.Join(in.home, "config"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(in.home, "config", "config.toml"), []byte("[network]\ndisabled = true\n"), 0o644); err != nil {
		return err
	}
	logf("building banger, bangerd and banger-agent")
	if err := build(ctx, root, in.bin); err != nil {
		return err
	}
	deb, err := kernelDeb(ctx, cache)
	if err != nil {
		return err
	}
	if _, err := in.run(ctx, "kernel", "import", "cloud", "--from-deb", deb); err != nil {
		return err
	}
	rootfs := filepath.Join(tmp, "busybox.ext4")
	if err := busyboxRootfs(ctx, root, rootfs, 0); err != nil {
		return err
	}
	if _, err := in.run(ctx, "image", "register", "--name", "busybox", "--rootfs", rootfs, "--kernel-ref", "cloud"); err != nil {
		return err
	}

	// Warm-up: builds the initrd cache, and gives the raw side its command line.
	logf("warm-up (builds the initrd; captures the driver's QEMU command line)")
	if _, err := in.run(ctx, "vm", "create", "--name", "warm", "--image", "busybox", "--net", "none"); err != nil {
		return err
	}
	vm, err := showVM(ctx, in, "warm")
	if err != nil {
		return err
	}
	tmpl, err := captureTemplate(vm.Dir)
	if err != nil {
		return err
	}
	if _, err := in.run(ctx, "vm", "exec", "warm", "--", "true"); err != nil {
		return err
	}
	if _, err := in.run(ctx, "vm", "delete", "-f", "warm"); err != nil {
		return err
	}
	rawDir := filepath.Join(tmp, "raw")
	if _, err := rawRun(ctx, tmpl, rawDir); err != nil {
		return fmt.Errorf("raw warm-up: %w", err)
	}
	logf("accel %s; raw command line:\n  %s", vm.Accel, strings.Join(tmpl.argvFor(rawDir), " "))

	var bs []bangerTimes
	var rs []rawTimes
	for i := range n {
		for side := range 2 {
			if (i+side)%2 == 0 {
				b, err := bangerRun(ctx, in, fmt.Sprintf("b%d", i), "busybox")
				if err != nil {
					return fmt.Errorf("banger run %d: %w", i, err)
				}
				bs = append(bs, b)
				logf("run %d banger: total %v (create %v, exec %v, delete %v; daemon own %v; guest ready at %v)", i,
					ms(b.total), ms(b.create), ms(b.exec), ms(b.del), ms(b.daemon.own()), ms(b.guestReady))
			} else {
				r, err := rawRun(ctx, tmpl, rawDir)
				if err != nil {
					return fmt.Errorf("raw run %d: %w", i, err)
				}
				rs = append(rs, r)
				logf("run %d raw:    exit %v (agent %v, exec %v; guest ready at %v)", i, ms(r.exit), ms(r.agent), ms(r.exec), ms(r.guestReady))
			}
		}
	}
	var wr []writeResult
	if writes {
		logf("bytes written by vm create (256 MiB and 4 GiB images)")
		if wr, err = measureWrites(ctx, in, root, tmp, []int64{256 << 20, 4 << 30}, max(9, 2*n), max(3, n/2)); err != nil {
			return err
		}
	}
	report(os.Stdout, vm.Accel, bs, rs, wr)
	return nil
}

func ms(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

// stats are the median, min and max of some durations.
type stats struct{ med, min, max time.Duration }

func statsOf(ds []time.Duration) stats {
	if len(ds) == 0 {
		return stats{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return stats{med: med, min: s[0], max: s[len(s)-1]}
}

func (s stats) String() string {
	return fmt.Sprintf("%7.0f ms  (%.0f–%.0f)", msf(s.med), msf(s.min), msf(s.max))
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func medianInt(v []int64) int64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}
