package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
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

// decideMiss is the pure miss decision for a datapath of family is6. ok is
// false when u is not a miss on the device at all (our own writes, other
// links, deletions, an address of the other family). With ok true and a nil
// peer the destination is unknown and nothing is written.
//
// How the kernel reports them: both misses arrive as RTM_GETNEIGH on the
// device. L3: an address and no lladdr (NUD_INCOMPLETE), raised by
// app_solicit of the ARP table (IPv4) or the NDP table (IPv6). L2: an lladdr
// and no address (AF_BRIDGE, NUD_STALE), raised by the VXLAN driver's l2miss,
// the same on either device.
func decideMiss(u netlink.NeighUpdate, devIndex int, is6 bool, t *peerTable) (a missAnswer, ok bool) {
	n := u.Neigh
	if u.Type != unix.RTM_GETNEIGH || devIndex == 0 || n.LinkIndex != devIndex {
		return missAnswer{}, false
	}
	switch {
	case len(n.IP) > 0 && len(n.HardwareAddr) == 0:
		ip, valid := netip.AddrFromSlice(n.IP)
		if !valid || ip.Unmap().Is6() != is6 {
			return missAnswer{}, false
		}
		ip = ip.Unmap()
		a.kind = MissL3
		if a.peer = t.forIP(ip); a.peer != nil {
			// The peer's .0 (::0) is permanent as in proactive mode. A pod IP
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

// responder answers misses from the published peer table, without the
// datapath's lock: it reads an immutable table (atomic.Pointer, replaced
// whole by every change) and the atomic device index, writes the answer,
// and notes what it wrote for the control side (see take).
type responder struct {
	table    atomic.Pointer[peerTable]
	devIndex *atomic.Int64
	is6      bool // the datapath's family
	obs      Observer
	log      *slog.Logger

	mu      sync.Mutex // guards written and spare
	written []answered
	spare   []answered    // the array take handed out last time, reused
	wake    chan struct{} // written became non-empty (coalescing)
}

// answered is a miss answer as noted for the control side.
type answered struct {
	peer *tablePeer // the table entry the answer was decided from
	ops  [2]op      // the writes that succeeded: the first n
	n    int
}

func (a *answered) written() []op { return a.ops[:a.n] }

// answer answers one neighbour update through nl if it is a miss on the
// device: the FDB entry first, then (L3) the neighbour entry, because writing
// the neighbour releases the packets the kernel queued for it and they must
// find the FDB entry. No other I/O happens here.
func (r *responder) answer(nl host.Host, u netlink.NeighUpdate) error {
	received := time.Now()
	dev := int(r.devIndex.Load())
	a, ok := decideMiss(u, dev, r.is6, r.table.Load())
	if !ok {
		return nil
	}
	debug := r.log.Enabled(context.Background(), slog.LevelDebug)
	if a.peer == nil {
		if debug {
			r.log.Debug("miss for unknown destination ignored", "kind", a.kind, "ip", u.IP, "mac", u.HardwareAddr.String())
		}
		if f := r.obs.MissIgnored; f != nil {
			f(a.kind)
		}
		return nil
	}
	done := answered{peer: a.peer}
	var errs []error
	ops := [2]op{{kind: opFDBSet, peer: a.peer.Subnet, fdb: a.fdb}}
	n := 1
	if a.neigh != nil {
		ops[1], n = op{kind: opNeighSet, peer: a.peer.Subnet, neigh: *a.neigh}, 2
	}
	for _, o := range ops[:n] {
		if err := writeOp(nl, dev, 0, o); err != nil {
			errs = append(errs, fmt.Errorf("answer %s miss for %s: %s: %w", a.kind, a.peer.Name, o, err))
			continue
		}
		done.ops[done.n] = o
		done.n++
	}
	latency := time.Since(received)
	r.note(done)
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if debug {
		r.log.Debug("miss answered", "kind", a.kind, "peer", a.peer.Name, "ip", u.IP, "mac", a.peer.mac, "latency", latency)
	}
	if f := r.obs.MissAnswered; f != nil {
		f(a.kind, latency)
	}
	return nil
}

// note keeps an answer until the control side takes it (VXLAN.
// takeAnswersLocked, before every programming), and wakes Run's control loop
// so an on-demand activation does not wait for the next SetPeers.
func (r *responder) note(a answered) {
	r.mu.Lock()
	first := len(r.written) == 0
	r.written = append(r.written, a)
	r.mu.Unlock()
	if first {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

// take returns the answers noted since the last take. The slice is valid
// until the next take (its array is then reused); takes are serialised by
// VXLAN.mu.
func (r *responder) take() []answered {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.written
	clear(r.spare)
	r.written, r.spare = r.spare[:0], w
	return w
}
