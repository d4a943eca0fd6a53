//go:build wasip1

// Command wasm-go builds the rle example method as a Wasm plugin:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o rle.wasm ./examples/wasm-go
//	pagewire demo --plugin rle.wasm
package main

import (
	"github.com/pagewire/pagewire/examples/wasm-go/rle"
	"github.com/pagewire/pagewire/sdk/wasmguest"
)

func init() { wasmguest.Serve(rle.New()) }

func main() {}
