package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/test/lab"
)

// peerState is what a node's kernel holds for one peer on flannel.1.
type peerState struct {
	routes, neighs, fdbs []string
}

func (s peerState) empty() bool { return len(s.routes)+len(s.neighs)+len(s.fdbs) == 0 }

func (s peerState) String() string {
	return fmt.Sprintf("routes %v, neighbours %v, fdb %v", s.routes, s.neighs, s.fdbs)
}

// stateFor lists n's routes to subnet, ARP entries for the peer's .0 or
// VtepMAC, and FDB entries for the VtepMAC or the peer's public IP.
func stateFor(n *lab.Node, peer lab.LeaseKV) (peerState, error) {
	return stateForFamily(n, peer, lab.IPv4)
}

// stateForFamily is stateFor on the device of family f (lab.IPv4: flannel.1
// and the lease's IPv4 part; lab.IPv6: flannel-v6.1 and its IPv6 part).
func stateForFamily(n *lab.Node, peer lab.LeaseKV, f lab.Family) (peerState, error) {
	h, err := n.NS.Handle()
	if err != nil {
		return peerState{}, err
	}
	defer h.Close()
	dev, fam, subnet, mac, pub := "flannel.1", netlink.FAMILY_V4, peer.Subnet, peer.VtepMAC, peer.PublicIP
	if f == lab.IPv6 {
		dev, fam, subnet, mac, pub = "flannel-v6.1", netlink.FAMILY_V6, peer.Subnet6, peer.VtepMAC6, peer.PublicIPv6
	}
	var s peerState
	routes, err := h.RouteList(nil, fam)
	if err != nil {
		return s, fmt.Errorf("%s: list routes: %w", n.Name, err)
	}
	for _, r := range routes {
		if r.Dst != nil && r.Dst.String() == subnet.String() {
			s.routes = append(s.routes, r.String())
		}
	}
	link, err := h.LinkByName(dev)
	if err != nil {
		return s, fmt.Errorf("%s: %s: %w", n.Name, dev, err)
	}
	gw := subnet.Addr()
	neighs, err := h.NeighList(link.Attrs().Index, fam)
	if err != nil {
		return s, fmt.Errorf("%s: list neighbours: %w", n.Name, err)
	}
	for _, e := range neighs {
		if ip, ok := netip.AddrFromSlice(e.IP); (ok && ip.Unmap() == gw) || bytes.Equal(e.HardwareAddr, mac) {
			s.neighs = append(s.neighs, e.String())
		}
	}
	fdbs, err := h.NeighList(link.Attrs().Index, syscall.AF_BRIDGE)
	if err != nil {
		return s, fmt.Errorf("%s: list fdb: %w", n.Name, err)
	}
	for _, e := range fdbs {
		if bytes.Equal(e.HardwareAddr, mac) || e.IP.Equal(net.IP(pub.AsSlice())) {
			s.fdbs = append(s.fdbs, e.String())
		}
	}
	return s, nil
}

// checkLeave is scenario 6: node's agent stops, then its lease is revoked;
// within 1 s no other node keeps a route, neighbour or FDB entry for it.
func checkLeave(t *testing.T, l *lab.Lab, node *lab.Node) {
	ctx := t.Context()
	peer, err := node.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var others []*lab.Node
	for _, n := range l.Nodes() {
		if n != node {
			others = append(others, n)
		}
	}
	// Proactive mode: every other node has programmed the peer up front, and
	// keeps it while the peer's agent is merely stopped (its pods still run).
	requirePeer(t, others, peer, "before "+node.Name+" leaves")
	if err := node.StopAgent(); err != nil {
		t.Fatal(err)
	}
	requirePeer(t, others, peer, "with "+node.Name+"'s agent stopped")
	if _, err := l.RevokeLease(ctx, node); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	err = eventually(revoked, time.Second, func() error {
		var errs []error
		for _, n := range others {
			s, err := stateFor(n, peer)
			if err != nil {
				return err
			}
			if !s.empty() {
				errs = append(errs, fmt.Errorf("%s still has %v", n.Name, s))
			}
		}
		return errors.Join(errs...)
	})
	if err != nil {
		t.Errorf("%s left (lease %s revoked): %v", node.Name, peer.Key, err)
		return
	}
	t.Logf("%s's entries gone from every node %s after the revoke", node.Name, time.Since(revoked).Round(time.Microsecond))
}

// requirePeer fails unless every node holds a route, neighbour and FDB entry
// for peer.
func requirePeer(t *testing.T, nodes []*lab.Node, peer lab.LeaseKV, when string) {
	t.Helper()
	for _, n := range nodes {
		s, err := stateFor(n, peer)
		if err != nil {
			t.Fatal(err)
		}
		if len(s.routes) == 0 || len(s.neighs) == 0 || len(s.fdbs) == 0 {
			t.Fatalf("%s %s: want a route, neighbour and FDB entry for %s, have %v", n.Name, when, peer.Key, s)
		}
	}
}
