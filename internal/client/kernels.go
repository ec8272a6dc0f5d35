package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/kernel"
	"github.com/bangerdev/banger/internal/model"
)

// ListKernels lists stored kernels.
func (c *Client) ListKernels(ctx context.Context) ([]model.Kernel, error) {
	var out []model.Kernel
	return out, c.Do(ctx, http.MethodGet, "/kernels", nil, &out)
}

// KernelCatalog lists the embedded kernel catalog.
func (c *Client) KernelCatalog(ctx context.Context) ([]api.CatalogKernel, error) {
	var out []api.CatalogKernel
	return out, c.Do(ctx, http.MethodGet, "/kernels/catalog", nil, &out)
}

// ShowKernel returns one kernel with its files.
func (c *Client) ShowKernel(ctx context.Context, name string) (kernel.Kernel, error) {
	var out kernel.Kernel
	return out, c.Do(ctx, http.MethodGet, "/kernels/"+url.PathEscape(name), nil, &out)
}

// ImportKernel imports a kernel from a .deb or files.
func (c *Client) ImportKernel(ctx context.Context, req api.KernelImportRequest, onEvent func(api.Event)) (model.Kernel, error) {
	var out model.Kernel
	return out, c.Stream(ctx, http.MethodPost, "/kernels/import", req, onEvent, &out)
}

// PullKernel fetches a catalog kernel.
func (c *Client) PullKernel(ctx context.Context, name string, onEvent func(api.Event)) (model.Kernel, error) {
	var out model.Kernel
	return out, c.Stream(ctx, http.MethodPost, "/kernels/pull", api.KernelPullRequest{Name: name}, onEvent, &out)
}

// RemoveKernel deletes a kernel.
func (c *Client) RemoveKernel(ctx context.Context, name string) error {
	return c.Do(ctx, http.MethodDelete, "/kernels/"+url.PathEscape(name), nil, nil)
}
