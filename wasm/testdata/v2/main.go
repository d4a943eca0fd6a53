//go:build wasip1

// A module that claims ABI version 2.
package main

//go:wasmexport pagewire_abi_version
func abi() int32 { return 2 }

//go:wasmexport pagewire_info
func info() uint64 { return 0 }

//go:wasmexport pagewire_alloc
func alloc(int32) uint32 { return 0 }

//go:wasmexport pagewire_setup
func setup(int32, int32, int32, int32, int32) int32 { return 0 }

//go:wasmexport pagewire_prepare
func prepare(uint32, int32, uint32, int32) int32 { return 0 }

//go:wasmexport pagewire_recv
func recv(uint32, int32, uint32, int32) int32 { return 0 }

//go:wasmexport pagewire_cleanup
func cleanup() int32 { return 0 }

//go:wasmexport pagewire_last_error
func lastError() uint64 { return 0 }

func main() {}
