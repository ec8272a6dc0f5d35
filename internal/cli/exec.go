package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/bangerdev/banger/internal/agentproto"
	"github.com/bangerdev/banger/internal/client"
)

type execOpts struct {
	tty     bool
	noStdin bool
	env     []string
	cwd     string
	user    string
	sync    bool
}

func (a *App) vmExecCommand() *cobra.Command {
	var o execOpts
	cmd := &cobra.Command{
		Use:   "exec NAME -- COMMAND [ARGS...]",
		Short: "Run a command in a running VM and exit with its status",
		Long: `exec runs a command through the guest agent (no SSH needed). stdin is forwarded,
stdout and stderr stream back, and banger exits with the command's status
(128+N when a signal killed it; 255 when the agent channel dropped).
The command gets the image's environment (PATH, Env, User) and runs in the
VM's workspace, else the image's WorkingDir, else root's home.`,
		Example: `  banger vm exec dev -- uname -a
  banger vm exec dev -- sh -c 'exit 7'; echo $?
  banger vm exec -t dev -- sh          # interactive shell on a PTY
  tar c . | banger vm exec dev -- tar x -C /root/src`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: a.completeVMs,
		RunE: func(cmd *cobra.Command, args []string) error {
			name, argv := args[0], args[1:]
			if len(argv) == 0 && !o.tty {
				return usageErrorf("no command given (use `-- COMMAND`, or -t for a shell)")
			}
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			if err := a.checkWorkspace(cmd.Context(), c, name, o.sync); err != nil {
				return err
			}
			code, err := a.execIn(cmd.Context(), c, name, argv, o)
			if err != nil {
				return err
			}
			return exitCode(code)
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&o.tty, "tty", "t", false, "allocate a pseudo-terminal (interactive programs)")
	f.BoolVarP(&o.noStdin, "no-stdin", "n", false, "do not forward stdin")
	f.StringArrayVarP(&o.env, "env", "e", nil, "set an environment variable KEY=VALUE (repeatable)")
	f.StringVarP(&o.cwd, "workdir", "w", "", "working directory in the guest")
	f.StringVarP(&o.user, "user", "u", "", "user (name or uid[:gid]) to run as")
	f.BoolVar(&o.sync, "sync", false, "re-copy the VM's workspace from the host first")
	return cmd
}

// execIn runs argv in a VM, wiring the terminal, and returns the exit code.
func (a *App) execIn(ctx context.Context, c *client.Client, name string, argv []string, o execOpts) (int, error) {
	req := agentproto.ExecRequest{Argv: argv, Env: o.env, Cwd: o.cwd, User: o.user, TTY: o.tty}
	var restore func()
	inFile, inIsFile := a.Stdin.(*os.File)
	if o.tty {
		if inIsFile && term.IsTerminal(int(inFile.Fd())) {
			if w, h, err := term.GetSize(int(inFile.Fd())); err == nil {
				req.Cols, req.Rows = uint16(w), uint16(h)
			}
			if t := os.Getenv("TERM"); t != "" {
				req.Env = append([]string{"TERM=" + t}, req.Env...)
			}
		}
	}
	interactive := o.tty && inIsFile && term.IsTerminal(int(inFile.Fd()))
	var sigs chan os.Signal
	if !interactive {
		// Not a terminal: SIGINT/SIGTERM/SIGHUP go to the remote process.
		// Caught from before the session exists, so one sent while it is
		// being set up is delivered once it is, not lost.
		sigs = make(chan os.Signal, 4)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
		defer signal.Stop(sigs)
	}
	conn, err := c.Exec(ctx, name, req)
	if err != nil {
		if code, ok := a.execStartStatus(err); ok {
			return code, nil
		}
		return 0, err
	}
	defer conn.Close()
	defer context.AfterFunc(ctx, func() { conn.Close() })()
	es := agentproto.NewExecStream(conn)

	if interactive {
		old, err := term.MakeRaw(int(inFile.Fd()))
		if err == nil {
			restore = func() { _ = term.Restore(int(inFile.Fd()), old) }
			defer restore()
		}
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		defer signal.Stop(winch)
		go func() {
			for range winch {
				if w, h, err := term.GetSize(int(inFile.Fd())); err == nil {
					_ = es.Resize(uint16(h), uint16(w))
				}
			}
		}()
	} else {
		go func() {
			for s := range sigs {
				_ = es.Signal(int(s.(syscall.Signal)))
			}
		}()
	}
	if !o.noStdin {
		go func() { _ = es.SendStdin(a.Stdin) }()
	} else {
		_ = es.CloseStdin()
	}
	st, err := es.Wait(a.Stdout, a.Stderr)
	if restore != nil {
		restore()
	}
	if err != nil {
		if ctx.Err() != nil {
			return 0, context.Cause(ctx)
		}
		if errors.Is(err, agentproto.ErrNoExitStatus) || errors.Is(err, io.ErrUnexpectedEOF) || ctx.Err() == nil {
			fmt.Fprintf(a.Stderr, "banger: lost the connection to the guest agent of %s: %v\n", name, err)
			fmt.Fprintf(a.Stderr, "hint: check `banger vm show %s` and `banger vm logs %s`\n", name, name)
			return ExitAgentLost, nil
		}
		return 0, err
	}
	if st.Message != "" {
		fmt.Fprintf(a.Stderr, "banger: %s\n", st.Message)
	}
	return st.Code, nil
}
