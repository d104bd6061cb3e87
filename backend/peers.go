package backend

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"

	"golang.org/x/sys/unix"
)

// This file turns a SetPeers list into changes of the peer table and the
// changes into kernel writes.

// updatePeersLocked makes the table hold the given peers and appends to
// changes the peers added, changed and removed. A peer identical to the one in
// the table costs a map lookup and a comparison; only added and changed peers
// are validated. A peer whose subnet is listed twice, or whose VtepMAC another
// peer claims (the peer already programmed keeps it), is rejected, as is an
// invalid one; the errors are returned and the other peers programmed.
func (v *VXLAN) updatePeersLocked(peers []Peer, changes []peerChange) ([]peerChange, []error) {
	v.gen++
	t := v.table
	var errs []error
	var fresh []*tablePeer              // added or changed, in the caller's order
	var added map[netip.Prefix]struct{} // subnets of added peers, to catch duplicates
	listed := 0                         // table peers listed again
	for i := range peers {
		p := &peers[i]
		cur := t.get(p.Subnet.Masked())
		if cur != nil && cur.seen == v.gen {
			errs = append(errs, fmt.Errorf("%w %s: subnet %s listed twice", ErrInvalidPeer, p.Name, cur.Subnet))
			continue
		}
		if cur != nil && cur.same(p) {
			cur.seen = v.gen
			listed++
			continue
		}
		tp, err := validatePeer(*p, v.cfg.Device.LocalIP)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if cur != nil {
			cur.seen = v.gen
			listed++
		} else if _, dup := added[tp.Subnet]; dup {
			errs = append(errs, fmt.Errorf("%w %s: subnet %s listed twice", ErrInvalidPeer, p.Name, tp.Subnet))
			continue
		} else {
			if added == nil {
				added = make(map[netip.Prefix]struct{}, len(peers)-i)
			}
			added[tp.Subnet] = struct{}{}
		}
		tp.direct = v.isDirectLocked(tp.PublicIP)
		tp.seen = v.gen
		fresh = append(fresh, tp)
	}
	if listed < t.len() {
		changes = v.removeUnlistedLocked(changes)
	}
	return v.addPeersLocked(fresh, changes, errs)
}

// removeUnlistedLocked drops the peers the last SetPeers did not list.
func (v *VXLAN) removeUnlistedLocked(changes []peerChange) []peerChange {
	var gone []*tablePeer
	for _, p := range v.table.bySubnet.m {
		if p.seen != v.gen {
			gone = append(gone, p)
		}
	}
	for _, p := range gone {
		v.table.remove(p)
		delete(v.active, p.Subnet)
		changes = append(changes, peerChange{old: p})
	}
	return changes
}

// addPeersLocked puts fresh peers in the table in place of the peers with
// their subnets. Every replaced peer leaves first, so VtepMACs may move between
// peers within one call.
func (v *VXLAN) addPeersLocked(fresh []*tablePeer, changes []peerChange, errs []error) ([]peerChange, []error) {
	t := v.table
	t.reserve(t.len() + len(fresh))
	olds := make([]*tablePeer, len(fresh))
	for i, p := range fresh {
		if olds[i] = t.get(p.Subnet); olds[i] != nil {
			t.remove(olds[i])
		}
	}
	for i, p := range fresh {
		if err := t.add(p); err != nil {
			errs = append(errs, err)
			if olds[i] != nil {
				delete(v.active, p.Subnet)
				changes = append(changes, peerChange{old: olds[i]})
			}
			continue
		}
		changes = append(changes, peerChange{old: olds[i], cur: p})
	}
	return changes, errs
}

// refreshDirectLocked re-decides DirectRouting for every peer (a reconcile
// dropped the cached decisions, so underlay changes are picked up).
func (v *VXLAN) refreshDirectLocked() []error {
	if !v.cfg.DirectRouting {
		return nil
	}
	var flipped []*tablePeer
	for _, p := range v.table.bySubnet.m {
		if d := v.isDirectLocked(p.PublicIP); d != p.direct {
			np := *p
			np.direct = d
			flipped = append(flipped, &np)
		}
	}
	if len(flipped) == 0 {
		return nil
	}
	changes, errs := v.addPeersLocked(flipped, nil, nil)
	v.logChanges(changes)
	return errs
}

// programLocked writes what the wanted state needs: the changed peers'
// entries (diffPeers), or everything (diff) when v.full says have may differ
// anywhere. It returns the number of writes attempted.
func (v *VXLAN) programLocked(changes []peerChange) (int, error) {
	v.logChanges(changes)
	if v.dev == nil {
		v.ready.Store(false)
		v.full = true
		return 0, fmt.Errorf("set peers: %w", ErrNoDevice)
	}
	if v.adoptPending {
		v.adoptLocked()
		v.adoptPending = false
	}
	want := newDesired(v.table, v.cfg.Network, v.active)
	var ops []op
	switch {
	case v.full:
		v.full = false
		v.have = v.have.sized(v.table.len())
		ops = diff(v.have, want)
	case len(changes) > 0:
		ops = diffPeers(v.have, want, changes)
	}
	err := v.apply(ops)
	v.ready.Store(err == nil)
	if f := v.cfg.Observer.PeersProgrammed; f != nil {
		n := v.table.len() // with no failed write, every peer is programmed
		if err != nil {
			n = countProgrammed(v.have, want)
		}
		f(n)
	}
	return len(ops), err
}

// countProgrammed counts wanted peers whose entries are all in s (O(N)).
func countProgrammed(s state, want desired) int {
	n := 0
	for _, p := range want.t.bySubnet.m {
		w := want.want(p)
		if (!w.hasNeigh || s.neigh[w.neigh.IP] == w.neigh) && (!w.hasFDB || s.hasFDB(w.fdb)) &&
			(!w.hasRoute || s.hasRoute(w.route)) {
			n++
		}
	}
	return n
}

// adoptLocked marks as active (on-demand) every peer that already has an
// entry in the kernel, so a restart keeps what misses had programmed.
func (v *VXLAN) adoptLocked() {
	t := v.table
	mark := func(p *tablePeer, ok bool) {
		if ok && !p.direct && !v.active[p.Subnet] {
			v.active[p.Subnet] = true
			v.log.Debug("peer adopted from kernel state", "peer", p.Name, "subnet", p.Subnet)
		}
	}
	for ip := range v.have.neigh {
		mark(t.bySubnet.lookup(ip))
	}
	for mac := range v.have.fdb {
		p, ok := t.byMAC[mac]
		mark(p, ok)
	}
	for dst := range v.have.route {
		p, ok := t.bySubnet.m[dst]
		mark(p, ok)
	}
}

// isDirectLocked decides DirectRouting for a public IP: the underlay's route
// to it is direct (no gateway) on the underlay link. Cached per IP; the cache
// is dropped on every reconcile so underlay changes are picked up.
func (v *VXLAN) isDirectLocked(ip netip.Addr) bool {
	if !v.cfg.DirectRouting {
		return false
	}
	if d, ok := v.direct[ip]; ok {
		return d
	}
	routes, err := v.nl.RouteGet(ip.AsSlice())
	direct := err == nil && len(routes) > 0 && routes[0].Gw == nil &&
		routes[0].LinkIndex == v.cfg.Device.UnderlayIndex &&
		(routes[0].Type == 0 || routes[0].Type == unix.RTN_UNICAST)
	if err != nil {
		v.log.Warn("route lookup for direct routing failed; using VXLAN", "public_ip", ip, "err", err)
	}
	v.direct[ip] = direct
	return direct
}

// logChanges writes one Debug line per peer added, changed or removed (the
// agent logs each lease event at Info; a bulk SetPeers would otherwise log
// every peer twice).
func (v *VXLAN) logChanges(changes []peerChange) {
	if len(changes) == 0 || !v.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	for _, c := range changes {
		o, p := c.old, c.cur
		switch {
		case o == p:
		case o == nil:
			v.log.Debug("peer added", "peer", p.Name, "subnet", p.Subnet, "public_ip", p.PublicIP, "vtep_mac", p.mac, "direct", p.direct)
		case p == nil:
			v.log.Debug("peer removed", "peer", o.Name, "subnet", o.Subnet, "public_ip", o.PublicIP)
		default:
			v.log.Debug("peer changed", "peer", p.Name, "subnet", p.Subnet, "public_ip", p.PublicIP, "old_public_ip", o.PublicIP,
				"vtep_mac", p.mac, "old_vtep_mac", o.mac, "direct", p.direct)
		}
	}
}
