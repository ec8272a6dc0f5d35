package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/imagebuild"
)

func (a *App) imageBuildCommand() *cobra.Command {
	var req imagebuild.APIRequest
	var file string
	var args []string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "build [-f Dockerfile] [--name N] [--build-arg K=V] CONTEXT",
		Short: "Build an image from a Dockerfile, without Docker (RUN steps run in build VMs)",
		Long: `build executes the common Dockerfile subset: FROM (a local image or a pulled one),
RUN (in a build VM through the guest agent), COPY/ADD from CONTEXT, ENV, ARG,
WORKDIR, USER, LABEL, CMD and ENTRYPOINT. Each RUN is a cached restart point:
a rebuild with no change is served from the cache, and a change reruns only
the steps after the last unchanged RUN. Build VMs have no network unless
--net nat. The build log is kept in the image's directory.`,
		Example: `  banger image build -f images/golden/Dockerfile --net nat --name debian-bookworm images/golden
  banger image build --name tool --build-arg VERSION=1.2 .`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, pos []string) error {
			ctxDir, err := filepath.Abs(pos[0])
			if err != nil {
				return err
			}
			if file == "" {
				file = filepath.Join(ctxDir, "Dockerfile")
			}
			data, err := os.ReadFile(file)
			if err != nil {
				return usageErrorf("reading the Dockerfile: %v", err)
			}
			req.Dockerfile, req.DockerfilePath, req.Context = string(data), file, ctxDir
			for _, kv := range args {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					if v, ok = os.LookupEnv(k); !ok {
						continue // as docker: a bare name takes the environment's value, if any
					}
				}
				if req.BuildArgs == nil {
					req.BuildArgs = map[string]string{}
				}
				req.BuildArgs[k] = v
			}
			if req.Network != "" && req.Network != imagebuild.NetworkNone && req.Network != imagebuild.NetworkNAT {
				return usageErrorf("--net %q: want none or nat", req.Network)
			}
			c, err := a.client(cmd.Context())
			if err != nil {
				return err
			}
			im, err := c.BuildImage(cmd.Context(), req, func(e api.Event) {
				if quiet {
					return
				}
				switch e.Stage {
				case "log":
					fmt.Fprintln(a.Stderr, e.Message)
				case "step":
				default:
					fmt.Fprintf(a.Stderr, "%s: %s\n", e.Stage, e.Message)
				}
			})
			if err != nil {
				return err
			}
			return a.printImage(im)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "file", "f", "", "the Dockerfile (default CONTEXT/Dockerfile)")
	f.StringVar(&req.Name, "name", "", "image name (default: the context directory's name)")
	f.StringArrayVar(&args, "build-arg", nil, "build argument K=V (repeatable)")
	f.StringVar(&req.KernelRef, "kernel-ref", "", "kernel of the build VMs and the image (default: the base image's)")
	f.StringVar(&req.Network, "net", "none", "build VM network: none or nat")
	f.BoolVar(&req.NoCache, "no-cache", false, "run every step again and leave the cache alone")
	f.StringVar(&req.Size, "size", "", "filesystem size (default max(1.25×content, 1G))")
	f.BoolVarP(&quiet, "quiet", "q", false, "do not print the build log")
	return cmd
}
