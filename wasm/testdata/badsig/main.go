//go:build wasip1

// A module whose pagewire_prepare takes three parameters where the ABI
// has four, otherwise a well-formed plugin (its version and info are
// right): the host must refuse it at load, not call it.
package main

import "unsafe"

//go:wasmexport pagewire_abi_version
func abi() int32 { return 1 }

// methodInfo: le32 flag 0x30, not raw, the name "badsig" (sdk/ABI.md).
var methodInfo = [...]byte{0x30, 0, 0, 0, 0, 6, 'b', 'a', 'd', 's', 'i', 'g'}

//go:wasmexport pagewire_info
func info() uint64 {
	return uint64(uintptr(unsafe.Pointer(&methodInfo[0])))<<32 | uint64(len(methodInfo))
}

//go:wasmexport pagewire_alloc
func alloc(int32) uint32 { return 0 }

//go:wasmexport pagewire_setup
func setup(int32, int32, int32, int32, int32) int32 { return 0 }

//go:wasmexport pagewire_prepare
func prepare(uint32, int32, uint32) int32 { return 0 }

//go:wasmexport pagewire_recv
func recv(uint32, int32, uint32, int32) int32 { return 0 }

//go:wasmexport pagewire_cleanup
func cleanup() int32 { return 0 }

//go:wasmexport pagewire_last_error
func lastError() uint64 { return 0 }

func main() {}
