//go:build wasip1

// Command plugin is the lz4 method as a plugin: built with GOOS=wasip1
// GOARCH=wasm -buildmode=c-shared it is a Wasm module (sdk/ABI.md).
package main

import (
	"github.com/pagewire/pagewire/plugins/lz4"
	"github.com/pagewire/pagewire/sdk/wasmguest"
)

func init() { wasmguest.Serve(lz4.New()) }

func main() {}
