//go:build !wasip1

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "build this example as a Wasm plugin: GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o rle.wasm ./examples/wasm-go")
	os.Exit(2)
}
