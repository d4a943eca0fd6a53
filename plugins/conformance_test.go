package plugins_test

import (
	"testing"

	"github.com/pagewire/pagewire/plugins/lz4"
	"github.com/pagewire/pagewire/plugins/nocomp"
	"github.com/pagewire/pagewire/plugins/zlib"
	"github.com/pagewire/pagewire/plugins/zstd"
	"github.com/pagewire/pagewire/sdk"
	"github.com/pagewire/pagewire/sdk/plugintest"
)

// TestConformance runs the conformance kit, which every method loaded as
// a plugin must also pass, against the built-in methods.
func TestConformance(t *testing.T) {
	for _, m := range []sdk.Method{nocomp.New(), zlib.New(), zstd.New(), lz4.New()} {
		t.Run(m.Info().Name, func(t *testing.T) { plugintest.Run(t, m) })
	}
}
