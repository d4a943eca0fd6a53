//go:build !linux

package wasm

import "github.com/tetratelabs/wazero/experimental"

// memoryAllocator is wazero's own where mappings are not done here.
var memoryAllocator experimental.MemoryAllocator
