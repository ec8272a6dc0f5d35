// Package initrd generates the initramfs banger boots guests with: a newc
// cpio holding banger-agent as /init, the device nodes init needs before
// devtmpfs is mounted, and the kernel modules the guest needs, decompressed,
// with an explicit load order.
//
// Layout of the archive:
//
//	init                      the agent (0755)
//	dev/console  c 5 1        dev/null  c 1 3
//	proc sys run tmp newroot  empty mount points
//	lib/modules/<name>.ko     uncompressed modules
//	etc/modules.load          "/lib/modules/<name>.ko" per line, in load order
//
// The archive itself is not compressed, so the kernel spends no time
// unpacking it; the agent binary dominates its size.
package initrd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/fsatomic"
	"github.com/bangerdev/banger/internal/initrd/cpio"
)

// ModulesLoadPath is where the load-order file sits in the initrd (absolute,
// as the guest sees it). Each line is the absolute path of a module to pass
// to finit_module, dependencies first.
const ModulesLoadPath = "/etc/modules.load"

// ModulesPath is the directory holding the modules in the initrd.
const ModulesPath = "/lib/modules"

// formatVersion changes whenever the archive layout changes, so cached
// initrds built by an older layout are not reused.
const formatVersion = "banger-initrd-1"

// Spec says what goes into an initrd.
type Spec struct {
	// AgentPath is the banger-agent binary; it becomes /init.
	AgentPath string
	// ModulesDir is the kernel's lib/modules/<release> directory. Empty
	// means the kernel has everything built in: no modules are added.
	ModulesDir string
	// Modules are the root modules to load; their dependencies are added.
	// Nil means DefaultModules().
	Modules []string
}

func (s Spec) roots() []string {
	if s.Modules == nil {
		return DefaultModules()
	}
	return s.Modules
}

// Result describes a built initrd.
type Result struct {
	Path        string
	Size        int64
	Plan        Plan
	AgentSHA256 string // sha256 of the agent binary
}

// Build writes the initrd for spec to out atomically.
func Build(ctx context.Context, spec Spec, out string) error {
	_, err := BuildResult(ctx, spec, out)
	return err
}

// BuildResult is Build, also returning what went in.
func BuildResult(ctx context.Context, spec Spec, out string) (Result, error) {
	agent, err := os.Open(spec.AgentPath)
	if err != nil {
		if os.IsNotExist(err) {
			return Result{}, errkind.New(errkind.NotFound, "agent binary %s not found", spec.AgentPath)
		}
		return Result{}, fmt.Errorf("opening agent binary: %w", err)
	}
	defer agent.Close()
	st, err := agent.Stat()
	if err != nil {
		return Result{}, fmt.Errorf("opening agent binary: %w", err)
	}
	if !st.Mode().IsRegular() || st.Size() == 0 {
		return Result{}, errkind.New(errkind.InvalidArgument, "agent %s is not a non-empty regular file", spec.AgentPath)
	}
	if spec.ModulesDir != "" {
		if fi, err := os.Stat(spec.ModulesDir); err != nil || !fi.IsDir() {
			return Result{}, errkind.New(errkind.NotFound, "modules directory %s not found", spec.ModulesDir)
		}
	}
	plan, err := Resolve(spec.ModulesDir, spec.roots())
	if err != nil {
		return Result{}, fmt.Errorf("resolving initrd modules: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}

	h := sha256.New()
	var size int64
	err = fsatomic.WriteFrom(out, 0o644, func(w io.Writer) error {
		cw := &countWriter{w: w}
		if err := writeArchive(ctx, cw, io.TeeReader(agent, h), st.Size(), plan); err != nil {
			return err
		}
		size = cw.n
		return nil
	})
	if err != nil {
		return Result{}, fmt.Errorf("building initrd %s: %w", out, err)
	}
	return Result{Path: out, Size: size, Plan: plan, AgentSHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

func writeArchive(ctx context.Context, w io.Writer, agent io.Reader, agentSize int64, plan Plan) error {
	cw := cpio.NewWriter(w)
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "newroot", "etc", "lib", "lib/modules"} {
		if err := cw.Dir(d, 0o755); err != nil {
			return err
		}
	}
	if err := cw.CharDev("dev/console", 0o600, 5, 1); err != nil {
		return err
	}
	if err := cw.CharDev("dev/null", 0o666, 1, 3); err != nil {
		return err
	}
	if err := cw.FileFrom("init", 0o755, agentSize, agent); err != nil {
		return err
	}
	var load strings.Builder
	for _, m := range plan.Modules {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := ModulesPath + "/" + m.Name + ".ko"
		if err := cw.File(p, 0o644, m.Data); err != nil {
			return err
		}
		load.WriteString(p + "\n")
	}
	if err := cw.File(ModulesLoadPath, 0o644, []byte(load.String())); err != nil {
		return err
	}
	return cw.Close()
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

// Cached returns the path of an initrd for spec under cacheDir, building it
// when absent. kernelID identifies the kernel the modules belong to (its
// vmlinux sha256, say); the cache key also covers the agent's sha256 and the
// module roots, so a new agent build or module set gets a new file.
func Cached(ctx context.Context, cacheDir, kernelID string, spec Spec) (string, error) {
	if kernelID == "" {
		return "", errkind.New(errkind.InvalidArgument, "initrd cache: empty kernel id")
	}
	agentSum, err := fileSHA256(spec.AgentPath)
	if err != nil {
		if os.IsNotExist(err) {
			return "", errkind.New(errkind.NotFound, "agent binary %s not found", spec.AgentPath)
		}
		return "", fmt.Errorf("hashing agent binary: %w", err)
	}
	key := sha256.New()
	fmt.Fprintf(key, "%s\x00kernel=%s\x00agent=%s\x00modules=%t:%s\x00",
		formatVersion, kernelID, agentSum, spec.ModulesDir != "", strings.Join(spec.roots(), ","))
	name := "initrd-" + hex.EncodeToString(key.Sum(nil))[:32] + ".img"
	path := filepath.Join(cacheDir, name)
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() {
		now := time.Now()
		os.Chtimes(path, now, now) // mark as used, for PruneCache
		return path, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("creating initrd cache %s: %w", cacheDir, err)
	}
	res, err := BuildResult(ctx, spec, path)
	if err != nil {
		return "", err
	}
	if res.AgentSHA256 != agentSum {
		// The agent changed while we built: do not leave a mislabeled file.
		os.Remove(path)
		return "", errkind.New(errkind.Conflict, "agent binary %s changed during the initrd build", spec.AgentPath)
	}
	return path, nil
}

// PruneCache removes cached initrds under cacheDir not used (built or
// returned by Cached) for longer than maxAge, and returns their paths.
func PruneCache(cacheDir string, maxAge time.Duration) ([]string, error) {
	matches, err := filepath.Glob(filepath.Join(cacheDir, "initrd-*.img"))
	if err != nil {
		return nil, err
	}
	var removed []string
	cutoff := time.Now().Add(-maxAge)
	for _, p := range matches {
		fi, err := os.Stat(p)
		if err != nil || !fi.ModTime().Before(cutoff) {
			continue
		}
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			return removed, fmt.Errorf("pruning initrd cache: %w", err)
		}
		removed = append(removed, p)
	}
	return removed, nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
