//go:build wasip1

// Command plugin is the zlib method as a plugin: built with GOOS=wasip1
// GOARCH=wasm -buildmode=c-shared it is a Wasm module (sdk/ABI.md).
package main

import (
	"github.com/pagewire/pagewire/plugins/zlib"
	"github.com/pagewire/pagewire/sdk/wasmguest"
)

func init() { wasmguest.Serve(zlib.New()) }

func main() {}
