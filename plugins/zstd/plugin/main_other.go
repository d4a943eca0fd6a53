//go:build !wasip1

// Built natively (go build ./plugins/zstd/plugin, make build) this is the
// zstd method as a go-plugin binary served over gRPC (sdk/goplugin); built
// with GOOS=wasip1 GOARCH=wasm -buildmode=c-shared it is a Wasm module
// (main_wasm.go). Hosts load either with pagewire --plugin FILE.
package main

import (
	"github.com/pagewire/pagewire/plugins/zstd"
	"github.com/pagewire/pagewire/sdk/goplugin"
)

func main() { goplugin.Serve(zstd.New()) }
