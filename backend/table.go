package backend

import (
	"fmt"
	"net/netip"
)

// peerTable is an immutable snapshot of the desired peers, indexed for the
// miss path. SetPeers builds a new one and swaps it in atomically, so a miss is
// answered from memory without locks.
type peerTable struct {
	mode     Mode
	peers    []*tablePeer // validated, in SetPeers order
	bySubnet *prefixMap[*tablePeer]
	byGW     map[netip.Addr]*tablePeer
	byMAC    map[string]*tablePeer
}

// validatePeer checks one Peer; local is the node's own public IP.
func validatePeer(p Peer, local netip.Addr) (*tablePeer, error) {
	switch {
	case !p.Subnet.IsValid() || !p.Subnet.Addr().Is4():
		return nil, fmt.Errorf("%w %s: subnet %v is not an IPv4 prefix", ErrInvalidPeer, p.Name, p.Subnet)
	case !p.PublicIP.IsValid():
		return nil, fmt.Errorf("%w %s: no public IP", ErrInvalidPeer, p.Name)
	case p.PublicIP.Unmap() == local.Unmap():
		return nil, fmt.Errorf("%w %s: public IP %s is this node", ErrInvalidPeer, p.Name, p.PublicIP)
	case len(p.VtepMAC) != 6:
		return nil, fmt.Errorf("%w %s: VtepMAC %q is not a 6-byte MAC", ErrInvalidPeer, p.Name, p.VtepMAC)
	}
	p.Subnet = p.Subnet.Masked()
	p.PublicIP = p.PublicIP.Unmap()
	return &tablePeer{Peer: p, gw: p.Subnet.Addr(), mac: macString(p.VtepMAC)}, nil
}

// buildTable indexes validated peers. A peer whose subnet or VtepMAC another
// peer already claims is rejected (the FDB has one remote per MAC).
func buildTable(mode Mode, peers []*tablePeer) (*peerTable, []error) {
	t := &peerTable{
		mode:     mode,
		bySubnet: newPrefixMap[*tablePeer](),
		byGW:     map[netip.Addr]*tablePeer{},
		byMAC:    map[string]*tablePeer{},
	}
	var errs []error
	seen := map[netip.Prefix]bool{}
	for _, p := range peers {
		if seen[p.Subnet] {
			errs = append(errs, fmt.Errorf("%w %s: subnet %s listed twice", ErrInvalidPeer, p.Name, p.Subnet))
			continue
		}
		if q, ok := t.byMAC[p.mac]; ok && !p.direct {
			errs = append(errs, fmt.Errorf("%w %s: VtepMAC %s already used by %s", ErrInvalidPeer, p.Name, p.mac, q.Name))
			continue
		}
		seen[p.Subnet] = true
		t.peers = append(t.peers, p)
		if p.direct {
			continue // reached over the underlay: never the subject of a miss
		}
		t.bySubnet.set(p.Subnet, p)
		t.byGW[p.gw] = p
		t.byMAC[p.mac] = p
	}
	return t, errs
}

// forIP finds the peer an L3 miss for ip belongs to: the peer's .0 in both
// modes, any address of its subnet in on-demand mode (the Network route makes
// the kernel resolve pod IPs directly).
func (t *peerTable) forIP(ip netip.Addr) *tablePeer {
	if p, ok := t.byGW[ip]; ok {
		return p
	}
	if t.mode != ModeOnDemand {
		return nil
	}
	p, _ := t.bySubnet.lookup(ip)
	return p
}
