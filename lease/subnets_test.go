package lease

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func mustNetwork(t *testing.T, raw string) *Network {
	t.Helper()
	n, err := ParseNetwork([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestPickFreeFillsNetworkThenReportsCounts(t *testing.T) {
	n := mustNetwork(t, `{"Network":"10.244.0.0/16"}`)
	taken := map[netip.Prefix]bool{}
	for i := range 255 {
		v4, _, err := n.PickFree(taken)
		if err != nil {
			t.Fatalf("pick %d: %v", i, err)
		}
		if taken[v4] || !n.Fits(v4) || v4.Addr() == netip.MustParseAddr("10.244.0.0") {
			t.Fatalf("pick %d: %s taken, outside or the first block", i, v4)
		}
		taken[v4] = true
	}
	taken[netip.MustParsePrefix("192.168.0.0/24")] = true // outside: not counted
	_, _, err := n.PickFree(taken)
	var oos *OutOfSubnetsError
	if !errors.As(err, &oos) || !errors.Is(err, ErrOutOfSubnets) || oos.Used != 255 || oos.Total != 255 {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(err.Error(), "out of subnets: 255 of 255") {
		t.Errorf("message %q", err)
	}
}

func TestPickFreeStaysInWindow(t *testing.T) {
	n := mustNetwork(t, `{"Network":"10.0.0.0/12"}`)
	for range 200 {
		v4, _, err := n.PickFree(nil)
		if err != nil {
			t.Fatal(err)
		}
		if i := n.Index(v4); i < 0 || i >= PickWindow {
			t.Fatalf("picked %s (index %d), outside the first %d free", v4, i, PickWindow)
		}
	}
}

func TestFits(t *testing.T) {
	n := mustNetwork(t, `{"Network":"10.244.0.0/16","SubnetMin":"10.244.10.0","SubnetMax":"10.244.20.0"}`)
	for p, want := range map[string]bool{
		"10.244.10.0/24": true, "10.244.20.0/24": true, "10.244.9.0/24": false, "10.244.21.0/24": false,
		"10.244.10.0/25": false, "10.245.10.0/24": false, "10.244.0.0/24": false,
	} {
		if got := n.Fits(netip.MustParsePrefix(p)); got != want {
			t.Errorf("Fits(%s) = %v", p, got)
		}
	}
	if n.TotalBlocks() != 11 || !n.Contains(netip.MustParseAddr("10.244.0.9")) || n.Contains(netip.MustParseAddr("10.245.0.1")) {
		t.Errorf("TotalBlocks %d / Contains wrong", n.TotalBlocks())
	}
}

func lease4(subnet, ip, name string) Lease {
	a := testAttrs()
	a.PublicIP, a.NodeName = netip.MustParseAddr(ip), name
	return Lease{Subnet: netip.MustParsePrefix(subnet), Attrs: a, LeaseID: 1}
}

func TestChooseOrder(t *testing.T) {
	n := mustNetwork(t, `{"Network":"10.244.0.0/16"}`)
	peers := []Lease{lease4("10.244.1.0/24", "198.18.0.1", "a"), lease4("10.244.2.0/24", "198.18.0.2", "")}
	req := func(ip, name, prev string) Request {
		r := Request{Attrs: testAttrs()}
		r.Attrs.PublicIP, r.Attrs.NodeName = netip.MustParseAddr(ip), name
		if prev != "" {
			r.Prev = netip.MustParsePrefix(prev)
		}
		return r
	}
	// (1) by NodeName, even with a new PublicIP.
	c, err := Choose(n, peers, req("198.18.0.9", "a", "10.244.7.0/24"))
	if err != nil || c.Existing == nil || c.Existing.Subnet.String() != "10.244.1.0/24" {
		t.Errorf("by name: %+v %v", c, err)
	}
	// (1) by PublicIP of a lease without a name (a flannel lease).
	c, err = Choose(n, peers, req("198.18.0.2", "b", ""))
	if err != nil || c.Existing == nil || c.Existing.Subnet.String() != "10.244.2.0/24" {
		t.Errorf("by IP: %+v %v", c, err)
	}
	// Our PublicIP held by another named node: refused.
	_, err = Choose(n, peers, req("198.18.0.1", "z", ""))
	if !errors.Is(err, ErrPublicIPInUse) || !strings.Contains(err.Error(), `"a"`) {
		t.Errorf("conflict: %v", err)
	}
	// (2) previous subnet when free; taken → (3) random free.
	c, err = Choose(n, peers, req("198.18.0.5", "e", "10.244.7.0/24"))
	if err != nil || c.Existing != nil || c.Subnet.String() != "10.244.7.0/24" || !c.FromPrev {
		t.Errorf("prev: %+v %v", c, err)
	}
	c, err = Choose(n, peers, req("198.18.0.5", "e", "10.244.1.0/24"))
	if err != nil || c.FromPrev || c.Subnet.String() == "10.244.1.0/24" || c.Subnet.String() == "10.244.2.0/24" || !n.Fits(c.Subnet) {
		t.Errorf("prev taken: %+v %v", c, err)
	}
	// Prev outside the config is ignored.
	c, err = Choose(n, nil, req("198.18.0.5", "e", "10.99.7.0/24"))
	if err != nil || c.FromPrev {
		t.Errorf("prev outside: %+v %v", c, err)
	}
}

func TestChooseStaleOwnLease(t *testing.T) {
	n := mustNetwork(t, `{"Network":"10.244.0.0/16","SubnetLen":25}`)
	own := lease4("10.244.1.0/24", "198.18.0.1", "a") // SubnetLen changed: no longer fits
	r := Request{Attrs: own.Attrs}
	c, err := Choose(n, []Lease{own}, r)
	if err != nil || c.Existing != nil || len(c.Stale) != 1 || !n.Fits(c.Subnet) {
		t.Errorf("stale: %+v %v", c, err)
	}
	own.Reservation, own.LeaseID = true, 0
	c, err = Choose(n, []Lease{own}, r)
	if err != nil || len(c.Stale) != 0 {
		t.Errorf("a reservation is never stale-deleted: %+v %v", c, err)
	}
}
