// Package testlog gives tests a *slog.Logger whose lines go to the test's
// own output, so they appear next to the failure that needs them and only
// when the test fails or runs with -v. It imports testing: only *_test.go
// files and test harnesses may use it.
package testlog

import (
	"log/slog"
	"testing"
)

// New returns a text logger at level writing through t.Output. Like t.Log,
// the logger must not be used after t and its subtests have returned: a
// goroutine that logs then is one the test forgot to stop.
func New(t testing.TB, level slog.Leveler) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: level}))
}
