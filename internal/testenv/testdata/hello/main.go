// Command hello is a tiny main package for testing BuildBinaries.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Println("hello from", os.Args[0])
}
