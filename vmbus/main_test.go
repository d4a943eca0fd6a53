package vmbus_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind. With
// peerEnv set, the test binary is instead the peer process of a
// two-process test (see peerMain).
func TestMain(m *testing.M) {
	if role := os.Getenv(peerEnv); role != "" {
		os.Exit(peerMain(role))
	}
	goleak.VerifyTestMain(m)
}
