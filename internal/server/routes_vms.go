package server

import "net/http"

func (s *Server) vmRoutes(mux *http.ServeMux) {}
