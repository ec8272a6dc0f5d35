// Command banger-agent is banger's guest agent. Started as PID 1 from the
// initrd it boots the guest (see internal/agent); started as
// "banger-agent serve" (by the systemd unit it installs, or by hand) it
// only serves the host.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/bangerdev/banger/internal/agent"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if agent.IsInit() {
		agent.RunInit(version) // never returns
	}
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "serve":
		fs := flag.NewFlagSet("serve", flag.ExitOnError)
		chanFlag := fs.String("chan", "", "host channel: serial:NAME or vsock:PORT (default: from /proc/cmdline)")
		_ = fs.Parse(os.Args[2:])
		var ch *agent.Channel
		if *chanFlag != "" {
			c, err := agent.ParseChannel(*chanFlag)
			if err != nil {
				fmt.Fprintln(os.Stderr, "banger-agent:", err)
				os.Exit(2)
			}
			ch = &c
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		agent.RunService(ctx, version, ch)
	case "version", "--version", "-v":
		fmt.Println("banger-agent", version)
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: banger-agent serve [-chan serial:NAME|vsock:PORT] | banger-agent version\n(as PID 1 it boots the guest)")
	os.Exit(2)
}
