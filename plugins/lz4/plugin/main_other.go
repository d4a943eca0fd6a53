//go:build !wasip1

package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "this is the lz4 method as a pagewire plugin: build it with GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared (make build)")
	os.Exit(2)
}
