package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/client"
	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/namegen"
	"github.com/bangerdev/banger/internal/workspace"
)

// Exit codes of remote commands that could not run (as in a POSIX shell)
// and of `vm run --timeout` (as timeout(1)).
const (
	ExitCannotExecute   = 126
	ExitCommandNotFound = 127
	ExitTimedOut        = 124
)

type runOpts struct {
	create           api.VMCreateRequest
	rm, detach       bool
	tty, ttyAuto     bool
	dryRun           bool
	includeUntracked bool
	mode             string
	env              []string
	timeout          time.Duration
}

func (a *App) vmRunCommand() *cobra.Command {
	var o runOpts
	cmd := &cobra.Command{
		Use:   "run [PATH] [-- COMMAND [ARGS...]]",
		Short: "Create a VM, copy a workspace into it, and open a shell or run a command",
		Long: `run creates and starts a fresh VM from the default image (or --image), then:

  banger vm run                       opens a shell in the VM
  banger vm run ./repo                copies ./repo to /root/repo and opens a shell there
  banger vm run ./repo -- make test   runs the command in /root/repo and exits with its status

The workspace copy holds the files git tracks (never ignored files) and the
repository's .git; --include-untracked adds untracked files that are not
ignored. A directory that is not a git repository is copied whole. A
repository with submodules is refused unless --mode full, which copies the
directory exactly as it is. --dry-run prints the file list and creates nothing.

Commands get the image's environment (PATH, Env, User) and stdin, and a
terminal when banger runs in one (-t/--tty=false force it); banger exits
with the command's status (128+N when signal N killed it, 127 when it
does not exist in the guest, 255 when the agent channel dropped, 124 on
--timeout). The one-line VM spec goes to stderr: stdout carries only the
command's output. --rm deletes the VM afterwards whatever happens, Ctrl-C
included; without it the VM keeps running (banger vm delete -f NAME).`,
		Example: `  banger vm run -- uname -a
  banger vm run --rm ./repo -- make test
  banger vm run ./repo                      # shell in /root/repo
  banger vm run -d --name dev ./repo        # prepare and return; then banger vm ssh dev
  banger vm run --dry-run --include-untracked ./repo`,
		Args: func(cmd *cobra.Command, args []string) error {
			before := args
			if dash := cmd.ArgsLenAtDash(); dash >= 0 {
				before = args[:dash]
			}
			if len(before) > 1 {
				return usageErrorf("at most one PATH before `--` (put the command after `--`: banger vm run %s -- %s)",
					before[0], strings.Join(before[1:], " "))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			path, argv := "", args
			if dash := cmd.ArgsLenAtDash(); dash >= 0 {
				if dash == 1 {
					path = args[0]
				}
				argv = args[dash:]
			} else {
				if len(args) == 1 {
					path = args[0]
				}
				argv = nil
			}
			o.ttyAuto = !cmd.Flags().Changed("tty")
			return a.runVM(cmd.Context(), o, path, argv)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.create.Name, "name", "", "VM name (generated when omitted)")
	f.StringVar(&o.create.Image, "image", "", "image name (default from config)")
	f.StringVar(&o.create.Kernel, "kernel", "", "kernel name, overriding the image's")
	f.IntVar(&o.create.CPUs, "cpus", 0, "virtual CPUs")
	f.IntVar(&o.create.MemoryMiB, "memory", 0, "memory in MiB")
	f.StringVar(&o.create.Disk, "disk", "", "work disk size for /root, e.g. 8G")
	f.StringVar(&o.create.Net, "net", "", "network: nat, private or none (default: nat when host networking works)")
	f.StringArrayVarP(&o.create.Publish, "publish", "p", nil, "forward [HOST_ADDR:]HOST_PORT:GUEST_PORT[/udp] from the host while the VM runs; repeatable")
	f.BoolVar(&o.create.AutoForward, "auto-forward", false, "forward the guest's listening TCP ports to the same localhost ports")
	f.StringVar(&o.create.VMM, "vmm", "", "qemu or firecracker (default from config)")
	f.BoolVar(&o.rm, "rm", false, "delete the VM when the shell or command ends (whatever the outcome, Ctrl-C included)")
	f.BoolVarP(&o.detach, "detach", "d", false, "create the VM and copy the workspace, then return (prints the VM name)")
	f.BoolVarP(&o.tty, "tty", "t", false, "run on a pseudo-terminal (default: when stdin and stdout are terminals; --tty=false to refuse)")
	f.BoolVar(&o.includeUntracked, "include-untracked", false, "also copy untracked files that are not ignored")
	f.StringVar(&o.mode, "mode", "git", "workspace copy: git (tracked files + .git) or full (the directory as it is)")
	f.BoolVar(&o.dryRun, "dry-run", false, "print the files that would be copied; create nothing")
	f.StringArrayVarP(&o.env, "env", "e", nil, "set an environment variable KEY=VALUE for the command (repeatable)")
	f.DurationVar(&o.timeout, "timeout", 0, "give up after this long (boot, copy and command; exit 124), e.g. 10m")
	return cmd
}

// runVM is `vm run`.
func (a *App) runVM(ctx context.Context, o runOpts, path string, argv []string) error {
	if o.detach && o.rm {
		return usageErrorf("-d and --rm do not mix: a detached VM is meant to stay")
	}
	if o.detach && len(argv) > 0 {
		return usageErrorf("-d does not run a command: drop -d, or run it later with `banger vm exec NAME -- ...`")
	}
	for _, kv := range o.env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return usageErrorf("--env %q: want KEY=VALUE", kv)
		}
	}
	var plan *workspace.Plan
	if path != "" {
		mode, err := workspace.ParseMode(o.mode)
		if err != nil {
			return &exitError{code: ExitUsage, err: err}
		}
		if plan, err = workspace.Inspect(ctx, path, workspace.Options{Mode: mode, IncludeUntracked: o.includeUntracked}); err != nil {
			return err
		}
	}
	if o.dryRun {
		return a.printDryRun(plan)
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if o.timeout > 0 {
		var tcancel context.CancelFunc
		ctx, tcancel = context.WithTimeoutCause(ctx, o.timeout, errRunTimeout)
		defer tcancel()
	}
	// Until the command runs, Ctrl-C, SIGTERM and SIGHUP abort the run
	// (and --rm cleans up). While it runs, SIGINT belongs to the command
	// (vm exec forwards it); a hang-up still ends the run.
	var running atomic.Bool
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer func() { signal.Stop(sigs); close(sigs) }()
	go func() {
		for s := range sigs {
			if running.Load() && s == syscall.SIGINT {
				continue
			}
			cancel(errInterrupted)
			return
		}
	}()

	c, err := a.client(ctx)
	if err != nil {
		return runErr(ctx, err)
	}
	name, err := a.pickName(ctx, c, o.create.Name)
	if err != nil {
		return runErr(ctx, err)
	}
	o.create.Name = name
	// --rm removes the VM this run creates, never one that existed before.
	owned := true
	if o.rm {
		defer func() {
			if owned {
				a.removeVM(ctx, c, name)
			}
		}()
	} else {
		// An interrupted run leaves its VM to the daemon, which finishes
		// starting it: say so, as a finished run does.
		asked := time.Now()
		defer func() {
			if owned && ctx.Err() != nil {
				a.reportKeptVM(ctx, c, name, asked)
			}
		}()
	}

	p := a.newProgress()
	vm, err := c.CreateVM(ctx, o.create, p.event)
	p.done()
	if errors.Is(err, errkind.AlreadyExists) {
		owned = false
	}
	if err != nil {
		if errors.Is(err, errkind.NotFound) && strings.Contains(err.Error(), "image") {
			hint := "see `banger image list`, or pull one with `banger image pull`"
			if o.create.Image == "" {
				hint = "the default image is set up by scripts/setup.sh; pass --image NAME (see `banger image list`) or pull one with `banger image pull`"
			}
			err = errkind.WithHint(err, hint)
		}
		return runErr(ctx, err)
	}
	fmt.Fprintf(a.Stderr, "vm %s · %d vcpu · %d MiB · image %s\n", vm.Name, vm.CPUs, vm.MemoryMiB, vm.ImageName)

	if plan != nil {
		if _, err := a.copyWorkspace(ctx, c, name, plan, workspace.DefaultGuestPath); err != nil {
			return runErr(ctx, err)
		}
	}
	if o.detach {
		fmt.Fprintln(a.Stdout, name)
		fmt.Fprintf(a.Stderr, "vm %s is running: `banger vm ssh %s` opens a shell, `banger vm delete -f %s` removes it\n", name, name, name)
		return nil
	}

	interactive := len(argv) == 0
	eo := execOpts{env: o.env, tty: o.tty}
	if o.ttyAuto {
		// As a local command would: a terminal when the user sits at one.
		eo.tty = a.stdinIsTerminal() && (interactive || a.stdoutIsTerminal())
	}
	running.Store(true)
	code, err := a.execIn(ctx, c, name, argv, eo)
	running.Store(false)
	if err != nil {
		return runErr(ctx, err)
	}
	if ctx.Err() != nil {
		return runErr(ctx, ctx.Err())
	}
	if code == ExitAgentLost {
		a.reportVMState(c, name)
	}
	switch {
	case o.rm:
	case interactive:
		fmt.Fprintf(a.Stderr, "vm %s is still running: `banger vm ssh %s` to get back in, `banger vm delete -f %s` to remove it\n", name, name, name)
	case a.stderrIsTerminal():
		fmt.Fprintf(a.Stderr, "vm %s is still running (`banger vm delete -f %s` removes it; --rm does it for you)\n", name, name)
	}
	return exitCode(code)
}

var (
	errInterrupted = errors.New("interrupted")
	errRunTimeout  = errors.New("timed out")
)

// runErr turns an error of an aborted run into the right exit: 124 for
// --timeout, 130 for an interrupt.
func runErr(ctx context.Context, err error) error {
	switch context.Cause(ctx) {
	case errRunTimeout:
		return &exitError{code: ExitTimedOut, err: fmt.Errorf("vm run timed out (--timeout)")}
	case errInterrupted:
		return &exitError{code: 130, err: fmt.Errorf("interrupted")}
	}
	return err
}

// pickName returns the requested name or a fresh one, chosen here so that
// --rm can clean up even when the create itself is interrupted.
func (a *App) pickName(ctx context.Context, c *client.Client, name string) (string, error) {
	if name != "" {
		return name, nil
	}
	vms, err := c.ListVMs(ctx)
	if err != nil {
		return "", err
	}
	taken := map[string]bool{}
	for _, vm := range vms {
		taken[vm.Name] = true
	}
	return namegen.Unique(func(n string) bool { return taken[n] }), nil
}

// removeVM deletes a VM for --rm with a context of its own, so that an
// interrupt or timeout of the run does not cancel the cleanup. A create
// still in flight in the daemon is waited for.
func (a *App) removeVM(ctx context.Context, c *client.Client, name string) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	deadline := time.Now().Add(3 * time.Second)
	for {
		err := c.DeleteVM(dctx, name, true)
		switch {
		case err == nil:
			return
		case errors.Is(err, errkind.NotFound) && time.Now().After(deadline):
			return
		case errors.Is(err, errkind.NotFound), errors.Is(err, errkind.Conflict), errors.Is(err, errkind.AlreadyExists):
			// Not created yet, or still being created: wait for it.
		default:
			fmt.Fprintf(a.Stderr, "banger: --rm: deleting vm %s: %s\n", name, oneLine(err))
			return
		}
		select {
		case <-dctx.Done():
			fmt.Fprintf(a.Stderr, "banger: --rm: vm %s not deleted: %v\n", name, dctx.Err())
			return
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// reportKeptVM tells where the VM of an interrupted run without --rm
// stands (the daemon goes on starting it), when this run created it.
func (a *App) reportKeptVM(ctx context.Context, c *client.Client, name string, asked time.Time) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	vm, err := c.ShowVM(sctx, name)
	if err != nil || vm.CreatedAt.Before(asked.Add(-time.Second)) {
		return
	}
	fmt.Fprintf(a.Stderr, "vm %s is %s and stays (no --rm): `banger vm delete -f %s` removes it\n", name, vm.State, name)
}

// reportVMState says what became of a VM after its agent channel dropped.
// A VM whose VMM just died is still "running" for a moment: the state is
// polled for a few seconds until it settles.
func (a *App) reportVMState(c *client.Client, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var vm api.VMInfo
	var err error
	for deadline := time.Now().Add(3 * time.Second); ; {
		vm, err = c.ShowVM(ctx, name)
		if err != nil {
			fmt.Fprintf(a.Stderr, "banger: vm %s: %s\n", name, oneLine(err))
			return
		}
		if vm.State != "running" || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	msg := fmt.Sprintf("banger: vm %s is %s", name, vm.State)
	if vm.LastError != "" {
		msg += " (" + vm.LastError + ")"
	}
	fmt.Fprintln(a.Stderr, msg)
}

// printDryRun prints the files a copy would send (stdout) and a summary
// (stderr).
func (a *App) printDryRun(plan *workspace.Plan) error {
	if plan == nil {
		fmt.Fprintln(a.Stderr, "no PATH given: no workspace would be copied")
		return nil
	}
	for _, n := range plan.Notices {
		fmt.Fprintln(a.Stderr, "note: "+n)
	}
	for _, p := range plan.Paths() {
		fmt.Fprintln(a.Stdout, p)
	}
	fmt.Fprintf(a.Stderr, "would copy %s to %s (%s)\n", plan.Root, workspace.DefaultGuestPath, plan.Summary())
	return nil
}

func (a *App) stdinIsTerminal() bool {
	f, ok := a.Stdin.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func (a *App) stdoutIsTerminal() bool {
	f, ok := a.Stdout.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func (a *App) stderrIsTerminal() bool {
	f, ok := a.Stderr.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// execStartStatus maps a guest refusing to start a command onto the exit
// status a shell gives: 127 when it does not exist, 126 when it cannot be
// executed. It prints the guest's message.
func (a *App) execStartStatus(err error) (int, bool) {
	msg := err.Error()
	i := strings.Index(msg, "guest exec: ")
	if i < 0 {
		return 0, false
	}
	guest := msg[i+len("guest exec: "):]
	code := 0
	switch {
	case strings.Contains(guest, "not found in PATH"), strings.HasPrefix(guest, "executable ") && strings.Contains(guest, "not found"):
		code = ExitCommandNotFound
	case strings.Contains(guest, "is not executable"), strings.Contains(guest, "permission denied"):
		code = ExitCannotExecute
	default:
		return 0, false
	}
	fmt.Fprintf(a.Stderr, "banger: %s\n", guest)
	return code, true
}

// withRunCommands adds run, cp, ssh and workspace to the vm command group.
func (a *App) withRunCommands(vm *cobra.Command) *cobra.Command {
	vm.AddCommand(a.vmRunCommand(), a.vmCpCommand(), a.vmSSHCommand(), a.vmWorkspaceCommand())
	return vm
}
