package backend

import (
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/host"
)

var (
	macB = net.HardwareAddr{0x0a, 0, 0, 0, 0, 2}
	macC = net.HardwareAddr{0x0a, 0, 0, 0, 0, 3}
	macX = net.HardwareAddr{0x0a, 0, 0, 0, 0, 9}
)

func peerB() Peer {
	return Peer{Subnet: netip.MustParsePrefix("10.244.2.0/24"), PublicIP: netip.MustParseAddr("198.18.0.2"), VtepMAC: macB, Name: "b"}
}

func peerC() Peer {
	return Peer{Subnet: netip.MustParsePrefix("10.244.3.0/24"), PublicIP: netip.MustParseAddr("198.18.1.3"), VtepMAC: macC, Name: "c"}
}

// stateOf builds a state from lines in op notation without the verb:
// "neigh 10.244.2.0 0a:00:00:00:00:02 permanent", "fdb 0a:.. 198.18.0.2",
// "route 10.244.2.0/24 10.244.2.0 onlink", "route 10.244.0.0/16 - ",
// "route 10.244.4.0/24 198.18.0.4 underlay", "... metric 717826"; a route is
// weft's (RouteProtocol) unless it says "proto boot".
func stateOf(t *testing.T, lines ...string) state {
	t.Helper()
	s := newState(0)
	for _, l := range lines {
		f := strings.Fields(l)
		switch f[0] {
		case "neigh":
			ip := netip.MustParseAddr(f[1])
			s.record(op{kind: opNeighSet, neigh: neighEntry{IP: ip, MAC: f[2], Permanent: len(f) > 3 && f[3] == "permanent"}})
		case "fdb":
			s.addFDB(fdbEntry{MAC: f[1], Dst: netip.MustParseAddr(f[2])})
		case "route":
			r := routeEntry{Dst: netip.MustParsePrefix(f[1]), Proto: RouteProtocol}
			if f[2] != "-" {
				r.Gw = netip.MustParseAddr(f[2])
			}
			for i, flag := range f[3:] {
				r.Onlink = r.Onlink || flag == "onlink"
				r.Underlay = r.Underlay || flag == "underlay"
				switch flag {
				case "metric":
					m, err := strconv.ParseUint(f[3+i+1], 10, 32)
					if err != nil {
						t.Fatalf("bad metric in %q", l)
					}
					r.Metric = uint32(m)
				case "proto":
					if f[3+i+1] != "boot" {
						t.Fatalf("bad protocol in %q", l)
					}
					r.Proto = unix.RTPROT_BOOT
				}
			}
			s.addRoute(r)
		default:
			t.Fatalf("bad state line %q", l)
		}
	}
	return s
}

// stateLines renders s in stateOf's notation, sorted.
func stateLines(s state) []string {
	var res []string
	for _, n := range s.neigh {
		res = append(res, strings.TrimSpace("neigh "+n.IP.String()+" "+n.MAC+nudText(n.Permanent)))
	}
	for _, f := range s.fdb {
		res = append(res, "fdb "+f.MAC+" "+f.Dst.String())
	}
	for _, r := range s.route {
		l := "route " + r.Dst.String() + " -"
		if r.Gw.IsValid() {
			l = "route " + r.Dst.String() + " " + r.Gw.String()
		}
		if r.Onlink {
			l += " onlink"
		}
		if r.Underlay {
			l += " underlay"
		}
		if r.Metric != 0 {
			l += " metric " + strconv.FormatUint(uint64(r.Metric), 10)
		}
		if r.Proto != RouteProtocol {
			l += " proto " + host.ProtoName(r.Proto)
		}
		res = append(res, l)
	}
	slices.Sort(res)
	return res
}

func tablePeers(t *testing.T, direct map[string]bool, peers ...Peer) []*tablePeer {
	t.Helper()
	var res []*tablePeer
	for _, p := range peers {
		tp, err := validatePeer(p, netip.MustParseAddr("198.18.0.1"))
		if err != nil {
			t.Fatalf("validate %s: %v", p.Name, err)
		}
		tp.direct = direct[p.Name]
		res = append(res, tp)
	}
	return res
}

func opStrings(ops []op) []string {
	var s []string
	for _, o := range ops {
		s = append(s, o.String())
	}
	return s
}

func TestDiff(t *testing.T) {
	movedB := peerB()
	movedB.VtepMAC = macX
	movedB.PublicIP = netip.MustParseAddr("198.18.0.22")
	bEntries := []string{
		"neigh 10.244.2.0 0a:00:00:00:00:02 permanent",
		"fdb 0a:00:00:00:00:02 198.18.0.2",
		"route 10.244.2.0/24 10.244.2.0 onlink metric 717826",
	}
	network := netip.MustParsePrefix("10.244.0.0/16")
	tests := []struct {
		name   string
		have   []string
		peers  []Peer
		direct map[string]bool
		mode   Mode
		active []string
		want   []string
	}{{
		name:  "empty to two peers: neighbour, fdb, route per peer",
		peers: []Peer{peerC(), peerB()},
		want: []string{
			"neigh replace 10.244.2.0 lladdr 0a:00:00:00:00:02 permanent",
			"fdb replace 0a:00:00:00:00:02 dst 198.18.0.2",
			"route replace 10.244.2.0/24 via 10.244.2.0 dev vxlan onlink metric 717826",
			"neigh replace 10.244.3.0 lladdr 0a:00:00:00:00:03 permanent",
			"fdb replace 0a:00:00:00:00:03 dst 198.18.1.3",
			"route replace 10.244.3.0/24 via 10.244.3.0 dev vxlan onlink metric 717827",
		},
	}, {
		name:  "already right: nothing written",
		have:  bEntries,
		peers: []Peer{peerB()},
	}, {
		name:  "peer gone: route, neighbour, fdb deleted",
		have:  bEntries,
		peers: nil,
		want: []string{
			"route del 10.244.2.0/24 via 10.244.2.0 dev vxlan onlink metric 717826",
			"neigh del 10.244.2.0 lladdr 0a:00:00:00:00:02 permanent",
			"fdb del 0a:00:00:00:00:02 dst 198.18.0.2",
		},
	}, {
		name:  "VtepMAC and PublicIP changed: new entries first, stale fdb removed",
		have:  bEntries,
		peers: []Peer{movedB},
		want: []string{
			"neigh replace 10.244.2.0 lladdr 0a:00:00:00:00:09 permanent",
			"fdb replace 0a:00:00:00:00:09 dst 198.18.0.22",
			"fdb del 0a:00:00:00:00:02 dst 198.18.0.2",
		},
	}, {
		name:  "neighbour learnt as reachable is made permanent; stray fdb remote removed",
		have:  []string{"neigh 10.244.2.0 0a:00:00:00:00:02", "fdb 0a:00:00:00:00:02 198.18.0.2", "fdb 0a:00:00:00:00:02 198.18.0.99", "route 10.244.2.0/24 10.244.2.0 onlink metric 717826"},
		peers: []Peer{peerB()},
		want: []string{
			"neigh replace 10.244.2.0 lladdr 0a:00:00:00:00:02 permanent",
			"fdb del 0a:00:00:00:00:02 dst 198.18.0.99",
		},
	}, {
		name:   "direct routing: route via the public IP on the underlay, VXLAN entries removed",
		have:   bEntries,
		peers:  []Peer{peerB()},
		direct: map[string]bool{"b": true},
		want: []string{
			"route replace 10.244.2.0/24 via 198.18.0.2 dev underlay metric 717826",
			"route del 10.244.2.0/24 via 10.244.2.0 dev vxlan onlink metric 717826",
			"neigh del 10.244.2.0 lladdr 0a:00:00:00:00:02 permanent",
			"fdb del 0a:00:00:00:00:02 dst 198.18.0.2",
		},
	}, {
		name:  "on-demand, nothing active: only the Network route",
		peers: []Peer{peerB(), peerC()},
		mode:  ModeOnDemand,
		want:  []string{"route replace 10.244.0.0/16 dev vxlan"},
	}, {
		name:   "on-demand: active peer programmed, pod IP answer kept, unknown IP removed",
		have:   []string{"route 10.244.0.0/16 -", "neigh 10.244.2.7 0a:00:00:00:00:02", "neigh 10.244.9.9 0a:00:00:00:00:09", "neigh 10.244.3.5 0a:00:00:00:00:02"},
		peers:  []Peer{peerB(), peerC()},
		mode:   ModeOnDemand,
		active: []string{"10.244.2.0/24"},
		want: []string{
			"neigh replace 10.244.2.0 lladdr 0a:00:00:00:00:02 permanent",
			"fdb replace 0a:00:00:00:00:02 dst 198.18.0.2",
			"route replace 10.244.2.0/24 via 10.244.2.0 dev vxlan onlink metric 717826",
			"neigh del 10.244.3.5 lladdr 0a:00:00:00:00:02",
			"neigh del 10.244.9.9 lladdr 0a:00:00:00:00:09",
		},
	}, {
		name:  "mode switched to proactive: the Network route goes",
		have:  append([]string{"route 10.244.0.0/16 -"}, bEntries...),
		peers: []Peer{peerB()},
		want:  []string{"route del 10.244.0.0/16 dev vxlan"},
	}, {
		// A node that ran flannel: its peer routes are at metric 0, with
		// protocol boot. Ours (metric peerMetric) goes in first, then
		// flannel's goes (the delete names its protocol, so never ours).
		name:  "flannel's metric-0 route: ours added, then flannel's deleted",
		have:  append(bEntries[:2:2], "route 10.244.2.0/24 10.244.2.0 onlink proto boot"),
		peers: []Peer{peerB()},
		want: []string{
			"route replace 10.244.2.0/24 via 10.244.2.0 dev vxlan onlink metric 717826",
			"route del 10.244.2.0/24 via 10.244.2.0 dev vxlan onlink proto boot",
		},
	}, {
		// Changed behind our back at our metric (`ip route replace`
		// writes protocol boot): ours replaces it in place, and the delete
		// of the old one (by its protocol) finds nothing.
		name:  "weft's route rewritten by hand at its metric: replaced",
		have:  append(bEntries[:2:2], "route 10.244.2.0/24 10.244.2.0 onlink metric 717826 proto boot"),
		peers: []Peer{peerB()},
		want: []string{
			"route replace 10.244.2.0/24 via 10.244.2.0 dev vxlan onlink metric 717826",
			"route del 10.244.2.0/24 via 10.244.2.0 dev vxlan onlink metric 717826 proto boot",
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mode := tc.mode
			if mode == "" {
				mode = ModeProactive
			}
			active := map[netip.Prefix]bool{}
			for _, a := range tc.active {
				active[netip.MustParsePrefix(a)] = true
			}
			want := desiredOf(t, mode, network, active, tablePeers(t, tc.direct, tc.peers...))
			got := opStrings(diff(stateOf(t, tc.have...), want))
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("ops (-want +got):\n%s", d)
			}
			// Applying the ops must reach the wanted state: a second diff is empty.
			reached := stateOf(t, tc.have...)
			for _, o := range diff(reached, want) {
				reached.record(o)
			}
			if again := opStrings(diff(reached, want)); len(again) != 0 {
				t.Errorf("not converged; second diff: %v", again)
			}
		})
	}
}

// desiredOf indexes peers (which must not conflict) as the wanted state.
func desiredOf(t *testing.T, mode Mode, network netip.Prefix, active map[netip.Prefix]bool, peers []*tablePeer) desired {
	t.Helper()
	tbl := newPeerTable(mode)
	for _, p := range peers {
		if err := tbl.add(p); err != nil {
			t.Fatal(err)
		}
	}
	return newDesired(tbl, network, active)
}

// TestOwnsRoute: which routes found in the kernel a reconcile may rewrite or
// delete (see "Routes" in the package doc).
func TestOwnsRoute(t *testing.T) {
	v := &VXLAN{cfg: Config{Network: netip.MustParsePrefix("10.244.0.0/16")}}
	none := &VXLAN{}
	boot := uint8(unix.RTPROT_BOOT)
	r := func(dst, gw string, underlay bool, metric uint32, proto uint8) routeEntry {
		e := routeEntry{Dst: netip.MustParsePrefix(dst), Underlay: underlay, Metric: metric, Proto: proto}
		if gw != "" {
			e.Gw = netip.MustParseAddr(gw)
		}
		return e
	}
	for _, tc := range []struct {
		name string
		v    *VXLAN
		r    routeEntry
		want bool
	}{
		{"weft's peer route", v, r("10.244.2.0/24", "10.244.2.0", false, 717826, RouteProtocol), true},
		{"weft's Network route (on demand)", v, r("10.244.0.0/16", "", false, 0, RouteProtocol), true},
		{"weft's route outside the Network, on the device", v, r("192.0.2.0/24", "", false, 0, RouteProtocol), true},
		{"weft's DirectRouting route", v, r("10.244.2.0/24", "198.18.0.2", true, 717826, RouteProtocol), true},
		{"protocol 119 on the underlay, outside the Network", v, r("192.0.2.0/24", "198.18.0.2", true, 0, RouteProtocol), false},
		{"protocol 119 on the underlay, no gateway", v, r("10.244.2.0/24", "", true, 0, RouteProtocol), false},
		{"flannel's peer route", v, r("10.244.2.0/24", "10.244.2.0", false, 0, boot), true},
		{"an older weft's peer route", v, r("10.244.2.0/24", "10.244.2.0", false, 717826, boot), true},
		{"flannel's DirectRouting route", v, r("10.244.2.0/24", "198.18.0.2", true, 0, boot), true},
		{"boot, outside the Network", v, r("192.0.2.0/24", "192.0.2.0", false, 0, boot), false},
		{"boot, the whole Network", v, r("10.244.0.0/16", "10.244.0.0", false, 0, boot), false},
		{"boot, no gateway", v, r("10.244.2.0/24", "", false, 0, boot), false},
		{"boot, another metric", v, r("10.244.2.0/24", "10.244.2.0", false, 100, boot), false},
		{"boot, via another address than the subnet's .0", v, r("10.244.2.0/24", "10.244.2.1", false, 0, boot), false},
		{"static, flannel's shape", v, r("10.244.2.0/24", "10.244.2.0", false, 0, unix.RTPROT_STATIC), false},
		{"a routing daemon's (bird)", v, r("10.244.2.0/24", "10.244.2.0", false, 0, unix.RTPROT_BIRD), false},
		{"no Network: flannel's shape is not taken over", none, r("10.244.2.0/24", "10.244.2.0", false, 0, boot), false},
		{"no Network: weft's own on the device", none, r("10.244.2.0/24", "10.244.2.0", false, 717826, RouteProtocol), true},
	} {
		if got := ownsRoute(tc.v.cfg.Network, tc.r); got != tc.want {
			t.Errorf("%s (%s): ownsRoute = %t, want %t", tc.name, tc.r, got, tc.want)
		}
	}
}

func TestValidatePeer(t *testing.T) {
	for _, bad := range []Peer{
		{Subnet: netip.MustParsePrefix("fd00::/64"), PublicIP: peerB().PublicIP, VtepMAC: macB},
		{Subnet: peerB().Subnet, VtepMAC: macB},
		{Subnet: peerB().Subnet, PublicIP: netip.MustParseAddr("198.18.0.1"), VtepMAC: macB},
		{Subnet: peerB().Subnet, PublicIP: peerB().PublicIP, VtepMAC: macB[:4]},
	} {
		if _, err := validatePeer(bad, netip.MustParseAddr("198.18.0.1")); err == nil {
			t.Errorf("validatePeer(%+v) = nil error", bad)
		}
	}
}

func TestRecord(t *testing.T) {
	s := stateOf(t, "fdb 0a:00:00:00:00:02 198.18.0.2", "fdb 0a:00:00:00:00:02 198.18.0.9",
		"route 10.244.2.0/24 10.244.2.0 onlink", "route 10.244.2.0/24 198.18.0.2 underlay metric 717826")
	for _, o := range []op{
		// Already a remote: a replace changes nothing.
		{kind: opFDBSet, fdb: fdbEntry{MAC: "0a:00:00:00:00:02", Dst: netip.MustParseAddr("198.18.0.9")}},
		{kind: opFDBDel, fdb: fdbEntry{MAC: "0a:00:00:00:00:02", Dst: netip.MustParseAddr("198.18.0.2")}},
		// A new remote rewrites the first one.
		{kind: opFDBSet, fdb: fdbEntry{MAC: "0a:00:00:00:00:02", Dst: netip.MustParseAddr("198.18.0.7")}},
		{kind: opFDBSet, fdb: fdbEntry{MAC: "0a:00:00:00:00:03", Dst: netip.MustParseAddr("198.18.0.3")}},
		{kind: opFDBDel, fdb: fdbEntry{MAC: "0a:00:00:00:00:03", Dst: netip.MustParseAddr("198.18.0.3")}},
		// A route replace overwrites the route to its destination at its
		// metric; the one at another metric stays.
		{kind: opRouteSet, route: routeEntry{Dst: netip.MustParsePrefix("10.244.2.0/24"), Gw: netip.MustParseAddr("10.244.2.0"), Proto: RouteProtocol}},
		{kind: opRouteSet, route: routeEntry{Dst: netip.MustParsePrefix("10.244.3.0/24"), Gw: netip.MustParseAddr("10.244.3.0"), Proto: RouteProtocol}},
		{kind: opRouteDel, route: routeEntry{Dst: netip.MustParsePrefix("10.244.3.0/24"), Gw: netip.MustParseAddr("10.244.3.0"), Proto: RouteProtocol}},
	} {
		s.record(o)
	}
	want := []string{"fdb 0a:00:00:00:00:02 198.18.0.7", "route 10.244.2.0/24 10.244.2.0", "route 10.244.2.0/24 198.18.0.2 underlay metric 717826"}
	if d := cmp.Diff(want, stateLines(s)); d != "" {
		t.Errorf("state (-want +got):\n%s", d)
	}
}
