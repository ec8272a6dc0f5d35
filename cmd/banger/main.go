// Command banger is the banger command line.
package main

import (
	"context"
	"os"

	"github.com/bangerdev/banger/internal/cli"
)

func main() {
	os.Exit(cli.Main(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
