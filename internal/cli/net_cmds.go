package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
)

// withNetCommands adds `vm ports` and `vm forward` to the vm command.
func (a *App) withNetCommands(vm *cobra.Command) *cobra.Command {
	vm.AddCommand(a.vmPortsCommand(), a.vmForwardCommand())
	return vm
}

func (a *App) vmPortsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "ports NAME...",
		Short: "List listening TCP/UDP sockets inside running VMs",
		Long: `Lists the guest's listening TCP sockets and bound UDP sockets (from the guest
agent), with the name.vm:port endpoint each answers on from the host and the
host forwards that reach it.`,
		Example:           "  banger vm ports web\n  banger vm ports web db -o json",
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: a.completeVMs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			names := dedupe(args)
			results := make([]api.VMPorts, len(names))
			errs := make([]error, len(names))
			var wg sync.WaitGroup
			for i, n := range names {
				wg.Add(1)
				go func() {
					defer wg.Done()
					results[i], errs[i] = c.VMPorts(cmd.Context(), n)
				}()
			}
			wg.Wait()
			var ok []api.VMPorts
			failed := 0
			for i, err := range errs {
				if err != nil {
					if len(names) == 1 {
						return err
					}
					failed++
					fmt.Fprintf(a.Stderr, "banger: %s: %s\n", names[i], oneLine(err))
					continue
				}
				ok = append(ok, results[i])
			}
			if a.Output == "json" {
				if ok == nil {
					ok = []api.VMPorts{}
				}
				if err := a.printJSON(ok); err != nil {
					return err
				}
			} else {
				a.printPorts(ok)
			}
			if failed > 0 {
				return exitCode(ExitError)
			}
			return nil
		},
	}
}

func (a *App) printPorts(all []api.VMPorts) {
	var rows [][]string
	for _, vp := range all {
		for _, p := range vp.Ports {
			proc := "-"
			if p.Process != "" {
				proc = fmt.Sprintf("%s (%d)", p.Process, p.PID)
			}
			rows = append(rows, []string{vp.VM, p.Proto, net.JoinHostPort(p.Address, strconv.Itoa(p.Port)), proc,
				dash(p.Endpoint), dash(strings.Join(p.Forwarded, ","))})
		}
	}
	a.table([]string{"VM", "PROTO", "LISTEN", "PROCESS", "ENDPOINT", "FORWARDED FROM"}, rows)
}

func (a *App) vmForwardCommand() *cobra.Command {
	var remove bool
	cmd := &cobra.Command{
		Use:   "forward NAME [[HOST_ADDR:]HOST_PORT:GUEST_PORT[/udp]]",
		Short: "Forward a host port to a port inside a VM (or list / remove forwards)",
		Long: `Forwards HOST_ADDR:HOST_PORT (default address 127.0.0.1) to GUEST_PORT on the
guest's loopback, over the guest agent's channel: it works for --net none VMs and
for privileged guest ports. TCP by default; append /udp for UDP. The forward is
recorded on the VM: it stops with the VM and comes back when the VM (or the
daemon) starts again. Without a spec, lists the VM's forwards.`,
		Example: `  banger vm forward web 8080:80
  banger vm forward web 0.0.0.0:8443:443
  banger vm forward dns 5353:53/udp
  banger vm forward web              # list
  banger vm forward web --remove 8080`,
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: a.completeVMs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			ctx, name := cmd.Context(), args[0]
			switch {
			case len(args) == 1 && remove:
				return fmt.Errorf("--remove needs the forward to remove (e.g. 8080 or 8080/udp)")
			case len(args) == 1:
				return a.listForwards(ctx, c, name)
			case remove:
				if err := c.RemoveForward(ctx, name, args[1]); err != nil {
					return err
				}
				fmt.Fprintf(a.Stdout, "%s: forward %s removed\n", name, args[1])
				return nil
			}
			f, err := c.AddForward(ctx, name, args[1])
			if err != nil {
				return err
			}
			if a.Output == "json" {
				return a.printJSON(f)
			}
			fmt.Fprintf(a.Stdout, "%s: %s\n", name, forwardString(f))
			return nil
		},
	}
	cmd.Flags().BoolVar(&remove, "remove", false, "remove the forward instead (its host side is enough: 8080, 127.0.0.1:8080/udp)")
	return cmd
}

type vmGetter interface {
	ShowVM(ctx context.Context, name string) (api.VMInfo, error)
}

func (a *App) listForwards(ctx context.Context, c vmGetter, name string) error {
	vm, err := c.ShowVM(ctx, name)
	if err != nil {
		return err
	}
	fs := vm.Network.Forwards
	if a.Output == "json" {
		if fs == nil {
			fs = []model.Forward{}
		}
		return a.printJSON(fs)
	}
	rows := make([][]string, 0, len(fs))
	for _, f := range fs {
		kind := "requested"
		if f.Auto {
			kind = "auto"
		}
		rows = append(rows, []string{f.Proto, net.JoinHostPort(f.HostAddr, strconv.Itoa(f.HostPort)), strconv.Itoa(f.GuestPort), kind})
	}
	a.table([]string{"PROTO", "HOST", "GUEST PORT", "KIND"}, rows)
	return nil
}

// forwardString renders a forward for humans.
func forwardString(f model.Forward) string {
	s := fmt.Sprintf("%s -> guest port %d/%s", net.JoinHostPort(f.HostAddr, strconv.Itoa(f.HostPort)), f.GuestPort, f.Proto)
	if f.Auto {
		s += " (auto)"
	}
	return s
}

func forwardList(fs []model.Forward) string {
	var parts []string
	for _, f := range fs {
		parts = append(parts, forwardString(f))
	}
	return strings.Join(parts, ", ")
}

func (a *App) networkCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "network",
		Short: "Show how VMs are networked here and how to resolve NAME.vm on this host",
		Long: `Shows the bridge, subnet and DNS listeners of the daemon (or why host networking
is unavailable), then how to make the host resolve NAME.vm: systemd-resolved,
dnsmasq or plain resolv.conf. See docs/networking.md.`,
		Example: "  banger network\n  banger network -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			info, err := c.Network(cmd.Context())
			if err != nil {
				return err
			}
			if a.Output == "json" {
				return a.printJSON(info)
			}
			a.printNetwork(info)
			return nil
		},
	}
}

func (a *App) printNetwork(n api.NetworkInfo) {
	if !n.Available {
		a.table([]string{"FIELD", "VALUE"}, [][]string{
			{"available", "no"}, {"reason", dash(n.Reason)}, {"default --net", n.DefaultMode},
			{"forwards", "available (over the agent channel)"},
		})
		return
	}
	a.table([]string{"FIELD", "VALUE"}, [][]string{
		{"available", "yes"}, {"default --net", n.DefaultMode}, {"bridge", n.Bridge}, {"cidr", n.CIDR},
		{"host address", n.Gateway}, {"nftables table", "ip " + n.Table}, {"guest dns", n.GuestDNS},
		{"host dns (.vm)", dash(n.HostDNS)}, {"upstream dns", dash(strings.Join(n.UpstreamDNS, ", "))},
		{"free addresses", strconv.Itoa(n.FreeIPs)}, {"idle taps", dash(strings.Join(n.IdleTaps, ", "))},
	})
	fmt.Fprintln(a.Stdout)
	writeDNSHowTo(a.Stdout, n)
}

// writeDNSHowTo prints the ways to route the .vm zone to banger's DNS.
func writeDNSHowTo(w io.Writer, n api.NetworkInfo) {
	host, port, err := net.SplitHostPort(n.HostDNS)
	gw, _, _ := net.SplitHostPort(n.GuestDNS)
	fmt.Fprintln(w, "Resolving NAME.vm on this host:")
	if err == nil {
		fmt.Fprintf(w, "  check:            dig @%s -p %s NAME.vm   (or: banger vm ports NAME)\n", host, port)
		fmt.Fprintf(w, "  dnsmasq:          server=/vm/%s#%s\n", host, port)
	}
	if gw != "" {
		fmt.Fprintf(w, "  systemd-resolved: resolvectl dns %s %s && resolvectl domain %s '~vm'\n", n.Bridge, gw, n.Bridge)
		fmt.Fprintf(w, "  resolv.conf:      nameserver %s   (first line; it also forwards other names)\n", gw)
	}
	fmt.Fprintln(w, "See docs/networking.md for details.")
}
