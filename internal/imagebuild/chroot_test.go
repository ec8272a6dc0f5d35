package imagebuild

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/bangerdev/banger/internal/agent"
	"github.com/bangerdev/banger/internal/agentproto"
	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/testenv"
)

// chrootRunner is a build Runner without VMs: a "machine" is a directory
// tree and RUN executes real processes chrooted into it (so it needs
// root). The base is a directory; an overlay "disk" is a file holding a
// tar of the whole root as the last stopped machine left it (empty for a
// fresh one). Boot writes /etc/hostname and /etc/hosts like the guest init.
type chrootRunner struct {
	mu      sync.Mutex
	boots   int
	running int
	scratch string
}

func newChrootRunner(t *testing.T) *chrootRunner {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the chroot guest needs root")
	}
	return &chrootRunner{scratch: t.TempDir()}
}

// busyboxBaseDir materialises the busybox test image as a directory.
func busyboxBaseDir(t *testing.T) string {
	t.Helper()
	data, err := testenv.TarEntries(testenv.BusyboxEntries(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "base")
	if _, err := agent.ExtractTar(bytes.NewReader(data), dir, agent.PutOptions{PreserveOwners: true}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func (r *chrootRunner) NewOverlay(ctx context.Context, path string) error {
	return os.WriteFile(path, nil, 0o644)
}

func (r *chrootRunner) Boot(ctx context.Context, spec MachineSpec) (Machine, error) {
	r.mu.Lock()
	r.boots++
	r.running++
	n := r.boots
	r.mu.Unlock()
	root := filepath.Join(r.scratch, fmt.Sprintf("root%d", n))
	state, err := os.ReadFile(spec.Overlay)
	if err != nil {
		return nil, err
	}
	if len(state) == 0 {
		if state, err = tarDir(spec.Base); err != nil {
			return nil, err
		}
	}
	if _, err := agent.ExtractTar(bytes.NewReader(state), root, agent.PutOptions{PreserveOwners: true}); err != nil {
		return nil, fmt.Errorf("restoring state: %w", err)
	}
	for f, c := range map[string]string{"etc/hostname": "banger-build\n", "etc/hosts": "127.0.0.1 banger-build\n"} {
		if err := os.WriteFile(filepath.Join(root, f), []byte(c), 0o644); err != nil {
			return nil, err
		}
	}
	return &chrootMachine{r: r, root: root, base: spec.Base, overlay: spec.Overlay}, nil
}

func (r *chrootRunner) RootNames(ctx context.Context, base, overlay string) ([]string, error) {
	var names []string
	ents, err := os.ReadDir(base)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		names = append(names, e.Name())
	}
	state, err := os.ReadFile(overlay)
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(bytes.NewReader(state))
	for {
		hdr, err := tr.Next()
		if err != nil {
			break
		}
		top, _, _ := strings.Cut(strings.TrimPrefix(hdr.Name, "./"), "/")
		names = append(names, top)
	}
	return names, nil
}

type chrootMachine struct {
	r                   *chrootRunner
	root, base, overlay string
	stopped             bool
}

func (m *chrootMachine) hostPath(p string) string {
	if rest, ok := strings.CutPrefix(p, guestBaseMount); ok {
		return filepath.Join(m.base, rest)
	}
	return filepath.Join(m.root, p)
}

func (m *chrootMachine) Exec(ctx context.Context, req agentproto.ExecRequest, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	argv0 := req.Argv[0]
	if !strings.Contains(argv0, "/") {
		// Resolve in the guest's PATH, as the agent does.
		found := ""
		for _, kv := range req.Env {
			if dirs, ok := strings.CutPrefix(kv, "PATH="); ok {
				for _, d := range filepath.SplitList(dirs) {
					if fi, err := os.Stat(filepath.Join(m.root, d, argv0)); err == nil && !fi.IsDir() {
						found = filepath.Join(d, argv0)
						break
					}
				}
			}
		}
		if found == "" {
			return -1, fmt.Errorf("guest exec: %s: not found", argv0)
		}
		argv0 = found
	}
	cmd := exec.CommandContext(ctx, argv0, req.Argv[1:]...)
	cmd.Env = req.Env
	cmd.Dir = req.Cwd
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: m.root}
	if req.User != "" {
		u, g, _ := strings.Cut(req.User, ":")
		uid, err := strconv.Atoi(u)
		if err != nil {
			return -1, fmt.Errorf("chroot guest: numeric users only, got %q", req.User)
		}
		gid := uid
		if g != "" {
			gid, _ = strconv.Atoi(g)
		}
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return -1, err
	}
	return 0, nil
}

func (m *chrootMachine) PutTar(ctx context.Context, dir string, r io.Reader, opts agentproto.PutOptions) (agentproto.PutResult, error) {
	res, err := agent.ExtractTar(r, m.hostPath(dir), agent.PutOptions{PreserveOwners: opts.PreserveOwners, UID: opts.UID, GID: opts.GID})
	_, _ = io.Copy(io.Discard, r)
	return res, err
}

func (m *chrootMachine) GetTar(ctx context.Context, p string, w io.Writer) error {
	hp := m.hostPath(p)
	if _, err := os.Lstat(hp); err != nil {
		return errkind.New(errkind.NotFound, "%s does not exist in the guest", p)
	}
	return agent.WriteTar(w, hp)
}

func (m *chrootMachine) Stop(ctx context.Context) error {
	if m.stopped {
		return nil
	}
	m.stopped = true
	m.r.mu.Lock()
	m.r.running--
	m.r.mu.Unlock()
	defer os.RemoveAll(m.root)
	state, err := tarDir(m.root)
	if err != nil {
		return err
	}
	return os.WriteFile(m.overlay, state, 0o644)
}

// tarDir returns a tar of the contents of dir, names relative to it.
func tarDir(dir string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			link, _ = os.Readlink(p)
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		hdr.Name = rel
		if fi.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			tw.Write(b)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	tw.Close()
	return buf.Bytes(), nil
}
