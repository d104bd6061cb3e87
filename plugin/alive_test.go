package plugin

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/weftnet/weft/subnetenv"
)

// STATUS follows the agent's lock: held → running; file there but nobody
// holding it → the agent stopped (subnet.env stays behind); no file → an
// agent that predates the lock, subnet.env decides.
func TestAgentRunningFollowsTheLock(t *testing.T) {
	subnetFile := filepath.Join(t.TempDir(), "subnet.env")
	if err := agentRunning(subnetFile); err != nil {
		t.Fatalf("no lock file: %v, want nil", err)
	}
	f, err := os.OpenFile(subnetenv.AgentLockFile(subnetFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := agentRunning(subnetFile); err == nil || !strings.Contains(err.Error(), "weftd is not running") {
		t.Fatalf("lock file nobody holds: %v, want weftd is not running", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	if err := agentRunning(subnetFile); err != nil {
		t.Fatalf("lock held: %v, want nil", err)
	}
	// The probe must not keep a lock that would stall the agent.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	_ = agentRunning(subnetFile)
	g, err := os.Open(subnetenv.AgentLockFile(subnetFile))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := syscall.Flock(int(g.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatalf("lock still taken after a STATUS probe: %v", err)
	}
}
