// Package cli implements the banger command line over the daemon's API.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/buildinfo"
	"github.com/bangerdev/banger/internal/paths"
)

// App carries what every command needs: streams, layout and output format.
type App struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Layout paths.Layout
	// Output is "table" or "json".
	Output string
	// DaemonBin overrides where bangerd is found (tests).
	DaemonBin string
}

// Main runs the CLI with args and returns the process exit code.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	app := &App{Stdin: stdin, Stdout: stdout, Stderr: stderr}
	root := app.rootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) && ee.quiet {
		return ee.code
	}
	return app.printError(err)
}

func (a *App) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "banger",
		Short: "One-command development sandboxes on microVMs",
		Long: `banger runs disposable or long-lived Linux microVMs for development.

  banger vm run -- uname -a          run a command in a fresh VM
  banger image pull debian:bookworm  turn any OCI image into a bootable image
  banger doctor                      check this host

The daemon (bangerd) is started automatically when needed.`,
		Version:           buildinfo.String(),
		SilenceUsage:      true,
		SilenceErrors:     true,
		CompletionOptions: cobra.CompletionOptions{HiddenDefaultCmd: false},
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			switch a.Output {
			case "table", "json":
			default:
				return usageErrorf("--output %q: want table or json", a.Output)
			}
			l, err := paths.User()
			if err != nil {
				return err
			}
			if os.Getenv("BANGER_SYSTEM") == "1" {
				l = paths.System()
			}
			a.Layout = l
			return nil
		},
	}
	root.SetVersionTemplate("banger {{.Version}}\n")
	root.PersistentFlags().StringVarP(&a.Output, "output", "o", "table", "output format: table or json")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageErrorf("%v", err) })
	root.AddCommand(
		a.versionCommand(),
		a.daemonCommand(),
		a.doctorCommand(),
	)
	for _, add := range a.extraCommands() {
		root.AddCommand(add)
	}
	return root
}

func (a *App) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the versions of banger and of the running daemon",
		Example: `  banger version
  banger version -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := map[string]any{"cli": buildinfo.Version}
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			v, err := c.Version(cmd.Context())
			if err != nil {
				return err
			}
			out["daemon"] = v.Version
			out["api"] = v.API
			out["daemon_pid"] = v.PID
			if a.Output == "json" {
				return a.printJSON(out)
			}
			fmt.Fprintf(a.Stdout, "banger  %s\nbangerd %s (pid %d, api v%s)\n", buildinfo.String(), v.Version, v.PID, v.API)
			return nil
		},
	}
}
