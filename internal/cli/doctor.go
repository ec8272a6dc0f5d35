package cli

import "github.com/spf13/cobra"

func (a *App) doctorCommand() *cobra.Command {
	return &cobra.Command{Use: "doctor", Short: "Check this host (pending)", Hidden: true}
}
