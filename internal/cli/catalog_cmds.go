package cli

import (
	"encoding/json"
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/bytesize"
	"github.com/bangerdev/banger/internal/imagecat"
)

// withCatalogCommands adds the catalog parts of `banger image`: the
// --available flag of `image list`, `image bundle` and `image build`.
func (a *App) withCatalogCommands(img *cobra.Command) *cobra.Command {
	for _, sub := range img.Commands() {
		if sub.Name() == "list" {
			a.addAvailableFlag(sub)
		}
	}
	img.AddCommand(a.imageBundleCommand(), a.imageBuildCommand())
	return img
}

// addAvailableFlag makes `image list --available` list the catalog.
func (a *App) addAvailableFlag(list *cobra.Command) {
	var available bool
	list.Flags().BoolVar(&available, "available", false, "list the image catalog instead (what `image pull NAME` can fetch)")
	list.Short = "List images (or the catalog with --available)"
	list.Example += "\n  banger image list --available"
	local := list.RunE
	list.RunE = func(cmd *cobra.Command, args []string) error {
		if !available {
			return local(cmd, args)
		}
		c, err := a.client(cmd.Context())
		if err != nil {
			return err
		}
		cat, err := c.ImageCatalog(cmd.Context())
		if err != nil {
			return err
		}
		if a.Output == "json" {
			if cat == nil {
				cat = []imagecat.Available{}
			}
			return a.printJSON(cat)
		}
		var rows [][]string
		for _, im := range cat {
			name := im.Name
			if im.Default {
				name += " (default)"
			}
			size := "-"
			if im.Size > 0 {
				size = bytesize.Format(im.Size)
			}
			inst := "no"
			if im.Installed {
				inst = "yes"
			}
			rows = append(rows, []string{name, im.Distro, im.Arch, dash(im.KernelRef), size, inst, im.Source})
		}
		a.table([]string{"NAME", "DISTRO", "ARCH", "KERNEL", "SIZE", "INSTALLED", "SOURCE"}, rows)
		return nil
	}
}

func (a *App) imageBundleCommand() *cobra.Command {
	var req imagecat.BundleRequest
	cmd := &cobra.Command{
		Use:   "bundle NAME --out DIR",
		Short: "Write a catalog bundle (tar+zstd of rootfs.ext4 and manifest.json) of a local image",
		Long: `bundle packs a local image into DIR/<name>-<arch>-<sha256 prefix>.tar.zst and prints
the catalog entry that pins it. Serve the file over HTTP, point catalog_url at
the server and list the entry in an image_catalog file (see docs/images.md):
then ` + "`banger image pull NAME`" + ` fetches and verifies it.`,
		Example: `  banger image bundle debian-bookworm --out ./dist
  banger image bundle busybox --out /srv/bundles -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.OutDir == "" {
				return usageErrorf("--out DIR is required")
			}
			if err := absPaths(&req.OutDir); err != nil {
				return err
			}
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			p := a.newProgress()
			info, err := c.BundleImage(cmd.Context(), args[0], req, p.event)
			p.done()
			if err != nil {
				return err
			}
			if a.Output == "json" {
				return a.printJSON(info)
			}
			entry, _ := json.MarshalIndent(info.Entry, "", "  ")
			fmt.Fprintf(a.Stdout, "bundle %s\nsha256 %s\nsize   %s\n\ncatalog entry:\n%s\n",
				filepath.Clean(info.Path), info.SHA256, bytesize.Format(info.Size), entry)
			return nil
		},
	}
	cmd.Flags().StringVar(&req.OutDir, "out", "", "directory to write the bundle into")
	cmd.Flags().StringVar(&req.Distro, "distro", "", "distro recorded in the manifest (default: from the image's os-release)")
	return cmd
}
