package agent

import (
	"context"
	"fmt"
	"log/slog"
	"math/big"
	"net/netip"
	"time"

	"github.com/weftnet/weft/backend"
	"github.com/weftnet/weft/lease"
)

// leaseSource is where the watcher reads lease events from.
type leaseSource interface {
	Watch(ctx context.Context) (<-chan []lease.Event, error)
}

// peerSink is where the watcher sends the desired peer set of one family.
type peerSink interface {
	SetPeers(peers []backend.Peer) error
}

// familySink is the datapath of one address family.
type familySink struct {
	v6   bool
	sink peerSink
}

// watcher turns lease events into each datapath's desired peer set.
type watcher struct {
	src     leaseSource
	sinks   []familySink
	network *lease.Network
	log     *slog.Logger
	metrics *Metrics
	own     string // our lease's key
	vni     int
	leases  map[string]lease.Lease // by key: IPv6-only leases share their (zero) IPv4 subnet
}

func newWatcher(src leaseSource, planes []*plane, nw *lease.Network, own lease.Lease, log *slog.Logger, m *Metrics) *watcher {
	w := &watcher{src: src, network: nw, log: log, metrics: m,
		own: own.Key(), vni: nw.Backend.VNI, leases: map[string]lease.Lease{}}
	for _, p := range planes {
		w.sinks = append(w.sinks, familySink{v6: p.v6, sink: p.dp})
	}
	return w
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
		for _, fs := range w.sinks {
			if err := fs.sink.SetPeers(w.peers(fs.v6)); err != nil {
				w.log.Warn("program peers (will retry)", "ipv6", fs.v6, "err", err)
				retry = time.After(retryAfter)
			}
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
		k := l.Key()
		switch ev.Type {
		case lease.Added, lease.Changed:
			w.leases[k] = l
		case lease.Removed:
			delete(w.leases, k)
		}
		if k == w.own {
			continue
		}
		w.log.Info("peer "+ev.Type.String(), "key", k, "public_ip", l.Attrs.PublicIP, "public_ipv6", l.Attrs.PublicIPv6,
			"vtep_mac", vtepMAC(l.Attrs.BackendData), "vtep_mac_v6", vtepMAC(l.Attrs.BackendV6Data), "node", l.Attrs.NodeName)
	}
	w.metrics.leasesKnown.Set(float64(len(w.leases)))
	w.metrics.freeSubnets.Set(totalBlocks(w.network) - float64(len(w.leases)))
}

// peers maps every other vxlan lease with our VNI to a datapath peer of
// family v6 (a lease without that family's part is not a peer there).
func (w *watcher) peers(v6 bool) []backend.Peer {
	out := make([]backend.Peer, 0, len(w.leases))
	for k, l := range w.leases {
		if k == w.own {
			continue
		}
		if p, ok := peerOf(l, v6, w.vni); ok {
			out = append(out, p)
		}
	}
	return out
}

// peerOf is the lease → backend.Peer mapping of one family (pure): the
// IPv4 subnet, PublicIP and BackendData, or the IPv6 subnet, PublicIPv6
// and BackendV6Data, as flannel reads them.
func peerOf(l lease.Lease, v6 bool, vni int) (backend.Peer, bool) {
	subnet, pub, d := l.Subnet, l.Attrs.PublicIP, l.Attrs.BackendData
	if v6 {
		subnet, pub, d = l.IPv6Subnet, l.Attrs.PublicIPv6, l.Attrs.BackendV6Data
	}
	if !subnet.IsValid() || l.Attrs.BackendType != "vxlan" || d == nil || len(d.VtepMAC) != 6 ||
		!pub.IsValid() || (vni != 0 && d.VNI != 0 && d.VNI != vni) {
		return backend.Peer{}, false
	}
	name := l.Attrs.NodeName
	if name == "" {
		name = pub.String()
	}
	return backend.Peer{Subnet: subnet, PublicIP: pub, VtepMAC: d.VtepMAC, Name: name}, true
}

func vtepMAC(d *lease.VXLANData) string {
	if d == nil {
		return ""
	}
	return d.VtepMAC.String()
}

// totalBlocks counts the blocks leases are made of: the IPv4 SubnetLen
// blocks from SubnetMin to SubnetMax, or in an IPv6-only network the IPv6
// ones (capped at 1<<53, where a float64 gauge stops counting exactly).
func totalBlocks(n *lease.Network) float64 {
	if !n.EnableIPv4 && n.EnableIPv6 {
		return blocks(n.IPv6SubnetMin, n.IPv6SubnetMax, n.IPv6SubnetLen)
	}
	return blocks(n.SubnetMin, n.SubnetMax, n.SubnetLen)
}

func blocks(lo, hi netip.Addr, bits int) float64 {
	if !lo.IsValid() || !hi.IsValid() || lo.BitLen() != hi.BitLen() || bits <= 0 || bits > lo.BitLen() || hi.Less(lo) {
		return 0
	}
	d := new(big.Int).Sub(new(big.Int).SetBytes(hi.AsSlice()), new(big.Int).SetBytes(lo.AsSlice()))
	d.Rsh(d, uint(lo.BitLen()-bits)).Add(d, big.NewInt(1))
	if limit := big.NewInt(1 << 53); d.Cmp(limit) > 0 {
		d = limit
	}
	f, _ := d.Float64()
	return f
}
