// Command workspace benchmarks banger's workspace copy and `vm run`
// against their peers, on real QEMU guests:
//
//   - copy: `banger vm workspace prepare VM REPO` (git listing, tar, the
//     daemon's file route, the agent's put operation) versus the same
//     directory sent as raw bytes through the same agent channel:
//     `tar c -C REPO . | banger vm exec VM -- tar x -C DIR`. The repository
//     (~200 MB by default: many small files in nested directories plus a
//     few large ones, all committed) is generated once and cached. Both
//     sides carry the same bytes (work tree and .git).
//
//   - run: `banger vm run --rm -- true` on the busybox image versus a raw
//     QEMU started by hand with the kernel, initrd and command line banger
//     used, booted to an agent health answer and powered off.
//
//     go run ./bench/workspace [-n 3] [-mb 200] [-cache DIR] [-only copy|run]
//
// It builds the binaries, imports the cached Debian cloud kernel and
// builds the busybox image (scripts/lib/busybox-rootfs.sh) in a private
// BANGER_HOME; run it as root. Ratios are peer time / banger time: ≥ 1
// means banger is as fast as its peer.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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

func defaultCache() string {
	if d := os.Getenv("BANGER_TEST_CACHE"); d != "" {
		return d
	}
	return "/var/cache/banger-test"
}

func main() {
	n := flag.Int("n", 3, "measured runs per side")
	mb := flag.Int("mb", 200, "size of the generated repository's work tree in MB")
	cache := flag.String("cache", defaultCache(), "fixture cache (kernel .deb under kernel/, generated repos under bench-workspace/)")
	only := flag.String("only", "", "run only one part: copy or run")
	mem := flag.Int("memory", 2048, "guest memory in MiB")
	cpus := flag.Int("cpus", 2, "guest vCPUs")
	flag.Parse()
	ctx := context.Background()
	if err := bench(ctx, *n, *mb, *cache, *only, *mem, *cpus); err != nil {
		logf("bench: %v", err)
		os.Exit(1)
	}
}

// env is a private banger installation.
type env struct {
	home, bin string
	sizing    []string
}

func (e *env) environ() []string {
	return append(os.Environ(), "BANGER_HOME="+e.home, "BANGER_DAEMON_BIN="+filepath.Join(e.bin, "bangerd"))
}

// banger runs the CLI and returns its stdout.
func (e *env) banger(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(e.bin, "banger"), args...)
	cmd.Env = e.environ()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("banger %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// sh runs a shell pipeline with the env's variables and returns its wall time.
func (e *env) sh(ctx context.Context, script string) (time.Duration, error) {
	cmd := exec.CommandContext(ctx, "bash", "-o", "pipefail", "-c", script)
	cmd.Env = append(e.environ(), "BANGER="+filepath.Join(e.bin, "banger"))
	var errb bytes.Buffer
	cmd.Stderr = &errb
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		return d, fmt.Errorf("%s: %v: %s", script, err, strings.TrimSpace(errb.String()))
	}
	return d, nil
}

func bench(ctx context.Context, n, mb int, cache, only string, mem, cpus int) error {
	if os.Geteuid() != 0 {
		return errors.New("run as root (the busybox image build needs it)")
	}
	for _, tool := range []string{"qemu-system-x86_64", "git", "tar", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found", tool)
		}
	}
	debs, _ := filepath.Glob(filepath.Join(cache, "kernel", "linux-image-*.deb"))
	if len(debs) == 0 {
		return fmt.Errorf("no kernel .deb in %s/kernel (run scripts/setup.sh)", cache)
	}
	work, err := os.MkdirTemp("", "bench-workspace-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	e := &env{home: filepath.Join(work, "home"), bin: filepath.Join(work, "bin"),
		sizing: []string{"--image", "busybox", "--memory", fmt.Sprint(mem), "--cpus", fmt.Sprint(cpus), "--net", "none"}}
	if err := build(ctx, e.bin); err != nil {
		return err
	}
	defer func() { _, _ = e.banger(context.Background(), "daemon", "stop") }()
	if _, err := e.banger(ctx, "kernel", "import", "cloud", "--from-deb", debs[0]); err != nil {
		return err
	}
	rootfs := filepath.Join(work, "busybox.ext4")
	if out, err := exec.CommandContext(ctx, "scripts/lib/busybox-rootfs.sh", rootfs).CombinedOutput(); err != nil {
		return fmt.Errorf("busybox rootfs: %v: %s", err, out)
	}
	if _, err := e.banger(ctx, "image", "register", "--name", "busybox", "--rootfs", rootfs, "--kernel-ref", "cloud"); err != nil {
		return err
	}
	if _, err := e.banger(ctx, "image", "promote", "busybox"); err != nil {
		return err
	}
	if only == "" || only == "copy" {
		repo, err := ensureRepo(ctx, filepath.Join(cache, "bench-workspace"), mb)
		if err != nil {
			return err
		}
		if err := benchCopy(ctx, e, repo, n); err != nil {
			return err
		}
	}
	if only == "" || only == "run" {
		if err := benchRun(ctx, e, n); err != nil {
			return err
		}
	}
	return nil
}

// build compiles banger, bangerd and the static agent into dir.
func build(ctx context.Context, dir string) error {
	for _, b := range []struct{ out, pkg string }{
		{"banger", "./cmd/banger"}, {"bangerd", "./cmd/bangerd"}, {"banger-agent", "./cmd/banger-agent"},
	} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, b.out), b.pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("building %s: %v: %s", b.pkg, err, out)
		}
	}
	return nil
}

func benchCopy(ctx context.Context, e *env, repo string, n int) error {
	size, files := dirSize(repo)
	logf("repository %s: %d files, %.0f MB (work tree + .git)", repo, files, float64(size)/1e6)
	if _, err := e.banger(ctx, append([]string{"vm", "create", "--name", "bench"}, e.sizing...)...); err != nil {
		return err
	}
	defer func() { _, _ = e.banger(context.Background(), "vm", "delete", "-f", "bench") }()
	clean := func(dir string) error {
		_, err := e.banger(ctx, "vm", "exec", "-w", "/root", "bench", "--", "rm", "-rf", dir)
		return err
	}
	count := func(dir string) (string, error) {
		out, err := e.banger(ctx, "vm", "exec", "-w", "/root", "bench", "--", "sh", "-c", "find "+dir+" -type f | wc -l; du -sk "+dir+" | cut -f1")
		return strings.Join(strings.Fields(out), " files, KiB "), err
	}
	var banger, peer []time.Duration
	for i := -1; i < n; i++ { // run -1 warms the host page cache and the guest
		sides := []string{"banger", "peer"}
		if i%2 == 1 {
			slices.Reverse(sides)
		}
		for _, side := range sides {
			dir := fmt.Sprintf("/root/%s-%d", side, i+1)
			var d time.Duration
			var err error
			if side == "banger" {
				d, err = e.sh(ctx, fmt.Sprintf(`"$BANGER" vm workspace prepare bench %q --guest-path %s`, repo, dir))
			} else {
				d, err = e.sh(ctx, fmt.Sprintf(`tar -C %q -cf - . | "$BANGER" vm exec -w /root bench -- sh -c 'mkdir -p %s && tar -xf - -C %s'`, repo, dir, dir))
			}
			if err != nil {
				return err
			}
			got, err := count(dir)
			if err != nil {
				return err
			}
			logf("copy run %d %-6s %7.2fs  %6.1f MB/s  (guest: %s)", i+1, side, d.Seconds(), float64(size)/1e6/d.Seconds(), got)
			if i >= 0 {
				if side == "banger" {
					banger = append(banger, d)
				} else {
					peer = append(peer, d)
				}
			}
			if err := clean(dir); err != nil {
				return err
			}
		}
	}
	b, p := median(banger), median(peer)
	fmt.Printf("copy %.0f MB, %d files: banger %.2fs (%.1f MB/s), tar through vm exec %.2fs (%.1f MB/s), ratio %.2f (target >= 0.8)\n",
		float64(size)/1e6, files, b.Seconds(), float64(size)/1e6/b.Seconds(), p.Seconds(), float64(size)/1e6/p.Seconds(), p.Seconds()/b.Seconds())
	return nil
}

func benchRun(ctx context.Context, e *env, n int) error {
	var runs []time.Duration
	for i := -1; i < n; i++ {
		d, err := e.sh(ctx, `"$BANGER" vm run --rm `+strings.Join(e.sizing, " ")+` -- true`)
		if err != nil {
			return err
		}
		logf("vm run --rm -- true: run %d %.2fs", i+1, d.Seconds())
		if i >= 0 {
			runs = append(runs, d)
		}
	}
	spec, err := qemuSpec(ctx, e)
	if err != nil {
		return err
	}
	var raws []rawTimes
	for i := 0; i < n; i++ {
		r, err := rawBoot(ctx, spec)
		if err != nil {
			return err
		}
		logf("raw qemu: run %d health %.2fs exit %.2fs", i+1, r.health.Seconds(), r.exit.Seconds())
		raws = append(raws, r)
	}
	var health, exit []time.Duration
	for _, r := range raws {
		health, exit = append(health, r.health), append(exit, r.exit)
	}
	b := median(runs)
	fmt.Printf("vm run --rm -- true: %.2fs; raw qemu boot to agent health %.2fs, to exit after poweroff %.2fs; ratio (raw exit / vm run) %.2f\n",
		b.Seconds(), median(health).Seconds(), median(exit).Seconds(), median(exit).Seconds()/b.Seconds())
	return nil
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func dirSize(dir string) (int64, int) {
	var size int64
	files := 0
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			size += fi.Size()
			files++
		}
		return nil
	})
	return size, files
}

// vmJSON is the part of `vm show -o json` the benchmark reads.
type vmJSON struct {
	ID  string `json:"id"`
	Dir string `json:"dir"`
}

func showVM(ctx context.Context, e *env, name string) (vmJSON, error) {
	out, err := e.banger(ctx, "vm", "show", name, "-o", "json")
	if err != nil {
		return vmJSON{}, err
	}
	var v vmJSON
	return v, json.Unmarshal([]byte(out), &v)
}
