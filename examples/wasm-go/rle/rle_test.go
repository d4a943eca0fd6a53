package rle_test

import (
	"testing"

	"github.com/pagewire/pagewire/examples/wasm-go/rle"
	"github.com/pagewire/pagewire/sdk/plugintest"
)

// TestConformance is all a plugin author needs: the kit every method must
// pass, run natively before building the .wasm.
func TestConformance(t *testing.T) {
	plugintest.Run(t, rle.New())
}
