package agent

import (
	"context"
	"io"
	"os"
	"sync"
	"time"
)

// ServeChannels serves the host on the channel the command line chose; with
// no choice, on both the default virtio-serial port and vsock port,
// whichever exists. It returns when ctx ends.
func ServeChannels(ctx context.Context, srv *Server, ch Channel, logf func(string, ...any)) {
	var wg sync.WaitGroup
	serial := func(name string) {
		defer wg.Done()
		logf("serving the host on virtio-serial port %s", name)
		_ = srv.ServePort(ctx, func() (io.ReadWriteCloser, error) {
			f, err := OpenVirtioPort(ctx, name)
			if err == nil {
				logf("opened virtio-serial port %s", name)
			}
			return f, err
		})
	}
	vsock := func(port uint32, required bool) {
		defer wg.Done()
		ln, err := ListenVsock(port)
		if err != nil {
			if required {
				logf("vsock: %v", err)
			}
			return
		}
		logf("serving the host on vsock port %d", port)
		if err := srv.ServeListener(ctx, ln); err != nil && ctx.Err() == nil {
			logf("vsock: %v", err)
		}
	}
	switch ch.Kind {
	case "serial":
		wg.Add(1)
		go serial(ch.Name)
	case "vsock":
		wg.Add(1)
		go vsock(ch.Port, true)
	default:
		wg.Add(2)
		go serial(DefaultSerialPort)
		go vsock(DefaultVsockPort, false)
	}
	wg.Wait()
}

// RunService is the agent started by systemd after the handover (or by
// hand): it serves the host until ctx ends.
func RunService(ctx context.Context, version string, ch *Channel) {
	log := NewLogger(os.Stderr)
	cmdline, _ := os.ReadFile("/proc/cmdline")
	cfg := ParseCmdline(string(cmdline))
	if ch != nil {
		cfg.Chan = *ch
	}
	sc := Config{Version: version, InitMode: ModeStandalone, Logf: log.Logf}
	if fi, err := os.Stat("/run/systemd/system"); err == nil && fi.IsDir() {
		sc.InitMode = ModeSystemd
		sc.Shutdown = systemdShutdown(cfg.Exit)
	}
	log.Logf("agent %s starting (%s mode)", version, sc.InitMode)
	ServeChannels(ctx, NewServer(sc), cfg.Chan, log.Logf)
}

// openRetryDelay is how often OpenVirtioPort looks for a port that is not
// there yet, after the first few seconds.
const openRetryDelay = time.Second
