package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/test/lab"
)

// missPeers is the number of synthetic peers, one L3 miss each.
const missPeers = 1000

// missNetwork holds 4094 /24 blocks, room for the peers.
var missNetwork = netip.MustParsePrefix("10.0.0.0/12")

// benchMiss times L3 miss answers of an on-demand agent: 1000 synthetic
// peers, then one UDP datagram from the node to a pod address (.5) in each
// peer's subnet, one at a time. The datagram goes to the Network route on
// flannel.1, the kernel has no neighbour for the address and asks userspace
// (RTM_GETNEIGH) inside sendto; the agent answers with the FDB entry and the
// neighbour. Two views of the same misses:
//   - outside: sendto → RTM_NEWNEIGH for the address, from a netlink monitor
//     in the node netns (an upper bound: it adds the kernel's notification
//     and the monitor's wake-up);
//   - inside: the agent's weft_miss_answer_seconds histogram (event read →
//     entry written), p99 as the upper bound of its bucket.
func benchMiss(ctx context.Context, env Env) ([]Row, error) {
	l, err := newLab(ctx, env, lab.Options{Nodes: 1, NeighMode: "on-demand", Network: missNetwork.String()})
	if err != nil {
		return nil, err
	}
	defer closeLab(l)
	n := l.Nodes()[0]
	leases, err := writeMissPeers(ctx, l, n)
	if err != nil {
		return nil, err
	}
	outside, monitorOnly, err := sendMisses(ctx, n, leases)
	if err != nil {
		return nil, err
	}
	hist, err := missHistogram(ctx, n)
	if err != nil {
		return nil, err
	}
	if hist.count < missPeers {
		return nil, fmt.Errorf("agent counted %.0f miss answers, want at least %d", hist.count, missPeers)
	}
	p99 := quantile(outside, 0.99)
	hp99 := hist.quantile(0.99)
	how := fmt.Sprintf("on-demand agent, %d synthetic peers, one L3 miss each (UDP to <peer>.5, sequential)", missPeers)
	return []Row{
		{Figure: "MISS answer p50", Value: millis(quantile(outside, 0.5)) * 1000, Unit: "µs",
			How: how + "; sendto → RTM_NEWNEIGH seen by a netlink monitor in the node netns"},
		{Figure: "MISS answer p99", Value: millis(p99) * 1000, Unit: "µs", Target: "p99 < 1 ms", Met: met(p99 < time.Millisecond),
			How:  how + "; sendto → RTM_NEWNEIGH seen by a netlink monitor in the node netns",
			Note: fmt.Sprintf("monitor's own GETNEIGH → NEWNEIGH: p50 %.0f µs, p99 %.0f µs", millis(quantile(monitorOnly, 0.5))*1000, millis(quantile(monitorOnly, 0.99))*1000)},
		{Figure: "MISS answer p99 (agent)", Value: hp99.Seconds() * 1e6, Unit: "µs", Target: "p99 < 1 ms", Met: met(hp99 < time.Millisecond),
			How:  "agent's /metrics weft_miss_answer_seconds over the same misses: upper bound of the bucket holding the p99",
			Note: fmt.Sprintf("%.0f answers, mean %.0f µs", hist.count, hist.sum/float64(hist.count)*1e6)},
	}, nil
}

// writeMissPeers writes the synthetic leases and waits until the agent knows
// them all (weft_leases_known counts ours too).
func writeMissPeers(ctx context.Context, l *lab.Lab, n *lab.Node) ([]synthLease, error) {
	taken, err := takenSubnets(ctx, l.Etcd(), l.Prefix())
	if err != nil {
		return nil, err
	}
	leases, err := synthLeases(missNetwork, 24, missPeers, taken)
	if err != nil {
		return nil, err
	}
	id, err := grantLease(ctx, l.Etcd(), 10*time.Minute)
	if err != nil {
		return nil, err
	}
	if _, err := putAll(ctx, l.Etcd(), l.Prefix(), id, leases); err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		known, err := metricValue(ctx, n, "weft_leases_known")
		if err == nil && int(known) >= len(leases)+1 {
			return leases, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("agent knows %v leases after 20 s, want %d (%v)", known, len(leases)+1, err)
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// sendMisses sends one datagram per peer and waits for its neighbour entry.
func sendMisses(ctx context.Context, n *lab.Node, leases []synthLease) (outside, monitorOnly []time.Duration, err error) {
	dev, err := linkIndex(n.NS, "flannel.1")
	if err != nil {
		return nil, nil, err
	}
	mon, err := startMonitor(n.NS, true, false)
	if err != nil {
		return nil, nil, err
	}
	defer mon.stop()
	pc, err := n.NS.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		return nil, nil, err
	}
	defer pc.Close()
	for _, s := range leases {
		dst := s.Subnet.Addr().Next().Next().Next().Next().Next() // .5: a pod address
		start := time.Now()
		if _, err := pc.WriteTo([]byte("miss"), &net.UDPAddr{IP: dst.AsSlice(), Port: 9}); err != nil {
			return nil, nil, fmt.Errorf("send to %s: %w", dst, err)
		}
		asked, answered, err := waitAnswer(mon, dev, dst)
		if err != nil {
			return nil, nil, err
		}
		outside = append(outside, answered.Sub(start))
		monitorOnly = append(monitorOnly, answered.Sub(asked))
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
	}
	return outside, monitorOnly, mon.Err()
}

// waitAnswer waits (1 s at most) for the miss for ip and its answer.
func waitAnswer(mon *nlMonitor, dev int, ip netip.Addr) (asked, answered time.Time, err error) {
	deadline := time.After(time.Second)
	for answered.IsZero() {
		ev, ok := mon.next(deadline)
		if !ok {
			return asked, answered, fmt.Errorf("no neighbour entry for %s within 1 s (miss seen: %t, monitor error %v)", ip, !asked.IsZero(), mon.Err())
		}
		if ev.neigh == nil || ev.neigh.LinkIndex != dev || ev.neighIP() != ip {
			continue
		}
		switch {
		case ev.isNeigh(unix.RTM_GETNEIGH, afInet):
			asked = ev.at
		case ev.isNeigh(unix.RTM_NEWNEIGH, afInet) && len(ev.neigh.HardwareAddr) == 6:
			answered = ev.at
		}
	}
	if asked.IsZero() {
		return asked, answered, fmt.Errorf("entry for %s appeared without a miss event", ip)
	}
	return asked, answered, nil
}

// promHist is a Prometheus histogram read from the text exposition.
type promHist struct {
	bounds []float64 // upper bounds in seconds, ascending, +Inf last
	counts []float64 // cumulative
	count  float64
	sum    float64
}

// quantile is the upper bound of the bucket holding the q-quantile.
func (h promHist) quantile(q float64) time.Duration {
	for i, c := range h.counts {
		if c >= q*h.count {
			if math.IsInf(h.bounds[i], 1) {
				return time.Duration(math.MaxInt64)
			}
			return time.Duration(h.bounds[i] * float64(time.Second))
		}
	}
	return time.Duration(math.MaxInt64)
}

// missHistogram reads weft_miss_answer_seconds from the agent's /metrics.
func missHistogram(ctx context.Context, n *lab.Node) (promHist, error) {
	b, err := n.HTTPGet(ctx, "/metrics")
	if err != nil {
		return promHist{}, err
	}
	var h promHist
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		name, val, ok := metricLine(sc.Text())
		switch {
		case !ok:
		case strings.HasPrefix(name, `weft_miss_answer_seconds_bucket{le="`):
			le := strings.TrimSuffix(strings.TrimPrefix(name, `weft_miss_answer_seconds_bucket{le="`), `"}`)
			bound, err := strconv.ParseFloat(le, 64)
			if err != nil {
				return h, fmt.Errorf("bucket bound %q: %w", le, err)
			}
			h.bounds, h.counts = append(h.bounds, bound), append(h.counts, val)
		case name == "weft_miss_answer_seconds_count":
			h.count = val
		case name == "weft_miss_answer_seconds_sum":
			h.sum = val
		}
	}
	if len(h.bounds) == 0 {
		return h, fmt.Errorf("no weft_miss_answer_seconds in %s's /metrics", n.Name)
	}
	return h, sc.Err()
}

// metricValue reads one unlabelled sample from the agent's /metrics.
func metricValue(ctx context.Context, n *lab.Node, metric string) (float64, error) {
	b, err := n.HTTPGet(ctx, "/metrics")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if name, v, ok := metricLine(strings.TrimSpace(line)); ok && name == metric {
			return v, nil
		}
	}
	return 0, fmt.Errorf("no %s in %s's /metrics", metric, n.Name)
}

// metricLine splits "name{labels} value" (comments give ok false).
func metricLine(line string) (string, float64, bool) {
	if line == "" || line[0] == '#' {
		return "", 0, false
	}
	i := strings.LastIndexByte(line, ' ')
	if i < 0 {
		return "", 0, false
	}
	v, err := strconv.ParseFloat(line[i+1:], 64)
	if err != nil {
		return "", 0, false
	}
	return line[:i], v, true
}
