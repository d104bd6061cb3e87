package testlog_test

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/weftnet/weft/test/testlog"
)

// recorder is a testing.TB whose output is kept for inspection.
type recorder struct {
	testing.TB
	out strings.Builder
}

func (r *recorder) Output() io.Writer { return &r.out }

func TestNewWritesLevelAndAboveToOutput(t *testing.T) {
	r := &recorder{TB: t}
	log := testlog.New(r, slog.LevelWarn)
	log.Info("dropped")
	log.Warn("kept", "key", "value")
	got := r.out.String()
	if strings.Contains(got, "dropped") {
		t.Errorf("info line written at level warn:\n%s", got)
	}
	if !strings.Contains(got, `level=WARN msg=kept key=value`) || strings.Count(got, "\n") != 1 {
		t.Errorf("want one warn line, got:\n%s", got)
	}
}

func TestNewOnARealTest(t *testing.T) {
	testlog.New(t, slog.LevelInfo).Info("a line in this test's output")
}
