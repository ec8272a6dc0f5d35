package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
)

// ListImages lists images.
func (c *Client) ListImages(ctx context.Context) ([]*model.Image, error) {
	var out []*model.Image
	return out, c.Do(ctx, http.MethodGet, "/images", nil, &out)
}

// ShowImage returns one image.
func (c *Client) ShowImage(ctx context.Context, name string) (*model.Image, error) {
	var out model.Image
	return &out, c.Do(ctx, http.MethodGet, "/images/"+url.PathEscape(name), nil, &out)
}

// PullImage pulls an OCI image into a managed image.
func (c *Client) PullImage(ctx context.Context, req api.ImagePullRequest, onEvent func(api.Event)) (*model.Image, error) {
	var out model.Image
	return &out, c.Stream(ctx, http.MethodPost, "/images/pull", req, onEvent, &out)
}

// RegisterImage records an unmanaged image.
func (c *Client) RegisterImage(ctx context.Context, req api.ImageRegisterRequest) (*model.Image, error) {
	var out model.Image
	return &out, c.Do(ctx, http.MethodPost, "/images/register", req, &out)
}

// PromoteImage copies an unmanaged image into managed storage.
func (c *Client) PromoteImage(ctx context.Context, name string, onEvent func(api.Event)) (*model.Image, error) {
	var out model.Image
	return &out, c.Stream(ctx, http.MethodPost, "/images/"+url.PathEscape(name)+"/promote", struct{}{}, onEvent, &out)
}

// DeleteImage deletes an image.
func (c *Client) DeleteImage(ctx context.Context, name string, force bool) error {
	q := ""
	if force {
		q = "?force=true"
	}
	return c.Do(ctx, http.MethodDelete, "/images/"+url.PathEscape(name)+q, nil, nil)
}

// PruneImageCache empties the blob cache.
func (c *Client) PruneImageCache(ctx context.Context, dryRun bool) (api.CachePruneResult, error) {
	var out api.CachePruneResult
	return out, c.Do(ctx, http.MethodPost, "/images/cache/prune", api.CachePruneRequest{DryRun: dryRun}, &out)
}
