package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/host"
)

// Miss kinds, as reported to Observer.
const (
	MissL2 = "l2"
	MissL3 = "l3"
)

// missAnswer is what decideMiss wants written for one miss.
type missAnswer struct {
	kind  string
	peer  *tablePeer  // nil: unknown destination, ignore
	neigh *neighEntry // L3 only
	fdb   fdbEntry
}

// decideMiss is the pure miss decision. ok is false when u is not a miss on
// the device at all (our own writes, other links, deletions). With ok true and
// a nil peer the destination is unknown and nothing is written.
//
// Seen on this kernel (see DESIGN.md): both misses arrive as RTM_GETNEIGH on
// the device. L3: an IPv4 address and no lladdr (NUD_INCOMPLETE), raised by
// app_solicit. L2: an lladdr and no address (AF_BRIDGE, NUD_STALE), raised by
// the VXLAN driver's l2miss.
func decideMiss(u netlink.NeighUpdate, devIndex int, t *peerTable) (a missAnswer, ok bool) {
	n := u.Neigh
	if u.Type != unix.RTM_GETNEIGH || devIndex == 0 || n.LinkIndex != devIndex {
		return missAnswer{}, false
	}
	switch {
	case len(n.IP) > 0 && len(n.HardwareAddr) == 0:
		ip, valid := netip.AddrFromSlice(n.IP)
		if !valid || !ip.Unmap().Is4() {
			return missAnswer{}, false
		}
		ip = ip.Unmap()
		a.kind = MissL3
		if a.peer = t.forIP(ip); a.peer != nil {
			// The peer's .0 is permanent as in proactive mode. A pod IP
			// (on-demand) is only the first packet's way in: once the peer
			// is activated its subnet route covers later packets, so the
			// entry may age out.
			a.neigh = &neighEntry{IP: ip, MAC: a.peer.mac, Permanent: ip == a.peer.gw}
			a.fdb = fdbEntry{MAC: a.peer.mac, Dst: a.peer.PublicIP}
		}
		return a, true
	case len(n.IP) == 0 && len(n.HardwareAddr) == 6:
		a.kind = MissL2
		if a.peer = t.forMAC(macString(n.HardwareAddr)); a.peer != nil {
			a.fdb = fdbEntry{MAC: a.peer.mac, Dst: a.peer.PublicIP}
		}
		return a, true
	}
	return missAnswer{}, false
}

// HandleMiss answers one neighbour update if it is a miss on the device,
// from the in-memory peer table: the FDB entry first, then (L3) the neighbour
// entry, because writing the neighbour releases the packets the kernel queued
// for it and they must find the FDB entry. No other I/O happens here. Run
// answers every update itself (through a netlink handle of its own when it
// can open one); tests over the Fake may call HandleMiss directly.
func (v *VXLAN) HandleMiss(u netlink.NeighUpdate) error { return v.answerMiss(v.nl, u) }

// answerMiss is HandleMiss writing through nl.
func (v *VXLAN) answerMiss(nl host.Host, u netlink.NeighUpdate) error {
	received := time.Now()
	a, ok := decideMiss(u, int(v.devIndex.Load()), v.table)
	if !ok {
		return nil
	}
	debug := v.log.Enabled(context.Background(), slog.LevelDebug)
	if a.peer == nil {
		if debug {
			v.log.Debug("miss for unknown destination ignored", "kind", a.kind, "ip", u.IP, "mac", u.HardwareAddr.String())
		}
		if f := v.cfg.Observer.MissIgnored; f != nil {
			f(a.kind)
		}
		return nil
	}
	written := make([]op, 0, 2)
	var errs []error
	ops := []op{{kind: opFDBSet, peer: a.peer.Subnet, fdb: a.fdb}}
	if a.neigh != nil {
		ops = append(ops, op{kind: opNeighSet, peer: a.peer.Subnet, neigh: *a.neigh})
	}
	for _, o := range ops {
		if err := v.write(nl, o); err != nil {
			errs = append(errs, fmt.Errorf("answer %s miss for %s: %s: %w", a.kind, a.peer.Name, o, err))
			continue
		}
		written = append(written, o)
	}
	latency := time.Since(received)
	// Hand what was written to the control loop, which records it (so a
	// later SetPeers can remove it) and, on demand, activates the peer.
	select {
	case v.answered <- answered{peer: a.peer, ops: written}:
	default:
		v.requestReconcile() // a full reconcile lists the kernel instead
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if debug {
		v.log.Debug("miss answered", "kind", a.kind, "peer", a.peer.Name, "ip", u.IP, "mac", a.peer.mac, "latency", latency)
	}
	if f := v.cfg.Observer.MissAnswered; f != nil {
		f(a.kind, latency)
	}
	return nil
}

// answered is a miss answer as reported to the control loop.
type answered struct {
	peer *tablePeer // the table entry the answer was decided from
	ops  []op       // the writes that succeeded
}

// requestReconcile asks Run for a full list-and-diff reconcile (coalescing).
func (v *VXLAN) requestReconcile() {
	select {
	case v.kick <- struct{}{}:
	default:
	}
}
