package server

import (
	"context"
	"net/http"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/kernel"
	"github.com/bangerdev/banger/internal/model"
)

func (s *Server) kernelRoutes() []route {
	d := s.d
	return []route{
		{"GET", "/kernels", handle(s, func(ctx context.Context, r *http.Request, _ empty) ([]model.Kernel, error) {
			return d.ListKernels(ctx)
		})},
		{"GET", "/kernels/catalog", handle(s, func(ctx context.Context, r *http.Request, _ empty) ([]api.CatalogKernel, error) {
			return d.KernelCatalog(ctx)
		})},
		{"POST", "/kernels/import", stream(s, func(ctx context.Context, r *http.Request, req api.KernelImportRequest, emit Emit) (model.Kernel, error) {
			return d.ImportKernel(ctx, req, emit)
		})},
		{"POST", "/kernels/pull", stream(s, func(ctx context.Context, r *http.Request, req api.KernelPullRequest, emit Emit) (model.Kernel, error) {
			return d.PullKernel(ctx, req.Name, emit)
		})},
		{"GET", "/kernels/{name}", handle(s, func(ctx context.Context, r *http.Request, _ empty) (kernel.Kernel, error) {
			return d.ShowKernel(ctx, r.PathValue("name"))
		})},
		{"DELETE", "/kernels/{name}", handle(s, func(ctx context.Context, r *http.Request, _ empty) (empty, error) {
			return empty{}, d.RemoveKernel(ctx, r.PathValue("name"))
		})},
	}
}
