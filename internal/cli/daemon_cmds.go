package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/client"
	"github.com/bangerdev/banger/internal/errkind"
)

func (a *App) daemonCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Inspect and control bangerd, the background daemon",
		Long: `bangerd keeps banger's state and owns every VM. The banger command starts it
automatically (detached, logging to the state directory) and restarts it when
its version differs from the CLI's.`,
		Example: `  banger daemon status
  banger daemon logs -f
  banger daemon stop`,
	}
	status := &cobra.Command{
		Use:     "status",
		Short:   "Show whether bangerd runs, its pid, socket and log",
		Example: "  banger daemon status -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := client.New(a.Layout.Socket())
			v, err := probe(cmd.Context(), c)
			if errors.Is(err, client.ErrNoDaemon) {
				if a.Output == "json" {
					_ = a.printJSON(map[string]any{"running": false, "socket": a.Layout.Socket()})
				} else {
					fmt.Fprintf(a.Stdout, "bangerd is not running (socket %s)\n", a.Layout.Socket())
				}
				return exitCode(ExitUnavailable)
			}
			if err != nil {
				return err
			}
			if a.Output == "json" {
				return a.printJSON(map[string]any{"running": true, "info": v})
			}
			a.table([]string{"FIELD", "VALUE"}, [][]string{
				{"running", "yes"},
				{"version", v.Version},
				{"pid", fmt.Sprint(v.PID)},
				{"socket", v.Socket},
				{"state", v.StateDir},
				{"log", v.LogFile},
				{"uptime", time.Since(v.StartedAt).Round(time.Second).String()},
			})
			return nil
		},
	}
	start := &cobra.Command{
		Use:     "start",
		Short:   "Start bangerd if it is not running",
		Example: "  banger daemon start",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := a.client(cmd.Context())
			if err == nil {
				fmt.Fprintln(a.Stdout, "bangerd is running")
			}
			return err
		},
	}
	stop := &cobra.Command{
		Use:     "stop",
		Short:   "Stop bangerd (running VMs keep running and are re-adopted on next start)",
		Example: "  banger daemon stop",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := client.New(a.Layout.Socket())
			if err := a.stopDaemon(cmd.Context(), c); err != nil {
				return err
			}
			fmt.Fprintln(a.Stdout, "bangerd stopped")
			return nil
		},
	}
	var follow bool
	logs := &cobra.Command{
		Use:   "logs",
		Short: "Print the daemon log",
		Example: `  banger daemon logs
  banger daemon logs -f`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := os.Open(a.Layout.DaemonLog())
			if errors.Is(err, os.ErrNotExist) {
				return errkind.New(errkind.NotFound, "no daemon log at %s", a.Layout.DaemonLog())
			}
			if err != nil {
				return err
			}
			defer f.Close()
			return copyFollow(cmd, a.Stdout, f, follow)
		},
	}
	logs.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines")
	cmd.AddCommand(status, start, stop, logs)
	return cmd
}

// copyFollow copies r to w, and with follow keeps polling for appended data
// until the command's context ends.
func copyFollow(cmd *cobra.Command, w io.Writer, r io.Reader, follow bool) error {
	for {
		if _, err := io.Copy(w, r); err != nil {
			return err
		}
		if !follow {
			return nil
		}
		select {
		case <-cmd.Context().Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}
