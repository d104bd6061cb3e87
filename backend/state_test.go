package backend

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
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
// "route 10.244.4.0/24 198.18.0.4 underlay".
func stateOf(t *testing.T, lines ...string) state {
	t.Helper()
	s := newState()
	for _, l := range lines {
		f := strings.Fields(l)
		switch f[0] {
		case "neigh":
			ip := netip.MustParseAddr(f[1])
			s.neigh[ip] = neighEntry{IP: ip, MAC: f[2], Permanent: len(f) > 3 && f[3] == "permanent"}
		case "fdb":
			s.fdb[fdbEntry{MAC: f[1], Dst: netip.MustParseAddr(f[2])}] = struct{}{}
		case "route":
			r := routeEntry{Dst: netip.MustParsePrefix(f[1])}
			if f[2] != "-" {
				r.Gw = netip.MustParseAddr(f[2])
			}
			for _, flag := range f[3:] {
				r.Onlink = r.Onlink || flag == "onlink"
				r.Underlay = r.Underlay || flag == "underlay"
			}
			s.route[r] = struct{}{}
		default:
			t.Fatalf("bad state line %q", l)
		}
	}
	return s
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
		"route 10.244.2.0/24 10.244.2.0 onlink",
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
			"route replace 10.244.2.0/24 via 10.244.2.0 dev vxlan onlink",
			"neigh replace 10.244.3.0 lladdr 0a:00:00:00:00:03 permanent",
			"fdb replace 0a:00:00:00:00:03 dst 198.18.1.3",
			"route replace 10.244.3.0/24 via 10.244.3.0 dev vxlan onlink",
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
			"route del 10.244.2.0/24 via 10.244.2.0 dev vxlan onlink",
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
		have:  []string{"neigh 10.244.2.0 0a:00:00:00:00:02", "fdb 0a:00:00:00:00:02 198.18.0.2", "fdb 0a:00:00:00:00:02 198.18.0.99", "route 10.244.2.0/24 10.244.2.0 onlink"},
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
			"route replace 10.244.2.0/24 via 198.18.0.2 dev underlay",
			"route del 10.244.2.0/24 via 10.244.2.0 dev vxlan onlink",
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
			"route replace 10.244.2.0/24 via 10.244.2.0 dev vxlan onlink",
			"neigh del 10.244.3.5 lladdr 0a:00:00:00:00:02",
			"neigh del 10.244.9.9 lladdr 0a:00:00:00:00:09",
		},
	}, {
		name:  "mode switched to proactive: the Network route goes",
		have:  append([]string{"route 10.244.0.0/16 -"}, bEntries...),
		peers: []Peer{peerB()},
		want:  []string{"route del 10.244.0.0/16 dev vxlan"},
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
			want := buildDesired(tablePeers(t, tc.direct, tc.peers...), mode, network, active)
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

func TestBuildTableRejectsConflicts(t *testing.T) {
	dupSubnet, dupMAC := peerC(), peerC()
	dupSubnet.Subnet, dupSubnet.VtepMAC = peerB().Subnet, macX
	dupMAC.Subnet = netip.MustParsePrefix("10.244.4.0/24")
	dupMAC.VtepMAC = macB
	tbl, errs := buildTable(ModeProactive, tablePeers(t, nil, peerB(), dupSubnet, dupMAC))
	if len(tbl.peers) != 1 || len(errs) != 2 {
		t.Fatalf("peers %d, errs %v; want b only and two errors", len(tbl.peers), errs)
	}
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
