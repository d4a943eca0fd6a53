// Package wasmguest makes a Go [sdk.Method] a WebAssembly plugin: it
// implements the exports of the Wasm ABI (sdk/ABI.md) on top of the
// method. A plugin's main package calls [Serve] from init and is built as a
// reactor:
//
//	//go:build wasip1
//	package main
//
//	func init() { wasmguest.Serve(mymethod.New()) }
//	func main() {}
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o mymethod.wasm .
//
// The host instantiates the module once per channel, so the package keeps
// one sender or receiver; calls are never concurrent. Outside wasip1 the
// package only defines [Serve], which does nothing.
package wasmguest
