package backend

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// This file is the pure half of SetPeers: a model of the kernel entries the
// datapath owns, the desired model computed from the peer table, and the diff
// between them. Nothing here does I/O.

// neighEntry is an IPv4 neighbour on the VXLAN device.
type neighEntry struct {
	IP        netip.Addr
	MAC       string // net.HardwareAddr.String() form
	Permanent bool
}

// fdbEntry is a VXLAN forwarding entry (MAC → remote VTEP) on the device.
type fdbEntry struct {
	MAC string
	Dst netip.Addr
}

// routeEntry is an IPv4 route in the main table owned by the datapath.
type routeEntry struct {
	Dst      netip.Prefix
	Gw       netip.Addr // invalid for a via-less route
	Underlay bool       // on the underlay link (DirectRouting), else on the VXLAN device
	Onlink   bool
}

// state is what the kernel holds (as far as we own it).
type state struct {
	neigh map[netip.Addr]neighEntry
	fdb   map[fdbEntry]struct{}
	route map[routeEntry]struct{}
}

func newState() state {
	return state{
		neigh: map[netip.Addr]neighEntry{},
		fdb:   map[fdbEntry]struct{}{},
		route: map[routeEntry]struct{}{},
	}
}

func (s state) clone() state {
	c := newState()
	for k, v := range s.neigh {
		c.neigh[k] = v
	}
	for k := range s.fdb {
		c.fdb[k] = struct{}{}
	}
	for k := range s.route {
		c.route[k] = struct{}{}
	}
	return c
}

// peerWant is the set of entries one peer needs; nil fields are not wanted.
type peerWant struct {
	subnet netip.Prefix
	neigh  *neighEntry
	fdb    *fdbEntry
	route  *routeEntry
}

// desired is the complete wanted state.
type desired struct {
	peers  []peerWant   // sorted by subnet
	routes []routeEntry // peerless routes (the on-demand Network route)
	// keep: extra neighbours inside one of these subnets whose MAC is the
	// subnet's VtepMAC are left alone (on-demand answers for pod IPs).
	keep *prefixMap[string]
}

// tablePeer is a validated Peer plus what the datapath derived from it.
type tablePeer struct {
	Peer
	gw     netip.Addr // the peer's flannel.1 address: Subnet's .0
	mac    string
	direct bool // DirectRouting: route via PublicIP on the underlay, no VXLAN entries
}

// buildDesired computes the wanted state. In on-demand mode only peers in
// active get per-peer entries, and network gets one via-less route.
func buildDesired(peers []*tablePeer, mode Mode, network netip.Prefix, active map[netip.Prefix]bool) desired {
	d := desired{keep: newPrefixMap[string]()}
	for _, p := range peers {
		w := peerWant{subnet: p.Subnet}
		switch {
		case p.direct:
			w.route = &routeEntry{Dst: p.Subnet, Gw: p.PublicIP, Underlay: true}
		case mode == ModeOnDemand && !active[p.Subnet]:
			d.keep.set(p.Subnet, p.mac)
		default:
			d.keep.set(p.Subnet, p.mac)
			w.neigh = &neighEntry{IP: p.gw, MAC: p.mac, Permanent: true}
			w.fdb = &fdbEntry{MAC: p.mac, Dst: p.PublicIP}
			w.route = &routeEntry{Dst: p.Subnet, Gw: p.gw, Onlink: true}
		}
		d.peers = append(d.peers, w)
	}
	slices.SortFunc(d.peers, func(a, b peerWant) int { return comparePrefix(a.subnet, b.subnet) })
	if mode == ModeOnDemand && network.IsValid() {
		d.routes = append(d.routes, routeEntry{Dst: network})
	}
	return d
}

// opKind names one kernel write.
type opKind uint8

const (
	opNeighSet opKind = iota
	opFDBSet
	opRouteSet
	opRouteDel
	opNeighDel
	opFDBDel
)

// op is one kernel write; peer is the subnet it serves or, for a delete, the
// wanted peer the stale entry belonged to (zero for peerless entries).
type op struct {
	kind  opKind
	peer  netip.Prefix
	neigh neighEntry
	fdb   fdbEntry
	route routeEntry
}

func (o op) String() string {
	verb := "del"
	if o.kind == opNeighSet || o.kind == opFDBSet || o.kind == opRouteSet {
		verb = "replace"
	}
	switch o.kind {
	case opNeighSet, opNeighDel:
		return fmt.Sprintf("neigh %s %s lladdr %s%s", verb, o.neigh.IP, o.neigh.MAC, nudText(o.neigh.Permanent))
	case opFDBSet, opFDBDel:
		return fmt.Sprintf("fdb %s %s dst %s", verb, o.fdb.MAC, o.fdb.Dst)
	default:
		return "route " + verb + " " + o.route.String()
	}
}

func nudText(permanent bool) string {
	if permanent {
		return " permanent"
	}
	return ""
}

func (r routeEntry) String() string {
	var b strings.Builder
	b.WriteString(r.Dst.String())
	if r.Gw.IsValid() {
		b.WriteString(" via " + r.Gw.String())
	}
	if r.Underlay {
		b.WriteString(" dev underlay")
	} else {
		b.WriteString(" dev vxlan")
	}
	if r.Onlink {
		b.WriteString(" onlink")
	}
	return b.String()
}

// diff returns the writes that take the kernel from have to want: first, per
// peer, neighbour then FDB then route (route last, or the kernel would ARP for
// the gateway); then the peerless routes; then deletes of everything owned but
// not wanted, routes first so no route points at a vanished neighbour. Adds
// come before deletes so a changed peer never loses connectivity: a changed
// VtepMAC or PublicIP is a replace of the new entry followed by the delete of
// the stale one.
func diff(have state, want desired) []op {
	adds, w := diffAdds(have, want)
	return append(adds, diffDels(have, want, w)...)
}

// wantedKeys are the identities of the wanted entries.
type wantedKeys struct {
	neigh map[netip.Addr]bool
	fdb   map[fdbEntry]bool
	route map[routeEntry]bool // by routeKey
}

// diffAdds lists the replaces, per peer in order neighbour, FDB, route.
func diffAdds(have state, want desired) ([]op, wantedKeys) {
	var ops []op
	w := wantedKeys{neigh: map[netip.Addr]bool{}, fdb: map[fdbEntry]bool{}, route: map[routeEntry]bool{}}
	for _, p := range want.peers {
		if n := p.neigh; n != nil {
			w.neigh[n.IP] = true
			if cur, ok := have.neigh[n.IP]; !ok || cur != *n {
				ops = append(ops, op{kind: opNeighSet, peer: p.subnet, neigh: *n})
			}
		}
		if f := p.fdb; f != nil {
			w.fdb[*f] = true
			if _, ok := have.fdb[*f]; !ok {
				ops = append(ops, op{kind: opFDBSet, peer: p.subnet, fdb: *f})
			}
		}
		if r := p.route; r != nil {
			w.route[routeKey(*r)] = true
			if _, ok := have.route[*r]; !ok {
				ops = append(ops, op{kind: opRouteSet, peer: p.subnet, route: *r})
			}
		}
	}
	for _, r := range want.routes {
		w.route[routeKey(r)] = true
		if _, ok := have.route[r]; !ok {
			ops = append(ops, op{kind: opRouteSet, route: r})
		}
	}
	return ops, w
}

// diffDels lists the deletes of owned entries nobody wants, routes first.
// Stale entries of a peer still wanted are tagged with it, so apply keeps
// them when that peer's new entries failed.
func diffDels(have state, want desired, w wantedKeys) []op {
	owner := newPrefixMap[netip.Prefix]()
	for _, p := range want.peers {
		owner.set(p.subnet, p.subnet)
	}
	var dels []op
	for r := range have.route {
		// A wanted route differing only in flags was replaced in place;
		// deleting by (dst, gw, dev) would remove the new one.
		if !w.route[routeKey(r)] {
			peer, _ := owner.lookup(r.Dst.Addr())
			dels = append(dels, op{kind: opRouteDel, route: r, peer: peer})
		}
	}
	macOwner := map[string]netip.Prefix{}
	for ip, n := range have.neigh {
		peer, _ := owner.lookup(ip)
		if peer.IsValid() {
			macOwner[n.MAC] = peer
		}
		if w.neigh[ip] {
			continue
		}
		if mac, ok := want.keep.lookup(ip); ok && mac == n.MAC {
			continue
		}
		dels = append(dels, op{kind: opNeighDel, neigh: n, peer: peer})
	}
	for f := range have.fdb {
		if !w.fdb[f] {
			dels = append(dels, op{kind: opFDBDel, fdb: f, peer: macOwner[f.MAC]})
		}
	}
	slices.SortFunc(dels, compareOps)
	return dels
}

// routeKey drops the flags that a replace changes in place.
func routeKey(r routeEntry) routeEntry {
	r.Onlink = false
	return r
}

func compareOps(a, b op) int {
	if c := cmp.Compare(a.kind, b.kind); c != 0 {
		return c
	}
	switch a.kind {
	case opRouteDel, opRouteSet:
		if c := comparePrefix(a.route.Dst, b.route.Dst); c != 0 {
			return c
		}
		return strings.Compare(a.route.String(), b.route.String())
	case opNeighDel, opNeighSet:
		return a.neigh.IP.Compare(b.neigh.IP)
	default:
		if c := strings.Compare(a.fdb.MAC, b.fdb.MAC); c != 0 {
			return c
		}
		return a.fdb.Dst.Compare(b.fdb.Dst)
	}
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// record applies a successful op to s.
func (s state) record(o op) {
	switch o.kind {
	case opNeighSet:
		s.neigh[o.neigh.IP] = o.neigh
	case opNeighDel:
		delete(s.neigh, o.neigh.IP)
	case opFDBSet:
		// A replace rewrites the first remote of that MAC in the kernel.
		for f := range s.fdb {
			if f.MAC == o.fdb.MAC {
				delete(s.fdb, f)
				break
			}
		}
		s.fdb[o.fdb] = struct{}{}
	case opFDBDel:
		delete(s.fdb, o.fdb)
	case opRouteSet:
		for r := range s.route {
			// A replace overwrites the main-table route with the same
			// destination (and metric 0), whatever its device.
			if r.Dst == o.route.Dst {
				delete(s.route, r)
			}
		}
		s.route[o.route] = struct{}{}
	case opRouteDel:
		delete(s.route, o.route)
	}
}

// prefixMap finds the entry whose prefix contains an address, with one map
// lookup per distinct prefix length (peer subnets usually share one length),
// so a miss is answered in O(1) whatever the cluster size.
type prefixMap[V any] struct {
	m    map[netip.Prefix]V
	bits []int // distinct lengths, longest first
}

func newPrefixMap[V any]() *prefixMap[V] { return &prefixMap[V]{m: map[netip.Prefix]V{}} }

func (pm *prefixMap[V]) set(p netip.Prefix, v V) {
	p = p.Masked()
	pm.m[p] = v
	if !slices.Contains(pm.bits, p.Bits()) {
		pm.bits = append(pm.bits, p.Bits())
		slices.SortFunc(pm.bits, func(a, b int) int { return cmp.Compare(b, a) })
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

// macString canonicalises a hardware address for comparisons.
func macString(hw net.HardwareAddr) string { return hw.String() }
