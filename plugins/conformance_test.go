package plugins_test

import (
	"testing"

	"github.com/pagewire/pagewire/sdk/plugintest"
)

// TestConformance runs the conformance kit, which every method loaded as
// a plugin must also pass, against the built-in methods.
func TestConformance(t *testing.T) {
	for _, m := range methods {
		t.Run(label(m), func(t *testing.T) { plugintest.Run(t, m) })
	}
}
