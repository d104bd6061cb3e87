package backend

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"iter"
	"maps"
	"net/netip"
	"slices"
)

// tablePeer is a validated Peer plus what the datapath derived from it. It is
// never changed once created (a changed peer is a new tablePeer), so a
// published peerTable may hand it to the miss responder.
type tablePeer struct {
	Peer
	gw     netip.Addr // the peer's flannel.1 address: Subnet's .0
	mac    string
	direct bool // DirectRouting: route via PublicIP on the underlay, no VXLAN entries
}

// same reports whether p describes this peer exactly (p's subnet is the
// table key, already matched).
func (tp *tablePeer) same(p *Peer) bool {
	return tp.PublicIP == p.PublicIP.Unmap() && bytes.Equal(tp.VtepMAC, p.VtepMAC) && tp.Name == p.Name
}

// validatePeer checks one Peer; local is the node's own public IP, whose
// family the peer's subnet and public IP must have.
func validatePeer(p Peer, local netip.Addr) (*tablePeer, error) {
	want := familyName(local)
	switch {
	case !p.Subnet.IsValid():
		return nil, fmt.Errorf("%w %s: no subnet", ErrInvalidPeer, p.Name)
	case p.Subnet.Addr().Is6() != local.Unmap().Is6():
		return nil, fmt.Errorf("%w %s: subnet %s is %s, this datapath is %s", ErrInvalidPeer, p.Name, p.Subnet, familyName(p.Subnet.Addr()), want)
	case !p.PublicIP.IsValid():
		return nil, fmt.Errorf("%w %s: no public IP", ErrInvalidPeer, p.Name)
	case p.PublicIP.Unmap().Is6() != local.Unmap().Is6():
		return nil, fmt.Errorf("%w %s: public IP %s is %s, this datapath is %s", ErrInvalidPeer, p.Name, p.PublicIP, familyName(p.PublicIP.Unmap()), want)
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

// peerTable is the index of the wanted peers that the diff and the miss
// responder read. A published table is immutable: the control side changes
// a copy (edit) and publishes that, so the responder reads a consistent
// table without a lock, and a SetPeers that changes many peers is seen
// whole or not at all. An edit copies only the shards it writes, so one
// lease event costs O(1) copying, not O(peers).
type peerTable struct {
	mode     Mode
	bySubnet cowMap[netip.Prefix, *tablePeer] // every accepted peer (DirectRouting ones too)
	bits     [129]int32                       // peers per subnet length, for lookups
	byMAC    cowMap[string, *tablePeer]       // peers reached over VXLAN: one per VtepMAC
}

func newPeerTable(mode Mode) *peerTable {
	return &peerTable{
		mode:     mode,
		bySubnet: newCowMap[netip.Prefix, *tablePeer](hashPrefix),
		byMAC:    newCowMap[string, *tablePeer](hashString),
	}
}

// edit returns a copy of t that may be changed without affecting t.
func (t *peerTable) edit() *peerTable {
	c := *t
	c.bySubnet.mine, c.byMAC.mine = [cowShards / 64]uint64{}, [cowShards / 64]uint64{}
	return &c
}

// add indexes p. A peer whose VtepMAC another peer already claims is rejected
// (the FDB has one remote per MAC); the caller has removed any peer with p's
// subnet.
func (t *peerTable) add(p *tablePeer) error {
	if q, ok := t.byMAC.get(p.mac); ok && !p.direct {
		return fmt.Errorf("%w %s: VtepMAC %s already used by %s", ErrInvalidPeer, p.Name, p.mac, q.Name)
	}
	if !t.bySubnet.set(p.Subnet, p) {
		t.bits[p.Subnet.Bits()]++
	}
	if !p.direct { // reached over the underlay: never the subject of a miss
		t.byMAC.set(p.mac, p)
	}
	return nil
}

// remove drops p (and only p) from the indexes.
func (t *peerTable) remove(p *tablePeer) {
	if q, _ := t.bySubnet.get(p.Subnet); q == p {
		t.bySubnet.del(p.Subnet)
		t.bits[p.Subnet.Bits()]--
	}
	if q, _ := t.byMAC.get(p.mac); q == p {
		t.byMAC.del(p.mac)
	}
}

// get returns the peer with this subnet.
func (t *peerTable) get(subnet netip.Prefix) *tablePeer {
	p, _ := t.bySubnet.get(subnet)
	return p
}

func (t *peerTable) len() int { return t.bySubnet.n }

// lookup finds the peer whose subnet contains ip, with one map lookup per
// subnet length in use (peer subnets usually share one), so a miss is
// answered in O(1) whatever the cluster size.
func (t *peerTable) lookup(ip netip.Addr) (*tablePeer, bool) {
	for b := ip.BitLen(); b >= 0; b-- {
		if t.bits[b] == 0 {
			continue
		}
		if pfx, err := ip.Prefix(b); err == nil {
			if p, ok := t.bySubnet.get(pfx); ok {
				return p, true
			}
		}
	}
	return nil, false
}

// sorted returns every peer by subnet (O(N log N), for the full diff).
func (t *peerTable) sorted() []*tablePeer {
	ps := make([]*tablePeer, 0, t.len())
	for _, p := range t.bySubnet.all() {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(a, b *tablePeer) int { return comparePrefix(a.Subnet, b.Subnet) })
	return ps
}

// forIP finds the peer an L3 miss for ip belongs to: the peer's .0 (::0) in both
// modes, any address of its subnet in on-demand mode (the Network route makes
// the kernel resolve pod IPs directly).
func (t *peerTable) forIP(ip netip.Addr) *tablePeer {
	if p, ok := t.lookup(ip); ok && !p.direct && (p.gw == ip || t.mode == ModeOnDemand) {
		return p
	}
	return nil
}

// forMAC finds the peer an L2 miss for mac belongs to.
func (t *peerTable) forMAC(mac string) *tablePeer {
	p, _ := t.byMAC.get(mac)
	return p
}

// cowShards is the number of shards of a cowMap; mine has one bit per shard.
const cowShards = 256

// cowMap is a map split into shards that are copied on write: a copy of the
// struct shares every shard, and the first write to a shard after edit
// clones it. Only shards whose bit is set in mine are written in place.
type cowMap[K comparable, V any] struct {
	hash   func(K) uint64
	shards [cowShards]map[K]V
	n      int
	mine   [cowShards / 64]uint64
}

func newCowMap[K comparable, V any](hash func(K) uint64) cowMap[K, V] {
	return cowMap[K, V]{hash: hash}
}

func (m *cowMap[K, V]) shard(k K) int { return int(m.hash(k) >> 56) } // the top 8 bits

func (m *cowMap[K, V]) get(k K) (V, bool) {
	v, ok := m.shards[m.shard(k)][k]
	return v, ok
}

// own makes shard i writable in place.
func (m *cowMap[K, V]) own(i int) map[K]V {
	if m.mine[i/64]&(1<<(i%64)) == 0 {
		if m.shards[i] == nil {
			m.shards[i] = map[K]V{}
		} else {
			m.shards[i] = maps.Clone(m.shards[i])
		}
		m.mine[i/64] |= 1 << (i % 64)
	}
	return m.shards[i]
}

// reserve makes room for n entries in one step when the map is much smaller
// (a bulk SetPeers would otherwise regrow every shard many times).
func (m *cowMap[K, V]) reserve(n int) {
	if m.n >= n/2 {
		return
	}
	for i, s := range m.shards {
		c := make(map[K]V, n/cowShards+n/(4*cowShards)+1)
		maps.Copy(c, s)
		m.shards[i] = c
	}
	for i := range m.mine {
		m.mine[i] = ^uint64(0)
	}
}

// set stores v and reports whether k was present.
func (m *cowMap[K, V]) set(k K, v V) bool {
	s := m.own(m.shard(k))
	_, had := s[k]
	if !had {
		m.n++
	}
	s[k] = v
	return had
}

func (m *cowMap[K, V]) del(k K) {
	i := m.shard(k)
	if _, ok := m.shards[i][k]; !ok {
		return
	}
	delete(m.own(i), k)
	m.n--
}

func (m *cowMap[K, V]) all() iter.Seq2[K, V] {
	return func(yield func(K, V) bool) {
		for _, s := range m.shards {
			for k, v := range s {
				if !yield(k, v) {
					return
				}
			}
		}
	}
}

// Shard hashes: Fibonacci hashing of the part of the key that varies
// between peers, so consecutive subnets spread over the shards.
const fib = 0x9E3779B97F4A7C15

func hashAddr(a netip.Addr) uint64 {
	b := a.As16()
	return (binary.BigEndian.Uint64(b[:8]) ^ binary.BigEndian.Uint64(b[8:])) * fib
}

func hashPrefix(p netip.Prefix) uint64 { return (hashAddr(p.Addr()) + uint64(p.Bits())) * fib }

// reserve makes room for n peers (see cowMap.reserve).
func (t *peerTable) reserve(n int) {
	t.bySubnet.reserve(n)
	t.byMAC.reserve(n)
}

var stringSeed = maphash.MakeSeed()

func hashString(s string) uint64 { return maphash.String(stringSeed, s) }
