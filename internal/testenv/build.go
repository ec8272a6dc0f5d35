package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// The project's commands, as passed to BuildBinaries.
const (
	PkgBanger  = "./cmd/banger"
	PkgBangerd = "./cmd/bangerd"
	PkgAgent   = "./cmd/banger-agent"
)

// Binaries are paths of binaries built by BuildBinaries.
type Binaries struct {
	Dir     string            // directory holding the binaries
	Banger  string            // set when PkgBanger was built
	Bangerd string            // set when PkgBangerd was built
	Agent   string            // set when PkgAgent was built
	Paths   map[string]string // every built package → binary path
}

// BuildBinaries builds the given main packages (module-relative, such as
// "./cmd/banger"; default: banger, bangerd and banger-agent) with `go build`
// and returns their paths. Each package is built once per test process; the
// binaries live in a per-process temp dir that Main removes (a later test
// process removes leftovers of dead processes). banger-agent is built with
// CGO_ENABLED=0 so that it is static.
func BuildBinaries(t testing.TB, pkgs ...string) Binaries {
	t.Helper()
	if len(pkgs) == 0 {
		pkgs = []string{PkgBanger, PkgBangerd, PkgAgent}
	}
	dir, err := builds.dir()
	if err != nil {
		t.Fatal(err)
	}
	bins := Binaries{Dir: dir, Paths: make(map[string]string, len(pkgs))}
	for _, pkg := range pkgs {
		p, err := builds.build(pkg)
		if err != nil {
			t.Fatal(err)
		}
		bins.Paths[pkg] = p
		switch pkg {
		case PkgBanger:
			bins.Banger = p
		case PkgBangerd:
			bins.Bangerd = p
		case PkgAgent:
			bins.Agent = p
		}
	}
	return bins
}

// Main runs the tests of a package that uses BuildBinaries and removes the
// built binaries afterwards. Call it from TestMain: `testenv.Main(m)`.
func Main(m *testing.M) {
	code := m.Run()
	builds.remove()
	os.Exit(code)
}

// builds is the per-process cache of built binaries.
var builds = &buildCache{pkgs: make(map[string]*buildResult)}

type buildCache struct {
	mu      sync.Mutex
	binDir  string
	root    string
	pkgs    map[string]*buildResult
	initErr error
	inited  bool
}

type buildResult struct {
	once sync.Once
	path string
	err  error
}

const binDirPrefix = "banger-testbin-"

// dir creates the per-process binary directory on first use.
func (c *buildCache) dir() (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inited {
		return c.binDir, c.initErr
	}
	c.inited = true
	c.root, c.initErr = ModuleRoot()
	if c.initErr != nil {
		return "", c.initErr
	}
	removeStaleBinDirs()
	c.binDir, c.initErr = os.MkdirTemp("", binDirPrefix+strconv.Itoa(os.Getpid())+"-")
	if c.initErr != nil {
		c.initErr = fmt.Errorf("creating binary dir: %w", c.initErr)
	}
	return c.binDir, c.initErr
}

func (c *buildCache) build(pkg string) (string, error) {
	c.mu.Lock()
	r, ok := c.pkgs[pkg]
	if !ok {
		r = &buildResult{}
		c.pkgs[pkg] = r
	}
	dir, root := c.binDir, c.root
	c.mu.Unlock()
	r.once.Do(func() { r.path, r.err = goBuild(root, dir, pkg) })
	return r.path, r.err
}

func (c *buildCache) remove() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.binDir != "" {
		os.RemoveAll(c.binDir)
	}
}

// goBuild builds the main package pkg of the module at root into dir.
func goBuild(root, dir, pkg string) (string, error) {
	out := filepath.Join(dir, path.Base(pkg))
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("building %s: %w", pkg, err)
	}
	cmd := exec.Command(goBin, "build", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = os.Environ()
	if path.Base(pkg) == "banger-agent" {
		cmd.Env = append(cmd.Env, "CGO_ENABLED=0")
	}
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s: %w\n%s", pkg, err, strings.TrimSpace(string(msg)))
	}
	return out, nil
}

// removeStaleBinDirs removes binary dirs left by test processes that are no
// longer running.
func removeStaleBinDirs() {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), binDirPrefix+"*"))
	for _, m := range matches {
		rest := strings.TrimPrefix(filepath.Base(m), binDirPrefix)
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); err == syscall.ESRCH {
			os.RemoveAll(m)
		}
	}
}
