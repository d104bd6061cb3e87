package main

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/test/lab"
)

// peerLeases is how many leases the peer programming figure writes.
const peerLeases = 200

// benchPeers times peer programming on a running proactive agent: for each of
// 200 synthetic leases, written one at a time with the lab's etcd client,
// from the Put being issued to the last of the peer's three kernel entries
// (neighbour, FDB, route) appearing, as seen by a netlink monitor subscribed
// inside the node's namespace. The etcd write itself is part of the figure
// (the rows' Note gives its own latency).
func benchPeers(ctx context.Context, env Env) ([]Row, error) {
	l, err := newLab(ctx, env, lab.Options{Nodes: 1})
	if err != nil {
		return nil, err
	}
	defer closeLab(l)
	n := l.Nodes()[0]
	taken, err := takenSubnets(ctx, l.Etcd(), l.Prefix())
	if err != nil {
		return nil, err
	}
	leases, err := synthLeases(netip.MustParsePrefix("10.244.0.0/16"), 24, peerLeases, taken)
	if err != nil {
		return nil, err
	}
	id, err := grantLease(ctx, l.Etcd(), 10*time.Minute)
	if err != nil {
		return nil, err
	}
	dev, err := linkIndex(n.NS, "flannel.1")
	if err != nil {
		return nil, err
	}
	mon, err := startMonitor(n.NS, true, true)
	if err != nil {
		return nil, err
	}
	defer mon.stop()
	var lat, puts, after []time.Duration
	for _, s := range leases {
		d, put, err := programOne(ctx, l, mon, dev, id, s)
		if err != nil {
			return nil, err
		}
		// The watch can deliver before the Put's answer reaches us: the
		// agent's share after the commit is then 0.
		lat, puts, after = append(lat, d), append(puts, put), append(after, max(0, d-put))
	}
	if err := mon.Err(); err != nil {
		return nil, err
	}
	how := fmt.Sprintf("%d synthetic leases put one at a time into the lab etcd (embedded, fsync on); Put issued → last of neigh/fdb/route RTM_NEW* seen by a netlink monitor in the node netns", peerLeases)
	note := fmt.Sprintf("etcd Put alone p50 %.2f ms, p99 %.2f ms; Put answered → entries p50 %.2f ms, p99 %.2f ms",
		millis(quantile(puts, 0.5)), millis(quantile(puts, 0.99)), millis(quantile(after, 0.5)), millis(quantile(after, 0.99)))
	p99 := quantile(lat, 0.99)
	return []Row{
		{Figure: "peer programming p50", Value: millis(quantile(lat, 0.5)), Unit: "ms", How: how, Note: note},
		{Figure: "peer programming p99", Value: millis(p99), Unit: "ms", Target: "p99 < 5 ms", Met: met(p99 < 5*time.Millisecond), How: how, Note: note},
	}, nil
}

// programOne writes one lease and waits (2 s at most) for its entries.
func programOne(ctx context.Context, l *lab.Lab, mon *nlMonitor, dev int, id clientv3.LeaseID, s synthLease) (lat, put time.Duration, err error) {
	start := time.Now()
	if err := putOne(ctx, l.Etcd(), l.Prefix(), id, s); err != nil {
		return 0, 0, err
	}
	put = time.Since(start)
	var neigh, fdb, route time.Time
	deadline := time.After(2 * time.Second)
	for neigh.IsZero() || fdb.IsZero() || route.IsZero() {
		ev, ok := mon.next(deadline)
		if !ok {
			return 0, 0, fmt.Errorf("peer %s: entries not all seen within 2 s (neigh %t, fdb %t, route %t; monitor error %v)",
				s.Subnet, !neigh.IsZero(), !fdb.IsZero(), !route.IsZero(), mon.Err())
		}
		switch {
		case ev.isNeigh(unix.RTM_NEWNEIGH, afInet) && ev.neigh.LinkIndex == dev && ev.neighIP() == s.gw() && hwEqual(ev.neigh.HardwareAddr, s.MAC):
			neigh = ev.at
		case ev.isNeigh(unix.RTM_NEWNEIGH, afBridge) && ev.neigh.LinkIndex == dev && hwEqual(ev.neigh.HardwareAddr, s.MAC) && ev.neighIP() == s.PublicIP:
			fdb = ev.at
		case ev.route != nil && ev.typ == unix.RTM_NEWROUTE && ev.route.LinkIndex == dev && ev.routeDst() == s.Subnet:
			route = ev.at
		}
	}
	last := neigh
	for _, t := range []time.Time{fdb, route} {
		if t.After(last) {
			last = t
		}
	}
	return last.Sub(start), put, nil
}
