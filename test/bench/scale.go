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

// scaleNetwork is the Network of the scale figure's config.
var scaleNetwork = netip.MustParsePrefix("10.0.0.0/12")

// scaleSize is one run of the scale figure. A /12 holds 4096 /24 blocks
// (4094 between flannel's default SubnetMin and SubnetMax), so 5000 leases
// cannot be /24s inside it: that run uses SubnetLen 26 (16382 blocks). The
// kernel and agent work per peer do not depend on the length.
type scaleSize struct {
	leases    int
	subnetLen int
	target    time.Duration // 0: reported without a target
}

var scaleSizes = []scaleSize{{1000, 24, 0}, {5000, 26, 500 * time.Millisecond}}

// scaleResult is what one size measured.
type scaleResult struct {
	write      txnWrite
	running    time.Duration // first txn sent → N routes (agent running)
	runningRSS memStat
	cold       time.Duration // agent exec → N routes (leases in etcd, no kernel state)
	coldReady  time.Duration // agent exec → StartAgent saw /readyz 200
	coldRSS    memStat
}

// benchScale writes N synthetic leases into a lab with one running agent and
// times until the agent has programmed all of them (N peer routes on
// flannel.1, counted from route notifications in the node netns), then
// deletes flannel.1 (as after a reboot: no kernel state), restarts the agent
// with the N leases present and times that cold start the same way. RSS is
// VmRSS of the agent right after each.
func benchScale(ctx context.Context, env Env) ([]Row, error) {
	var rows []Row
	for _, sz := range scaleSizes {
		r, err := scaleRun(ctx, env, sz)
		if err != nil {
			return nil, fmt.Errorf("%d leases: %w", sz.leases, err)
		}
		rows = append(rows, scaleRows(sz, r)...)
	}
	return rows, nil
}

func scaleRows(sz scaleSize, r scaleResult) []Row {
	n := sz.leases
	var tgt string
	var ok, rssOK *bool
	if sz.target > 0 {
		tgt, ok = fmt.Sprintf("< %.1f s", sz.target.Seconds()), met(r.running < sz.target)
		rssOK = met(r.runningRSS.RSS < 30e6)
	}
	writeNote := fmt.Sprintf("written in %d txn(s) of %d ops (etcd refuses more: --max-txn-ops default 128, kept by the embedded server) in %.0f ms",
		r.write.Txns, r.write.PerTxn, millis(r.write.Took))
	if r.write.Txns == 1 {
		writeNote = fmt.Sprintf("written in one txn in %.0f ms", millis(r.write.Took))
	}
	cfg := fmt.Sprintf("Network %s SubnetLen %d", scaleNetwork, sz.subnetLen)
	return []Row{
		{Figure: fmt.Sprintf("scale %d running", n), Value: r.running.Seconds(), Unit: "s", Target: tgt, Met: ok,
			How:  fmt.Sprintf("%d synthetic leases (%s) → %d peer routes on flannel.1 of a running proactive agent, from the first txn", n, cfg, n),
			Note: writeNote},
		{Figure: fmt.Sprintf("scale %d cold start", n), Value: r.cold.Seconds(), Unit: "s", Target: tgt, Met: ifTarget(sz, r.cold < sz.target),
			How:  fmt.Sprintf("`weftd run` exec → %d peer routes, leases already in etcd, flannel.1 deleted first (no kernel state)", n),
			Note: fmt.Sprintf("ready (/readyz 200, 50 ms polling) after %.3f s", r.coldReady.Seconds())},
		{Figure: fmt.Sprintf("scale %d RSS", n), Value: megabytes(r.runningRSS.RSS), Unit: "MB", Target: ifStr(sz, "< 30 MB"), Met: rssOK,
			How:  "agent VmRSS right after programming the leases (running agent)",
			Note: fmt.Sprintf("%s; after the cold start: %.1f MB", r.runningRSS.note(), megabytes(r.coldRSS.RSS))},
	}
}

func ifTarget(sz scaleSize, ok bool) *bool {
	if sz.target == 0 {
		return nil
	}
	return met(ok)
}

func ifStr(sz scaleSize, s string) string {
	if sz.target == 0 {
		return ""
	}
	return s
}

// scaleRun measures one size in a lab of its own.
func scaleRun(ctx context.Context, env Env, sz scaleSize) (scaleResult, error) {
	var res scaleResult
	l, err := newLab(ctx, env, lab.Options{Network: scaleNetwork.String()})
	if err != nil {
		return res, err
	}
	defer closeLab(l)
	conf := fmt.Sprintf(`{"Network":%q,"SubnetLen":%d,"Backend":{"Type":"vxlan","VNI":1}}`, scaleNetwork, sz.subnetLen)
	if err := putConfig(ctx, l, conf); err != nil {
		return res, err
	}
	n, err := l.AddNode(ctx, l.NodeDefaults())
	if err != nil {
		return res, err
	}
	taken, err := takenSubnets(ctx, l.Etcd(), l.Prefix())
	if err != nil {
		return res, err
	}
	leases, err := synthLeases(scaleNetwork, sz.subnetLen, sz.leases, taken)
	if err != nil {
		return res, err
	}
	id, err := grantLease(ctx, l.Etcd(), 10*time.Minute)
	if err != nil {
		return res, err
	}
	if res.write, res.running, err = timeRunning(ctx, l, n, id, leases); err != nil {
		return res, err
	}
	if res.runningRSS, err = readMem(n.AgentPID()); err != nil {
		return res, err
	}
	if res.cold, res.coldReady, err = timeCold(ctx, n, sz.leases); err != nil {
		return res, err
	}
	res.coldRSS, err = readMem(n.AgentPID())
	return res, err
}

// timeRunning writes the leases and waits for the routes.
func timeRunning(ctx context.Context, l *lab.Lab, n *lab.Node, id clientv3.LeaseID, leases []synthLease) (txnWrite, time.Duration, error) {
	mon, err := startMonitor(n.NS, false, true)
	if err != nil {
		return txnWrite{}, 0, err
	}
	defer mon.stop()
	w, err := putAll(ctx, l.Etcd(), l.Prefix(), id, leases)
	if err != nil {
		return w, 0, err
	}
	done, err := waitRoutes(ctx, mon, len(leases), 60*time.Second)
	if err != nil {
		return w, 0, err
	}
	return w, done.Sub(w.Start), nil
}

// timeCold stops the agent, deletes flannel.1 and starts the agent again.
func timeCold(ctx context.Context, n *lab.Node, want int) (programmed, ready time.Duration, err error) {
	if err := n.StopAgent(); err != nil {
		return 0, 0, err
	}
	if err := deleteLink(n.NS, "flannel.1"); err != nil {
		return 0, 0, err
	}
	if have, err := countPeerRoutes(n.NS); err != nil || have != 0 {
		return 0, 0, fmt.Errorf("after deleting flannel.1: %d peer routes left (%v)", have, err)
	}
	mon, err := startMonitor(n.NS, false, true)
	if err != nil {
		return 0, 0, err
	}
	defer mon.stop()
	start := time.Now()
	if err := n.StartAgent(ctx); err != nil {
		return 0, 0, err
	}
	ready = time.Since(start)
	done, err := waitRoutes(ctx, mon, want, 60*time.Second)
	if err != nil {
		return 0, 0, err
	}
	return done.Sub(start), ready, nil
}

// waitRoutes counts distinct peer routes (inside the Network, via a gateway)
// added since the monitor started, and returns when the count reaches want.
func waitRoutes(ctx context.Context, mon *nlMonitor, want int, limit time.Duration) (time.Time, error) {
	seen := make(map[netip.Prefix]bool, want)
	deadline := time.After(limit)
	for {
		ev, ok := mon.next(deadline)
		if !ok || ctx.Err() != nil {
			return time.Time{}, fmt.Errorf("%d of %d peer routes after %s (monitor error %v, ctx %v)", len(seen), want, limit, mon.Err(), ctx.Err())
		}
		if err := mon.Err(); err != nil {
			return time.Time{}, err
		}
		if ev.route == nil || ev.route.Gw == nil || !scaleNetwork.Contains(ev.routeDst().Addr()) {
			continue
		}
		switch ev.typ {
		case unix.RTM_NEWROUTE:
			seen[ev.routeDst()] = true
		case unix.RTM_DELROUTE:
			delete(seen, ev.routeDst())
		}
		if len(seen) == want {
			return ev.at, nil
		}
	}
}

// countPeerRoutes counts main-table routes via a gateway inside the Network.
func countPeerRoutes(ns *lab.NetNS) (int, error) {
	h, err := ns.Handle()
	if err != nil {
		return 0, err
	}
	defer h.Close()
	routes, err := h.RouteList(nil, unix.AF_INET)
	if err != nil {
		return 0, fmt.Errorf("list routes in %s: %w", ns.Name, err)
	}
	c := 0
	for _, r := range routes {
		if r.Gw != nil && r.Dst != nil && scaleNetwork.Contains(netip.AddrFrom4([4]byte(r.Dst.IP.To4()))) {
			c++
		}
	}
	return c, nil
}

func deleteLink(ns *lab.NetNS, name string) error {
	h, err := ns.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", name, ns.Name, err)
	}
	if err := h.LinkDel(l); err != nil {
		return fmt.Errorf("delete %s in %s: %w", name, ns.Name, err)
	}
	return nil
}
