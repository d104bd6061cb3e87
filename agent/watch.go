package agent

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/lease"
)

// leaseSource is where the watcher reads lease events from.
type leaseSource interface {
	Watch(ctx context.Context) (<-chan []lease.Event, error)
}

// peerSink is where the watcher sends the desired peer set.
type peerSink interface {
	SetPeers(peers []backend.Peer) error
}

// watcher turns lease events into the datapath's desired peer set.
type watcher struct {
	src     leaseSource
	sink    peerSink
	network *lease.Network
	log     *slog.Logger
	metrics *Metrics
	own     netip.Prefix
	vni     int
	leases  map[netip.Prefix]lease.Lease
}

func newWatcher(src leaseSource, sink peerSink, nw *lease.Network, own lease.Lease, log *slog.Logger, m *Metrics) *watcher {
	return &watcher{src: src, sink: sink, network: nw, log: log, metrics: m,
		own: own.Subnet, vni: own.Attrs.BackendData.VNI, leases: map[netip.Prefix]lease.Lease{}}
}

// retryAfter is how long a failed SetPeers waits before it is tried again.
const retryAfter = time.Second

func (w *watcher) run(ctx context.Context) error {
	ch, err := w.src.Watch(ctx)
	if err != nil {
		return fmt.Errorf("watch leases: %w", err)
	}
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-retry:
			retry = nil
		case batch, ok := <-ch:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("lease watch closed")
			}
			w.apply(batch)
			w.drain(ch)
		}
		if err := w.sink.SetPeers(w.peers()); err != nil {
			w.log.Warn("program peers (will retry)", "err", err)
			retry = time.After(retryAfter)
		}
	}
}

// drain applies every batch already queued, so a burst (thousands of leases
// written in many transactions) costs one SetPeers, not one per batch.
func (w *watcher) drain(ch <-chan []lease.Event) {
	for {
		select {
		case batch, ok := <-ch:
			if !ok {
				return // the loop sees the closed channel next
			}
			w.apply(batch)
		default:
			return
		}
	}
}

func (w *watcher) apply(batch []lease.Event) {
	for _, ev := range batch {
		l := ev.Lease
		switch ev.Type {
		case lease.Added, lease.Changed:
			w.leases[l.Subnet] = l
		case lease.Removed:
			delete(w.leases, l.Subnet)
		}
		if l.Subnet == w.own {
			continue
		}
		w.log.Info("peer "+ev.Type.String(), "subnet", l.Subnet, "public_ip", l.Attrs.PublicIP,
			"vtep_mac", vtepMAC(l), "node", l.Attrs.NodeName)
	}
	w.metrics.leasesKnown.Set(float64(len(w.leases)))
	w.metrics.freeSubnets.Set(float64(totalBlocks(w.network) - len(w.leases)))
}

// peers maps every other vxlan lease with our VNI to a datapath peer.
func (w *watcher) peers() []backend.Peer {
	out := make([]backend.Peer, 0, len(w.leases))
	for _, l := range w.leases {
		if p, ok := peerOf(l, w.own, w.vni); ok {
			out = append(out, p)
		}
	}
	return out
}

// peerOf is the lease → backend.Peer mapping (pure).
func peerOf(l lease.Lease, own netip.Prefix, vni int) (backend.Peer, bool) {
	d := l.Attrs.BackendData
	if l.Subnet == own || l.Attrs.BackendType != "vxlan" || d == nil || len(d.VtepMAC) != 6 ||
		!l.Attrs.PublicIP.IsValid() || (vni != 0 && d.VNI != 0 && d.VNI != vni) {
		return backend.Peer{}, false
	}
	name := l.Attrs.NodeName
	if name == "" {
		name = l.Attrs.PublicIP.String()
	}
	return backend.Peer{Subnet: l.Subnet, PublicIP: l.Attrs.PublicIP, VtepMAC: d.VtepMAC, Name: name}, true
}

func vtepMAC(l lease.Lease) string {
	if l.Attrs.BackendData == nil {
		return ""
	}
	return l.Attrs.BackendData.VtepMAC.String()
}

// totalBlocks counts the SubnetLen blocks from SubnetMin to SubnetMax (IPv4).
func totalBlocks(n *lease.Network) int {
	if !n.SubnetMin.Is4() || !n.SubnetMax.Is4() || n.SubnetLen <= 0 || n.SubnetLen > 32 {
		return 0
	}
	lo := binary.BigEndian.Uint32(n.SubnetMin.AsSlice())
	hi := binary.BigEndian.Uint32(n.SubnetMax.AsSlice())
	if hi < lo {
		return 0
	}
	return int((hi-lo)>>(32-n.SubnetLen)) + 1
}
