package kube

import (
	"testing"
	"time"
)

// TestKube runs weft in a real, dual-stack Kubernetes cluster and asserts
// the ten checks listed in doc.go as subtests, in an order that lets them
// share one cluster: install (1), dual stack (10), connectivity and
// Services under kube-proxy in iptables mode, then nftables mode (4 with 2
// and 3), MTU (8), DNS (9), pod IP release (7), rollout restart (5) and
// weftd stopped on a node (6).
func TestKube(t *testing.T) {
	if env.skip != "" {
		t.Skip(env.skip)
	}
	start := time.Now()
	c := newCluster(t, "iptables")
	k := &tier{c: c}
	t.Logf("cluster up in %s", time.Since(start).Round(100*time.Millisecond))
	if !t.Run("1-ready-after-subnet-env", k.checkReadyAfterSubnetEnv) {
		t.FailNow()
	}
	k.deployWorkloads(t)
	t.Run("10-dual-stack", k.checkDualStack)
	for _, mode := range []string{"iptables", "nftables"} {
		t.Run("4-kube-proxy-"+mode, func(t *testing.T) {
			k.useProxyMode(t, mode)
			t.Run("2-pod-to-pod", k.checkPodToPod)
			t.Run("3-services", k.checkServices)
		})
	}
	t.Run("8-mtu", k.checkMTU)
	t.Run("9-dns", k.checkDNS)
	t.Run("7-pod-ips-freed", k.checkIPsFreed)
	t.Run("5-rollout-restart", k.checkRolloutRestart)
	t.Run("6-weftd-stopped", k.checkWeftdStopped)
	t.Logf("checks done %s after start", time.Since(start).Round(100*time.Millisecond))
}
