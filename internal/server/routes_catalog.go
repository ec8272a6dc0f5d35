package server

import (
	"context"
	"net/http"

	"github.com/bangerdev/banger/internal/imagebuild"
	"github.com/bangerdev/banger/internal/imagecat"
	"github.com/bangerdev/banger/internal/model"
)

// catalogRoutes serve the image catalog, bundles and Dockerfile builds.
func (s *Server) catalogRoutes() []route {
	d := s.d
	return []route{
		{"GET", "/catalog/images", handle(s, func(ctx context.Context, r *http.Request, _ empty) ([]imagecat.Available, error) {
			return d.ImageCatalog(ctx)
		})},
		{"POST", "/images/build", stream(s, func(ctx context.Context, r *http.Request, req imagebuild.APIRequest, emit Emit) (*model.Image, error) {
			return d.BuildImage(ctx, req, emit)
		})},
		{"POST", "/images/{name}/bundle", stream(s, func(ctx context.Context, r *http.Request, req imagecat.BundleRequest, emit Emit) (imagecat.BundleInfo, error) {
			return d.BundleImage(ctx, r.PathValue("name"), req, emit)
		})},
	}
}
