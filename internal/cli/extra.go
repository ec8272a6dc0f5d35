package cli

import "github.com/spf13/cobra"

// extraCommands returns the resource command groups (images, kernels, VMs).
func (a *App) extraCommands() []*cobra.Command {
	return append([]*cobra.Command{a.withNetCommands(a.withRunCommands(a.vmCommand())), a.psCommand(), a.kernelCommand(), a.withCatalogCommands(a.imageCommand())}, a.sshConfigCommand(), a.networkCommand())
}
