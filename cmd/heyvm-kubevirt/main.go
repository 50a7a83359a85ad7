// Command heyvm-kubevirt runs heyvm's commands against a KubeVirt
// context. heyvm runs it (from beside itself, or PATH) when a command's
// context is a cluster; it is apart so that heyvm does not carry the
// cluster client.
package main

import (
	"context"
	"os"

	"github.com/heyvm/heyvm/internal/kubevirt/kvcli"
)

func main() {
	os.Exit(kvcli.Main(context.Background(), os.Args[1:]))
}
