package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/imagebuild"
	"github.com/bangerdev/banger/internal/imagecat"
	"github.com/bangerdev/banger/internal/model"
)

// ImageCatalog lists the image catalog (embedded, plus the configured
// catalog file), marking installed images.
func (c *Client) ImageCatalog(ctx context.Context) ([]imagecat.Available, error) {
	var out []imagecat.Available
	return out, c.Do(ctx, http.MethodGet, "/catalog/images", nil, &out)
}

// BundleImage writes the catalog bundle of a local image into req.OutDir.
func (c *Client) BundleImage(ctx context.Context, name string, req imagecat.BundleRequest, onEvent func(api.Event)) (imagecat.BundleInfo, error) {
	var out imagecat.BundleInfo
	return out, c.Stream(ctx, http.MethodPost, "/images/"+url.PathEscape(name)+"/bundle", req, onEvent, &out)
}

// BuildImage builds a Dockerfile into a new image.
func (c *Client) BuildImage(ctx context.Context, req imagebuild.APIRequest, onEvent func(api.Event)) (*model.Image, error) {
	var out model.Image
	return &out, c.Stream(ctx, http.MethodPost, "/images/build", req, onEvent, &out)
}
