package backend

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/host"
)

// gw is the peer's flannel.1 address.
func gw(n *node) netip.Addr { return n.lease.Addr() }

// startPair brings both nodes up in mode, each with the other as its peer.
func startPair(t *testing.T, mode Mode) (*node, *node) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) }) // registered first: runs after every other cleanup
	a, b := twoNodes(t)
	a.ensure(t, a.config(mode))
	b.ensure(t, b.config(mode))
	if err := a.v.SetPeers([]Peer{b.peer()}); err != nil {
		t.Fatalf("SetPeers on a: %v", err)
	}
	if err := b.v.SetPeers([]Peer{a.peer()}); err != nil {
		t.Fatalf("SetPeers on b: %v", err)
	}
	a.run(t)
	b.run(t)
	return a, b
}

func TestDeviceAndPing(t *testing.T) {
	a, b := startPair(t, ModeProactive)
	for _, n := range []*node{a, b} {
		l, err := n.h.LinkByName("flannel.1")
		if err != nil {
			t.Fatalf("flannel.1: %v", err)
		}
		vx, ok := l.(*netlink.Vxlan)
		if !ok {
			t.Fatalf("flannel.1 is %T", l)
		}
		switch {
		case vx.VxlanId != 1, vx.Port != 8472, vx.Learning, !vx.L2miss, vx.VtepDevIndex != n.underlay,
			!vx.SrcAddr.Equal(n.pub.AsSlice()), vx.MTU != 1450, vx.Flags&net.FlagUp == 0:
			t.Errorf("%s: flannel.1 = id %d port %d learning %t l2miss %t dev %d local %s mtu %d flags %v",
				n.ns.Name, vx.VxlanId, vx.Port, vx.Learning, vx.L2miss, vx.VtepDevIndex, vx.SrcAddr, vx.MTU, vx.Flags)
		}
		if vx.HardwareAddr.String() != n.dev.MAC.String() || n.dev.MAC[0]&0x03 != 0x02 {
			t.Errorf("%s: MAC %s, returned %s (want locally administered unicast)", n.ns.Name, vx.HardwareAddr, n.dev.MAC)
		}
		addrs, err := n.h.AddrList(l, unix.AF_INET)
		if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != n.lease.Addr().String()+"/32" {
			t.Errorf("%s: addresses %v (%v), want only %s/32", n.ns.Name, addrs, err, n.lease.Addr())
		}
		if !n.v.Ready() {
			t.Errorf("%s: not Ready", n.ns.Name)
		}
		// app_solicit is set over rtnetlink; /proc/sys shows the result.
		if out, err := n.ns.Exec(t, "cat", "/proc/sys/net/ipv4/neigh/flannel.1/app_solicit"); err != nil || strings.TrimSpace(out) != "3" {
			t.Errorf("%s: app_solicit = %q (%v), want 3", n.ns.Name, out, err)
		}
	}
	e := a.entries(t)
	if e.neigh[gw(b)] != b.dev.MAC.String() || e.fdb[b.dev.MAC.String()] != b.pub || e.route[b.lease] != "via "+gw(b).String() {
		t.Errorf("a's entries for b: %+v", e)
	}
	a.mustPing(t, gw(b))
	b.mustPing(t, gw(a))
}

// delEntries deletes n's neighbour and/or FDB entry for peer p by hand.
func delEntries(t *testing.T, n, p *node, neigh, fdb bool) {
	t.Helper()
	idx := n.dev.Index
	if neigh {
		if err := n.h.NeighDel(&netlink.Neigh{LinkIndex: idx, Family: n.family(), IP: gw(p).AsSlice()}); err != nil {
			t.Fatalf("delete neighbour: %v", err)
		}
	}
	if fdb {
		if err := n.h.NeighDel(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
			HardwareAddr: p.dev.MAC, IP: p.pub.AsSlice()}); err != nil {
			t.Fatalf("delete fdb: %v", err)
		}
	}
	e := n.entries(t)
	if _, ok := e.neigh[gw(p)]; ok == neigh {
		t.Fatalf("neighbour still there after delete: %+v", e)
	}
	if _, ok := e.fdb[p.dev.MAC.String()]; ok == fdb {
		t.Fatalf("fdb still there after delete: %+v", e)
	}
}

func TestMissRepairsDeletedEntries(t *testing.T) {
	a, b := startPair(t, ModeProactive)
	a.mustPing(t, gw(b))

	// Both gone: the L3 miss queues the packet, the answer (FDB, then
	// neighbour) releases it, so nothing is lost.
	delEntries(t, a, b, true, true)
	if loss := a.ping(t, gw(b), "-c", "20", "-i", "0.05", "-W", "1"); loss != 0 {
		t.Errorf("ping after deleting neighbour and FDB: %v%% loss, want 0", loss)
	}
	l3 := a.rec.answers(MissL3)
	if len(l3) == 0 {
		t.Fatalf("no L3 miss answered")
	}
	e := a.entries(t)
	if e.neigh[gw(b)] != b.dev.MAC.String() || e.fdb[b.dev.MAC.String()] != b.pub {
		t.Errorf("entries not restored: %+v", e)
	}
	t.Logf("L3 miss → answer latency: %v", l3)

	// FDB only: the driver's L2 miss drops that packet (it cannot queue),
	// so at most the first ping is lost; the entry comes back.
	delEntries(t, a, b, false, true)
	if loss := a.ping(t, gw(b), "-c", "20", "-i", "0.05", "-W", "1"); loss > 5 {
		t.Errorf("ping after deleting FDB: %v%% loss, want at most one packet", loss)
	}
	l2 := a.rec.answers(MissL2)
	if len(l2) == 0 {
		t.Fatalf("no L2 miss answered")
	}
	if got := a.entries(t).fdb[b.dev.MAC.String()]; got != b.pub {
		t.Errorf("fdb not restored: %v", got)
	}
	t.Logf("L2 miss → answer latency: %v", l2)
}

func TestOnDemand(t *testing.T) {
	a, b := startPair(t, ModeOnDemand)
	network := netip.MustParsePrefix("10.244.0.0/16")
	for _, n := range []*node{a, b} {
		e := n.entries(t)
		if len(e.neigh) != 0 || len(e.fdb) != 0 || len(e.route) != 1 || e.route[network] != "dev" {
			t.Fatalf("%s before traffic: %+v, want only the Network route", n.ns.Name, e)
		}
	}
	if loss := a.ping(t, gw(b), "-c", "10", "-i", "0.05", "-W", "1"); loss != 0 {
		t.Errorf("first ping in on-demand mode: %v%% loss, want 0", loss)
	}
	if len(a.rec.answers(MissL3)) == 0 || len(b.rec.answers(MissL3)) == 0 {
		t.Errorf("misses answered: a %v, b %v", a.rec.answers(MissL3), b.rec.answers(MissL3))
	}
	t.Logf("on-demand L3 latency: a %v, b %v", a.rec.answers(MissL3), b.rec.answers(MissL3))
	waitFor(t, "peer activated", func() bool { return a.entries(t).route[b.lease] == "via "+gw(b).String() })
	e := a.entries(t)
	if e.neigh[gw(b)] != b.dev.MAC.String() || e.fdb[b.dev.MAC.String()] != b.pub {
		t.Errorf("a after traffic: %+v", e)
	}

	// A pod IP behind b (not assigned anywhere, so no reply): the kernel
	// asks for the pod IP itself and the answer points it at b.
	pod := netip.MustParseAddr("10.244.2.7")
	if err := a.v.SetPeers(nil); err != nil {
		t.Fatalf("SetPeers(nil): %v", err)
	}
	e = a.entries(t)
	if len(e.neigh) != 0 || len(e.fdb) != 0 || len(e.route) != 1 {
		t.Errorf("a after b left: %+v, want only the Network route", e)
	}
	if err := a.v.SetPeers([]Peer{b.peer()}); err != nil {
		t.Fatalf("SetPeers: %v", err)
	}
	a.ping(t, pod, "-c", "1", "-W", "1")
	waitFor(t, "pod neighbour", func() bool { return a.entries(t).neigh[pod] == b.dev.MAC.String() })
	waitFor(t, "peer activated by pod miss", func() bool { return a.entries(t).route[b.lease] == "via "+gw(b).String() })
	if err := a.v.SetPeers(nil); err != nil {
		t.Fatalf("SetPeers(nil): %v", err)
	}
	if e := a.entries(t); len(e.neigh) != 0 || len(e.fdb) != 0 || len(e.route) != 1 {
		t.Errorf("a after b left again: %+v", e)
	}
}

// writeLog wraps a namespace and records the per-peer writes (miss answers
// go through its Clone and are not recorded).
type writeLog struct {
	*host.NS
	mu     sync.Mutex
	writes []string
}

func (w *writeLog) add(s string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, s)
}

func (w *writeLog) log() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.writes)
}

func (w *writeLog) NeighSet(n *netlink.Neigh) error {
	w.add(fmt.Sprintf("neigh set %d %s %s", n.Family, n.IP, n.HardwareAddr))
	return w.NS.NeighSet(n)
}

func (w *writeLog) NeighDel(n *netlink.Neigh) error {
	w.add(fmt.Sprintf("neigh del %d %s %s", n.Family, n.IP, n.HardwareAddr))
	return w.NS.NeighDel(n)
}

func (w *writeLog) RouteReplace(r *netlink.Route) error {
	w.add("route replace " + r.Dst.String())
	return w.NS.RouteReplace(r)
}

func (w *writeLog) RouteDel(r *netlink.Route) error {
	w.add("route del " + r.Dst.String())
	return w.NS.RouteDel(r)
}

// ghost is a peer with no node behind it.
var ghost = Peer{
	Subnet:   netip.MustParsePrefix("10.244.3.0/24"),
	PublicIP: netip.MustParseAddr("198.18.0.3"),
	VtepMAC:  net.HardwareAddr{0x0a, 0, 0, 0, 0, 3},
	Name:     "ghost",
}

func TestPeerChangeAndRemoval(t *testing.T) {
	a, b := startPair(t, ModeProactive)
	if err := a.v.SetPeers([]Peer{b.peer(), ghost}); err != nil {
		t.Fatalf("SetPeers: %v", err)
	}
	moved := ghost
	moved.VtepMAC = net.HardwareAddr{0x0a, 0, 0, 0, 0, 4}
	moved.PublicIP = netip.MustParseAddr("198.18.0.4")
	if err := a.v.SetPeers([]Peer{b.peer(), moved}); err != nil {
		t.Fatalf("SetPeers (moved): %v", err)
	}
	e := a.entries(t)
	if _, stale := e.fdb[ghost.VtepMAC.String()]; stale {
		t.Errorf("stale FDB entry for the old VtepMAC survived: %+v", e.fdb)
	}
	if e.fdb[moved.VtepMAC.String()] != moved.PublicIP || e.neigh[ghost.Subnet.Addr()] != moved.VtepMAC.String() {
		t.Errorf("moved peer not reprogrammed: %+v", e)
	}
	if err := a.v.SetPeers([]Peer{b.peer()}); err != nil {
		t.Fatalf("SetPeers (removed): %v", err)
	}
	e = a.entries(t)
	_, n := e.neigh[ghost.Subnet.Addr()]
	_, f := e.fdb[moved.VtepMAC.String()]
	_, r := e.route[ghost.Subnet]
	if n || f || r || len(e.neigh) != 1 || len(e.fdb) != 1 || len(e.route) != 1 {
		t.Errorf("entries after removing the peer: %+v, want only b's", e)
	}
	a.mustPing(t, gw(b))
}

func TestRestartKeepsEntries(t *testing.T) {
	a, b := startPair(t, ModeProactive)
	if err := a.v.SetPeers([]Peer{b.peer(), ghost}); err != nil {
		t.Fatalf("SetPeers: %v", err)
	}
	a.mustPing(t, gw(b))
	oldMAC := a.dev.MAC.String()
	a.stop()

	// Traffic keeps flowing while "the agent restarts".
	pinged := make(chan float64, 1)
	go func() { pinged <- a.ping(t, gw(b), "-c", "40", "-i", "0.05", "-W", "1") }()

	rec := &writeLog{NS: a.host}
	cfg := a.config(ModeProactive)
	a.wrap = rec
	a.ensure(t, cfg)
	if a.dev.MAC.String() != oldMAC {
		t.Errorf("MAC after restart %s, want the reused %s", a.dev.MAC, oldMAC)
	}
	a.run(t) // as the agent does: Run may start before the first SetPeers
	if err := a.v.SetPeers([]Peer{b.peer()}); err != nil {
		t.Fatalf("SetPeers after restart: %v", err)
	}
	if loss := <-pinged; loss != 0 {
		t.Errorf("ping across the restart: %v%% loss", loss)
	}
	want := []string{
		"route del " + ghost.Subnet.String(),
		fmt.Sprintf("neigh del %d %s %s", unix.AF_INET, ghost.Subnet.Addr(), ghost.VtepMAC),
		fmt.Sprintf("neigh del %d %s %s", unix.AF_BRIDGE, ghost.PublicIP, ghost.VtepMAC),
	}
	if diff := cmp.Diff(want, rec.log()); diff != "" {
		t.Errorf("writes after restart (-want +got):\n%s", diff)
	}
	if e := a.entries(t); len(e.neigh) != 1 || len(e.fdb) != 1 || len(e.route) != 1 {
		t.Errorf("entries after restart: %+v, want only b's", e)
	}
}

// TestFlannelRoutesReplaced: a node that ran flannel has its peer routes at
// metric 0; starting there, the datapath adds its own (at peerMetric) and
// then removes flannel's, and traffic keeps flowing.
func TestFlannelRoutesReplaced(t *testing.T) {
	a, b := startPair(t, ModeProactive)
	if err := a.v.SetPeers([]Peer{b.peer()}); err != nil {
		t.Fatalf("SetPeers: %v", err)
	}
	a.mustPing(t, gw(b))
	a.stop()
	dev, err := a.h.LinkByName("flannel.1")
	if err != nil {
		t.Fatal(err)
	}
	toB := func() []netlink.Route {
		t.Helper()
		rs, err := a.h.RouteListFiltered(unix.AF_INET, &netlink.Route{LinkIndex: dev.Attrs().Index, Dst: host.PrefixIPNet(b.lease)},
			netlink.RT_FILTER_OIF|netlink.RT_FILTER_DST)
		if err != nil {
			t.Fatalf("list routes: %v", err)
		}
		return rs
	}
	if rs := toB(); len(rs) != 1 || rs[0].Priority != int(peerMetric(b.lease)) {
		t.Fatalf("routes to %s: %+v, want one at metric %d", b.lease, rs, peerMetric(b.lease))
	}
	// As flannel leaves it: the route at metric 0.
	ours := toB()[0]
	if err := a.h.RouteDel(&ours); err != nil {
		t.Fatal(err)
	}
	flannel := netlink.Route{LinkIndex: dev.Attrs().Index, Dst: host.PrefixIPNet(b.lease), Gw: gw(b).AsSlice(), Flags: int(netlink.FLAG_ONLINK)}
	if err := a.h.RouteAdd(&flannel); err != nil {
		t.Fatal(err)
	}
	a.mustPing(t, gw(b))

	a.ensure(t, a.config(ModeProactive))
	a.run(t)
	if err := a.v.SetPeers([]Peer{b.peer()}); err != nil {
		t.Fatalf("SetPeers after flannel: %v", err)
	}
	if rs := toB(); len(rs) != 1 || rs[0].Priority != int(peerMetric(b.lease)) || !rs[0].Gw.Equal(gw(b).AsSlice()) {
		t.Errorf("routes to %s after the restart: %+v, want only ours (metric %d)", b.lease, rs, peerMetric(b.lease))
	}
	a.mustPing(t, gw(b))
}

func TestDeviceDeletedIsRecreated(t *testing.T) {
	a, b := startPair(t, ModeProactive)
	a.mustPing(t, gw(b))
	l, err := a.h.LinkByName("flannel.1")
	if err != nil {
		t.Fatalf("flannel.1: %v", err)
	}
	if err := a.h.LinkDel(l); err != nil {
		t.Fatalf("delete flannel.1: %v", err)
	}
	waitFor(t, "device recreated and reprogrammed", func() bool {
		l, err := a.h.LinkByName("flannel.1")
		if err != nil || l.Attrs().Index == a.dev.Index {
			return false
		}
		e := a.entries(t)
		return e.route[b.lease] != "" && a.v.Ready()
	})
	l, _ = a.h.LinkByName("flannel.1")
	if l.Attrs().HardwareAddr.String() != a.dev.MAC.String() {
		t.Errorf("recreated device MAC %s, want %s", l.Attrs().HardwareAddr, a.dev.MAC)
	}
	a.mustPing(t, gw(b))

	// A MAC changed behind our back (udev, MACAddressPolicy) is restored.
	if err := a.h.LinkSetHardwareAddr(l, net.HardwareAddr{0x02, 0xbb, 0, 0, 0, 1}); err != nil {
		t.Fatalf("change MAC: %v", err)
	}
	waitFor(t, "MAC restored", func() bool {
		l, err := a.h.LinkByName("flannel.1")
		return err == nil && l.Attrs().HardwareAddr.String() == a.dev.MAC.String()
	})
	b.mustPing(t, gw(a))
}

func TestDirectRouting(t *testing.T) {
	a, b := twoNodes(t)
	for _, n := range []*node{a, b} {
		cfg := n.config(ModeProactive)
		cfg.DirectRouting = true
		n.ensure(t, cfg)
	}
	if err := a.v.SetPeers([]Peer{b.peer()}); err != nil {
		t.Fatal(err)
	}
	if err := b.v.SetPeers([]Peer{a.peer()}); err != nil {
		t.Fatal(err)
	}
	routes, err := a.h.RouteGet(b.lease.Addr().AsSlice())
	if err != nil || len(routes) != 1 || routes[0].LinkIndex != a.underlay || !routes[0].Gw.Equal(b.pub.AsSlice()) {
		t.Fatalf("route to b's subnet: %+v (%v), want via %s dev eth0", routes, err, b.pub)
	}
	if e := a.entries(t); len(e.neigh)+len(e.fdb)+len(e.route) != 0 {
		t.Errorf("VXLAN entries for a direct peer: %+v", e)
	}
	a.mustPing(t, gw(b))
}
