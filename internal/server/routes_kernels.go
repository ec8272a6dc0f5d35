package server

import "net/http"

func (s *Server) kernelRoutes(mux *http.ServeMux) {}
