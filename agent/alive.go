package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/subnetenv"
)

// holdAliveLock takes the exclusive flock on subnetenv.AgentLockFile and keeps
// it until the returned release is called (or the process ends): the CNI
// plugin's STATUS reports the node not ready while nobody holds it. While
// another agent of this node still holds it (a restart whose predecessor is
// still shutting down) it waits, saying so once.
func (a *Agent) holdAliveLock(ctx context.Context) (release func(), err error) {
	path := subnetenv.AgentLockFile(a.cfg.SubnetFile)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("agent lock %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("agent lock %s: %w", path, err)
	}
	for logged := false; ; {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { _ = f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("agent lock %s: %w", path, err)
		}
		if !logged {
			a.log.Warn("the agent lock is held (another weftd of this node still running, or a CNI STATUS probe); waiting", "path", path)
			logged = true
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
