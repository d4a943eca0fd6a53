//go:build wasip1

// A plugin that imports a host function the sandbox does not offer.
package main

import (
	"os"

	"github.com/pagewire/pagewire/plugins/nocomp"
	"github.com/pagewire/pagewire/sdk/wasmguest"
)

//go:wasmimport env open_socket
func openSocket() int32

func init() {
	if os.Getenv("PAGEWIRE_NEVER_SET") == "yes" {
		openSocket() // never runs, but keeps the import
	}
	wasmguest.Serve(nocomp.New())
}

func main() {}
