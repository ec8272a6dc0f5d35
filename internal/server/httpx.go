package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"

	"github.com/bangerdev/banger/internal/api"
	"github.com/bangerdev/banger/internal/errkind"
)

// maxBody bounds request bodies; requests are small JSON documents.
const maxBody = 1 << 20

// decode reads a JSON request body into v; an empty body leaves v as is.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return errkind.New(errkind.InvalidArgument, "bad request body: %v", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, body := api.FromError(err)
	if status >= 500 {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	} else {
		s.log.Debug("request rejected", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeJSON(w, status, api.ErrorResponse{Error: body})
}

// handle adapts a JSON request/response operation.
func handle[Req any, Resp any](s *Server, op func(ctx context.Context, r *http.Request, req Req) (Resp, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req Req
		if err := decode(r, &req); err != nil {
			s.writeError(w, r, err)
			return
		}
		resp, err := op(r.Context(), r, req)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, resp)
	}
}

// Emit reports progress of a streamed operation.
type Emit func(api.Event)

// stream adapts a long operation: progress events and then the result or
// the error are written as NDJSON lines on the same response.
func stream[Req any, Resp any](s *Server, op func(ctx context.Context, r *http.Request, req Req, emit Emit) (Resp, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req Req
		if err := decode(r, &req); err != nil {
			s.writeError(w, r, err)
			return
		}
		w.Header().Set("Content-Type", api.StreamContentType)
		w.WriteHeader(http.StatusOK)
		flusher, _ := w.(http.Flusher)
		var mu sync.Mutex
		enc := json.NewEncoder(w)
		write := func(l api.StreamLine) {
			mu.Lock()
			defer mu.Unlock()
			if err := enc.Encode(l); err == nil && flusher != nil {
				flusher.Flush()
			}
		}
		resp, err := op(r.Context(), r, req, func(e api.Event) { write(api.StreamLine{Event: &e}) })
		if err != nil {
			status, body := api.FromError(err)
			if status >= 500 {
				s.log.Error("operation failed", "path", r.URL.Path, "err", err)
			}
			write(api.StreamLine{Error: &body})
			return
		}
		raw, err := json.Marshal(resp)
		if err != nil {
			body := api.Error{Code: api.CodeInternal, Message: fmt.Sprintf("encoding result: %v", err)}
			write(api.StreamLine{Error: &body})
			return
		}
		write(api.StreamLine{Result: raw})
	}
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}
