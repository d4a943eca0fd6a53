//go:build wasip1

// Command plugin is the nocomp method as a plugin: built with GOOS=wasip1
// GOARCH=wasm -buildmode=c-shared it is a Wasm module (sdk/ABI.md).
package main

import (
	"github.com/pagewire/pagewire/plugins/nocomp"
	"github.com/pagewire/pagewire/sdk/wasmguest"
)

func init() { wasmguest.Serve(nocomp.New()) }

func main() {}
