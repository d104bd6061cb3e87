package backend

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/host"
	"github.com/weftnet/weft/test/nettest"
)

// Privileged IPv6 topology (two nodes, one veth as the underlay):
//
//	 bk-<n1>                                    bk-<n2>
//	 flannel-v6.1 fd10:244:0:1::/128            flannel-v6.1 fd10:244:0:2::/128
//	 [flannel.1 10.244.1.0/32]                  [flannel.1 10.244.2.0/32]
//	 eth0 fd00::1/64 [198.18.0.1/24] ── veth ── eth0 fd00::2/64 [198.18.0.2/24]
//
// The bracketed IPv4 half exists only for dual stack.

// twoNodes6 builds the topology with an IPv6 underlay (addresses without
// duplicate address detection, so they are usable at once) and returns the
// IPv6 nodes; with dual, the underlay has IPv4 addresses too and the IPv4
// nodes of the same namespaces are returned as well.
func twoNodes6(t *testing.T, dual bool) (a6, b6, a4, b4 *node) {
	t.Helper()
	nettest.Privileged(t)
	a, b := nettest.NewNS(t, "bk"), nettest.NewNS(t, "bk")
	v4a, v4b := "", ""
	if dual {
		v4a, v4b = "198.18.0.1/24", "198.18.0.2/24"
	}
	nettest.Veth(t, a, "eth0", v4a, b, "eth0", v4b)
	network6 := netip.MustParsePrefix("fd10:244::/48")
	mk := func(n *nettest.NS, pub6, lease6, pub4, lease4 string) (*node, *node) {
		h := nettest.Handle(t, n.NetNS)
		l, err := h.LinkByName("eth0")
		if err != nil {
			t.Fatalf("find eth0: %v", err)
		}
		if err := h.AddrAdd(l, &netlink.Addr{IPNet: host.PrefixIPNet(netip.MustParsePrefix(pub6 + "/64")), Flags: unix.IFA_F_NODAD}); err != nil {
			t.Fatalf("add %s: %v", pub6, err)
		}
		hn, err := host.Open(n.Path)
		if err != nil {
			t.Fatalf("open %s: %v", n.Path, err)
		}
		t.Cleanup(func() { _ = hn.Close() })
		n6 := &node{ns: n, h: h, host: hn, pub: netip.MustParseAddr(pub6), lease: netip.MustParsePrefix(lease6),
			network: network6, underlay: l.Attrs().Index}
		n4 := *n6
		n4.pub, n4.lease, n4.network = netip.MustParseAddr(pub4), netip.MustParsePrefix(lease4), netip.Prefix{}
		return n6, &n4
	}
	a6, a4 = mk(a, "fd00::1", "fd10:244:0:1::/64", "198.18.0.1", "10.244.1.0/24")
	b6, b4 = mk(b, "fd00::2", "fd10:244:0:2::/64", "198.18.0.2", "10.244.2.0/24")
	if !dual {
		a4, b4 = nil, nil
	}
	return a6, b6, a4, b4
}

// startPairs ensures every given pair's datapaths, each node with the
// other as its peer, and runs them.
func startPairs(t *testing.T, mode Mode, pairs ...[2]*node) {
	t.Helper()
	for _, p := range pairs {
		p[0].ensure(t, p[0].config(mode))
		p[1].ensure(t, p[1].config(mode))
	}
	for _, p := range pairs {
		for i, n := range p {
			if err := n.v.SetPeers([]Peer{p[1-i].peer()}); err != nil {
				t.Fatalf("SetPeers on %s: %v", n.ns.Name, err)
			}
		}
	}
	for _, p := range pairs {
		p[0].run(t)
		p[1].run(t)
	}
}

// startPair6 brings an IPv6-only pair up in mode.
func startPair6(t *testing.T, mode Mode) (*node, *node) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) }) // registered first: runs after every other cleanup
	a, b, _, _ := twoNodes6(t, false)
	startPairs(t, mode, [2]*node{a, b})
	return a, b
}

func TestIPv6DeviceAndPing(t *testing.T) {
	a, b := startPair6(t, ModeProactive)
	for _, n := range []*node{a, b} {
		l, err := n.h.LinkByName("flannel-v6.1")
		if err != nil {
			t.Fatalf("flannel-v6.1: %v", err)
		}
		vx, ok := l.(*netlink.Vxlan)
		if !ok {
			t.Fatalf("flannel-v6.1 is %T", l)
		}
		switch {
		case vx.VxlanId != 1, vx.Port != 8472, vx.Learning, !vx.L2miss, vx.VtepDevIndex != n.underlay,
			!vx.SrcAddr.Equal(n.pub.AsSlice()), vx.MTU != 1430, vx.Flags&net.FlagUp == 0:
			t.Errorf("%s: flannel-v6.1 = id %d port %d learning %t l2miss %t dev %d local %s mtu %d flags %v",
				n.ns.Name, vx.VxlanId, vx.Port, vx.Learning, vx.L2miss, vx.VtepDevIndex, vx.SrcAddr, vx.MTU, vx.Flags)
		}
		if vx.HardwareAddr.String() != n.dev.MAC.String() || n.dev.Name != "flannel-v6.1" {
			t.Errorf("%s: MAC %s, device %+v", n.ns.Name, vx.HardwareAddr, n.dev)
		}
		// Only <lease ::0>/128, without DAD; no link-local address.
		addrs, err := n.h.AddrList(l, unix.AF_INET6)
		if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != n.lease.Addr().String()+"/128" ||
			addrs[0].Flags&unix.IFA_F_NODAD == 0 || addrs[0].Flags&unix.IFA_F_TENTATIVE != 0 {
			t.Errorf("%s: addresses %+v (%v), want only %s/128 nodad", n.ns.Name, addrs, err, n.lease.Addr())
		}
		if !n.v.Ready() {
			t.Errorf("%s: not Ready", n.ns.Name)
		}
		for key, want := range map[string]string{
			"/proc/sys/net/ipv6/neigh/flannel-v6.1/app_solicit": "3", // NDP asks us
			"/proc/sys/net/ipv6/conf/flannel-v6.1/accept_ra":    "0",
		} {
			if out, err := n.ns.Exec(t, "cat", key); err != nil || strings.TrimSpace(out) != want {
				t.Errorf("%s: %s = %q (%v), want %s", n.ns.Name, key, out, err, want)
			}
		}
	}
	e := a.entries(t)
	if e.neigh[gw(b)] != b.dev.MAC.String() || e.fdb[b.dev.MAC.String()] != b.pub || e.route[b.lease] != "via "+gw(b).String() ||
		len(e.neigh) != 1 || len(e.fdb) != 1 || len(e.route) != 1 {
		t.Errorf("a's entries for b: %+v", e)
	}
	a.mustPing(t, gw(b))
	b.mustPing(t, gw(a))

	// A pod address behind b, routed through the devices: a reaches it
	// from its own device address.
	pod := netip.MustParseAddr("fd10:244:0:2::7")
	if _, err := b.ns.Exec(t, "ip", "-6", "addr", "add", pod.String()+"/128", "dev", "lo", "nodad"); err != nil {
		t.Fatalf("add pod address: %v", err)
	}
	a.mustPing(t, pod)

	// Peer removal takes all three entries.
	if err := a.v.SetPeers(nil); err != nil {
		t.Fatal(err)
	}
	if e := a.entries(t); len(e.neigh)+len(e.fdb)+len(e.route) != 0 {
		t.Errorf("a's entries after b left: %+v", e)
	}
}

// TestDualStackPing: each node runs an IPv4 and an IPv6 datapath on the same
// underlay, with the same VNI and port; both overlays carry traffic.
func TestDualStackPing(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
	a6, b6, a4, b4 := twoNodes6(t, true)
	startPairs(t, ModeProactive, [2]*node{a4, b4}, [2]*node{a6, b6})
	if a4.dev.Name != "flannel.1" || a6.dev.Name != "flannel-v6.1" || a4.dev.MTU != 1450 || a6.dev.MTU != 1430 {
		t.Errorf("devices %+v and %+v", a4.dev, a6.dev)
	}
	for _, p := range [][2]*node{{a4, b4}, {b4, a4}, {a6, b6}, {b6, a6}} {
		p[0].mustPing(t, gw(p[1]))
	}
	// Each keeps to its family: the IPv4 device has no IPv6 entries and
	// the IPv6 device no IPv4 ones.
	for _, c := range []struct {
		dev    string
		family int
	}{{"flannel.1", unix.AF_INET6}, {"flannel-v6.1", unix.AF_INET}} {
		l, err := a4.h.LinkByName(c.dev)
		if err != nil {
			t.Fatal(err)
		}
		ns, _ := a4.h.NeighList(l.Attrs().Index, c.family)
		addrs, _ := a4.h.AddrList(l, c.family)
		if len(ns)+len(addrs) != 0 {
			t.Errorf("%s has family %d entries: %+v %+v", c.dev, c.family, ns, addrs)
		}
	}
}

// TestMissIPv6OnDemand: on demand, the IPv6 device resolves each destination
// through NDP's app_solicit (L3 misses) and unknown MACs through the
// driver's L2 misses; both are answered.
func TestMissIPv6OnDemand(t *testing.T) {
	a, b := startPair6(t, ModeOnDemand)
	for _, n := range []*node{a, b} {
		e := n.entries(t)
		if len(e.neigh) != 0 || len(e.fdb) != 0 || len(e.route) != 1 || e.route[n.network] != "dev" {
			t.Fatalf("%s before traffic: %+v, want only the Network route", n.ns.Name, e)
		}
	}
	if loss := a.ping(t, gw(b), "-c", "10", "-i", "0.05", "-W", "1"); loss != 0 {
		t.Errorf("first ping in on-demand mode: %v%% loss, want 0", loss)
	}
	if len(a.rec.answers(MissL3)) == 0 || len(b.rec.answers(MissL3)) == 0 {
		t.Errorf("L3 misses answered: a %v, b %v", a.rec.answers(MissL3), b.rec.answers(MissL3))
	}
	waitFor(t, "peer activated", func() bool { return a.entries(t).route[b.lease] == "via "+gw(b).String() })
	e := a.entries(t)
	if e.neigh[gw(b)] != b.dev.MAC.String() || e.fdb[b.dev.MAC.String()] != b.pub {
		t.Errorf("a after traffic: %+v", e)
	}

	// The FDB entry gone: the driver's L2 miss loses that packet at most,
	// and the entry comes back.
	delEntries(t, a, b, false, true)
	if loss := a.ping(t, gw(b), "-c", "20", "-i", "0.05", "-W", "1"); loss > 5 {
		t.Errorf("ping after deleting the FDB entry: %v%% loss, want at most one packet", loss)
	}
	if len(a.rec.answers(MissL2)) == 0 {
		t.Fatalf("no L2 miss answered")
	}
	if got := a.entries(t).fdb[b.dev.MAC.String()]; got != b.pub {
		t.Errorf("fdb not restored: %v", got)
	}
}

// TestMissIPv6RepairsDeletedEntries: in proactive mode, both of a peer's
// entries deleted by hand are restored by the L3 (NDP) miss with no loss.
func TestMissIPv6RepairsDeletedEntries(t *testing.T) {
	a, b := startPair6(t, ModeProactive)
	a.mustPing(t, gw(b))
	delEntries(t, a, b, true, true)
	if loss := a.ping(t, gw(b), "-c", "20", "-i", "0.05", "-W", "1"); loss != 0 {
		t.Errorf("ping after deleting neighbour and FDB: %v%% loss, want 0", loss)
	}
	if len(a.rec.answers(MissL3)) == 0 {
		t.Fatalf("no L3 miss answered")
	}
	if e := a.entries(t); e.neigh[gw(b)] != b.dev.MAC.String() || e.fdb[b.dev.MAC.String()] != b.pub {
		t.Errorf("entries not restored: %+v", e)
	}
}

// TestIPv6RestartKeepsDevice: a new process reuses flannel-v6.1 with its MAC
// and writes none of the peers' entries again; traffic flows throughout.
func TestIPv6RestartKeepsDevice(t *testing.T) {
	a, b := startPair6(t, ModeProactive)
	a.mustPing(t, gw(b))
	old := a.dev
	a.stop()

	pinged := make(chan float64, 1)
	go func() { pinged <- a.ping(t, gw(b), "-c", "30", "-i", "0.05", "-W", "1") }()
	rec := &writeLog{NS: a.host}
	a.wrap = rec
	a.ensure(t, a.config(ModeProactive))
	if a.dev.MAC.String() != old.MAC.String() || a.dev.Index != old.Index {
		t.Errorf("device after restart %+v, want the reused %+v", a.dev, old)
	}
	a.run(t)
	if err := a.v.SetPeers([]Peer{b.peer()}); err != nil {
		t.Fatalf("SetPeers after restart: %v", err)
	}
	if loss := <-pinged; loss != 0 {
		t.Errorf("ping across the restart: %v%% loss", loss)
	}
	if w := rec.log(); len(w) != 0 {
		t.Errorf("writes after restart: %q, want none", w)
	}
}
