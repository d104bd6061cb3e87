package subnetenv

import "path/filepath"

// AgentLockFile is the file a running agent keeps an exclusive flock(2) on,
// next to its subnet file (/run/flannel/weftd.lock by default). The kernel
// drops the lock when the agent's process ends, however it ends, so the CNI
// plugin's STATUS can tell "subnet.env written by an agent that is still
// running" from "left behind by one that stopped" with one non-blocking
// flock, no socket and no timeout.
func AgentLockFile(subnetFile string) string {
	return filepath.Join(filepath.Dir(subnetFile), "weftd.lock")
}
