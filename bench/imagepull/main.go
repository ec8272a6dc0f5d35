// Command imagepull benchmarks banger's OCI image → ext4 pipeline
// (imagepull.PullToExt4) against the usual peer toolchain,
// `skopeo copy` + `umoci raw unpack` + `mkfs.ext4 -d`, on a Debian
// bookworm minbase image served by a local docker-registry on loopback.
//
//	go run ./bench/imagepull [-n 5] [-variant min|big] [-cache DIR]
//
// The debootstrapped rootfs is cached (as three layer tarballs: usr, var,
// rest) under -cache, so reruns skip debootstrap. Every run starts with an
// empty blob cache and, when run as root, dropped page caches. Both sides
// run as child processes so that their peak RSS can be read from rusage.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"runtime/trace"
	"sort"
	"syscall"
	"time"

	"github.com/bangerdev/banger/internal/imagepull"
	"github.com/bangerdev/banger/internal/testenv"
)

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

func defaultCache() string {
	if d := os.Getenv("BANGER_TEST_CACHE"); d != "" {
		return filepath.Join(d, "bench-imagepull")
	}
	return "/var/cache/banger-test/bench-imagepull"
}

func main() {
	n := flag.Int("n", 5, "runs per pipeline")
	verify := flag.Bool("verify", true, "as root, loop-mount the first banger and peer images and compare every file")
	cache := flag.String("cache", defaultCache(), "cache dir for the debootstrapped layers")
	variant := flag.String("variant", "min", "image: min (debootstrap minbase) or big (plus git, curl, python3, ping)")
	mode := flag.String("mode", "", "internal: banger (run one pull) or push (push the layers to -ref)")
	ref := flag.String("ref", "", "internal: image reference")
	out := flag.String("out", "", "internal: output image")
	blobs := flag.String("blobs", "", "internal: blob cache dir")
	pureGo := flag.Bool("purego", false, "internal: decompress gzip in process even if igzip is installed")
	flag.Parse()
	ctx := context.Background()
	if *mode == "push" { // push the cached layers to -ref (for manual profiling)
		layers, err := ensureLayers(ctx, *cache, *variant)
		if err == nil {
			_, err = pushImage(*ref, layers)
		}
		if err != nil {
			logf("push: %v", err)
			os.Exit(1)
		}
		return
	}
	if *mode == "banger" {
		if err := runBanger(ctx, *ref, *out, *blobs, *pureGo); err != nil {
			logf("banger: %v", err)
			os.Exit(1)
		}
		return
	}
	if err := bench(ctx, *n, *cache, *variant, *verify); err != nil {
		logf("bench: %v", err)
		os.Exit(1)
	}
}

// runBanger is the child side: one cold pull straight to ext4.
func runBanger(ctx context.Context, ref, out, blobs string, pureGo bool) error {
	start := time.Now()
	last := imagepull.Stage("")
	opts := imagepull.Ext4Options{Options: imagepull.Options{CacheDir: blobs, PureGo: pureGo}}
	if os.Getenv("BENCH_TRACE") != "" {
		opts.Progress = func(p imagepull.Progress) {
			if p.Stage != last || p.Stage == imagepull.StageFlattening || p.Bytes == p.Total {
				logf("%6.3fs %s %d/%d", time.Since(start).Seconds(), p.Stage, p.Layer, p.Layers)
				last = p.Stage
			}
		}
	}
	if p := os.Getenv("BENCH_CPUPROFILE"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if p := os.Getenv("BENCH_RTRACE"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		trace.Start(f)
		defer trace.Stop()
	}
	res, err := imagepull.PullToExt4(ctx, ref, out, opts)
	if os.Getenv("BENCH_TRACE") != "" {
		logf("%6.3fs done", time.Since(start).Seconds())
	}
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res.Stats)
}

type sample struct {
	wall   time.Duration
	maxRSS int64 // KiB, largest single process
	cpu    time.Duration
	stages []time.Duration
}

func bench(ctx context.Context, n int, cacheDir, variant string, verify bool) error {
	for _, tool := range []string{"docker-registry", "skopeo", "umoci", "mkfs.ext4", "e2fsck"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found (Debian packages: docker-registry skopeo umoci e2fsprogs)", tool)
		}
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return err
	}
	layers, err := ensureLayers(ctx, cacheDir, variant)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "bench-imagepull-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	reg, err := testenv.RunRegistry(filepath.Join(work, "registry"))
	if err != nil {
		return fmt.Errorf("starting docker-registry: %w", err)
	}
	defer reg.Stop()
	t0 := time.Now()
	ref, err := pushImage(reg.Ref("bench/"+variant+":latest"), layers)
	if err != nil {
		return err
	}
	logf("pushed %s in %.1fs", ref, time.Since(t0).Seconds())
	self, err := os.Executable()
	if err != nil {
		return err
	}
	root := os.Geteuid() == 0
	if !root {
		logf("not root: page caches are not dropped and umoci runs rootless")
	}
	sides := []string{"banger", "peer"}
	if _, err := exec.LookPath("igzip"); err == nil {
		sides = append(sides, "banger-purego")
	} else {
		logf("igzip not installed (Debian package isal): banger decompresses gzip in process")
	}
	// A warm blob cache (a second image from the same layers): no download,
	// cached blobs are re-verified.
	warmBlobs := filepath.Join(work, "warm-blobs")
	if _, err := runChildren(ctx, []*exec.Cmd{exec.Command(self, "-mode=banger", "-ref="+ref,
		"-out="+filepath.Join(work, "warm.ext4"), "-blobs="+warmBlobs)}); err != nil {
		return fmt.Errorf("filling the warm cache: %w", err)
	}
	os.Remove(filepath.Join(work, "warm.ext4"))
	sides = append(sides, "banger-warm")
	samples := map[string][]sample{}
	for i := 0; i < n; i++ {
		for _, side := range sides {
			dir := filepath.Join(work, fmt.Sprintf("%s-%d", side, i))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			if root {
				dropCaches()
			}
			var s sample
			if side == "peer" {
				s, err = runChildren(ctx, peerCommands(ref, dir, root))
			} else {
				blobs := filepath.Join(dir, "blobs")
				if side == "banger-warm" {
					blobs = warmBlobs
				}
				s, err = runChildren(ctx, []*exec.Cmd{exec.Command(self, "-mode=banger", "-ref="+ref,
					"-out="+filepath.Join(dir, "rootfs.ext4"), "-blobs="+blobs,
					fmt.Sprintf("-purego=%v", side == "banger-purego"))})
			}
			if err != nil {
				return fmt.Errorf("%s run %d: %w", side, i+1, err)
			}
			if err := fsck(filepath.Join(dir, "rootfs.ext4")); err != nil {
				return fmt.Errorf("%s run %d: %w", side, i+1, err)
			}
			logf("run %d %-13s %6.2fs  cpu %5.2fs  peak RSS %5.1f MiB  stages %v", i+1, side, s.wall.Seconds(), s.cpu.Seconds(), float64(s.maxRSS)/1024, s.stages)
			samples[side] = append(samples[side], s)
			if i == 0 && side == "peer" && verify && root {
				// Compare the first banger and peer images file by file.
				if err := sameTree(filepath.Join(work, "banger-0", "rootfs.ext4"), filepath.Join(dir, "rootfs.ext4"), work); err != nil {
					return err
				}
			}
			if !(i == 0 && side == "banger") {
				os.RemoveAll(dir)
			}
		}
		os.RemoveAll(filepath.Join(work, "banger-0"))
	}
	p := median(samples["peer"])
	fmt.Printf("image: debootstrap bookworm %s, 3 gzip layers, %d runs each, cold blob cache unless noted%s\n", variant, n, map[bool]string{true: ", page caches dropped", false: ""}[root])
	fmt.Printf("%-48s %8s %8s %14s %8s\n", "pipeline", "median s", "cpu s", "peak RSS MiB", "ratio")
	labels := map[string]string{
		"banger":        "banger PullToExt4",
		"banger-purego": "banger PullToExt4, pure-Go gzip",
		"banger-warm":   "banger PullToExt4, warm blob cache",
		"peer":          "peer skopeo + umoci raw unpack + mkfs.ext4 -d",
	}
	for _, side := range sides {
		m := median(samples[side])
		fmt.Printf("%-48s %8.2f %8.2f %14.1f %8.2f\n", labels[side], m.wall.Seconds(), m.cpu.Seconds(), float64(m.maxRSS)/1024, m.wall.Seconds()/p.wall.Seconds())
	}
	b := median(samples["banger"])
	fmt.Printf("banger/peer: %.2f (target ≤ 0.35), banger peak RSS %.1f MiB (target ≤ 64)\n",
		b.wall.Seconds()/p.wall.Seconds(), float64(b.maxRSS)/1024)
	return nil
}

// peerCommands is what a user does today.
func peerCommands(ref, dir string, root bool) []*exec.Cmd {
	unpack := []string{"raw", "unpack"}
	if !root {
		unpack = append(unpack, "--rootless")
	}
	unpack = append(unpack, "--image", filepath.Join(dir, "oci")+":img", filepath.Join(dir, "tree"))
	return []*exec.Cmd{
		exec.Command("skopeo", "copy", "-q", "--src-tls-verify=false", "docker://"+ref, "oci:"+filepath.Join(dir, "oci")+":img"),
		exec.Command("umoci", unpack...),
		exec.Command("mkfs.ext4", "-q", "-F", "-L", "rootfs", "-d", filepath.Join(dir, "tree"), filepath.Join(dir, "rootfs.ext4"), "1G"),
	}
}

// runChildren runs cmds in sequence, timing the whole and each, and keeps
// the largest peak RSS.
func runChildren(ctx context.Context, cmds []*exec.Cmd) (sample, error) {
	var s sample
	start := time.Now()
	for _, c := range cmds {
		t := time.Now()
		out, err := c.CombinedOutput()
		if err != nil {
			return s, fmt.Errorf("%s: %w\n%s", c.Path, err, tail(out))
		}
		s.stages = append(s.stages, time.Since(t).Round(10*time.Millisecond))
		if ru, ok := c.ProcessState.SysUsage().(*syscall.Rusage); ok && ru.Maxrss > s.maxRSS {
			s.maxRSS = ru.Maxrss
		}
		s.cpu += c.ProcessState.UserTime() + c.ProcessState.SystemTime()
	}
	s.wall = time.Since(start)
	return s, nil
}

func fsck(img string) error {
	out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput()
	if err != nil {
		return fmt.Errorf("e2fsck -fn %s: %w\n%s", img, err, tail(out))
	}
	return nil
}

func dropCaches() {
	syscall.Sync()
	_ = os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200)
}

func median(ss []sample) sample {
	if len(ss) == 0 {
		return sample{}
	}
	walls := append([]sample(nil), ss...)
	sort.Slice(walls, func(i, j int) bool { return walls[i].wall < walls[j].wall })
	m := walls[len(walls)/2]
	var cpus []time.Duration
	for _, s := range ss {
		cpus = append(cpus, s.cpu)
	}
	sort.Slice(cpus, func(i, j int) bool { return cpus[i] < cpus[j] })
	m.cpu = cpus[len(cpus)/2]
	var rss []int64
	for _, s := range ss {
		rss = append(rss, s.maxRSS)
	}
	sort.Slice(rss, func(i, j int) bool { return rss[i] < rss[j] })
	m.maxRSS = rss[len(rss)/2]
	return m
}
