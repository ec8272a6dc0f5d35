package server

import (
	"context"
	"net/http"
	"strconv"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
)

func (s *Server) imageRoutes() []route {
	d := s.d
	return []route{
		{"GET", "/images", handle(s, func(ctx context.Context, r *http.Request, _ empty) ([]*model.Image, error) {
			return d.ListImages(ctx)
		})},
		{"POST", "/images/pull", stream(s, func(ctx context.Context, r *http.Request, req api.ImagePullRequest, emit Emit) (*model.Image, error) {
			return d.PullImage(ctx, req, emit)
		})},
		{"POST", "/images/register", handle(s, func(ctx context.Context, r *http.Request, req api.ImageRegisterRequest) (*model.Image, error) {
			return d.RegisterImage(ctx, req)
		})},
		{"POST", "/images/cache/prune", handle(s, func(ctx context.Context, r *http.Request, req api.CachePruneRequest) (api.CachePruneResult, error) {
			return d.PruneImageCache(ctx, req.DryRun)
		})},
		{"GET", "/images/{name}", handle(s, func(ctx context.Context, r *http.Request, _ empty) (*model.Image, error) {
			return d.ShowImage(ctx, r.PathValue("name"))
		})},
		{"POST", "/images/{name}/promote", stream(s, func(ctx context.Context, r *http.Request, _ empty, emit Emit) (*model.Image, error) {
			return d.PromoteImage(ctx, r.PathValue("name"), emit)
		})},
		{"DELETE", "/images/{name}", handle(s, func(ctx context.Context, r *http.Request, _ empty) (empty, error) {
			force, _ := strconv.ParseBool(r.URL.Query().Get("force"))
			return empty{}, d.DeleteImage(ctx, r.PathValue("name"), force)
		})},
	}
}
