package e2e

import (
	"net"
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

// TestOnDemandDualStack is TestOnDemand on a dual-stack network: no entry
// of either family up front, every pod reaches every pod over IPv4 and IPv6
// with no loss on the first packets (the misses on flannel-v6.1 are NDP
// misses answered from the leases' IPv6 part), TCP across the overlay keeps
// the client's IPv6 address, and both devices then hold the peers' entries.
func TestOnDemandDualStack(t *testing.T) {
	l := newLab(t, lab.Options{Nodes: 3, IPMasq: true, NeighMode: "on-demand", Overlay: lab.Dual, Underlay: lab.Dual})
	nodes := l.Nodes()
	pods := addPods(t, l, nodes, 2)
	fams := []lab.Family{lab.IPv4, lab.IPv6}
	for _, f := range fams {
		forEachPeerFamily(t, nodes, f, func(n, peer *lab.Node, s peerState) {
			if len(s.neighs)+len(s.fdbs) > 0 {
				t.Errorf("%s before any traffic in on-demand mode: %s entries for %s: %v", n.Name, f, peer.Name, s)
			}
		})
	}
	for _, f := range fams {
		pingPods(t, l, pods, f)
	}
	for _, from := range pods {
		for _, to := range pods {
			if from.Node == to.Node {
				continue
			}
			id, client, err := ask(t.Context(), from.NS, net.JoinHostPort(to.IP6.String(), serverPort))
			switch {
			case err != nil:
				t.Errorf("TCP %s → %s over IPv6: %v", podID(from), podID(to), err)
			case id != podID(to) || client != from.IP6:
				t.Errorf("TCP %s → %s (%s): answered by %s, client seen %s, want %s", podID(from), podID(to), to.IP6, id, client, from.IP6)
			}
		}
	}
	agentsHealthy(t, nodes)
	for _, f := range fams {
		forEachPeerFamily(t, nodes, f, func(n, peer *lab.Node, s peerState) {
			if len(s.neighs) == 0 || len(s.fdbs) == 0 {
				t.Errorf("%s after traffic in on-demand mode: want an %s neighbour and FDB entry for %s, have %v", n.Name, f, peer.Name, s)
			}
		})
	}
}

// forEachPeer calls check with n's kernel state for each other node.
func forEachPeer(t *testing.T, nodes []*lab.Node, check func(n, peer *lab.Node, s peerState)) {
	t.Helper()
	forEachPeerFamily(t, nodes, lab.IPv4, check)
}

// forEachPeerFamily is forEachPeer on the device of family f.
func forEachPeerFamily(t *testing.T, nodes []*lab.Node, f lab.Family, check func(n, peer *lab.Node, s peerState)) {
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
			s, err := stateForFamily(n, lk, f)
			if err != nil {
				t.Fatal(err)
			}
			check(n, peer, s)
		}
	}
}
