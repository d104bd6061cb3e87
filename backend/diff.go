package backend

import (
	"net/netip"
	"slices"
)

// This file is the pure half of SetPeers: the wanted state, computed from the
// peer table, and the diffs from the kernel view to it. Nothing here does I/O.
//
// There are two diffs with one set of rules: diff compares everything (a
// reconcile, after a kernel dump), diffPeers only the entries of the peers that
// changed (every SetPeers and on-demand activation in between). Both ask the
// same questions of desired (what one peer needs, whether one entry is wanted,
// whose stale entry it is), each an O(1) lookup, so for a view that holds
// exactly the previous wanted state they return the same writes.

// desired is the complete wanted state.
type desired struct {
	t      *peerTable
	active map[netip.Prefix]bool // on demand: the peers that get their entries
	routes []routeEntry          // peerless routes (the on-demand Network route)
}

// peerWant is the set of entries one peer needs; a false has* is not wanted.
type peerWant struct {
	subnet                     netip.Prefix
	neigh                      neighEntry
	fdb                        fdbEntry
	route                      routeEntry
	hasNeigh, hasFDB, hasRoute bool
}

// newDesired wraps t; in on-demand mode only peers in active get per-peer
// entries, and network gets one via-less route.
func newDesired(t *peerTable, network netip.Prefix, active map[netip.Prefix]bool) desired {
	d := desired{t: t, active: active}
	if t.mode == ModeOnDemand && network.IsValid() {
		d.routes = append(d.routes, routeEntry{Dst: network, Proto: RouteProtocol})
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
	return w
}

// wantsNeigh reports whether a neighbour in the kernel stays: its IP is a
// wanted neighbour's (a different MAC is replaced in place), or it lies in a
// VXLAN peer's subnet with that peer's MAC (on-demand answers for pod IPs).
func (d desired) wantsNeigh(n neighEntry) bool {
	if p, ok := d.t.byGW[n.IP]; ok && d.programmed(p) {
		return true
	}
	p, ok := d.t.bySubnet.lookup(n.IP)
	return ok && !p.direct && p.mac == n.MAC
}

func (d desired) wantsFDB(f fdbEntry) bool {
	p, ok := d.t.byMAC[f.MAC]
	return ok && d.programmed(p) && p.PublicIP == f.Dst
}

// wantsRoute matches by routeKey: a wanted route differing only in flags was
// replaced in place, and deleting by (dst, gw, dev) would remove the new one.
func (d desired) wantsRoute(r routeEntry) bool {
	if p, ok := d.t.bySubnet.m[r.Dst]; ok {
		if w := d.want(p); w.hasRoute && routeKey(w.route) == routeKey(r) {
			return true
		}
	}
	return slices.ContainsFunc(d.routes, func(w routeEntry) bool { return routeKey(w) == routeKey(r) })
}

// owner is the wanted peer whose subnet holds ip (zero if none): its stale
// entries are tagged with it, so apply keeps them when that peer's new
// entries failed.
func (d desired) owner(ip netip.Addr) netip.Prefix {
	p, _ := d.t.bySubnet.lookup(ip)
	if p == nil {
		return netip.Prefix{}
	}
	return p.Subnet
}

// peerAdds appends the replaces one peer needs, in order neighbour, FDB,
// route: the route comes last, or the kernel would ARP for the gateway.
func peerAdds(ops []op, have state, w peerWant) []op {
	if w.hasNeigh {
		if cur, ok := have.neigh[w.neigh.IP]; !ok || cur != w.neigh {
			ops = append(ops, op{kind: opNeighSet, peer: w.subnet, neigh: w.neigh})
		}
	}
	if w.hasFDB && !have.hasFDB(w.fdb) {
		ops = append(ops, op{kind: opFDBSet, peer: w.subnet, fdb: w.fdb})
	}
	if w.hasRoute && !have.hasRoute(w.route) {
		ops = append(ops, op{kind: opRouteSet, peer: w.subnet, route: w.route})
	}
	return ops
}

// diff returns the writes that take the kernel from have to want: first, per
// peer in subnet order, neighbour then FDB then route; then the peerless
// routes; then deletes of everything owned but not wanted, routes first so no
// route points at a vanished neighbour. Adds come before deletes so a changed
// peer never loses connectivity: a changed VtepMAC or PublicIP is a replace of
// the new entry followed by the delete of the stale one. O(N): for a
// reconcile.
func diff(have state, want desired) []op {
	ops := make([]op, 0, 3*want.t.len()+len(want.routes))
	for _, p := range want.t.sorted() {
		ops = peerAdds(ops, have, want.want(p))
	}
	for _, r := range want.routes {
		if !have.hasRoute(r) {
			ops = append(ops, op{kind: opRouteSet, route: r})
		}
	}
	var dels []op
	for _, rs := range have.route {
		dels = routeDels(dels, want, rs)
	}
	// An FDB entry belongs to the wanted peer holding a neighbour with its
	// MAC: the neighbour is replaced first, then the stale entry goes.
	macOwner := map[string]netip.Prefix{}
	for ip, n := range have.neigh {
		if peer := want.owner(ip); peer.IsValid() {
			macOwner[n.MAC] = peer
		}
		dels = neighDel(dels, want, n)
	}
	for mac, dsts := range have.fdb {
		dels = fdbDels(dels, want, mac, dsts, macOwner[mac])
	}
	slices.SortFunc(dels, compareOps)
	return append(ops, dels...)
}

func routeDels(dels []op, want desired, rs []routeEntry) []op {
	for _, r := range rs {
		if !want.wantsRoute(r) {
			dels = append(dels, op{kind: opRouteDel, route: r, peer: want.owner(r.Dst.Addr())})
		}
	}
	return dels
}

func neighDel(dels []op, want desired, n neighEntry) []op {
	if want.wantsNeigh(n) {
		return dels
	}
	return append(dels, op{kind: opNeighDel, neigh: n, peer: want.owner(n.IP)})
}

func fdbDels(dels []op, want desired, mac string, dsts []netip.Addr, owner netip.Prefix) []op {
	for _, dst := range dsts {
		if f := (fdbEntry{MAC: mac, Dst: dst}); !want.wantsFDB(f) {
			dels = append(dels, op{kind: opFDBDel, fdb: f, peer: owner})
		}
	}
	return dels
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

// keepMAC is the MAC of the pod-IP neighbours a peer keeps ("" for none).
func keepMAC(p *tablePeer) string {
	if p == nil || p.direct {
		return ""
	}
	return p.mac
}

// diffPeers is diff restricted to the entries of the changed peers: the adds
// they need (in subnet order), then the deletes of the entries they own in
// have (routes to their subnets, neighbours in their subnets, FDB entries of
// their old and new MACs) that nobody wants. It costs O(changes), plus, for a
// peer removed or given a new MAC, a look at each address of its subnet (or
// one pass over the neighbours if there are fewer) for pod-IP neighbours to
// remove. Anything else stale is left to the next full diff.
func diffPeers(have state, want desired, changes []peerChange) []op {
	subnets := make([]netip.Prefix, 0, len(changes))
	var podIPs []netip.Prefix
	for _, c := range changes {
		subnets = append(subnets, c.subnet())
		// Pod-IP neighbours exist only where a peer kept them.
		if keepMAC(c.old) != "" && keepMAC(c.old) != keepMAC(c.cur) {
			podIPs = append(podIPs, c.subnet())
		}
	}
	slices.SortFunc(subnets, comparePrefix)
	subnets = slices.Compact(subnets)
	ops := make([]op, 0, 3*len(subnets))
	for _, s := range subnets {
		if p := want.t.get(s); p != nil {
			ops = peerAdds(ops, have, want.want(p))
		}
	}
	var dels []op
	for _, s := range subnets {
		dels = routeDels(dels, want, have.route[s])
	}
	dels = scopedNeighDels(dels, have, want, subnets, podIPs)
	dels = scopedFDBDels(dels, have, want, changes)
	slices.SortFunc(dels, compareOps)
	return append(ops, slices.Compact(dels)...)
}

// scopedNeighDels checks the neighbours in the changed subnets: the .0 of
// each, and every neighbour inside the podIPs subnets.
func scopedNeighDels(dels []op, have state, want desired, subnets, podIPs []netip.Prefix) []op {
	var size uint64
	for _, s := range podIPs {
		size += 1 << (32 - s.Bits())
	}
	if size > uint64(len(have.neigh)) { // fewer neighbours than addresses to try
		in := newPrefixMap[struct{}](len(podIPs))
		for _, s := range podIPs {
			in.set(s, struct{}{})
		}
		for ip, n := range have.neigh {
			if _, ok := in.lookup(ip); ok {
				dels = neighDel(dels, want, n)
			}
		}
	} else {
		for _, s := range podIPs {
			for ip := s.Addr(); s.Contains(ip); ip = ip.Next() {
				if n, ok := have.neigh[ip]; ok {
					dels = neighDel(dels, want, n)
				}
			}
		}
	}
	for _, s := range subnets { // podIPs' .0 twice: diffPeers compacts
		if n, ok := have.neigh[s.Addr()]; ok {
			dels = neighDel(dels, want, n)
		}
	}
	return dels
}

// scopedFDBDels checks the FDB entries of the changed peers' old and new
// MACs. A stale entry is tagged, as in diff, with the wanted peer whose
// neighbour in have carries its MAC (here: a changed peer's .0, which is
// replaced before the stale entry goes).
func scopedFDBDels(dels []op, have state, want desired, changes []peerChange) []op {
	var macs []string
	for _, c := range changes {
		for _, p := range [2]*tablePeer{c.old, c.cur} {
			if p == nil {
				continue
			}
			if _, ok := have.fdb[p.mac]; ok {
				macs = append(macs, p.mac)
			}
		}
	}
	if len(macs) == 0 {
		return dels
	}
	slices.Sort(macs)
	owner := map[string]netip.Prefix{}
	for _, c := range changes {
		gw := c.subnet().Addr()
		if n, ok := have.neigh[gw]; ok && want.owner(gw).IsValid() {
			owner[n.MAC] = want.owner(gw)
		}
	}
	for _, mac := range slices.Compact(macs) {
		dels = fdbDels(dels, want, mac, have.fdb[mac], owner[mac])
	}
	return dels
}
