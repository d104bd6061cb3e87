package backend

import (
	"net/netip"
	"slices"
)

// This file is the pure half of programming: the wanted state, computed from
// the peer table, and the one diff that takes a bucket of the kernel view to
// what its owner wants. Nothing here does I/O.
//
// A SetPeers diffs the buckets of the peers it changed (and of the owners a
// failed write or a miss answer touched); a reconcile diffs every bucket.
// Both call diffOwner, so they cannot disagree.

// desired is the complete wanted state.
type desired struct {
	t      *peerTable
	active map[netip.Prefix]bool // on demand: the peers that get their entries
	routes []routeEntry          // peerless routes (the on-demand Network route)
}

// peerWant is the set of entries one owner needs; a false has* is not
// wanted. keepMAC is the MAC of the neighbours inside the owner's subnet that
// stay (on demand: answers for pod IPs), "" for none.
type peerWant struct {
	subnet                     netip.Prefix
	neigh                      neighEntry
	fdb                        fdbEntry
	route                      routeEntry
	hasNeigh, hasFDB, hasRoute bool
	keepMAC                    string
}

// newDesired wraps t; in on-demand mode only peers in active get per-peer
// entries, and network gets one via-less route.
func newDesired(t *peerTable, network netip.Prefix, active map[netip.Prefix]bool) desired {
	d := desired{t: t, active: active}
	if t.mode == ModeOnDemand && network.IsValid() {
		d.routes = append(d.routes, routeEntry{Dst: network, Proto: RouteProtocol, Metric: baseMetric(network)})
	}
	return d
}

// programmed reports whether p gets its neighbour, FDB entry and route.
func (d desired) programmed(p *tablePeer) bool {
	return !p.direct && (d.t.mode != ModeOnDemand || d.active[p.Subnet])
}

// want returns the entries p needs.
func (d desired) want(p *tablePeer) peerWant {
	w := peerWant{subnet: p.Subnet}
	switch {
	case p.direct:
		w.route, w.hasRoute = routeEntry{Dst: p.Subnet, Gw: p.PublicIP, Underlay: true, Metric: peerMetric(p.Subnet), Proto: RouteProtocol}, true
	case d.programmed(p):
		w.neigh, w.hasNeigh = neighEntry{IP: p.gw, MAC: p.mac, Permanent: true}, true
		w.fdb, w.hasFDB = fdbEntry{MAC: p.mac, Dst: p.PublicIP}, true
		w.route, w.hasRoute = routeEntry{Dst: p.Subnet, Gw: p.gw, Onlink: true, Metric: peerMetric(p.Subnet), Proto: RouteProtocol}, true
	}
	if !p.direct {
		w.keepMAC = p.mac
	}
	return w
}

// wantOf returns what owner wants: its peer's entries, nothing for a subnet
// no peer has any more, the peerless routes for the orphans.
func (d desired) wantOf(owner netip.Prefix) (peerWant, []routeEntry) {
	if owner == orphans {
		return peerWant{}, d.routes
	}
	if p := d.t.get(owner); p != nil {
		return d.want(p), nil
	}
	return peerWant{subnet: owner}, nil
}

// wantsFDB is asked of the whole table, not of one owner: a VtepMAC that
// moved between peers may leave its old entry in another bucket.
func (d desired) wantsFDB(f fdbEntry) bool {
	p, ok := d.t.byMAC.get(f.MAC)
	return ok && d.programmed(p) && p.PublicIP == f.Dst
}

// owners of entries found in the kernel or written by a miss answer: the
// peer whose subnet holds the neighbour, or the route's destination; for an
// FDB entry the peer with its MAC. The zero Prefix (orphans) if none.

func (t *peerTable) neighOwner(ip netip.Addr) netip.Prefix {
	if p, ok := t.lookup(ip); ok {
		return p.Subnet
	}
	return orphans
}

func (t *peerTable) routeOwner(dst netip.Prefix) netip.Prefix {
	if p, ok := t.lookup(dst.Addr()); ok && p.Subnet.Bits() <= dst.Bits() {
		return p.Subnet
	}
	return orphans
}

func (t *peerTable) fdbOwner(mac string) netip.Prefix {
	if p, ok := t.byMAC.get(mac); ok {
		return p.Subnet
	}
	return orphans
}

// diffOwner appends the writes that take one owner's bucket have to what it
// wants: first the adds, neighbour then FDB then route (the route comes last,
// or the kernel would ARP for the gateway), then the peerless routes, then
// the deletes of everything in have that is not wanted, routes first so no
// route points at a vanished neighbour. Adds come before deletes so a changed
// peer never loses connectivity: a changed VtepMAC or PublicIP is a replace
// of the new entry followed by the delete of the stale one. Every op is
// tagged with owner.
func diffOwner(ops []op, owner netip.Prefix, have state, w peerWant, routes []routeEntry, d desired) []op {
	if w.hasNeigh {
		if cur, ok := have.neighAt(w.neigh.IP); !ok || cur != w.neigh {
			ops = append(ops, op{kind: opNeighSet, peer: owner, neigh: w.neigh})
		}
	}
	if w.hasFDB && !have.hasFDB(w.fdb) {
		ops = append(ops, op{kind: opFDBSet, peer: owner, fdb: w.fdb})
	}
	if w.hasRoute && !have.hasRoute(w.route) {
		ops = append(ops, op{kind: opRouteSet, peer: owner, route: w.route})
	}
	for _, r := range routes {
		if !have.hasRoute(r) {
			ops = append(ops, op{kind: opRouteSet, peer: owner, route: r})
		}
	}
	dels := len(ops)
	for _, r := range have.route {
		if !wantsRoute(w, routes, r) {
			ops = append(ops, op{kind: opRouteDel, peer: owner, route: r})
		}
	}
	for _, n := range have.neigh {
		// A neighbour at the wanted IP with another MAC is replaced in
		// place; one with the peer's MAC is an answer for a pod IP.
		if !(w.hasNeigh && n.IP == w.neigh.IP) && (w.keepMAC == "" || n.MAC != w.keepMAC) {
			ops = append(ops, op{kind: opNeighDel, peer: owner, neigh: n})
		}
	}
	for _, f := range have.fdb {
		if !d.wantsFDB(f) {
			ops = append(ops, op{kind: opFDBDel, peer: owner, fdb: f})
		}
	}
	slices.SortFunc(ops[dels:], compareOps)
	return ops
}

// wantsRoute matches by routeKey: a wanted route differing only in flags was
// replaced in place, and deleting by (dst, gw, dev) would remove the new one.
func wantsRoute(w peerWant, routes []routeEntry, r routeEntry) bool {
	if w.hasRoute && routeKey(w.route) == routeKey(r) {
		return true
	}
	return slices.ContainsFunc(routes, func(x routeEntry) bool { return routeKey(x) == routeKey(r) })
}

// diffOwners runs diffOwner for each owner, in the given order.
func diffOwners(have owned, d desired, owners []netip.Prefix) []op {
	ops := make([]op, 0, 3*len(owners))
	for _, o := range owners {
		w, routes := d.wantOf(o)
		ops = diffOwner(ops, o, have.get(o), w, routes, d)
	}
	return ops
}

// allOwners is every owner a full diff visits: the peers in subnet order,
// then the buckets of subnets no peer has any more, then the orphans. O(N
// log N): for a reconcile.
func allOwners(have owned, d desired) []netip.Prefix {
	owners := make([]netip.Prefix, 0, max(d.t.len(), len(have))+1)
	for _, p := range d.t.sorted() {
		owners = append(owners, p.Subnet)
	}
	n := len(owners)
	for s := range have {
		if s != orphans && d.t.get(s) == nil {
			owners = append(owners, s)
		}
	}
	slices.SortFunc(owners[n:], comparePrefix)
	return append(owners, orphans)
}

// peerChange is one peer whose wanted entries may have changed: old as it
// was (nil: added), cur as it is (nil: removed); an on-demand activation has
// old == cur.
type peerChange struct{ old, cur *tablePeer }

func (c peerChange) subnet() netip.Prefix {
	if c.cur != nil {
		return c.cur.Subnet
	}
	return c.old.Subnet
}

// countProgrammed counts wanted peers whose entries are all in have (O(N)).
func countProgrammed(have owned, d desired) int {
	n := 0
	for s, p := range d.t.bySubnet.all() {
		w, b := d.want(p), have.get(s)
		nb, _ := b.neighAt(w.neigh.IP)
		if (!w.hasNeigh || nb == w.neigh) && (!w.hasFDB || b.hasFDB(w.fdb)) &&
			(!w.hasRoute || b.hasRoute(w.route)) {
			n++
		}
	}
	return n
}
