// Command heyvm boots full Linux VMs as developer sandboxes. All logic
// lives in internal/cli; this file only wires signals and the exit code.
package main

import (
	"context"
	"os"

	"github.com/heyvm/heyvm/internal/cli"
)

func main() {
	os.Exit(cli.Main(context.Background(), os.Args[1:]))
}
