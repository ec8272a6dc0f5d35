package server

func (s *Server) imageRoutes() []route {
	return nil
}
