package server

import (
	"context"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/bangerdev/banger/internal/agentproto"
	"github.com/bangerdev/banger/internal/api"
)

type empty struct{}

func (s *Server) vmRoutes() []route {
	d := s.d
	return []route{
		{"GET", "/vms", handle(s, func(ctx context.Context, r *http.Request, _ empty) ([]api.VMInfo, error) {
			return d.ListVMs(ctx)
		})},
		{"POST", "/vms", stream(s, func(ctx context.Context, r *http.Request, req api.VMCreateRequest, emit Emit) (api.VMInfo, error) {
			return d.CreateVM(ctx, req, emit)
		})},
		{"POST", "/vms/prune", handle(s, func(ctx context.Context, r *http.Request, req struct {
			DryRun bool `json:"dry_run"`
		}) ([]string, error) {
			return d.PruneVMs(ctx, req.DryRun)
		})},
		{"GET", "/vms/{name}", handle(s, func(ctx context.Context, r *http.Request, _ empty) (api.VMInfo, error) {
			return d.ShowVM(ctx, r.PathValue("name"))
		})},
		{"PATCH", "/vms/{name}", handle(s, func(ctx context.Context, r *http.Request, req api.VMSetRequest) (api.VMInfo, error) {
			return d.SetVM(ctx, r.PathValue("name"), req)
		})},
		{"DELETE", "/vms/{name}", handle(s, func(ctx context.Context, r *http.Request, _ empty) (empty, error) {
			force, _ := strconv.ParseBool(r.URL.Query().Get("force"))
			return empty{}, d.DeleteVM(ctx, r.PathValue("name"), force)
		})},
		{"POST", "/vms/{name}/start", stream(s, func(ctx context.Context, r *http.Request, _ empty, emit Emit) (api.VMInfo, error) {
			return d.StartVM(ctx, r.PathValue("name"), emit)
		})},
		{"POST", "/vms/{name}/stop", handle(s, func(ctx context.Context, r *http.Request, req api.VMStopRequest) (api.VMInfo, error) {
			return d.StopVM(ctx, r.PathValue("name"), time.Duration(req.TimeoutSeconds)*time.Second)
		})},
		{"POST", "/vms/{name}/restart", stream(s, func(ctx context.Context, r *http.Request, _ empty, emit Emit) (api.VMInfo, error) {
			return d.RestartVM(ctx, r.PathValue("name"), emit)
		})},
		{"POST", "/vms/{name}/kill", handle(s, func(ctx context.Context, r *http.Request, req api.VMKillRequest) (api.VMInfo, error) {
			return d.KillVM(ctx, r.PathValue("name"), req.Signal)
		})},
		{"GET", "/vms/{name}/logs", s.vmLogs},
		{"POST", "/vms/{name}/exec", s.vmExec},
	}
}

// vmLogs streams the console log; ?follow=1 keeps streaming appended data
// until the client goes away.
func (s *Server) vmLogs(w http.ResponseWriter, r *http.Request) {
	p, err := s.d.VMLogPath(r.Context(), r.PathValue("name"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	follow, _ := strconv.ParseBool(r.URL.Query().Get("follow"))
	f, err := os.Open(p)
	if os.IsNotExist(err) {
		w.Header().Set("Content-Type", "text/plain")
		return
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "text/plain")
	fl, _ := w.(http.Flusher)
	buf := make([]byte, 32<<10)
	for {
		n, _ := f.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return
			}
			continue
		}
		if !follow || !s.d.VMRunning(r.Context(), r.PathValue("name")) {
			return // at EOF: follow ends once the VM has stopped
		}
		if fl != nil {
			fl.Flush()
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// vmExec upgrades the connection and splices it to an agent exec stream.
func (s *Server) vmExec(w http.ResponseWriter, r *http.Request) {
	if err := wantsUpgrade(r, api.ExecUpgrade); err != nil {
		s.writeError(w, r, err)
		return
	}
	var req agentproto.ExecRequest
	if err := decode(r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	ec, _, err := s.d.OpenExec(r.Context(), r.PathValue("name"), req)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	conn, rd, err := upgrade(w, r, api.ExecUpgrade)
	if err != nil {
		ec.Close()
		return
	}
	splice(conn, rd, ec)
}
