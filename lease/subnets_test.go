package lease

import (
	"errors"
	"math/big"
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

func lease6(subnet6, ip6, name string) Lease {
	a := testAttrs6()
	a.PublicIPv6, a.NodeName = netip.MustParseAddr(ip6), name
	return Lease{IPv6Subnet: netip.MustParsePrefix(subnet6), Attrs: a, LeaseID: 1}
}

func leaseDual(subnet, subnet6, ip, name string) Lease {
	l := lease4(subnet, ip, name)
	a6 := testAttrs6()
	l.IPv6Subnet, l.Attrs.PublicIPv6, l.Attrs.BackendV6Data = netip.MustParsePrefix(subnet6), a6.PublicIPv6, a6.BackendV6Data
	return l
}

// A flannel node picks its IPv6 block at random, independently of its IPv4
// block: the block paired by index with a free IPv4 block may be taken.
func TestChooseDualAvoidsFlannelRandomIPv6Block(t *testing.T) {
	n := mustNetwork(t, `{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.2.0","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetMin":"fc00:0:0:1::","IPv6SubnetMax":"fc00:0:0:2::"}`)
	// flannel took 10.244.1.0 with the IPv6 block of index 1, fc00:0:0:2::.
	flannel := leaseDual("10.244.1.0/24", "fc00:0:0:2::/64", "198.18.0.1", "")
	r := Request{Attrs: testAttrsDual()}
	for range 20 {
		c, err := Choose(n, []Lease{flannel}, r)
		if err != nil || c.Existing != nil {
			t.Fatalf("%+v %v", c, err)
		}
		if c.Subnet.String() != "10.244.2.0/24" || c.IPv6Subnet.String() != "fc00:0:0:1::/64" {
			t.Fatalf("chose %s & %s, want 10.244.2.0/24 & fc00:0:0:1::/64 (the only free block of each family)", c.Subnet, c.IPv6Subnet)
		}
	}
	// Our previous IPv6 block is taken: a free one instead, the IPv4 one kept.
	r.Prev, r.PrevIPv6 = netip.MustParsePrefix("10.244.2.0/24"), netip.MustParsePrefix("fc00:0:0:2::/64")
	c, err := Choose(n, []Lease{flannel}, r)
	if err != nil || !c.FromPrev || c.FromPrevIPv6 || c.IPv6Subnet.String() != "fc00:0:0:1::/64" {
		t.Errorf("prev v6 taken: %+v %v", c, err)
	}
	// Every IPv6 block taken: out of IPv6 subnets, although an IPv4 block is free.
	full := []Lease{flannel, lease6("fc00:0:0:1::/64", "fd00::9", "")}
	_, err = Choose(n, full, Request{Attrs: testAttrsDual()})
	var oos *OutOfSubnetsError
	if !errors.As(err, &oos) || !oos.IPv6 || oos.Total != 2 || !strings.Contains(err.Error(), "IPv6 subnets") {
		t.Errorf("v6 full: %v", err)
	}
}

// An IPv6-only network of 2^32 blocks: the pick looks at the blocks in use
// and a window of free ones, never at the whole range.
func TestPickFreeIPv6OnlyHugeRange(t *testing.T) {
	n := mustNetwork(t, `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/32"}`)
	taken := map[netip.Prefix]bool{}
	for i := range 300 {
		p := netip.PrefixFrom(addBlocks(n.IPv6SubnetMin, 64, big.NewInt(int64(i))), 64)
		taken[p] = true
	}
	// A wide prefix in use covers many blocks: skipped in one step.
	taken[netip.MustParsePrefix("fc00:0:0:8000::/49")] = true
	for range 50 {
		v4, v6, err := n.PickFree(taken)
		if err != nil || v4.IsValid() || !n.FitsIPv6(v6) || taken[v6] {
			t.Fatalf("PickFree = %s %s %v", v4, v6, err)
		}
		if i := new(big.Int).Sub(new(big.Int).SetBytes(v6.Addr().AsSlice()[:8]), new(big.Int).SetBytes(n.IPv6SubnetMin.AsSlice()[:8])); i.Int64() < 300 || i.Int64() >= 300+PickWindow {
			t.Fatalf("picked %s (index %s), want one of the first %d free", v6, i, PickWindow)
		}
	}
	if got := n.ipv6Range().total(); got != 1<<32-1 {
		t.Errorf("total = %d", got)
	}
	// Fill a small range that the wide prefix covers but for one block.
	n = mustNetwork(t, `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/60"}`)
	taken = map[netip.Prefix]bool{netip.MustParsePrefix("fc00::/61"): true, netip.MustParsePrefix("fc00:0:0:8::/62"): true,
		netip.MustParsePrefix("fc00:0:0:c::/63"): true, netip.MustParsePrefix("fc00:0:0:e::/64"): true}
	_, v6, err := n.PickFree(taken)
	if err != nil || v6.String() != "fc00:0:0:f::/64" {
		t.Fatalf("last block: %s %v", v6, err)
	}
	taken[v6] = true
	_, _, err = n.PickFree(taken)
	var oos *OutOfSubnetsError
	if !errors.As(err, &oos) || !oos.IPv6 || oos.Total != 15 || oos.Used != 15 {
		t.Errorf("full: %v", err)
	}
}

func TestChooseIPv6Only(t *testing.T) {
	n := mustNetwork(t, `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48"}`)
	peers := []Lease{lease6("fc00:0:0:1::/64", "fd00::1", ""), lease6("fc00:0:0:2::/64", "fd00::2", "b")}
	req := func(ip6, name string) Request {
		r := Request{Attrs: testAttrs6()}
		r.Attrs.PublicIPv6, r.Attrs.NodeName = netip.MustParseAddr(ip6), name
		return r
	}
	// Ours by PublicIPv6: all IPv6-only leases share the zero PublicIP and Subnet.
	c, err := Choose(n, peers, req("fd00::1", ""))
	if err != nil || c.Existing == nil || c.Existing.Key() != "0.0.0.0-0&fc00:0:0:1::-64" {
		t.Errorf("by PublicIPv6: %+v %v", c, err)
	}
	c, err = Choose(n, peers, req("fd00::9", ""))
	if err != nil || c.Existing != nil || c.Subnet.IsValid() || !n.FitsIPv6(c.IPv6Subnet) ||
		c.IPv6Subnet.String() == "fc00:0:0:1::/64" || c.IPv6Subnet.String() == "fc00:0:0:2::/64" {
		t.Errorf("new node: %+v %v", c, err)
	}
	if _, err := Choose(n, peers, req("fd00::2", "z")); !errors.Is(err, ErrPublicIPInUse) || !strings.Contains(err.Error(), "fd00::2") {
		t.Errorf("our PublicIPv6 under another name: %v", err)
	}
	// PrevIPv6 preferred when free.
	r := req("fd00::9", "")
	r.PrevIPv6 = netip.MustParsePrefix("fc00:0:0:7::/64")
	if c, err = Choose(n, peers, r); err != nil || !c.FromPrevIPv6 || c.IPv6Subnet != r.PrevIPv6 {
		t.Errorf("prev: %+v %v", c, err)
	}
	// Our old dual-stack lease no longer fits an IPv6-only config: stale, its
	// IPv6 block free again.
	old := leaseDual("10.244.1.0/24", "fc00:0:0:7::/64", "198.18.0.9", "")
	old.Attrs.PublicIPv6 = netip.MustParseAddr("fd00::9")
	if c, err = Choose(n, append(peers, old), r); err != nil || len(c.Stale) != 1 || c.IPv6Subnet != r.PrevIPv6 {
		t.Errorf("stale dual: %+v %v", c, err)
	}
	// The network became dual stack: our IPv6-only lease (no PublicIP) is
	// still found by its PublicIPv6, stale, and its IPv6 block is ours again.
	dual := mustNetwork(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48"}`)
	rd := Request{Attrs: testAttrsDual(), PrevIPv6: netip.MustParsePrefix("fc00:0:0:7::/64")}
	rd.Attrs.PublicIPv6 = netip.MustParseAddr("fd00::9")
	mine := lease6("fc00:0:0:7::/64", rd.Attrs.PublicIPv6.String(), "")
	if c, err = Choose(dual, append(peers, mine), rd); err != nil || len(c.Stale) != 1 || c.Stale[0].Key() != mine.Key() ||
		c.IPv6Subnet != rd.PrevIPv6 || !c.Subnet.IsValid() {
		t.Errorf("IPv6-only lease after the switch to dual stack: %+v %v", c, err)
	}
	// A value that does not match the config is refused.
	bad := req("fd00::9", "")
	bad.Attrs.PublicIP = netip.MustParseAddr("198.18.0.9")
	if _, err := Choose(n, peers, bad); err == nil || !strings.Contains(err.Error(), "IPv6-only") {
		t.Errorf("PublicIP in IPv6-only: %v", err)
	}
	if _, err := Choose(mustNetwork(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48"}`), nil, Request{Attrs: testAttrs()}); err == nil {
		t.Error("dual stack without BackendV6Data accepted")
	}
}

// A lease must have exactly the families the config enables.
func TestFitsLeaseFamilies(t *testing.T) {
	v4 := mustNetwork(t, `{"Network":"10.244.0.0/16"}`)
	dual := mustNetwork(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48"}`)
	v6 := mustNetwork(t, `{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48"}`)
	l4 := lease4("10.244.1.0/24", "198.18.0.1", "")
	ld := leaseDual("10.244.1.0/24", "fc00:0:0:1::/64", "198.18.0.1", "")
	l6 := lease6("fc00:0:0:1::/64", "fd00::1", "")
	for _, tc := range []struct {
		name string
		n    *Network
		l    Lease
		want bool
	}{
		{"v4 in v4", v4, l4, true}, {"dual in v4", v4, ld, false}, {"v6 in v4", v4, l6, false},
		{"v4 in dual", dual, l4, false}, {"dual in dual", dual, ld, true}, {"v6 in dual", dual, l6, false},
		{"v4 in v6", v6, l4, false}, {"dual in v6", v6, ld, false}, {"v6 in v6", v6, l6, true},
	} {
		if got := tc.n.FitsLease(tc.l); got != tc.want {
			t.Errorf("%s: FitsLease = %v", tc.name, got)
		}
	}
}
