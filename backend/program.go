package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/host"
)

// This file is the kernel half of SetPeers: it turns ops into netlink writes
// and kernel dumps into the state model.

// apply runs ops in order and records each successful write in v.have (in
// place: O(1) per write). After a failed write for a peer, that peer's later
// ops are skipped: its route must not be installed without its neighbour and
// FDB entries, and its stale entries stay until their replacements are in. A
// failure makes the next programming a full diff, which retries whatever is
// missing.
func (v *VXLAN) apply(ops []op) error {
	var failed map[netip.Prefix]bool
	var errs []error
	debug := v.log.Enabled(context.Background(), slog.LevelDebug)
	for _, o := range ops {
		if o.peer.IsValid() && failed[o.peer] {
			continue
		}
		if err := v.write(v.nl, o); err != nil {
			v.full = true
			if o.peer.IsValid() {
				if failed == nil {
					failed = map[netip.Prefix]bool{}
				}
				failed[o.peer] = true
				err = fmt.Errorf("peer %s: %s: %w", o.peer, o, err)
			} else {
				err = fmt.Errorf("%s: %w", o, err)
			}
			errs = append(errs, err)
			continue
		}
		if debug {
			v.log.Debug("programmed", "op", o.String())
		}
		v.have.record(o)
	}
	return errors.Join(errs...)
}

// write performs one op through nl. Deleting an entry that is already gone
// succeeds.
func (v *VXLAN) write(nl host.Host, o op) error {
	dev := int(v.devIndex.Load())
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
		err = nl.RouteReplace(v.routeMsg(dev, o.route))
	case opRouteDel:
		err = nl.RouteDel(v.routeMsg(dev, o.route))
	}
	if err != nil && (o.kind == opNeighDel || o.kind == opFDBDel || o.kind == opRouteDel) && isGone(err) {
		return nil
	}
	return err
}

func neighMsg(dev int, n neighEntry) *netlink.Neigh {
	hw, _ := net.ParseMAC(n.MAC)
	state := netlink.NUD_REACHABLE
	if n.Permanent {
		state = netlink.NUD_PERMANENT
	}
	return &netlink.Neigh{
		LinkIndex: dev, Family: unix.AF_INET, State: state, Type: unix.RTN_UNICAST,
		IP: n.IP.AsSlice(), HardwareAddr: hw,
	}
}

// fdbMsg is `bridge fdb replace <mac> dev flannel.1 self dst <ip> permanent`.
func fdbMsg(dev int, f fdbEntry) *netlink.Neigh {
	hw, _ := net.ParseMAC(f.MAC)
	return &netlink.Neigh{
		LinkIndex: dev, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF,
		IP: f.Dst.AsSlice(), HardwareAddr: hw,
	}
}

func (v *VXLAN) routeMsg(dev int, r routeEntry) *netlink.Route {
	// The protocol makes a delete precise: the kernel removes only a route
	// with that protocol (a delete of flannel's route never takes ours).
	m := &netlink.Route{LinkIndex: dev, Dst: prefixIPNet(r.Dst), Table: unix.RT_TABLE_MAIN, Scope: netlink.SCOPE_UNIVERSE,
		Priority: int(r.Metric), Protocol: netlink.RouteProtocol(r.Proto)}
	if r.Underlay {
		m.LinkIndex = v.cfg.Device.UnderlayIndex
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

// listState dumps the entries the datapath owns: every IPv4 neighbour with a
// link-layer address and every FDB entry with a remote on the device, and the
// main-table routes on the device and (with a Network) on the underlay that
// ownsRoute accepts.
func (v *VXLAN) listState() (state, error) {
	dev := int(v.devIndex.Load())
	neighs, err := v.nl.NeighList(dev, unix.AF_INET)
	if err != nil {
		return state{}, err
	}
	s := newState(max(len(neighs), v.table.len()))
	for _, n := range neighs {
		ip, ok := netip.AddrFromSlice(n.IP)
		if !ok || len(n.HardwareAddr) == 0 || n.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED|netlink.NUD_NOARP) != 0 {
			continue // mid-resolution (a miss in flight) or not a real entry
		}
		ip = ip.Unmap()
		s.neigh[ip] = neighEntry{IP: ip, MAC: macString(n.HardwareAddr), Permanent: n.State&netlink.NUD_PERMANENT != 0}
	}
	fdbs, err := v.nl.NeighList(dev, unix.AF_BRIDGE)
	if err != nil {
		return s, err
	}
	for _, n := range fdbs {
		dst, ok := netip.AddrFromSlice(n.IP)
		if !ok || len(n.HardwareAddr) == 0 || n.LinkIndex != dev {
			continue
		}
		s.addFDB(fdbEntry{MAC: macString(n.HardwareAddr), Dst: dst.Unmap()})
	}
	if err := v.listRoutes(s, dev, false); err != nil {
		return s, err
	}
	if v.cfg.Network.IsValid() {
		if err := v.listRoutes(s, v.cfg.Device.UnderlayIndex, true); err != nil {
			return s, err
		}
	}
	return s, nil
}

func (v *VXLAN) listRoutes(s state, link int, underlay bool) error {
	filter := &netlink.Route{LinkIndex: link}
	routes, err := v.nl.RouteListFiltered(unix.AF_INET, filter, netlink.RT_FILTER_OIF)
	if err != nil {
		return err
	}
	for _, r := range routes {
		if r.Dst == nil || r.LinkIndex != link || (r.Type != 0 && r.Type != unix.RTN_UNICAST) {
			continue
		}
		dst, ok := ipNetPrefix(r.Dst)
		if !ok {
			continue
		}
		e := routeEntry{Dst: dst, Underlay: underlay, Onlink: r.Flags&int(netlink.FLAG_ONLINK) != 0,
			Metric: uint32(r.Priority), Proto: uint8(r.Protocol)}
		if gw, ok := netip.AddrFromSlice(r.Gw); ok {
			e.Gw = gw.Unmap()
		}
		if v.ownsRoute(e) {
			s.addRoute(e)
		}
	}
	return nil
}

// ownsRoute decides whether a main-table route found on the device (or, with
// Underlay, on the underlay link) is the datapath's to keep, rewrite or
// delete. It is when
//
//   - it has protocol RouteProtocol: weft wrote it (on the underlay only
//     weft's DirectRouting routes are, so there it must also be a peer
//     route: through a gateway to a subnet strictly inside the Network);
//   - or it is a peer route an earlier agent left: protocol boot, through a
//     gateway, to a subnet strictly inside the Network, at metric 0 (flannel)
//     or peerMetric (weft before it marked its routes), and on the device
//     via the subnet's .0 (the peer's flannel.1 address). A reconcile
//     replaces it with weft's own (added first) or deletes it.
//
// Anything else is an operator's or another program's, and is left alone: a
// route outside the Network, one with another protocol, one without a
// gateway, one at another metric. A reconcile may still overwrite a foreign
// route that has the destination and metric of one it wants, since a
// replace is keyed by those, whatever the protocol.
func (v *VXLAN) ownsRoute(r routeEntry) bool {
	n := v.cfg.Network
	peerRoute := n.IsValid() && r.Gw.IsValid() && r.Dst.Bits() > n.Bits() && n.Contains(r.Dst.Addr())
	switch r.Proto {
	case RouteProtocol:
		return !r.Underlay || peerRoute
	case unix.RTPROT_BOOT:
		return peerRoute && (r.Metric == 0 || r.Metric == peerMetric(r.Dst)) && (r.Underlay || r.Gw == r.Dst.Addr())
	}
	return false
}

// linkRef is a minimal Link naming the device by index, for calls that only
// read Attrs().Index (and Name for messages).
func (v *VXLAN) linkRef() netlink.Link {
	return &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: v.cfg.deviceName(), Index: int(v.devIndex.Load())}}
}

func prefixIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func ipNetPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if bits == 0 {
		return netip.Prefix{}, false
	}
	ip = ip.Unmap()
	if ip.Is4() && bits == 128 {
		ones -= 96
	}
	return netip.PrefixFrom(ip, ones), true
}
