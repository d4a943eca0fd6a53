package wasm_test

import (
	"errors"
	"testing"

	"github.com/pagewire/pagewire/sdk"
	"github.com/pagewire/pagewire/wasm"
)

// TestErrorsWrapSDK: a Wasm host's failures match the host-neutral
// sentinels the engine sends to the far end of a transfer.
func TestErrorsWrapSDK(t *testing.T) {
	if !errors.Is(wasm.ErrPlugin, sdk.ErrPlugin) || wasm.ErrPlugin.Error() != "wasm plugin failed" {
		t.Errorf("ErrPlugin %q does not wrap sdk.ErrPlugin", wasm.ErrPlugin)
	}
	if !errors.Is(wasm.ErrDeadline, sdk.ErrDeadline) || wasm.ErrDeadline.Error() != "call deadline exceeded" {
		t.Errorf("ErrDeadline %q does not wrap sdk.ErrDeadline", wasm.ErrDeadline)
	}
}
