package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/bytesize"
	"github.com/bangerdev/banger/internal/model"
)

func (a *App) kernelCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kernel",
		Short: "Manage guest kernels",
		Long: `Kernels are managed artifacts: an ELF vmlinux (extracted from a bzImage when
needed), optional modules and a manifest. banger generates each VM's initrd
itself (banger-agent as /init plus the virtio/vsock/overlay modules).`,
		Example: `  banger kernel pull debian-cloud
  banger kernel import mine --from-deb ./linux-image-6.1.0-56-cloud-amd64_6.1.192-2_amd64.deb
  banger kernel list --available`,
	}
	cmd.AddCommand(a.kernelListCommand(), a.kernelShowCommand(), a.kernelImportCommand(), a.kernelPullCommand(), a.kernelRmCommand())
	return cmd
}

func (a *App) kernelListCommand() *cobra.Command {
	var available bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List stored kernels (or the catalog with --available)",
		Example: "  banger kernel list\n  banger kernel list --available -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			if available {
				cat, err := c.KernelCatalog(cmd.Context())
				if err != nil {
					return err
				}
				if a.Output == "json" {
					return a.printJSON(cat)
				}
				var rows [][]string
				for _, k := range cat {
					inst := "no"
					if k.Installed {
						inst = "yes"
					}
					rows = append(rows, []string{k.Name, k.Version, k.Source, inst})
				}
				a.table([]string{"NAME", "VERSION", "SOURCE", "INSTALLED"}, rows)
				return nil
			}
			ks, err := c.ListKernels(cmd.Context())
			if err != nil {
				return err
			}
			if a.Output == "json" {
				if ks == nil {
					ks = []model.Kernel{}
				}
				return a.printJSON(ks)
			}
			var rows [][]string
			for _, k := range ks {
				rows = append(rows, []string{k.Name, k.Version, shortSHA(k.SHA256), k.Source, ago(k.ImportedAt)})
			}
			a.table([]string{"NAME", "VERSION", "SHA256", "SOURCE", "IMPORTED"}, rows)
			return nil
		},
	}
	cmd.Flags().BoolVar(&available, "available", false, "show the embedded catalog instead")
	return cmd
}

func shortSHA(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return dash(s)
}

func (a *App) kernelShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Short:   "Show a kernel and its files",
		Example: "  banger kernel show debian-cloud",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			k, err := c.ShowKernel(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if a.Output == "json" {
				return a.printJSON(k)
			}
			a.table([]string{"FIELD", "VALUE"}, [][]string{
				{"name", k.Name}, {"version", k.Version}, {"sha256", k.SHA256}, {"source", k.Source},
				{"vmlinux", fmt.Sprintf("%s (%s)", k.Vmlinux, bytesize.Format(k.Size))},
				{"modules", dash(k.ModulesDir)}, {"initrd", dash(k.Initrd)},
				{"imported", k.ImportedAt.Local().Format("2006-01-02 15:04:05")},
			})
			return nil
		},
	}
}

func (a *App) kernelImportCommand() *cobra.Command {
	var req api.KernelImportRequest
	cmd := &cobra.Command{
		Use:   "import NAME (--from-deb FILE.deb | --vmlinuz P [--modules DIR] [--initrd P] | --vmlinux P)",
		Short: "Import a kernel from a Debian package or from files",
		Example: `  banger kernel import cloud --from-deb linux-image-6.1.0-56-cloud-amd64_6.1.192-2_amd64.deb
  banger kernel import custom --vmlinux ./vmlinux
  banger kernel import distro --vmlinuz /boot/vmlinuz-6.1.0-28-amd64 --modules /lib/modules/6.1.0-28-amd64`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			if req.FromDeb == "" && req.Vmlinuz == "" && req.Vmlinux == "" {
				return usageErrorf("give --from-deb, --vmlinuz or --vmlinux")
			}
			if err := absPaths(&req.FromDeb, &req.Vmlinuz, &req.Vmlinux, &req.Initrd, &req.ModulesDir); err != nil {
				return err
			}
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			p := a.newProgress()
			k, err := c.ImportKernel(cmd.Context(), req, p.event)
			p.done()
			if err != nil {
				return err
			}
			return a.printKernel(k)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.FromDeb, "from-deb", "", "a linux-image .deb (kernel and modules are taken from it)")
	f.StringVar(&req.Vmlinuz, "vmlinuz", "", "a bzImage (vmlinux is extracted from it)")
	f.StringVar(&req.Vmlinux, "vmlinux", "", "an ELF vmlinux")
	f.StringVar(&req.Initrd, "initrd", "", "an initrd to keep with the kernel")
	f.StringVar(&req.ModulesDir, "modules", "", "the kernel's lib/modules/<release> directory")
	return cmd
}

func (a *App) printKernel(k model.Kernel) error {
	if a.Output == "json" {
		return a.printJSON(k)
	}
	fmt.Fprintf(a.Stdout, "kernel %s (%s) ready\n", k.Name, k.Version)
	return nil
}

func (a *App) kernelPullCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "pull [NAME]",
		Short:   "Fetch a kernel from the embedded catalog (default: the configured default kernel)",
		Example: "  banger kernel pull\n  banger kernel pull debian-cloud",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			p := a.newProgress()
			k, err := c.PullKernel(cmd.Context(), name, p.event)
			p.done()
			if err != nil {
				return err
			}
			return a.printKernel(k)
		},
	}
}

func (a *App) kernelRmCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"delete"},
		Short:   "Delete a kernel (refused while an image uses it)",
		Example: "  banger kernel rm old-kernel",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			if err := c.RemoveKernel(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "kernel %s deleted\n", args[0])
			return nil
		},
	}
}
