package cli

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/bytesize"
	"github.com/bangerdev/banger/internal/model"
)

func (a *App) imageCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Manage images (root filesystem + kernel)",
		Long: `An image is a root filesystem (rootfs.ext4) plus a kernel. Managed images live in
banger's state directory; registered (unmanaged) images point at host files.
Images are read-only bases shared by every VM made from them.`,
		Example: `  banger image pull debian:bookworm
  banger image pull 127.0.0.1:5000/busybox:latest --name busybox --kernel-ref debian-cloud
  banger image list`,
	}
	cmd.AddCommand(a.imagePullCommand(), a.imageRegisterCommand(), a.imagePromoteCommand(), a.imageListCommand(),
		a.imageShowCommand(), a.imageDeleteCommand(), a.imageCacheCommand())
	return cmd
}

func (a *App) imagePullCommand() *cobra.Command {
	var req api.ImagePullRequest
	cmd := &cobra.Command{
		Use:   "pull REF",
		Short: "Pull an OCI image and turn it into a managed ext4 image",
		Long: `pull downloads REF (linux/amd64) into a shared, digest-verified blob cache,
flattens its layers in one streaming pass and writes rootfs.ext4 without root.
The name defaults to one derived from REF (debian:bookworm -> debian-bookworm).
Without kernel flags the configured default kernel is used.
Credentials come from docker's config.json and credential helpers.`,
		Example: `  banger image pull debian:bookworm
  banger image pull ghcr.io/org/tool:v1.2 --name tool --size 4G
  banger image pull 127.0.0.1:5000/busybox --kernel-ref debian-cloud
  banger image pull alpine:3.20 --kernel ./vmlinuz --modules ./modules`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Ref = args[0]
			if req.KernelRef != "" && (req.KernelPath != "" || req.InitrdPath != "" || req.ModulesDir != "") {
				return usageErrorf("--kernel-ref excludes --kernel, --initrd and --modules")
			}
			if err := absPaths(&req.KernelPath, &req.InitrdPath, &req.ModulesDir); err != nil {
				return err
			}
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			p := a.newProgress()
			im, err := c.PullImage(cmd.Context(), req, p.event)
			p.done()
			if err != nil {
				return err
			}
			return a.printImage(im)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Name, "name", "", "image name (default derived from REF)")
	f.StringVar(&req.KernelRef, "kernel-ref", "", "kernel from the kernel store (see `banger kernel list`)")
	f.StringVar(&req.KernelPath, "kernel", "", "kernel file (vmlinux or bzImage)")
	f.StringVar(&req.InitrdPath, "initrd", "", "initrd file (with --kernel)")
	f.StringVar(&req.ModulesDir, "modules", "", "kernel modules dir (with --kernel)")
	f.StringVar(&req.Size, "size", "", "filesystem size, e.g. 4G, 4GiB, 512M; bare numbers are MiB (default max(1.25×content, 1G))")
	return cmd
}

func absPaths(ps ...*string) error {
	for _, p := range ps {
		if *p != "" {
			abs, err := filepath.Abs(*p)
			if err != nil {
				return err
			}
			*p = abs
		}
	}
	return nil
}

func (a *App) imageRegisterCommand() *cobra.Command {
	var req api.ImageRegisterRequest
	cmd := &cobra.Command{
		Use:   "register --name N --rootfs P (--kernel-ref K | --kernel P [--initrd P] [--modules DIR])",
		Short: "Register an existing ext4 root filesystem as an unmanaged image",
		Example: `  banger image register --name mine --rootfs ./rootfs.ext4 --kernel-ref debian-cloud
  banger image register --name mine --rootfs ./rootfs.ext4 --kernel ./vmlinux`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if req.Name == "" || req.RootfsPath == "" {
				return usageErrorf("--name and --rootfs are required")
			}
			if req.KernelRef != "" && (req.KernelPath != "" || req.InitrdPath != "" || req.ModulesDir != "") {
				return usageErrorf("--kernel-ref excludes --kernel, --initrd and --modules")
			}
			if err := absPaths(&req.RootfsPath, &req.KernelPath, &req.InitrdPath, &req.ModulesDir); err != nil {
				return err
			}
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			im, err := c.RegisterImage(cmd.Context(), req)
			if err != nil {
				return err
			}
			return a.printImage(im)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Name, "name", "", "image name")
	f.StringVar(&req.RootfsPath, "rootfs", "", "ext4 root filesystem")
	f.StringVar(&req.KernelRef, "kernel-ref", "", "kernel from the kernel store")
	f.StringVar(&req.KernelPath, "kernel", "", "kernel file")
	f.StringVar(&req.InitrdPath, "initrd", "", "initrd file")
	f.StringVar(&req.ModulesDir, "modules", "", "kernel modules dir")
	return cmd
}

func (a *App) imagePromoteCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "promote NAME",
		Short:   "Copy an unmanaged image into banger's managed storage",
		Example: "  banger image promote mine",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			p := a.newProgress()
			im, err := c.PromoteImage(cmd.Context(), args[0], p.event)
			p.done()
			if err != nil {
				return err
			}
			return a.printImage(im)
		},
	}
}

func (a *App) imageListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List images",
		Example: "  banger image list\n  banger image list -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			ims, err := c.ListImages(cmd.Context())
			if err != nil {
				return err
			}
			if a.Output == "json" {
				if ims == nil {
					ims = []*model.Image{}
				}
				return a.printJSON(ims)
			}
			var rows [][]string
			for _, im := range ims {
				managed := "no"
				if im.Managed {
					managed = "yes"
				}
				src := dash(im.SourceRef)
				if im.ManifestDigest != "" {
					src += "@" + shortSHA(trimAlgo(im.ManifestDigest))
				}
				rows = append(rows, []string{im.Name, im.ID, managed, bytesize.Format(im.SizeBytes), kernelOf(im), src, ago(im.CreatedAt)})
			}
			a.table([]string{"NAME", "ID", "MANAGED", "SIZE", "KERNEL", "SOURCE", "CREATED"}, rows)
			return nil
		},
	}
}

func trimAlgo(d string) string {
	if len(d) > 7 && d[:7] == "sha256:" {
		return d[7:]
	}
	return d
}

func kernelOf(im *model.Image) string {
	if im.KernelRef != "" {
		return im.KernelRef
	}
	if im.KernelPath != "" {
		return filepath.Base(im.KernelPath)
	}
	return "-"
}

func (a *App) imageShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Short:   "Show one image",
		Example: "  banger image show debian-bookworm -o json",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			im, err := c.ShowImage(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.printImage(im)
		},
	}
}

func (a *App) printImage(im *model.Image) error {
	if a.Output == "json" {
		return a.printJSON(im)
	}
	rows := [][]string{
		{"name", im.Name}, {"id", im.ID}, {"managed", fmt.Sprint(im.Managed)},
		{"rootfs", im.RootfsPath}, {"size", bytesize.Format(im.SizeBytes)}, {"kernel", kernelOf(im)},
		{"source", dash(im.SourceRef)}, {"digest", dash(im.ManifestDigest)},
		{"created", im.CreatedAt.Local().Format("2006-01-02 15:04:05")},
	}
	if im.BuildLog != "" {
		rows = append(rows, []string{"build log", im.BuildLog})
	}
	if len(im.Config.Env) > 0 {
		rows = append(rows, []string{"env", fmt.Sprint(im.Config.Env)})
	}
	if len(im.Config.Cmd) > 0 {
		rows = append(rows, []string{"cmd", fmt.Sprint(im.Config.Cmd)})
	}
	a.table([]string{"FIELD", "VALUE"}, rows)
	return nil
}

func (a *App) imageDeleteCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete an image (refused while VMs use it, unless --force deletes them too)",
		Example: "  banger image delete old\n  banger image delete --force old",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			if err := c.DeleteImage(cmd.Context(), args[0], force); err != nil {
				return err
			}
			fmt.Fprintf(a.Stdout, "image %s deleted\n", args[0])
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "also delete the VMs using the image")
	return cmd
}

func (a *App) imageCacheCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "cache", Short: "Manage the OCI blob cache and the image build cache", Example: "  banger image cache prune --dry-run"}
	var dry bool
	prune := &cobra.Command{
		Use:     "prune",
		Short:   "Empty the OCI blob cache and the build step cache (images stay; re-pulls download and rebuilds run again)",
		Example: "  banger image cache prune\n  banger image cache prune --dry-run",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			res, err := c.PruneImageCache(cmd.Context(), dry)
			if err != nil {
				return err
			}
			if a.Output == "json" {
				return a.printJSON(res)
			}
			verb := "freed"
			if dry {
				verb = "would free"
			}
			fmt.Fprintf(a.Stdout, "%s %s: %s across %d blob(s) in %s, %s across %d build state(s) in %s\n",
				verb, bytesize.Format(res.FreedBytes), bytesize.Format(res.FreedBytes-res.BuildFreedBytes), res.Blobs, res.Dir,
				bytesize.Format(res.BuildFreedBytes), res.BuildStates, res.BuildCacheDir)
			return nil
		},
	}
	prune.Flags().BoolVar(&dry, "dry-run", false, "only report what would be freed")
	cmd.AddCommand(prune)
	return cmd
}
