package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Registry is a docker-registry process serving plain HTTP on loopback,
// private to one test.
type Registry struct {
	// Host is "127.0.0.1:PORT", the registry part of image references.
	Host string
	// Dir is the registry's filesystem storage root.
	Dir string
	// LogPath holds the registry's stdout and stderr.
	LogPath string

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has been waited for
}

// URL returns the registry's base URL, "http://127.0.0.1:PORT".
func (r *Registry) URL() string { return "http://" + r.Host }

// Ref returns the reference of repoTag ("busybox:latest") in this registry.
func (r *Registry) Ref(repoTag string) string { return r.Host + "/" + repoTag }

// PID returns the registry's process id.
func (r *Registry) PID() int { return r.cmd.Process.Pid }

const (
	registryBinary       = "docker-registry"
	registryReadyTimeout = 15 * time.Second
	registryStopTimeout  = 5 * time.Second
	registryStartTries   = 5
)

// StartRegistry starts Debian's docker-registry with its own configuration
// (filesystem storage in a temp dir, deletes enabled, no access log) on a
// free 127.0.0.1 port and waits until GET /v2/ answers. The process is
// stopped and waited for when the test ends. Without the binary the test is
// skipped (a failure under CI=true).
func StartRegistry(t testing.TB) *Registry {
	t.Helper()
	bin := RequireBinary(t, registryBinary)
	r, err := runRegistry(bin, t.TempDir())
	if err != nil {
		t.Fatalf("starting docker-registry: %v", err)
	}
	t.Cleanup(r.stop)
	return r
}

// RunRegistry is StartRegistry outside a test (benchmarks): storage under
// dir; the caller ends it with Stop.
func RunRegistry(dir string) (*Registry, error) {
	bin, err := LookBinary(registryBinary)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return runRegistry(bin, dir)
}

// Stop terminates a registry started by RunRegistry and waits for it.
func (r *Registry) Stop() { r.stop() }

// runRegistry starts the registry, on another free port when the one it
// picked was taken in the meantime.
func runRegistry(bin, dir string) (*Registry, error) {
	var err error
	for range registryStartTries {
		var r *Registry
		if r, err = startRegistry(bin, dir); err == nil || !errors.Is(err, errPortTaken) {
			return r, err
		}
	}
	return nil, err
}

var errPortTaken = errors.New("port taken")

func startRegistry(bin, dir string) (*Registry, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	r := &Registry{
		Host:    net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Dir:     filepath.Join(dir, "data"),
		LogPath: filepath.Join(dir, "registry-"+strconv.Itoa(port)+".log"),
		done:    make(chan struct{}),
	}
	configPath := filepath.Join(dir, "config-"+strconv.Itoa(port)+".yml")
	if err := os.WriteFile(configPath, []byte(registryConfig(r.Dir, r.Host)), 0o644); err != nil {
		return nil, fmt.Errorf("writing registry config: %w", err)
	}
	logFile, err := os.Create(r.LogPath)
	if err != nil {
		return nil, fmt.Errorf("creating registry log: %w", err)
	}
	defer logFile.Close()

	r.cmd = exec.Command(bin, "serve", configPath)
	r.cmd.Stdout = logFile
	r.cmd.Stderr = logFile
	// Do not outlive a test binary that dies without running cleanups.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("running %s: %w", bin, err)
	}
	go func() {
		_ = r.cmd.Wait()
		close(r.done)
	}()
	if err := r.waitReady(); err != nil {
		r.stop()
		return nil, err
	}
	return r, nil
}

// registryConfig is the docker-registry configuration: storage under dir,
// listening on addr only.
func registryConfig(dir, addr string) string {
	return fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
`, dir, addr)
}

// waitReady polls GET /v2/ until it answers 200, the process exits or the
// timeout passes.
func (r *Registry) waitReady() error {
	ctx, cancel := context.WithTimeout(context.Background(), registryReadyTimeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL()+"/v2/", nil)
		if err != nil {
			return fmt.Errorf("probing registry: %w", err)
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-r.done:
			log := r.log()
			if strings.Contains(log, "address already in use") {
				return fmt.Errorf("%s: %w", r.Host, errPortTaken)
			}
			return fmt.Errorf("registry on %s exited before answering: %s", r.Host, log)
		case <-ctx.Done():
			return fmt.Errorf("registry on %s not ready after %s: %s", r.Host, registryReadyTimeout, r.log())
		case <-tick.C:
		}
	}
}

// stop terminates the registry and waits for it: SIGTERM, then SIGKILL
// after registryStopTimeout.
func (r *Registry) stop() {
	select {
	case <-r.done:
		return
	default:
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(registryStopTimeout):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}

func (r *Registry) log() string {
	b, err := os.ReadFile(r.LogPath)
	if err != nil {
		return fmt.Sprintf("(reading log: %v)", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "(empty log)"
	}
	return s
}

// freePort asks the kernel for a free loopback TCP port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
