package tokencache_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when any of them leaves a goroutine
// running, such as a refresh loop, a timer callback or a connection that
// was never closed.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
