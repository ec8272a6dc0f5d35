package server

import (
	"context"
	"net/http"

	"github.com/bangerdev/banger/internal/imagecat"
)

// catalogRoutes serve the image catalog and bundles.
func (s *Server) catalogRoutes() []route {
	d := s.d
	return []route{
		{"GET", "/catalog/images", handle(s, func(ctx context.Context, r *http.Request, _ empty) ([]imagecat.Available, error) {
			return d.ImageCatalog(ctx)
		})},
		{"POST", "/images/{name}/bundle", stream(s, func(ctx context.Context, r *http.Request, req imagecat.BundleRequest, emit Emit) (imagecat.BundleInfo, error) {
			return d.BundleImage(ctx, r.PathValue("name"), req, emit)
		})},
	}
}
