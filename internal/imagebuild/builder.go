// Package imagebuild executes a resolved Dockerfile (see
// internal/dockerfile) without Docker: every filesystem step runs in a
// banger build VM through the guest agent, and the result is flattened
// into an ext4 root filesystem.
//
// A build VM boots the FROM image's rootfs read-only with a writable
// overlay disk, exactly like any banger VM but without a work disk (so
// /root is part of the image) and with the agent as init. RUN is an agent
// exec, COPY/ADD and WORKDIR are tar streams the agent extracts. After each
// step the VM is stopped cleanly and its overlay disk becomes the step's
// cache entry; the next step boots on a copy of it. The final state is
// exported from a build VM as the merged root (the guest kernel applies the
// overlay's whiteouts) and written as a compact ext4.
//
// The VM side is behind the Runner interface: VMRunner boots real VMs with
// a vmm.Driver; tests use a chroot guest.
package imagebuild

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bangerdev/banger/internal/agentproto"
	"github.com/bangerdev/banger/internal/dockerfile"
	"github.com/bangerdev/banger/internal/errkind"
)

// Guest is what a build needs from a build VM's agent.
// *agentclient.Client implements it.
type Guest interface {
	Exec(ctx context.Context, req agentproto.ExecRequest, stdin io.Reader, stdout, stderr io.Writer) (int, error)
	PutTar(ctx context.Context, dir string, r io.Reader, opts agentproto.PutOptions) (agentproto.PutResult, error)
	GetTar(ctx context.Context, path string, w io.Writer) error
}

// Machine is a running build VM.
type Machine interface {
	Guest
	// Stop shuts the guest down cleanly (the overlay disk is consistent
	// afterwards) and releases the VM. It kills the VM when the guest does
	// not stop in time.
	Stop(ctx context.Context) error
}

// MachineSpec says what a build VM boots.
type MachineSpec struct {
	// Base is the read-only root filesystem (the FROM image's rootfs.ext4).
	Base string
	// Overlay is the writable disk that holds the overlay's upper layer;
	// it may already hold earlier steps' changes.
	Overlay string
	// Network is NetworkNone or NetworkNAT.
	Network string
}

// Build VM networks.
const (
	NetworkNone = "none"
	NetworkNAT  = "nat"
)

// Runner provides build VMs and their disks.
type Runner interface {
	// NewOverlay creates an empty overlay disk at path.
	NewOverlay(ctx context.Context, path string) error
	// Boot starts a build VM and returns once its agent answers.
	Boot(ctx context.Context, spec MachineSpec) (Machine, error)
	// RootNames lists the top-level names of the root filesystem that base
	// and a (stopped) overlay form; names the overlay deleted may appear.
	RootNames(ctx context.Context, base, overlay string) ([]string, error)
}

// Base is the image a build starts FROM.
type Base struct {
	// Rootfs is its root filesystem.
	Rootfs string
	// Digest identifies its content for the cache (a manifest digest, or
	// the image id and creation time of a local image).
	Digest string
}

// Event reports build progress.
type Event struct {
	// Step is 1-based among Steps filesystem steps; 0 for build-level news.
	Step, Steps int
	Line        int
	Text        string
	Cached      bool
	Message     string
}

// Request is one build.
type Request struct {
	Plan    *dockerfile.Plan
	Context string // the build context directory
	Base    Base
	// Network of the build VMs: NetworkNone (default) or NetworkNAT.
	Network string
	// Output is where the root filesystem (a compact ext4) is written.
	Output string
	// Log receives the build log: step headers and RUN output.
	Log io.Writer
	// Progress, when set, receives events.
	Progress func(Event)
	// NoCache ignores and does not fill the step cache.
	NoCache bool
}

// StepResult says how one filesystem step went.
type StepResult struct {
	Line     int           `json:"line"`
	Text     string        `json:"text"`
	Cached   bool          `json:"cached"`
	Duration time.Duration `json:"duration"`
	Key      string        `json:"key"`
}

// Result is a finished build.
type Result struct {
	// Key is the cache key of the final state.
	Key   string       `json:"key"`
	Steps []StepResult `json:"steps"`
	// Cached is true when nothing ran (the result came from the cache).
	Cached bool `json:"cached"`
	// Bytes is the length of the written root filesystem.
	Bytes int64 `json:"bytes"`
}

// StepError is a RUN step that exited non-zero.
type StepError struct {
	Line     int
	Text     string
	ExitCode int
	// Output is the end of the step's output.
	Output string
}

func (e *StepError) Error() string {
	return fmt.Sprintf("line %d: %s: exit code %d", e.Line, e.Text, e.ExitCode)
}

// Unwrap classifies the failure as InvalidArgument (the Dockerfile's).
func (e *StepError) Unwrap() error { return errkind.InvalidArgument }

func stepErr(line int, format string, args ...any) error {
	return errkind.New(errkind.InvalidArgument, "line %d: %s", line, fmt.Sprintf(format, args...))
}

// Builder runs builds against a step cache directory.
type Builder struct {
	// CacheDir holds the step cache (see cache.go) and scratch space.
	CacheDir string
	Runner   Runner
}

// plannedStep is a step with what the build needs to run and key it.
type plannedStep struct {
	dockerfile.Step
	key  string
	puts []put
}

// Build executes req. On failure nothing is written at req.Output and the
// build VMs are gone; the steps that succeeded stay cached.
func (b *Builder) Build(ctx context.Context, req Request) (res *Result, err error) {
	if req.Plan == nil || req.Base.Rootfs == "" || req.Output == "" {
		return nil, errkind.New(errkind.InvalidArgument, "build: plan, base rootfs and output are required")
	}
	if req.Network == "" {
		req.Network = NetworkNone
	}
	if req.Network != NetworkNone && req.Network != NetworkNAT {
		return nil, errkind.New(errkind.InvalidArgument, "build network %q: want none or nat", req.Network)
	}
	if req.Log == nil {
		req.Log = io.Discard
	}
	progress := req.Progress
	if progress == nil {
		progress = func(Event) {}
	}
	defer func() {
		if err != nil {
			os.Remove(req.Output)
		}
	}()
	steps, err := b.planSteps(req)
	if err != nil {
		return nil, err
	}
	unlock, err := lockCache(ctx, b.CacheDir, func() { progress(Event{Message: "waiting for another build to finish"}) })
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Holding the lock, no other build runs: scratch dirs left under tmp/
	// are from builds whose process died (a killed daemon); drop them.
	if err := os.RemoveAll(filepath.Join(b.CacheDir, "tmp")); err != nil {
		return nil, fmt.Errorf("removing stale build scratch: %w", err)
	}
	c := cache{dir: b.CacheDir}
	final := BaseKey(req.Base.Digest)
	if len(steps) > 0 {
		final = steps[len(steps)-1].key
	}
	res = &Result{Key: final}
	n := len(steps)

	if n == 0 {
		fmt.Fprintf(req.Log, "no filesystem steps: the image is %s with a new configuration\n", req.Base.Rootfs)
		if err := CopySparse(req.Base.Rootfs, req.Output); err != nil {
			return nil, fmt.Errorf("copying the base rootfs: %w", err)
		}
		res.Cached = true
		return res, b.finish(res, req.Output)
	}
	if !req.NoCache && c.hasFinal(final) {
		for i, s := range steps {
			res.Steps = append(res.Steps, StepResult{Line: s.Line, Text: s.Text, Cached: true, Key: s.key})
			progress(Event{Step: i + 1, Steps: n, Line: s.Line, Text: s.Text, Cached: true})
			fmt.Fprintf(req.Log, "#%d/%d %s (line %d): cached\n", i+1, n, s.Text, s.Line)
		}
		if err := CopySparse(c.final(final), req.Output); err != nil {
			return nil, fmt.Errorf("copying the cached result: %w", err)
		}
		res.Cached = true
		return res, b.finish(res, req.Output)
	}

	start, state := 0, ""
	if !req.NoCache {
		for j := n; j >= 1; j-- {
			if c.hasState(steps[j-1].key) {
				start, state = j, steps[j-1].key
				break
			}
		}
	}
	for i := 0; i < start; i++ {
		s := steps[i]
		res.Steps = append(res.Steps, StepResult{Line: s.Line, Text: s.Text, Cached: true, Key: s.key})
		progress(Event{Step: i + 1, Steps: n, Line: s.Line, Text: s.Text, Cached: true})
		fmt.Fprintf(req.Log, "#%d/%d %s (line %d): cached\n", i+1, n, s.Text, s.Line)
	}

	if err := os.MkdirAll(filepath.Join(b.CacheDir, "tmp"), 0o755); err != nil {
		return nil, fmt.Errorf("creating build scratch dir: %w", err)
	}
	work, err := os.MkdirTemp(filepath.Join(b.CacheDir, "tmp"), "build-")
	if err != nil {
		return nil, fmt.Errorf("creating build scratch dir: %w", err)
	}
	defer os.RemoveAll(work)
	overlay := filepath.Join(work, overlayFile)
	if state != "" {
		err = CopySparse(c.overlay(state), overlay)
	} else {
		err = b.Runner.NewOverlay(ctx, overlay)
	}
	if err != nil {
		return nil, fmt.Errorf("preparing the build disk: %w", err)
	}

	spec := MachineSpec{Base: req.Base.Rootfs, Overlay: overlay, Network: req.Network}
	var m Machine
	defer func() {
		if m != nil {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			_ = m.Stop(sctx)
			cancel()
		}
	}()
	// stopAndCache stops the build VM (so the overlay disk is consistent)
	// and caches the overlay as the state after step i.
	stopAndCache := func(i int) error {
		err := m.Stop(ctx)
		m = nil
		if err != nil {
			return fmt.Errorf("stopping the build vm after line %d: %w", steps[i].Line, err)
		}
		s := steps[i]
		if req.NoCache || c.hasState(s.key) {
			state = s.key
			return nil
		}
		rec := stateRecord{Parent: state, Line: s.Line, Step: s.Key(), CreatedAt: time.Now().UTC()}
		if err := c.putState(s.key, rec, overlay); err != nil {
			return err
		}
		if err := CopySparse(c.overlay(s.key), overlay); err != nil {
			return fmt.Errorf("preparing the build disk: %w", err)
		}
		state = s.key
		return nil
	}
	for i := start; i < n; i++ {
		s := steps[i]
		t0 := time.Now()
		progress(Event{Step: i + 1, Steps: n, Line: s.Line, Text: s.Text})
		fmt.Fprintf(req.Log, "#%d/%d %s (line %d)\n", i+1, n, s.Text, s.Line)
		if m == nil {
			if m, err = b.Runner.Boot(ctx, spec); err != nil {
				return nil, fmt.Errorf("booting the build vm: %w", err)
			}
		}
		if err := runStep(ctx, m, s, req.Log); err != nil {
			return nil, err
		}
		// A state is cached after each RUN (the costly steps); COPY and
		// WORKDIR ride along with the next RUN, in the same VM.
		if s.Kind == dockerfile.StepRun && i < n-1 && !req.NoCache {
			if err := stopAndCache(i); err != nil {
				return nil, err
			}
		}
		d := time.Since(t0)
		fmt.Fprintf(req.Log, "#%d/%d done in %s\n", i+1, n, d.Round(time.Millisecond))
		res.Steps = append(res.Steps, StepResult{Line: s.Line, Text: s.Text, Duration: d, Key: s.key})
	}

	progress(Event{Message: "exporting the root filesystem"})
	fmt.Fprintln(req.Log, "exporting the root filesystem")
	if m == nil {
		if m, err = b.Runner.Boot(ctx, spec); err != nil {
			return nil, fmt.Errorf("booting the build vm for export: %w", err)
		}
	}
	names, err := listRoot(ctx, m, req.Plan.Config.Env)
	if err != nil {
		// No ls in the image: list base and overlay from the host.
		fmt.Fprintf(req.Log, "listing / in the guest failed (%v); reading the disks instead\n", err)
		if err := stopAndCache(n - 1); err != nil {
			return nil, err
		}
		if names, err = b.Runner.RootNames(ctx, req.Base.Rootfs, overlay); err != nil {
			return nil, fmt.Errorf("listing the image root: %w", err)
		}
		if m, err = b.Runner.Boot(ctx, spec); err != nil {
			return nil, fmt.Errorf("booting the build vm for export: %w", err)
		}
	}
	if err := exportRoot(ctx, m, names, req.Output); err != nil {
		return nil, err
	}
	if err := stopAndCache(n - 1); err != nil {
		return nil, err
	}
	if !req.NoCache {
		if err := c.putFinal(final, req.Output); err != nil {
			return nil, err
		}
	}
	return res, b.finish(res, req.Output)
}

// listRoot lists the guest's / with ls (any image with a shell has one).
func listRoot(ctx context.Context, g Guest, env []string) ([]string, error) {
	var out, errb tail
	out.max, errb.max = 1<<20, 4096
	code, err := g.Exec(ctx, agentproto.ExecRequest{Argv: []string{"ls", "-1A", "/"}, Env: env, Cwd: "/"}, nil, &out, &errb)
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return nil, fmt.Errorf("ls exited %d: %s", code, strings.TrimSpace(string(errb.buf)))
	}
	var names []string
	for _, l := range strings.Split(string(out.buf), "\n") {
		if l != "" {
			names = append(names, l)
		}
	}
	return names, nil
}

func (b *Builder) finish(res *Result, out string) error {
	fi, err := os.Stat(out)
	if err != nil {
		return err
	}
	res.Bytes = fi.Size()
	return nil
}

// planSteps resolves COPY sources and computes every step's cache key.
func (b *Builder) planSteps(req Request) ([]plannedStep, error) {
	var bctx *buildContext
	parent := BaseKey(req.Base.Digest)
	out := make([]plannedStep, 0, len(req.Plan.Steps))
	for _, s := range req.Plan.Steps {
		ps := plannedStep{Step: s}
		ctxHash := ""
		if s.Kind == dockerfile.StepCopy {
			if bctx == nil {
				c, err := openContext(req.Context)
				if err != nil {
					return nil, err
				}
				bctx = c
			}
			kw := strings.Fields(s.Text)[0]
			srcs, err := bctx.resolve(s.Line, kw, s.Copy)
			if err != nil {
				return nil, err
			}
			if ps.puts, err = bctx.plan(s.Copy, srcs); err != nil {
				return nil, err
			}
			if ctxHash, err = hashPuts(ps.puts); err != nil {
				return nil, err
			}
		}
		ps.key = StepKey(parent, s.Key(), ctxHash)
		parent = ps.key
		out = append(out, ps)
	}
	return out, nil
}

// tail keeps the last max bytes written to it.
type tail struct {
	buf []byte
	max int
}

func (t *tail) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(p), nil
}

// runStep executes one filesystem step in m.
func runStep(ctx context.Context, m Machine, s plannedStep, log io.Writer) error {
	switch s.Kind {
	case dockerfile.StepRun:
		r := s.Run
		out := &tail{max: 4096}
		w := io.MultiWriter(log, out)
		env := append(append([]string{}, r.Env...), r.ProxyEnv...)
		code, err := m.Exec(ctx, agentproto.ExecRequest{Argv: r.Argv, Env: env, Cwd: r.Cwd, User: r.User}, nil, w, w)
		if err != nil {
			return fmt.Errorf("line %d: %s: %w", s.Line, s.Text, err)
		}
		if code != 0 {
			return &StepError{Line: s.Line, Text: s.Text, ExitCode: code, Output: string(out.buf)}
		}
		return nil
	case dockerfile.StepMkdir:
		if _, err := m.PutTar(ctx, s.Dir, strings.NewReader(emptyTar), agentproto.PutOptions{}); err != nil {
			return fmt.Errorf("line %d: creating %s: %w", s.Line, s.Dir, err)
		}
		return nil
	case dockerfile.StepCopy:
		return copyStep(ctx, m, s, log)
	}
	return fmt.Errorf("line %d: unknown step kind %q", s.Line, s.Kind)
}

// emptyTar is an end-of-archive marker: a put of it only creates the dir.
var emptyTar = string(make([]byte, 1024))

func copyStep(ctx context.Context, m Machine, s plannedStep, log io.Writer) error {
	uid, gid, err := resolveOwner(ctx, m, s.Copy.Chown)
	if err != nil {
		return stepErr(s.Line, "--chown=%s: %v", s.Copy.Chown, err)
	}
	for _, p := range s.puts {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(p.writeTar(pw, s.Copy.Chmod)) }()
		opts := agentproto.PutOptions{UID: uid, GID: gid, PreserveOwners: p.archive != "" && s.Copy.Chown == ""}
		res, err := m.PutTar(ctx, p.dir, pr, opts)
		pr.CloseWithError(errors.New("put finished"))
		if err != nil {
			return fmt.Errorf("line %d: copying into %s: %w", s.Line, p.dir, err)
		}
		fmt.Fprintf(log, "  %d entries, %d bytes into %s\n", res.Entries, res.Bytes, p.dir)
	}
	return nil
}

// APIRequest is the wire type of POST /v1/images/build.
type APIRequest struct {
	// Dockerfile is the Dockerfile's content; DockerfilePath names it in
	// messages.
	Dockerfile     string `json:"dockerfile"`
	DockerfilePath string `json:"dockerfile_path,omitempty"`
	// Context is the absolute build context directory on the daemon's host.
	Context   string            `json:"context"`
	Name      string            `json:"name,omitempty"`
	BuildArgs map[string]string `json:"build_args,omitempty"`
	// KernelRef is the kernel of the build VMs and of the new image
	// (default: the base image's).
	KernelRef string `json:"kernel_ref,omitempty"`
	// Network of the build VMs: none (default) or nat.
	Network string `json:"network,omitempty"`
	NoCache bool   `json:"no_cache,omitempty"`
	// Size of the image's filesystem (default max(1.25×content, 1 GiB)).
	Size string `json:"size,omitempty"`
}
