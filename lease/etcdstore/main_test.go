package etcdstore_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a goroutine outlives its tests: the watch,
// keep-alive and health loops must all end with their context.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
