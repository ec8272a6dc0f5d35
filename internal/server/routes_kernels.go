package server

func (s *Server) kernelRoutes() []route {
	return nil
}
