//go:build !wasip1

package wasmguest

import "github.com/pagewire/pagewire/sdk"

// Serve makes m the module's method. It does nothing outside wasip1.
func Serve(m sdk.Method) {}
