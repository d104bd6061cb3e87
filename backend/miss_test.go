package backend

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/host"
)

const devIdx = 7

func l3Miss(ip string) netlink.NeighUpdate {
	u := netlink.NeighUpdate{Type: unix.RTM_GETNEIGH}
	u.Neigh = netlink.Neigh{LinkIndex: devIdx, Family: unix.AF_INET, State: netlink.NUD_INCOMPLETE, IP: net.ParseIP(ip)}
	return u
}

func l2Miss(mac net.HardwareAddr) netlink.NeighUpdate {
	u := netlink.NeighUpdate{Type: unix.RTM_GETNEIGH}
	u.Neigh = netlink.Neigh{LinkIndex: devIdx, Family: unix.AF_BRIDGE, State: netlink.NUD_STALE, HardwareAddr: mac}
	return u
}

// answerText renders a decision as golden text.
func answerText(a missAnswer, ok bool) string {
	switch {
	case !ok:
		return "not a miss"
	case a.peer == nil:
		return a.kind + " ignored"
	}
	s := []string{a.kind + " " + a.peer.Name, op{kind: opFDBSet, fdb: a.fdb}.String()}
	if a.neigh != nil {
		s = append(s, op{kind: opNeighSet, neigh: *a.neigh}.String())
	}
	return strings.Join(s, "; ")
}

func TestDecideMiss(t *testing.T) {
	other := l3Miss("10.244.2.0")
	other.LinkIndex = devIdx + 1
	ours := l3Miss("10.244.2.0")
	ours.Type = unix.RTM_NEWNEIGH
	ours.HardwareAddr = macB
	v6 := l3Miss("fe80::1")
	tests := []struct {
		name string
		u    netlink.NeighUpdate
		mode Mode
		want string
	}{
		{"l3 for peer .0", l3Miss("10.244.2.0"), ModeProactive,
			"l3 b; fdb replace 0a:00:00:00:00:02 dst 198.18.0.2; neigh replace 10.244.2.0 lladdr 0a:00:00:00:00:02 permanent"},
		{"l3 for a pod IP, proactive: not ours to answer", l3Miss("10.244.2.7"), ModeProactive, "l3 ignored"},
		{"l3 for a pod IP, on-demand: ages like a learnt entry", l3Miss("10.244.3.7"), ModeOnDemand,
			"l3 c; fdb replace 0a:00:00:00:00:03 dst 198.18.1.3; neigh replace 10.244.3.7 lladdr 0a:00:00:00:00:03"},
		{"l3 for a peer .0, on-demand", l3Miss("10.244.3.0"), ModeOnDemand,
			"l3 c; fdb replace 0a:00:00:00:00:03 dst 198.18.1.3; neigh replace 10.244.3.0 lladdr 0a:00:00:00:00:03 permanent"},
		{"l3 outside every peer", l3Miss("10.244.9.1"), ModeOnDemand, "l3 ignored"},
		{"l3 for a direct-routing peer is ignored", l3Miss("10.244.4.0"), ModeProactive, "l3 ignored"},
		{"l2 for a peer's VtepMAC", l2Miss(macC), ModeProactive, "l2 c; fdb replace 0a:00:00:00:00:03 dst 198.18.1.3"},
		{"l2 for an unknown MAC", l2Miss(macX), ModeProactive, "l2 ignored"},
		{"another link", other, ModeProactive, "not a miss"},
		{"our own write echoed back", ours, ModeProactive, "not a miss"},
		{"IPv6 link-local", v6, ModeProactive, "not a miss"},
	}
	direct := peerC()
	direct.Name, direct.Subnet, direct.VtepMAC = "d", netip.MustParsePrefix("10.244.4.0/24"), macX
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tbl := desiredOf(t, tc.mode, netip.Prefix{}, nil, tablePeers(t, map[string]bool{"d": true}, peerB(), peerC(), direct)).t
			if got := answerText(decideMiss(tc.u, devIdx, false, tbl)); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

// newFakeVXLAN returns a datapath over a Fake with an underlay "eth0"
// (198.18.0.1/24, MTU 1500) and a fixed device MAC.
func newFakeVXLAN(t *testing.T, f *host.Fake, mode Mode, obs Observer) *VXLAN {
	t.Helper()
	var idx int
	if l, err := f.LinkByName("eth0"); err == nil {
		idx = l.Attrs().Index
	} else {
		idx = f.AddUnderlay("eth0", 1500, netip.MustParsePrefix("198.18.0.1/24"))
	}
	v, err := New(f, Config{
		Device:   DeviceConfig{LocalIP: netip.MustParseAddr("198.18.0.1"), UnderlayIndex: idx},
		Mode:     mode,
		Network:  netip.MustParsePrefix("10.244.0.0/16"),
		Observer: obs,
	}, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	v.device.newMAC = func() (net.HardwareAddr, error) { return net.HardwareAddr{0x0e, 0, 0, 0, 0, 1}, nil }
	return v
}

func TestHandleMissOverFake(t *testing.T) {
	f := host.NewFake()
	var answered, ignored []string
	v := newFakeVXLAN(t, f, ModeOnDemand, Observer{
		MissAnswered: func(kind string, _ time.Duration) { answered = append(answered, kind) },
		MissIgnored:  func(kind string) { ignored = append(ignored, kind) },
	})
	dev, err := v.EnsureDevice()
	if err != nil {
		t.Fatal(err)
	}
	if err := v.SetPeers([]Peer{peerB(), peerC()}); err != nil {
		t.Fatal(err)
	}
	f.ResetOps()
	for _, u := range []netlink.NeighUpdate{l3Miss("10.244.2.9"), l2Miss(macC), l3Miss("10.244.77.1")} {
		u.LinkIndex = dev.Index
		if err := v.HandleMiss(u); err != nil {
			t.Fatalf("HandleMiss: %v", err)
		}
	}
	want := []string{
		"fdb replace 0a:00:00:00:00:02 dev flannel.1 self dst 198.18.0.2 permanent",
		"neigh replace 10.244.2.9 lladdr 0a:00:00:00:00:02 dev flannel.1 reachable",
		"fdb replace 0a:00:00:00:00:03 dev flannel.1 self dst 198.18.1.3 permanent",
	}
	if d := cmp.Diff(want, f.Ops()); d != "" {
		t.Errorf("writes (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"l3", "l2"}, answered); d != "" {
		t.Errorf("answered (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"l3"}, ignored); d != "" {
		t.Errorf("ignored (-want +got):\n%s", d)
	}
	// The next SetPeers activates b (asked for by the L3 miss) and c (the
	// L2 miss), then removing them removes everything the misses wrote.
	f.ResetOps()
	if err := v.SetPeers([]Peer{peerB(), peerC()}); err != nil {
		t.Fatal(err)
	}
	if got := f.Lines("route"); !strings.Contains(got, "10.244.2.0/24 via 10.244.2.0") || !strings.Contains(got, "10.244.3.0/24 via 10.244.3.0") {
		t.Errorf("peers not activated by their misses; routes:\n%s", got)
	}
	if err := v.SetPeers(nil); err != nil {
		t.Fatal(err)
	}
	if got := f.Lines("neigh", "fdb", "route"); got != "route 10.244.0.0/16 dev flannel.1 proto 119 scope link" {
		t.Errorf("after the peers left:\n%s", got)
	}
}

func TestOnDemandRestartAdoptsPeers(t *testing.T) {
	f := host.NewFake()
	v := newFakeVXLAN(t, f, ModeOnDemand, Observer{})
	dev, err := v.EnsureDevice()
	if err != nil {
		t.Fatal(err)
	}
	if err := v.SetPeers([]Peer{peerB(), peerC()}); err != nil {
		t.Fatal(err)
	}
	miss := l3Miss("10.244.2.0")
	miss.LinkIndex = dev.Index
	if err := v.HandleMiss(miss); err != nil {
		t.Fatal(err)
	}
	if err := v.SetPeers([]Peer{peerB(), peerC()}); err != nil {
		t.Fatal(err)
	}
	before := f.Lines("neigh", "fdb", "route")

	// A new process keeps b (found in the kernel) without rewriting it and
	// does not program c, which no miss asked for.
	f.ResetOps()
	v2 := newFakeVXLAN(t, f, ModeOnDemand, Observer{})
	if _, err := v2.EnsureDevice(); err != nil {
		t.Fatal(err)
	}
	if err := v2.SetPeers([]Peer{peerB(), peerC()}); err != nil {
		t.Fatal(err)
	}
	for _, op := range f.Ops() {
		if strings.HasPrefix(op, "neigh ") || strings.HasPrefix(op, "fdb") || strings.HasPrefix(op, "route") {
			t.Errorf("restart wrote %q", op)
		}
	}
	if got := f.Lines("neigh", "fdb", "route"); got != before || !strings.Contains(got, "10.244.2.0/24 via") {
		t.Errorf("state after restart:\n%s\nwant:\n%s", got, before)
	}
}
