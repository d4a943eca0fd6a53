package goplugin_test

import (
	"errors"
	"testing"

	"github.com/pagewire/pagewire/goplugin"
	"github.com/pagewire/pagewire/sdk"
)

// TestErrorsWrapSDK: a go-plugin host's failures match the host-neutral
// sentinel the engine sends to the far end of a transfer.
func TestErrorsWrapSDK(t *testing.T) {
	if !errors.Is(goplugin.ErrPlugin, sdk.ErrPlugin) || goplugin.ErrPlugin.Error() != "go-plugin failed" {
		t.Errorf("ErrPlugin %q does not wrap sdk.ErrPlugin", goplugin.ErrPlugin)
	}
}
