package cli

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/config"
	"github.com/bangerdev/banger/internal/doctor"
	"github.com/bangerdev/banger/internal/errkind"
	"github.com/bangerdev/banger/internal/store"
)

func (a *App) doctorCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "doctor",
		Short: "Check that this host can run banger VMs",
		Long: `doctor checks the host without changing anything: architecture, /dev/kvm and
whether KVM is real or PVM (where stock kernels cannot boot and QEMU falls back
to TCG emulation), QEMU, Firecracker, e2fsprogs, /dev/net/tun, nftables,
privileges, the state database (opened read-only) and free disk.
It exits 1 when any row is FAIL.`,
		Example: `  banger doctor
  banger doctor -o json | jq '.checks[] | select(.status != "PASS")'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(a.Layout.ConfigFile())
			if err != nil {
				return err
			}
			rep := doctor.Run(cmd.Context(), doctor.Options{
				FirecrackerBin:      cfg.FirecrackerBin,
				FirecrackerRequired: cfg.DefaultVMM == "firecracker",
				StateDir:            a.Layout.StateDir,
				CacheDir:            a.Layout.CacheDir,
				StoreCheck:          a.storeCheck,
			})
			if a.Output == "json" {
				if err := a.printJSON(rep); err != nil {
					return err
				}
			} else {
				rows := make([][]string, 0, len(rep.Checks))
				for _, c := range rep.Checks {
					rows = append(rows, []string{string(c.Status), c.Name, c.Detail})
				}
				a.table([]string{"STATUS", "CHECK", "DETAIL"}, rows)
				for _, c := range rep.Checks {
					if c.Status != doctor.Pass && c.Hint != "" {
						fmt.Fprintf(a.Stdout, "\n%s: %s", c.Name, c.Hint)
					}
				}
				fmt.Fprintf(a.Stdout, "\n%d pass, %d warn, %d fail\n", rep.Count(doctor.Pass), rep.Count(doctor.Warn), rep.Count(doctor.Fail))
			}
			if rep.Failed() {
				return exitCode(ExitError)
			}
			return nil
		},
	}
}

// storeCheck opens the database read-only (no migrations) and queries it.
func (a *App) storeCheck(ctx context.Context) error {
	path := a.Layout.DBPath()
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return errkind.New(errkind.NotFound, "no state database yet at %s", path)
	}
	st, err := store.Status(ctx, path)
	if err != nil {
		return err
	}
	if st.Current > st.Latest {
		return errkind.WithHint(fmt.Errorf("database schema %d is newer than this banger (%d)", st.Current, st.Latest), "upgrade banger")
	}
	s, err := store.OpenReadOnly(ctx, path)
	if err != nil {
		return err
	}
	defer s.Close()
	return s.Ping(ctx)
}
