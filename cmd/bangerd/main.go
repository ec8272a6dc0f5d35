// Command bangerd is banger's daemon.
package main

import (
	"context"
	"os"

	"github.com/bangerdev/banger/internal/server"
)

func main() {
	os.Exit(server.Main(context.Background(), os.Args[1:], os.Stderr))
}
