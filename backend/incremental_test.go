package backend

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/weftnet/weft/host"
)

// manyPeers returns n peers: 10.244.<10+i>.0/24 at 198.18.1.<i+1> with
// VtepMAC 0a:00:00:01:00:<i+1>.
func manyPeers(n int) []Peer {
	peers := make([]Peer, n)
	for i := range peers {
		peers[i] = Peer{
			Subnet:   netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(10 + i), 0}), 24),
			PublicIP: netip.AddrFrom4([4]byte{198, 18, 1, byte(i + 1)}),
			VtepMAC:  net.HardwareAddr{0x0a, 0, 0, 1, 0, byte(i + 1)},
			Name:     fmt.Sprintf("n%d", i),
		}
	}
	return peers
}

// TestSetPeersIncrementalOverFake: among 100 programmed peers, adding,
// changing and removing one writes only that peer's entries, and the result
// is what programming the final list from scratch gives.
func TestSetPeersIncrementalOverFake(t *testing.T) {
	f := host.NewFake()
	v := newFakeVXLAN(t, f, ModeProactive, Observer{})
	if _, err := v.EnsureDevice(); err != nil {
		t.Fatal(err)
	}
	peers := manyPeers(101)
	cur := slices.Clone(peers[:100])
	if err := v.SetPeers(cur); err != nil {
		t.Fatal(err)
	}
	newMAC := cur[50]
	newMAC.VtepMAC = macX
	newIP := cur[51]
	newIP.PublicIP = netip.MustParseAddr("198.18.2.52")
	steps := []struct {
		name  string
		peers []Peer
		want  []string
	}{{
		name:  "add one",
		peers: append(slices.Clone(cur), peers[100]),
		want: []string{
			"neigh replace 10.244.110.0 lladdr 0a:00:00:01:00:65 dev flannel.1 permanent",
			"fdb replace 0a:00:00:01:00:65 dev flannel.1 self dst 198.18.1.101 permanent",
			"route replace 10.244.110.0/24 via 10.244.110.0 dev flannel.1 proto 119 onlink metric 717934",
		},
	}, {
		name:  "new VtepMAC: new entries, then the stale FDB entry goes",
		peers: replaced(append(slices.Clone(cur), peers[100]), 50, newMAC),
		want: []string{
			"neigh replace 10.244.60.0 lladdr 0a:00:00:00:00:09 dev flannel.1 permanent",
			"fdb replace 0a:00:00:00:00:09 dev flannel.1 self dst 198.18.1.51 permanent",
			"fdb del 0a:00:00:01:00:33 dev flannel.1 self dst 198.18.1.51",
		},
	}, {
		// The replace rewrites the MAC's remote, so the delete of the old
		// one finds nothing (and counts as done).
		name:  "new PublicIP: the FDB entry is rewritten",
		peers: replaced(replaced(append(slices.Clone(cur), peers[100]), 50, newMAC), 51, newIP),
		want:  []string{"fdb replace 0a:00:00:01:00:34 dev flannel.1 self dst 198.18.2.52 permanent"},
	}, {
		name:  "remove one: route, neighbour, FDB entry",
		peers: slices.Delete(replaced(replaced(append(slices.Clone(cur), peers[100]), 50, newMAC), 51, newIP), 10, 11),
		want: []string{
			"route del 10.244.20.0/24 via 10.244.20.0 dev flannel.1 proto 119 onlink metric 717844",
			"neigh del 10.244.20.0 dev flannel.1",
			"fdb del 0a:00:00:01:00:0b dev flannel.1 self dst 198.18.1.11",
		},
	}}
	var last []Peer
	for _, st := range steps {
		f.ResetOps()
		if err := v.SetPeers(st.peers); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if d := cmp.Diff(st.want, f.Ops()); d != "" {
			t.Errorf("%s: writes (-want +got):\n%s", st.name, d)
		}
		last = st.peers
	}
	checkConverged(t, f, v, last)
}

// checkConverged checks that v over f holds what programming peers from
// scratch gives, and that a full diff against a kernel dump writes nothing.
func checkConverged(t *testing.T, f *host.Fake, v *VXLAN, peers []Peer) {
	t.Helper()
	g := host.NewFake()
	w := newFakeVXLAN(t, g, ModeProactive, Observer{})
	if _, err := w.EnsureDevice(); err != nil {
		t.Fatal(err)
	}
	if err := w.SetPeers(peers); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(g.Lines("neigh", "fdb", "route"), f.Lines("neigh", "fdb", "route")); d != "" {
		t.Errorf("incremental state differs from a fresh programming (-fresh +incremental):\n%s", d)
	}
	f.ResetOps()
	if _, err := v.EnsureDevice(); err != nil {
		t.Fatal(err)
	}
	if err := v.SetPeers(peers); err != nil {
		t.Fatal(err)
	}
	for _, op := range f.Ops() {
		if !strings.HasPrefix(op, "sysctl") && !strings.HasPrefix(op, "neightbl") && !strings.HasPrefix(op, "link set") {
			t.Errorf("full diff after incremental programming wrote %q", op)
		}
	}
}

func replaced(peers []Peer, i int, p Peer) []Peer {
	peers[i] = p
	return peers
}

// TestSetPeersRejectsConflicts: a duplicate subnet or a VtepMAC another peer
// holds is rejected, and the peer already programmed keeps its MAC whatever
// the list order; once it leaves, the MAC is free.
func TestSetPeersRejectsConflicts(t *testing.T) {
	f := host.NewFake()
	v := newFakeVXLAN(t, f, ModeProactive, Observer{})
	if _, err := v.EnsureDevice(); err != nil {
		t.Fatal(err)
	}
	dupSubnet, dupMAC := peerC(), peerC()
	dupSubnet.Subnet, dupSubnet.VtepMAC = peerB().Subnet, macX
	dupMAC.Subnet, dupMAC.VtepMAC = netip.MustParsePrefix("10.244.4.0/24"), macB
	err := v.SetPeers([]Peer{peerB(), dupSubnet, dupMAC})
	if n := strings.Count(fmt.Sprint(err), "invalid peer"); !errors.Is(err, ErrInvalidPeer) || n != 2 {
		t.Fatalf("SetPeers = %v; want two ErrInvalidPeer", err)
	}
	bOnly := f.Lines("neigh", "fdb", "route")
	if !strings.Contains(bOnly, "198.18.0.2") || strings.Contains(bOnly, "10.244.4.0") || strings.Contains(bOnly, macX.String()) {
		t.Errorf("state:\n%s\nwant b's entries only", bOnly)
	}
	if err := v.SetPeers([]Peer{dupMAC, peerB()}); !errors.Is(err, ErrInvalidPeer) {
		t.Errorf("SetPeers with the MAC conflict listed first = %v; want ErrInvalidPeer", err)
	}
	if got := f.Lines("neigh", "fdb", "route"); got != bOnly {
		t.Errorf("b lost its entries to a later claimant:\n%s", got)
	}
	if err := v.SetPeers([]Peer{dupMAC}); err != nil {
		t.Fatal(err)
	}
	if got := f.Lines("fdb"); got != "fdb 0a:00:00:00:00:02 dev flannel.1 self dst 198.18.1.3 permanent" {
		t.Errorf("after b left, fdb:\n%s", got)
	}
}

// TestAnswersCoalesced: answers queued together are taken in one go, and the
// peers they activate are programmed together, with nothing else written.
func TestAnswersCoalesced(t *testing.T) {
	f := host.NewFake()
	v := newFakeVXLAN(t, f, ModeOnDemand, Observer{})
	dev, err := v.EnsureDevice()
	if err != nil {
		t.Fatal(err)
	}
	peers := manyPeers(50)
	if err := v.SetPeers(peers); err != nil {
		t.Fatal(err)
	}
	for _, ip := range []string{"10.244.11.5", "10.244.12.5", "10.244.13.5"} {
		u := l3Miss(ip)
		u.LinkIndex = dev.Index
		if err := v.HandleMiss(u); err != nil {
			t.Fatal(err)
		}
	}
	f.ResetOps()
	v.takeAnswers()
	var routes []string
	for _, op := range f.Ops() {
		if strings.HasPrefix(op, "route") {
			routes = append(routes, op)
		}
	}
	want := []string{
		"route replace 10.244.11.0/24 via 10.244.11.0 dev flannel.1 proto 119 onlink metric 717835",
		"route replace 10.244.12.0/24 via 10.244.12.0 dev flannel.1 proto 119 onlink metric 717836",
		"route replace 10.244.13.0/24 via 10.244.13.0 dev flannel.1 proto 119 onlink metric 717837",
	}
	// Per peer the permanent .0 neighbour and the route: the answer
	// already wrote the FDB entry.
	if d := cmp.Diff(want, routes); d != "" || len(f.Ops()) != 6 {
		t.Errorf("activation writes %q; routes (-want +got):\n%s", f.Ops(), d)
	}
	if len(v.resp.written) != 0 || len(v.model.active) != 3 || !v.Ready() {
		t.Errorf("queued %d, active %d, ready %t", len(v.resp.written), len(v.model.active), v.Ready())
	}
}
