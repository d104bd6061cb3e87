package backend

import (
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
)

// tablePeer is a validated Peer plus what the datapath derived from it. It is
// never changed once in the table (a changed peer is a new tablePeer), so the
// miss path may keep using one after the table lock is released; only seen is
// written later, by the control side.
type tablePeer struct {
	Peer
	gw     netip.Addr // the peer's flannel.1 address: Subnet's .0
	mac    string
	direct bool // DirectRouting: route via PublicIP on the underlay, no VXLAN entries

	// seen is the SetPeers generation that last listed this peer; control
	// side only (guarded by VXLAN.mu), never read by the miss path.
	seen uint64
}

// same reports whether p describes this peer exactly (p's subnet is the
// table key, already matched).
func (tp *tablePeer) same(p *Peer) bool {
	return tp.PublicIP == p.PublicIP.Unmap() && bytes.Equal(tp.VtepMAC, p.VtepMAC) && tp.Name == p.Name
}

// peerTable is the desired peers, indexed for the diff and for the miss path.
// It is changed in place, one peer at a time, by the control side, which holds
// VXLAN.mu and so reads it without mu; the miss path reads it under mu's read
// lock. Each peer's entry is consistent on its own; a SetPeers that changes
// many peers is seen by the miss path peer by peer.
type peerTable struct {
	mu       sync.RWMutex
	mode     Mode
	bySubnet *prefixMap[*tablePeer] // every accepted peer (DirectRouting ones too)
	byGW     map[netip.Addr]*tablePeer
	byMAC    map[string]*tablePeer // peers reached over VXLAN: one per VtepMAC
}

func newPeerTable(mode Mode) *peerTable {
	return &peerTable{
		mode:     mode,
		bySubnet: newPrefixMap[*tablePeer](0),
		byGW:     map[netip.Addr]*tablePeer{},
		byMAC:    map[string]*tablePeer{},
	}
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
	p.VtepMAC = slices.Clone(p.VtepMAC) // the caller's slice may be reused
	return &tablePeer{Peer: p, gw: p.Subnet.Addr(), mac: macString(p.VtepMAC)}, nil
}

// reserve makes room for n peers in one step when the indexes are much
// smaller (a bulk SetPeers would otherwise regrow them many times).
func (t *peerTable) reserve(n int) {
	if t.len() >= n/2 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.bySubnet.m = copyMap(t.bySubnet.m, n)
	t.byGW = copyMap(t.byGW, n)
	t.byMAC = copyMap(t.byMAC, n)
}

func copyMap[K comparable, V any](m map[K]V, n int) map[K]V {
	c := make(map[K]V, n)
	maps.Copy(c, m)
	return c
}

// add indexes p. A peer whose VtepMAC another peer already claims is rejected
// (the FDB has one remote per MAC); the caller has removed any peer with p's
// subnet.
func (t *peerTable) add(p *tablePeer) error {
	if q, ok := t.byMAC[p.mac]; ok && !p.direct {
		return fmt.Errorf("%w %s: VtepMAC %s already used by %s", ErrInvalidPeer, p.Name, p.mac, q.Name)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.bySubnet.set(p.Subnet, p)
	if !p.direct { // reached over the underlay: never the subject of a miss
		t.byGW[p.gw] = p
		t.byMAC[p.mac] = p
	}
	return nil
}

// remove drops p (and only p) from the indexes.
func (t *peerTable) remove(p *tablePeer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.bySubnet.m[p.Subnet] == p {
		t.bySubnet.del(p.Subnet)
	}
	if t.byGW[p.gw] == p {
		delete(t.byGW, p.gw)
	}
	if t.byMAC[p.mac] == p {
		delete(t.byMAC, p.mac)
	}
}

// get returns the peer with this subnet (control side).
func (t *peerTable) get(subnet netip.Prefix) *tablePeer { return t.bySubnet.m[subnet] }

func (t *peerTable) len() int { return len(t.bySubnet.m) }

// sorted returns every peer by subnet (control side; O(N log N), for the full
// diff).
func (t *peerTable) sorted() []*tablePeer {
	ps := make([]*tablePeer, 0, t.len())
	for _, p := range t.bySubnet.m {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(a, b *tablePeer) int { return comparePrefix(a.Subnet, b.Subnet) })
	return ps
}

// forIP finds the peer an L3 miss for ip belongs to: the peer's .0 in both
// modes, any address of its subnet in on-demand mode (the Network route makes
// the kernel resolve pod IPs directly).
func (t *peerTable) forIP(ip netip.Addr) *tablePeer {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if p, ok := t.byGW[ip]; ok {
		return p
	}
	if t.mode != ModeOnDemand {
		return nil
	}
	if p, ok := t.bySubnet.lookup(ip); ok && !p.direct {
		return p
	}
	return nil
}

// forMAC finds the peer an L2 miss for mac belongs to.
func (t *peerTable) forMAC(mac string) *tablePeer {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.byMAC[mac]
}

// prefixMap finds the entry whose prefix contains an address, with one map
// lookup per distinct prefix length (peer subnets usually share one length),
// so a miss is answered in O(1) whatever the cluster size.
type prefixMap[V any] struct {
	m    map[netip.Prefix]V
	bits []int       // distinct lengths, longest first
	nbit map[int]int // entries per length
}

func newPrefixMap[V any](n int) *prefixMap[V] {
	return &prefixMap[V]{m: make(map[netip.Prefix]V, n), nbit: map[int]int{}}
}

func (pm *prefixMap[V]) set(p netip.Prefix, v V) {
	p = p.Masked()
	if _, ok := pm.m[p]; !ok {
		pm.nbit[p.Bits()]++
	}
	pm.m[p] = v
	if !slices.Contains(pm.bits, p.Bits()) {
		pm.bits = append(pm.bits, p.Bits())
		slices.SortFunc(pm.bits, func(a, b int) int { return cmp.Compare(b, a) })
	}
}

func (pm *prefixMap[V]) del(p netip.Prefix) {
	p = p.Masked()
	if _, ok := pm.m[p]; !ok {
		return
	}
	delete(pm.m, p)
	if pm.nbit[p.Bits()]--; pm.nbit[p.Bits()] == 0 {
		delete(pm.nbit, p.Bits())
		pm.bits = slices.DeleteFunc(pm.bits, func(b int) bool { return b == p.Bits() })
	}
}

func (pm *prefixMap[V]) lookup(ip netip.Addr) (V, bool) {
	for _, b := range pm.bits {
		p, err := ip.Prefix(b)
		if err != nil {
			continue
		}
		if v, ok := pm.m[p]; ok {
			return v, true
		}
	}
	var zero V
	return zero, false
}
