package server

import (
	"context"
	"net/http"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/model"
)

// netRoutes are the host network status, guest ports and port forwards.
func (s *Server) netRoutes() []route {
	d := s.d
	return []route{
		{"GET", "/network", handle(s, func(ctx context.Context, r *http.Request, _ empty) (api.NetworkInfo, error) {
			return d.NetworkInfo(ctx), nil
		})},
		{"GET", "/vms/{name}/ports", handle(s, func(ctx context.Context, r *http.Request, _ empty) (api.VMPorts, error) {
			return d.VMPorts(ctx, r.PathValue("name"))
		})},
		{"POST", "/vms/{name}/forwards", handle(s, func(ctx context.Context, r *http.Request, req api.ForwardRequest) (model.Forward, error) {
			return d.AddForward(ctx, r.PathValue("name"), req.Spec)
		})},
		{"DELETE", "/vms/{name}/forwards", handle(s, func(ctx context.Context, r *http.Request, _ empty) (empty, error) {
			return empty{}, d.RemoveForward(ctx, r.PathValue("name"), r.URL.Query().Get("spec"))
		})},
	}
}
