package e2e

import (
	"testing"

	"github.com/weftnet/weft/test/lab"
)

// TestOnDemand is scenario 7: with --neigh-mode=on-demand no peer is
// programmed up front, and scenario 1 passes with no loss on the very first
// packets (the kernel queues them while the agent answers the misses). It
// runs on the Debian etcd when installed, so both servers are covered.
func TestOnDemand(t *testing.T) {
	etcd := ""
	if lab.HaveDebianEtcd() {
		etcd = lab.EtcdDebian
	}
	l := newLab(t, lab.Options{Nodes: 3, IPMasq: true, NeighMode: "on-demand", Etcd: etcd})
	nodes := l.Nodes()
	pods := addPods(t, l, nodes, 2)
	// Before any traffic: no node holds a neighbour or FDB entry for a peer
	// (otherwise this would not exercise the miss path at all).
	forEachPeer(t, nodes, func(n, peer *lab.Node, s peerState) {
		if len(s.neighs)+len(s.fdbs) > 0 {
			t.Errorf("%s before any traffic in on-demand mode: entries for %s: %v", n.Name, peer.Name, s)
		}
	})
	checkConnectivity(t, l, nodes, pods)
	agentsHealthy(t, nodes)
	// Every node talked to every peer, so the agents answered the misses
	// with both entries.
	forEachPeer(t, nodes, func(n, peer *lab.Node, s peerState) {
		if len(s.neighs) == 0 || len(s.fdbs) == 0 {
			t.Errorf("%s after traffic in on-demand mode: want a neighbour and FDB entry for %s, have %v", n.Name, peer.Name, s)
		}
	})
}

// forEachPeer calls check with n's kernel state for each other node.
func forEachPeer(t *testing.T, nodes []*lab.Node, check func(n, peer *lab.Node, s peerState)) {
	t.Helper()
	for _, n := range nodes {
		for _, peer := range nodes {
			if peer == n {
				continue
			}
			lk, err := peer.Lease(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			s, err := stateFor(n, lk)
			if err != nil {
				t.Fatal(err)
			}
			check(n, peer, s)
		}
	}
}
