package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/bytesize"
	"github.com/bangerdev/banger/internal/client"
)

func (a *App) vmCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vm",
		Short: "Create, run and manage microVMs",
		Long: `A VM boots an image (read-only base disk shared by all VMs of that image) with a
private overlay disk and a persistent work disk mounted at /root.`,
		Example: `  banger vm create --name dev --image busybox
  banger vm exec dev -- uname -a
  banger vm stop dev && banger vm delete dev`,
	}
	cmd.AddCommand(
		a.vmCreateCommand(), a.vmListCommand("list"), a.vmShowCommand(),
		a.vmManyCommand("start", "Boot stopped VMs", "  banger vm start dev", a.doStart),
		a.vmStopCommand(),
		a.vmManyCommand("restart", "Reboot VMs (stop, then start)", "  banger vm restart dev", a.doRestart),
		a.vmKillCommand(), a.vmDeleteCommand(), a.vmPruneCommand(),
		a.vmLogsCommand(), a.vmExecCommand(), a.vmSetCommand(),
	)
	return cmd
}

func (a *App) psCommand() *cobra.Command {
	c := a.vmListCommand("ps")
	c.Short = "List VMs (alias of `vm list`)"
	return c
}

func (a *App) vmCreateCommand() *cobra.Command {
	var req api.VMCreateRequest
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a VM and start it (waits until its agent answers)",
		Example: `  banger vm create
  banger vm create --name dev --image debian-bookworm --cpus 2 --memory 2048 --disk 16G
  banger vm create --name later --no-start
  banger vm create --name web -p 8080:80 --auto-forward
  banger vm create --name locked --allow-host deb.debian.org --allow-cidr 10.0.0.0/8`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			p := a.newProgress()
			vm, err := c.CreateVM(cmd.Context(), req, p.event)
			p.done()
			if err != nil {
				return err
			}
			return a.printVM(vm)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Name, "name", "", "VM name (a DNS label; generated when omitted)")
	f.StringVar(&req.Image, "image", "", "image name (default from config)")
	f.StringVar(&req.Kernel, "kernel", "", "kernel name, overriding the image's")
	f.IntVar(&req.CPUs, "cpus", 0, "virtual CPUs (default: config, else half the host's, at most 4)")
	f.IntVar(&req.MemoryMiB, "memory", 0, "memory in MiB (default: config, else host RAM/8 within 1-8 GiB)")
	f.StringVar(&req.Disk, "disk", "", "work disk size for /root, e.g. 8G (default 8G)")
	f.StringVar(&req.VMM, "vmm", "", "qemu or firecracker (default from config)")
	f.BoolVar(&req.NoStart, "no-start", false, "create without starting")
	f.StringVar(&req.Net, "net", "", "network: nat (outbound NAT), private (host and VMs only) or none (no NIC); default nat when host networking works")
	f.StringArrayVarP(&req.Publish, "publish", "p", nil, "forward [HOST_ADDR:]HOST_PORT:GUEST_PORT[/udp] from the host (127.0.0.1 by default); repeatable")
	f.BoolVar(&req.AutoForward, "auto-forward", false, "forward the guest's listening TCP ports to the same localhost ports while it runs")
	f.StringArrayVar(&req.AllowHosts, "allow-host", nil, "allow outbound traffic only to this host name (and its subdomains) and the --allow-cidr ranges; repeatable")
	f.StringArrayVar(&req.AllowCIDRs, "allow-cidr", nil, "allow outbound traffic only to this IPv4 range and the --allow-host names; repeatable")
	return cmd
}

func (a *App) vmListCommand(use string) *cobra.Command {
	return &cobra.Command{
		Use:     use,
		Short:   "List VMs",
		Example: "  banger vm list\n  banger ps -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			vms, err := c.ListVMs(cmd.Context())
			if err != nil {
				return err
			}
			if a.Output == "json" {
				if vms == nil {
					vms = []api.VMInfo{}
				}
				return a.printJSON(vms)
			}
			rows := make([][]string, 0, len(vms))
			for _, vm := range vms {
				state := vm.State
				if vm.Emulated && state == "running" {
					state += " (tcg)"
				}
				rows = append(rows, []string{vm.Name, state, vm.ImageName, dash(vm.Network.IP), fmt.Sprint(vm.CPUs),
					fmt.Sprintf("%d MiB", vm.MemoryMiB), bytesize.Format(vm.DiskBytes), vm.VMM, ago(vm.CreatedAt)})
			}
			a.table([]string{"NAME", "STATE", "IMAGE", "IP", "CPUS", "MEMORY", "DISK", "VMM", "CREATED"}, rows)
			return nil
		},
	}
}

func (a *App) vmShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:               "show NAME",
		Short:             "Show one VM",
		Example:           "  banger vm show dev\n  banger vm show dev -o json",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeVMs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			vm, err := c.ShowVM(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.printVM(vm)
		},
	}
}

func (a *App) printVM(vm api.VMInfo) error {
	if a.Output == "json" {
		return a.printJSON(vm)
	}
	accel := dash(vm.Accel)
	if vm.Emulated {
		accel += " (emulated: slow; this host has no usable hardware KVM)"
	}
	rows := [][]string{
		{"name", vm.Name}, {"id", vm.ID}, {"state", vm.State}, {"image", vm.ImageName},
		{"vmm", vm.VMM}, {"accel", accel},
		{"cpus", fmt.Sprint(vm.CPUs)}, {"memory", fmt.Sprintf("%d MiB", vm.MemoryMiB)},
		{"disk", bytesize.Format(vm.DiskBytes)}, {"net", dash(vm.Network.Mode)}, {"ip", dash(vm.Network.IP)},
		{"console", vm.ConsoleLog}, {"created", vm.CreatedAt.Local().Format("2006-01-02 15:04:05")},
	}
	if len(vm.Network.Forwards) > 0 {
		rows = append(rows, []string{"forwards", forwardList(vm.Network.Forwards)})
	}
	if len(vm.Network.AllowHosts)+len(vm.Network.AllowCIDRs) > 0 {
		rows = append(rows, []string{"egress allowed", strings.Join(append(append([]string(nil), vm.Network.AllowHosts...), vm.Network.AllowCIDRs...), ", ")})
	}
	if vm.Workspace.GuestPath != "" {
		rows = append(rows, []string{"workspace", vm.Workspace.HostPath + " -> " + vm.Workspace.GuestPath})
	}
	if vm.LastError != "" {
		rows = append(rows, []string{"last error", vm.LastError})
	}
	a.table([]string{"FIELD", "VALUE"}, rows)
	return nil
}

type vmOp func(ctx context.Context, c *client.Client, name string, p *progress) (string, error)

// vmManyCommand builds a command acting on several VMs at once,
// concurrently, printing results in the order given.
func (a *App) vmManyCommand(use, short, example string, op vmOp) *cobra.Command {
	return &cobra.Command{
		Use:               use + " NAME...",
		Short:             short,
		Example:           example,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: a.completeVMs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.fanOut(cmd.Context(), args, op)
		},
	}
}

func (a *App) fanOut(ctx context.Context, names []string, op vmOp) error {
	c, err := a.client(ctx)
	if err != nil {
		return err
	}
	names = dedupe(names)
	type res struct {
		msg string
		err error
	}
	results := make([]res, len(names))
	p := a.newProgress()
	if len(names) > 1 {
		p.tty = false
	}
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg, err := op(ctx, c, n, p)
			results[i] = res{msg, err}
		}()
	}
	wg.Wait()
	p.done()
	var firstErr error
	failed := 0
	for i, r := range results {
		if r.err != nil {
			failed++
			if len(names) == 1 {
				return r.err
			}
			fmt.Fprintf(a.Stderr, "banger: %s: %s\n", names[i], oneLine(r.err))
			if firstErr == nil {
				firstErr = r.err
			}
			continue
		}
		fmt.Fprintln(a.Stdout, r.msg)
	}
	if failed > 0 {
		return exitCode(ExitError)
	}
	return nil
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", " ") }

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func (a *App) doStart(ctx context.Context, c *client.Client, name string, p *progress) (string, error) {
	vm, err := c.StartVM(ctx, name, p.event)
	if err != nil {
		return "", err
	}
	return vm.Name + " running", nil
}

func (a *App) doRestart(ctx context.Context, c *client.Client, name string, p *progress) (string, error) {
	vm, err := c.RestartVM(ctx, name, p.event)
	if err != nil {
		return "", err
	}
	return vm.Name + " restarted", nil
}

func (a *App) vmStopCommand() *cobra.Command {
	var timeout int
	cmd := a.vmManyCommand("stop", "Stop VMs cleanly (agent sync + poweroff, then kill after --timeout)", "  banger vm stop dev web",
		func(ctx context.Context, c *client.Client, name string, _ *progress) (string, error) {
			vm, err := c.StopVM(ctx, name, api.VMStopRequest{TimeoutSeconds: timeout})
			if err != nil {
				return "", err
			}
			return vm.Name + " stopped", nil
		})
	cmd.Flags().IntVar(&timeout, "timeout", 30, "seconds to wait for a clean stop before killing")
	return cmd
}

func (a *App) vmKillCommand() *cobra.Command {
	var sig string
	cmd := a.vmManyCommand("kill", "Kill VMs' VMM processes (default SIGKILL)", "  banger vm kill dev\n  banger vm kill --signal TERM dev",
		func(ctx context.Context, c *client.Client, name string, _ *progress) (string, error) {
			vm, err := c.KillVM(ctx, name, api.VMKillRequest{Signal: sig})
			if err != nil {
				return "", err
			}
			return vm.Name + " " + vm.State, nil
		})
	cmd.Flags().StringVarP(&sig, "signal", "s", "KILL", "signal to send")
	return cmd
}

func (a *App) vmDeleteCommand() *cobra.Command {
	var force bool
	cmd := a.vmManyCommand("delete", "Delete VMs and their disks (running VMs need --force)", "  banger vm delete dev\n  banger vm delete -f dev",
		func(ctx context.Context, c *client.Client, name string, _ *progress) (string, error) {
			if err := c.DeleteVM(ctx, name, force); err != nil {
				return "", err
			}
			return name + " deleted", nil
		})
	cmd.Aliases = []string{"rm"}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill a running VM first")
	return cmd
}

func (a *App) vmPruneCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "prune",
		Short:   "Delete every VM that is not running",
		Example: "  banger vm prune\n  banger vm prune -f",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			names, err := c.PruneVMs(cmd.Context(), true)
			if err != nil {
				return err
			}
			if len(names) == 0 {
				fmt.Fprintln(a.Stdout, "nothing to prune")
				return nil
			}
			if !force {
				fmt.Fprintf(a.Stdout, "will delete: %s\nproceed? [y/N] ", strings.Join(names, ", "))
				var ans string
				_, _ = fmt.Fscanln(a.Stdin, &ans)
				if ans != "y" && ans != "Y" && ans != "yes" {
					fmt.Fprintln(a.Stdout, "aborted")
					return nil
				}
			}
			deleted, err := c.PruneVMs(cmd.Context(), false)
			for _, n := range deleted {
				fmt.Fprintln(a.Stdout, n+" deleted")
			}
			return err
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "do not ask for confirmation")
	return cmd
}

func (a *App) vmLogsCommand() *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:               "logs NAME",
		Short:             "Print a VM's console log",
		Example:           "  banger vm logs dev\n  banger vm logs -f dev",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeVMs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			rc, err := c.VMLogs(cmd.Context(), args[0], follow)
			if err != nil {
				return err
			}
			defer rc.Close()
			_, err = io.Copy(a.Stdout, rc)
			if cmd.Context().Err() != nil {
				return nil
			}
			return err
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output")
	return cmd
}

func (a *App) vmSetCommand() *cobra.Command {
	var req api.VMSetRequest
	cmd := &cobra.Command{
		Use:               "set NAME...",
		Short:             "Change CPUs, memory or disk size of stopped VMs (disks only grow)",
		Example:           "  banger vm set dev --cpus 4 --memory 4096 --disk 32G",
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: a.completeVMs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.CPUs < 0 || req.MemoryMiB < 0 {
				return usageErrorf("--cpus and --memory must be positive")
			}
			if req == (api.VMSetRequest{}) {
				return usageErrorf("nothing to change: pass --cpus, --memory or --disk")
			}
			return a.fanOut(cmd.Context(), args, func(ctx context.Context, c *client.Client, name string, _ *progress) (string, error) {
				vm, err := c.SetVM(ctx, name, req)
				if err != nil {
					return "", err
				}
				return fmt.Sprintf("%s: %d cpus, %d MiB, %s disk", vm.Name, vm.CPUs, vm.MemoryMiB, bytesize.Format(vm.DiskBytes)), nil
			})
		},
	}
	cmd.Flags().IntVar(&req.CPUs, "cpus", 0, "virtual CPUs")
	cmd.Flags().IntVar(&req.MemoryMiB, "memory", 0, "memory in MiB")
	cmd.Flags().StringVar(&req.Disk, "disk", "", "work disk size (grow only), e.g. 16G")
	return cmd
}

// completeVMs completes VM names from the daemon (silently empty when it is down).
func (a *App) completeVMs(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
	c := client.New(a.Layout.Socket())
	vms, err := c.ListVMs(cmd.Context())
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var names []string
	for _, vm := range vms {
		names = append(names, vm.Name)
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}
