//go:build !(cgo && libzstd)

package zstd

import (
	"errors"

	"github.com/pagewire/pagewire/sdk"
)

// Native reports whether this build has the native tier: the libzstd
// build tag, with cgo. [New] then returns it.
const Native = false

var errNoNative = errors.New("zstd: this build has no libzstd (build with -tags libzstd and cgo)")

func nativeVersion() string { return "" }

func newNativeSender(int, int) (sdk.Sender, error) { return nil, errNoNative }

func newNativeReceiver() (sdk.Receiver, error) { return nil, errNoNative }
