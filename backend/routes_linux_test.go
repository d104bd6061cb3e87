package backend

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/host"
)

// TestReconcileKeepsOperatorRoute: an operator's route on flannel.1 outside
// the Network survives a reconcile, while a deleted weft route is repaired.
func TestReconcileKeepsOperatorRoute(t *testing.T) {
	a, b := startPair(t, ModeProactive)
	idx := a.dev.Index
	operator := &netlink.Route{LinkIndex: idx, Dst: host.PrefixIPNet(netip.MustParsePrefix("192.0.2.0/24")), Scope: netlink.SCOPE_LINK}
	if err := a.h.RouteAdd(operator); err != nil { // `ip route add 192.0.2.0/24 dev flannel.1`: protocol boot
		t.Fatalf("add operator route: %v", err)
	}
	ours := func() *netlink.Route {
		t.Helper()
		rs, err := a.h.RouteListFiltered(unix.AF_INET, &netlink.Route{LinkIndex: idx, Dst: host.PrefixIPNet(b.lease)},
			netlink.RT_FILTER_OIF|netlink.RT_FILTER_DST)
		if err != nil {
			t.Fatalf("list routes: %v", err)
		}
		if len(rs) != 1 {
			return nil
		}
		return &rs[0]
	}
	r := ours()
	if r == nil {
		t.Fatalf("no route to %s", b.lease)
	}
	if err := a.h.RouteDel(r); err != nil {
		t.Fatalf("delete weft's route: %v", err)
	}
	before := a.rec.reconciles()
	a.v.requestReconcile()
	waitFor(t, "reconcile", func() bool { return a.rec.reconciles() > before })

	out, _ := a.ns.Exec(t, "ip", "route", "show", "dev", "flannel.1")
	t.Logf("ip route show dev flannel.1:\n%s", out)
	if r := ours(); r == nil || r.Protocol != 119 || r.Priority != int(peerMetric(b.lease)) {
		t.Errorf("weft's route to %s after the reconcile: %+v, want it back at protocol 119, metric %d", b.lease, r, peerMetric(b.lease))
	}
	rs, err := a.h.RouteListFiltered(unix.AF_INET, &netlink.Route{LinkIndex: idx, Dst: operator.Dst}, netlink.RT_FILTER_OIF|netlink.RT_FILTER_DST)
	if err != nil || len(rs) != 1 {
		t.Errorf("operator route 192.0.2.0/24 dev flannel.1 after the reconcile: %+v (%v), want it kept", rs, err)
	}
	if !strings.Contains(out, "192.0.2.0/24") || !strings.Contains(out, b.lease.String()+" via "+gw(b).String()) {
		t.Errorf("ip route shows:\n%s", out)
	}
	a.mustPing(t, gw(b))
}
