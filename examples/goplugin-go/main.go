// Command goplugin-go is a plugin author's complete out-of-process plugin:
// the rle example method (examples/wasm-go/rle, written once against sdk)
// served over gRPC with hashicorp/go-plugin.
//
//	go build -o rle ./examples/goplugin-go
//	pagewire plugin test rle
//	pagewire demo --plugin ./rle
package main

import (
	"github.com/pagewire/pagewire/examples/wasm-go/rle"
	"github.com/pagewire/pagewire/sdk/goplugin"
)

func main() { goplugin.Serve(rle.New()) }
