package agent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/bangerdev/banger/internal/agentproto"
	"github.com/bangerdev/banger/internal/errkind"
)

// drainGrace is how long output is still read after the process exits
// while a background child keeps stdout/stderr (or the TTY) open.
const drainGrace = 200 * time.Millisecond

// execProc is a started process and the host ends of its stdio.
type execProc struct {
	pid   int
	tty   *os.File // pty master; nil without a TTY
	stdin *os.File // pipe to the process's stdin; nil with a TTY
	out   []outFile
	wait  func() unix.WaitStatus
}

type outFile struct {
	f *os.File
	t agentproto.FrameType
}

// startExec validates req and starts the process.
func (s *Server) startExec(req *agentproto.ExecRequest) (*execProc, error) {
	id, err := resolveUser(req.User)
	if err != nil {
		return nil, err
	}
	env := buildEnv(id, req.TTY, req.Env)
	cwd := req.Cwd
	switch {
	case cwd == "" && dirExists(id.Home):
		cwd = id.Home
	case cwd == "":
		cwd = "/"
	case !dirExists(cwd):
		return nil, errkind.New(errkind.NotFound, "working directory %q does not exist", cwd)
	}
	argv := req.Argv
	if len(argv) == 0 {
		argv = []string{id.Shell}
	}
	path, err := lookPath(argv[0], envValue(env, "PATH"), cwd)
	if err != nil {
		return nil, err
	}
	args := append([]string(nil), argv...)
	if len(req.Argv) == 0 {
		args[0] = "-" + filepath.Base(id.Shell) // login shell
	}
	cmd := &exec.Cmd{
		Path:        path,
		Args:        args,
		Env:         env,
		Dir:         cwd,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	if os.Geteuid() == 0 || id.UID != uint32(os.Geteuid()) || id.GID != uint32(os.Getegid()) {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: id.UID, Gid: id.GID, Groups: id.Groups}
	}
	p := &execProc{}
	var childEnds []*os.File
	defer func() {
		for _, f := range childEnds {
			f.Close()
		}
	}()
	if req.TTY {
		master, slave, err := openPTY(req.Rows, req.Cols)
		if err != nil {
			return nil, err
		}
		childEnds = append(childEnds, slave)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		cmd.SysProcAttr.Setctty = true
		cmd.SysProcAttr.Ctty = 0
		p.tty = master
		p.out = []outFile{{master, agentproto.FrameStdout}}
	} else {
		inR, inW, err := os.Pipe()
		if err != nil {
			return nil, fmt.Errorf("creating stdin pipe: %w", err)
		}
		outR, outW, err := os.Pipe()
		if err != nil {
			inR.Close()
			inW.Close()
			return nil, fmt.Errorf("creating stdout pipe: %w", err)
		}
		errR, errW, err := os.Pipe()
		if err != nil {
			inR.Close()
			inW.Close()
			outR.Close()
			outW.Close()
			return nil, fmt.Errorf("creating stderr pipe: %w", err)
		}
		childEnds = append(childEnds, inR, outW, errW)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
		p.stdin = inW
		p.out = []outFile{{outR, agentproto.FrameStdout}, {errR, agentproto.FrameStderr}}
	}
	wait, err := startProcess(s.cfg.Reaper, cmd)
	if err != nil {
		p.closeAll()
		if errors.Is(err, syscall.EPERM) {
			return nil, errkind.Wrap(errkind.InvalidArgument, err, "starting %q as %s", argv[0], describeIdentity(id))
		}
		return nil, fmt.Errorf("starting %q: %w", argv[0], err)
	}
	p.pid = cmd.Process.Pid
	p.wait = wait
	return p, nil
}

// openPTY opens a pseudo-terminal of the given size. The master is made
// non-blocking so that reads can be interrupted with deadlines.
func openPTY(rows, cols uint16) (master, slave *os.File, err error) {
	if rows == 0 || cols == 0 {
		rows, cols = 24, 80
	}
	m, sl, err := pty.Open()
	if err != nil {
		return nil, nil, fmt.Errorf("opening pty: %w", err)
	}
	fd, err := unix.Dup(int(m.Fd()))
	m.Close()
	if err != nil {
		sl.Close()
		return nil, nil, fmt.Errorf("duplicating pty master: %w", err)
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		sl.Close()
		return nil, nil, fmt.Errorf("setting pty master non-blocking: %w", err)
	}
	master = os.NewFile(uintptr(fd), "/dev/ptmx")
	if err := setWinsize(master, rows, cols); err != nil {
		master.Close()
		sl.Close()
		return nil, nil, err
	}
	return master, sl, nil
}

// setWinsize sets a terminal size without os.File.Fd (which would make the
// descriptor blocking again).
func setWinsize(f *os.File, rows, cols uint16) error {
	return fdControl(f, func(fd int) error {
		return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	})
}

func foregroundGroup(f *os.File) (int, error) {
	var pg int
	err := fdControl(f, func(fd int) error {
		var err error
		pg, err = unix.IoctlGetInt(fd, unix.TIOCGPGRP)
		return err
	})
	return pg, err
}

func fdControl(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var inner error
	if err := rc.Control(func(fd uintptr) { inner = fn(int(fd)) }); err != nil {
		return err
	}
	return inner
}

func (p *execProc) closeAll() {
	if p.tty != nil {
		p.tty.Close()
	}
	if p.stdin != nil {
		p.stdin.Close()
	}
	for _, o := range p.out {
		o.f.Close()
	}
}

// handleExec runs an exec stream: response line, then frames both ways
// until the exit frame.
func (s *Server) handleExec(st io.ReadWriteCloser, req *agentproto.ExecRequest) {
	if req == nil || (len(req.Argv) > 0 && req.Argv[0] == "") {
		writeResponse(st, errResponse(errkind.New(errkind.InvalidArgument, "exec: empty command")))
		return
	}
	if s.ready != nil {
		s.ready.wait(basicTargetTimeout)
	}
	p, err := s.startExec(req)
	if err != nil {
		writeResponse(st, errResponse(err))
		return
	}
	defer p.closeAll()
	if err := agentproto.WriteJSONLine(st, &agentproto.Response{Exec: &agentproto.ExecStarted{PID: p.pid}}); err != nil {
		_ = unix.Kill(-p.pid, unix.SIGKILL)
		p.wait()
		return
	}
	fw := agentproto.NewFrameWriter(st)
	var exited atomic.Bool
	go s.execControl(st, p, &exited)

	var wg sync.WaitGroup
	for _, o := range p.out {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pumpOutput(o.f, o.t, fw, &exited)
		}()
	}
	ws := p.wait()
	exited.Store(true)
	for _, o := range p.out {
		_ = o.f.SetReadDeadline(time.Now().Add(drainGrace))
	}
	wg.Wait()
	status := agentproto.ExitStatus{Code: ws.ExitStatus()}
	if ws.Signaled() {
		status.Signal = int(ws.Signal())
		status.Code = 128 + status.Signal
	}
	_ = fw.Exit(status)
	_ = st.Close()
}

// pumpOutput copies f to frames of type t. Once the process has exited it
// keeps reading only while data keeps coming within drainGrace.
func pumpOutput(f *os.File, t agentproto.FrameType, fw *agentproto.FrameWriter, exited *atomic.Bool) {
	buf := make([]byte, 32<<10)
	for {
		if exited.Load() {
			_ = f.SetReadDeadline(time.Now().Add(drainGrace))
		}
		n, err := f.Read(buf)
		if n > 0 {
			if werr := fw.WriteFrame(t, buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF, EIO from a pty whose slaves are all closed, or the drain deadline
		}
	}
}

// execControl applies host frames (stdin, resize, signal). The host ending
// the stream before the exit frame means it gave up: the process is killed.
func (s *Server) execControl(st io.Reader, p *execProc, exited *atomic.Bool) {
	stdinQ := make(chan []byte, 16)
	go func() {
		broken := false
		for b := range stdinQ {
			if broken {
				continue
			}
			var err error
			if p.tty != nil {
				_, err = p.tty.Write(b)
			} else {
				_, err = p.stdin.Write(b)
			}
			broken = err != nil
		}
		if p.tty != nil {
			_, _ = p.tty.Write([]byte{4}) // ^D
		} else {
			_ = p.stdin.Close()
		}
	}()
	stdinOpen := true
	closeStdin := func() {
		if stdinOpen {
			stdinOpen = false
			close(stdinQ)
		}
	}
	defer closeStdin()
	fr := agentproto.NewFrameReader(st)
	for {
		f, err := fr.Next()
		if err != nil {
			if !exited.Load() {
				s.logf("exec pid %d: host went away (%v), killing it", p.pid, err)
				killSession(p)
			}
			return
		}
		switch f.Type {
		case agentproto.FrameStdin:
			if stdinOpen {
				stdinQ <- append([]byte(nil), f.Payload...)
			}
		case agentproto.FrameStdinClose:
			closeStdin()
		case agentproto.FrameResize:
			rows, cols, err := agentproto.ParseResize(f.Payload)
			if err == nil && p.tty != nil && rows > 0 && cols > 0 {
				_ = setWinsize(p.tty, rows, cols)
			}
		case agentproto.FrameSignal:
			sig, err := agentproto.ParseSignal(f.Payload)
			if err == nil && sig > 0 && sig < 65 && !exited.Load() {
				target := p.pid
				if p.tty != nil {
					if pg, err := foregroundGroup(p.tty); err == nil && pg > 0 {
						target = pg
					}
				}
				_ = unix.Kill(-target, unix.Signal(sig))
			}
		}
	}
}

// killSession kills the process group the exec started. Other groups of a
// TTY session get SIGHUP when the master is closed after the leader exits.
func killSession(p *execProc) {
	_ = unix.Kill(-p.pid, unix.SIGKILL)
}
