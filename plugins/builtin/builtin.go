// Package builtin wires pagewire's built-in methods (nocomp, zlib, zstd,
// lz4 and auto, each its own package under plugins/) into a [core.Registry].
// Package core knows no method but nocomp, so that an embedder links
// only the codecs it uses; the pagewire command, and an embedder that
// wants them all, start from [Methods].
package builtin

import (
	"github.com/pagewire/pagewire/core"
	"github.com/pagewire/pagewire/plugins/auto"
	"github.com/pagewire/pagewire/plugins/lz4"
	"github.com/pagewire/pagewire/plugins/nocomp"
	"github.com/pagewire/pagewire/plugins/zlib"
	"github.com/pagewire/pagewire/plugins/zstd"
	"github.com/pagewire/pagewire/sdk"
)

// Methods returns a new registry of the built-in methods. Each call
// returns a registry of its own, so registering more methods in one does
// not change another.
func Methods() *core.Registry {
	return core.NewRegistry(All()...)
}

// All returns the built-in methods: nocomp, zlib, zstd, lz4 and auto
// (a fresh one per call: its controller belongs to one transfer).
func All() []sdk.Method {
	return []sdk.Method{nocomp.New(), zlib.New(), zstd.New(), lz4.New(), auto.New()}
}

// Lookup returns the built-in method called name ("none" is nocomp).
func Lookup(name string) (sdk.Method, error) {
	return Methods().Lookup(name)
}
