package server

import "net/http"

func (s *Server) imageRoutes(mux *http.ServeMux) {}
