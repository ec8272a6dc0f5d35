package server

import (
	"context"
	"io"
	"net/http"
	"os"
	"strconv"

	"github.com/bangerdev/banger/internal/workspace"
)

func (s *Server) fileRoutes() []route {
	d := s.d
	return []route{
		{"PUT", "/vms/{name}/files", s.putFiles},
		{"GET", "/vms/{name}/files", s.getFiles},
		{"POST", "/vms/{name}/workspace", s.prepareWorkspace},
		{"GET", "/vms/{name}/workspace", handle(s, func(ctx context.Context, r *http.Request, _ empty) (workspace.Record, error) {
			return d.Workspace(ctx, r.PathValue("name"))
		})},
		{"GET", "/vms/{name}/workspace/export", s.exportWorkspace},
	}
}

// putFiles extracts the tar body into ?dir= in the guest; ?owners=true
// keeps the archive's owners.
func (s *Server) putFiles(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	owners, _ := strconv.ParseBool(q.Get("owners"))
	res, err := s.d.PutFiles(r.Context(), r.PathValue("name"), q.Get("dir"), r.Body, owners)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// getFiles streams a tar of ?path= from the guest. An error after the
// stream began is reported in the Banger-Error trailer.
func (s *Server) getFiles(w http.ResponseWriter, r *http.Request) {
	lw := &lazyWriter{w: w, start: func() {
		w.Header().Set("Content-Type", workspace.TarContentType)
		w.Header().Set("Trailer", workspace.TarErrorTrailer)
		w.WriteHeader(http.StatusOK)
	}}
	err := s.d.GetFiles(r.Context(), r.PathValue("name"), r.URL.Query().Get("path"), lw)
	if err == nil {
		lw.begin() // an empty archive is still an answer
		return
	}
	if !lw.started {
		s.writeError(w, r, err)
		return
	}
	s.log.Warn("file stream failed", "path", r.URL.Path, "err", err)
	w.Header().Set(workspace.TarErrorTrailer, err.Error())
}

// prepareWorkspace copies the tar body into the guest and records the
// workspace described by the query (workspace.Record.Query).
func (s *Server) prepareWorkspace(w http.ResponseWriter, r *http.Request) {
	rec := workspace.RecordFromQuery(r.URL.Query())
	out, err := s.d.PrepareWorkspace(r.Context(), r.PathValue("name"), rec, r.Body)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// exportWorkspace answers a binary-safe patch (text/x-diff) of the guest
// workspace against ?base= (default: what was copied).
func (s *Server) exportWorkspace(w http.ResponseWriter, r *http.Request) {
	f, err := os.CreateTemp("", "banger-patch-")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if err := s.d.ExportWorkspace(r.Context(), r.PathValue("name"), r.URL.Query().Get("base"), f); err != nil {
		s.writeError(w, r, err)
		return
	}
	size, err := f.Seek(0, io.SeekCurrent)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/x-diff")
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, f)
}

// lazyWriter sends the response header on the first write, so that an
// error before any data can still be a proper error response.
type lazyWriter struct {
	w       http.ResponseWriter
	start   func()
	started bool
}

func (l *lazyWriter) begin() {
	if !l.started {
		l.started = true
		l.start()
	}
}

func (l *lazyWriter) Write(p []byte) (int, error) {
	l.begin()
	return l.w.Write(p)
}
