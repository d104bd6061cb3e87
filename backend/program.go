package backend

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/host"
)

// This file is the kernel half of programming: the executor turns ops into
// netlink writes and records what they reached, and the lister turns kernel
// dumps into the state model.

// executor applies ops through the seam and records in have the state they
// reached; it is the only writer of have. It also lists the kernel.
type executor struct {
	nl       host.Host
	cfg      Config
	log      *slog.Logger
	devIndex *atomic.Int64 // the device's, as last ensured
	have     owned
}

// failure is one op the kernel refused.
type failure struct {
	op  op
	err error
}

// apply runs ops in order and records each successful write in its owner's
// bucket (in place: O(1) per write). After a failed write for a peer, that
// peer's later ops are skipped: its route must not be installed without its
// neighbour and FDB entries, and its stale entries stay until their
// replacements are in. It returns the failed ops; the caller diffs their
// owners again next time.
func (e *executor) apply(ops []op) []failure {
	var failed []failure
	debug := e.log.Enabled(context.Background(), slog.LevelDebug)
	dev, underlay := int(e.devIndex.Load()), e.cfg.Device.UnderlayIndex
	for _, o := range ops {
		if o.peer.IsValid() && slices.ContainsFunc(failed, func(f failure) bool { return f.op.peer == o.peer }) {
			continue
		}
		if err := writeOp(e.nl, dev, underlay, o); err != nil {
			failed = append(failed, failure{op: o, err: err})
			continue
		}
		if debug {
			e.log.Debug("programmed", "op", o.String())
		}
		e.have.bucket(o.peer).record(o)
	}
	return failed
}

// prune drops the buckets of owners that hold nothing any more (a departed
// peer's, once its entries are deleted).
func (e *executor) prune(owners []netip.Prefix) {
	for _, o := range owners {
		if b, ok := e.have[o]; ok && b.empty() {
			delete(e.have, o)
		}
	}
}

// recordAnswer records what a miss answer wrote, each entry in the bucket of
// its owner in t, and marks those owners in touched.
func (e *executor) recordAnswer(t *peerTable, ops []op, touched map[netip.Prefix]bool) {
	for _, o := range ops {
		owner := t.fdbOwner(o.fdb.MAC)
		if o.kind == opNeighSet {
			owner = t.neighOwner(o.neigh.IP)
		}
		e.have.bucket(owner).record(o)
		touched[owner] = true
	}
}

// reset replaces have with a kernel dump, every entry an orphan until
// rehome finds its owner.
func (e *executor) reset(dump state) {
	e.have = owned{orphans: &dump}
}

// rehome moves the orphans that a peer of t owns into that peer's bucket
// (O(orphans)): after a dump, every entry; later, entries of a subnet whose
// peer has just been added. An FDB entry whose MAC no peer has belongs to the
// peer whose neighbour carries that MAC (a peer that changed its VtepMAC):
// its replacement is written before it goes. It returns the owners that
// received entries.
func (e *executor) rehome(t *peerTable) []netip.Prefix {
	o, ok := e.have[orphans]
	if !ok || o.empty() {
		return nil
	}
	var got []netip.Prefix
	move := func(owner netip.Prefix, op op) {
		e.have.bucket(owner).record(op)
		if len(got) == 0 || got[len(got)-1] != owner {
			got = append(got, owner)
		}
	}
	var macOwner map[string]netip.Prefix
	keep := o.neigh[:0]
	for _, n := range o.neigh {
		if owner := t.neighOwner(n.IP); owner != orphans {
			move(owner, op{kind: opNeighSet, neigh: n})
			if macOwner == nil {
				macOwner = map[string]netip.Prefix{}
			}
			macOwner[n.MAC] = owner
		} else {
			keep = append(keep, n)
		}
	}
	o.neigh = keep
	keepR := o.route[:0]
	for _, r := range o.route {
		if owner := t.routeOwner(r.Dst); owner != orphans {
			e.have.bucket(owner).addRoute(r)
			got = append(got, owner)
		} else {
			keepR = append(keepR, r)
		}
	}
	o.route = keepR
	keepF := o.fdb[:0]
	for _, f := range o.fdb {
		owner := t.fdbOwner(f.MAC)
		if owner == orphans {
			owner = macOwner[f.MAC]
		}
		if owner != orphans {
			e.have.bucket(owner).addFDB(f)
			got = append(got, owner)
		} else {
			keepF = append(keepF, f)
		}
	}
	o.fdb = keepF
	return got
}

// writeOp performs one op through nl on device dev (routes with Underlay on
// link underlay). Deleting an entry that is already gone succeeds.
func writeOp(nl host.Host, dev, underlay int, o op) error {
	var err error
	switch o.kind {
	case opNeighSet:
		err = nl.NeighSet(neighMsg(dev, o.neigh))
	case opNeighDel:
		err = nl.NeighDel(neighMsg(dev, o.neigh))
	case opFDBSet:
		err = nl.NeighSet(fdbMsg(dev, o.fdb))
	case opFDBDel:
		err = nl.NeighDel(fdbMsg(dev, o.fdb))
	case opRouteSet:
		err = nl.RouteReplace(routeMsg(dev, underlay, o.route))
	case opRouteDel:
		err = nl.RouteDel(routeMsg(dev, underlay, o.route))
	}
	if err != nil && (o.kind == opNeighDel || o.kind == opFDBDel || o.kind == opRouteDel) && isGone(err) {
		return nil
	}
	return err
}

// neighMsg is `ip neigh replace <ip> lladdr <mac> dev flannel.1 [nud
// permanent]`, in the family of the IP (AF_INET6: an NDP entry).
func neighMsg(dev int, n neighEntry) *netlink.Neigh {
	hw, _ := net.ParseMAC(n.MAC)
	state := netlink.NUD_REACHABLE
	if n.Permanent {
		state = netlink.NUD_PERMANENT
	}
	family := unix.AF_INET
	if n.IP.Is6() {
		family = unix.AF_INET6
	}
	return &netlink.Neigh{
		LinkIndex: dev, Family: family, State: state, Type: unix.RTN_UNICAST,
		IP: n.IP.AsSlice(), HardwareAddr: hw,
	}
}

// fdbMsg is `bridge fdb replace <mac> dev flannel.1 self dst <ip> permanent`
// (dst an IPv6 address on the IPv6 device).
func fdbMsg(dev int, f fdbEntry) *netlink.Neigh {
	hw, _ := net.ParseMAC(f.MAC)
	return &netlink.Neigh{
		LinkIndex: dev, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF,
		IP: f.Dst.AsSlice(), HardwareAddr: hw,
	}
}

func routeMsg(dev, underlay int, r routeEntry) *netlink.Route {
	// The protocol makes a delete precise: the kernel removes only a route
	// with that protocol (a delete of flannel's route never takes ours).
	m := &netlink.Route{LinkIndex: dev, Dst: host.PrefixIPNet(r.Dst), Table: unix.RT_TABLE_MAIN, Scope: netlink.SCOPE_UNIVERSE,
		Priority: int(r.Metric), Protocol: netlink.RouteProtocol(r.Proto)}
	if r.Underlay {
		m.LinkIndex = underlay
	}
	if r.Gw.IsValid() {
		m.Gw = r.Gw.AsSlice()
	} else {
		// The on-demand Network route: no gateway, so the kernel resolves
		// each destination on the device and asks us (L3 miss).
		m.Scope = netlink.SCOPE_LINK
	}
	if r.Onlink {
		m.Flags = int(netlink.FLAG_ONLINK)
	}
	return m
}

// listState dumps the entries the datapath owns: every neighbour of its
// family with a link-layer address and every FDB entry with a remote on the
// device, and the main-table routes of its family on the device and (with a
// Network) on the underlay that ownsRoute accepts.
func (e *executor) listState() (state, error) {
	dev := int(e.devIndex.Load())
	neighs, err := e.nl.NeighList(dev, e.cfg.family())
	if err != nil {
		return state{}, err
	}
	s := newState(0)
	s.neigh = make([]neighEntry, 0, len(neighs))
	for _, n := range neighs {
		ip, ok := netip.AddrFromSlice(n.IP)
		if !ok || len(n.HardwareAddr) == 0 || n.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED|netlink.NUD_NOARP) != 0 {
			continue // mid-resolution (a miss in flight) or not a real entry
		}
		if ip = ip.Unmap(); ip.Is6() != e.cfg.is6() {
			continue
		}
		s.neigh = append(s.neigh, neighEntry{IP: ip, MAC: macString(n.HardwareAddr), Permanent: n.State&netlink.NUD_PERMANENT != 0})
	}
	fdbs, err := e.nl.NeighList(dev, unix.AF_BRIDGE)
	if err != nil {
		return s, err
	}
	for _, n := range fdbs {
		dst, ok := netip.AddrFromSlice(n.IP)
		if !ok || len(n.HardwareAddr) == 0 || n.LinkIndex != dev || dst.Unmap().Is6() != e.cfg.is6() {
			continue
		}
		s.fdb = append(s.fdb, fdbEntry{MAC: macString(n.HardwareAddr), Dst: dst.Unmap()}) // a dump lists each once
	}
	if err := e.listRoutes(&s, dev, false); err != nil {
		return s, err
	}
	if e.cfg.Network.IsValid() {
		if err := e.listRoutes(&s, e.cfg.Device.UnderlayIndex, true); err != nil {
			return s, err
		}
	}
	return s, nil
}

func (e *executor) listRoutes(s *state, link int, underlay bool) error {
	filter := &netlink.Route{LinkIndex: link}
	routes, err := e.nl.RouteListFiltered(e.cfg.family(), filter, netlink.RT_FILTER_OIF)
	if err != nil {
		return err
	}
	for _, r := range routes {
		if r.Dst == nil || r.LinkIndex != link || (r.Type != 0 && r.Type != unix.RTN_UNICAST) {
			continue
		}
		dst, ok := host.IPNetPrefix(r.Dst)
		if !ok || dst.Addr().Is6() != e.cfg.is6() {
			continue
		}
		r2 := routeEntry{Dst: dst, Underlay: underlay, Onlink: r.Flags&int(netlink.FLAG_ONLINK) != 0,
			Metric: uint32(r.Priority), Proto: uint8(r.Protocol)}
		if gw, ok := netip.AddrFromSlice(r.Gw); ok {
			r2.Gw = gw.Unmap()
		}
		if ownsRoute(e.cfg.Network, r2) {
			s.route = append(s.route, r2) // a dump lists each once
		}
	}
	return nil
}

// ownsRoute decides whether a main-table route found on the device (or, with
// Underlay, on the underlay link) is, given the Network n, the datapath's to keep, rewrite or
// delete. It is when
//
//   - it has protocol RouteProtocol: weft wrote it (on the underlay only
//     weft's DirectRouting routes are, so there it must also be a peer
//     route: through a gateway to a subnet strictly inside the Network);
//   - or it is a peer route an earlier agent left: protocol boot, through a
//     gateway, to a subnet strictly inside the Network, at metric 0 (flannel;
//     1024 for IPv6, where the kernel stores 0 as 1024) or peerMetric (weft
//     before it marked its routes), and on the device
//     via the subnet's .0 (the peer's flannel.1 address). A reconcile
//     replaces it with weft's own (added first) or deletes it.
//
// Anything else is an operator's or another program's, and is left alone: a
// route outside the Network, one with another protocol, one without a
// gateway, one at another metric. A reconcile may still overwrite a foreign
// route that has the destination and metric of one it wants, since a
// replace is keyed by those, whatever the protocol.
func ownsRoute(n netip.Prefix, r routeEntry) bool {
	peerRoute := n.IsValid() && r.Gw.IsValid() && r.Dst.Bits() > n.Bits() && n.Contains(r.Dst.Addr())
	switch r.Proto {
	case RouteProtocol:
		return !r.Underlay || peerRoute
	case unix.RTPROT_BOOT:
		return peerRoute && (r.Metric == 0 || r.Metric == baseMetric(r.Dst) || r.Metric == peerMetric(r.Dst)) &&
			(r.Underlay || r.Gw == r.Dst.Addr())
	}
	return false
}

// underlayRoutes is a snapshot of the main table's routes of the datapath's
// family, taken with
// every kernel dump, from which DirectRouting is decided: a peer update
// makes no kernel query.
type underlayRoutes []underlayRoute

type underlayRoute struct {
	dst     netip.Prefix
	viaGw   bool
	link    int
	metric  int
	unicast bool
}

// listUnderlay dumps the main table of the datapath's family.
func (e *executor) listUnderlay() (underlayRoutes, error) {
	routes, err := e.nl.RouteListFiltered(e.cfg.family(), &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, err
	}
	unspec := netip.IPv4Unspecified()
	if e.cfg.is6() {
		unspec = netip.IPv6Unspecified()
	}
	u := make(underlayRoutes, 0, len(routes))
	for _, r := range routes {
		dst := netip.PrefixFrom(unspec, 0) // a default route has no Dst
		if r.Dst != nil {
			var ok bool
			if dst, ok = host.IPNetPrefix(r.Dst); !ok || dst.Addr().Is6() != e.cfg.is6() {
				continue
			}
		}
		u = append(u, underlayRoute{dst: dst.Masked(), viaGw: len(r.Gw) > 0 || len(r.MultiPath) > 0, link: r.LinkIndex,
			metric: r.Priority, unicast: r.Type == 0 || r.Type == unix.RTN_UNICAST})
	}
	return u, nil
}

// direct reports whether the route the kernel picks for ip (longest prefix,
// then lowest metric) reaches it without a gateway on link underlay.
func (u underlayRoutes) direct(ip netip.Addr, underlay int) bool {
	best := -1
	for i, r := range u {
		if !r.dst.Contains(ip) {
			continue
		}
		if best < 0 || r.dst.Bits() > u[best].dst.Bits() || (r.dst.Bits() == u[best].dst.Bits() && r.metric < u[best].metric) {
			best = i
		}
	}
	return best >= 0 && !u[best].viaGw && u[best].link == underlay && u[best].unicast
}
