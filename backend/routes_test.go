package backend

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/host"
)

// fakeRoute is a route on link idx as `ip route` would add it: protocol boot
// unless proto is given, onlink when it has a gateway, scope link when not.
func fakeRoute(idx int, dst, gw string, proto netlink.RouteProtocol, metric int) *netlink.Route {
	r := &netlink.Route{LinkIndex: idx, Dst: host.PrefixIPNet(netip.MustParsePrefix(dst)), Protocol: proto, Priority: metric}
	if gw == "" {
		r.Scope = netlink.SCOPE_LINK
	} else {
		r.Gw = netip.MustParseAddr(gw).AsSlice()
		r.Flags = int(netlink.FLAG_ONLINK)
	}
	return r
}

// hasFakeRoute reports whether f holds a route to dst at metric, whatever
// its other attributes (so the check does not depend on how routes render).
func hasFakeRoute(t *testing.T, f *host.Fake, dst string, metric int) bool {
	t.Helper()
	rs, err := f.RouteListFiltered(unix.AF_INET, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if p, ok := host.IPNetPrefix(r.Dst); ok && p == netip.MustParsePrefix(dst) && r.Priority == metric {
			return true
		}
	}
	return false
}

// TestReconcileKeepsForeignRoutesOverFake: a reconcile deletes, of the
// routes on the device, only weft's own and the peer routes flannel left
// (protocol boot, metric 0, inside the Network, via the subnet's .0); it
// leaves an operator's routes alone and repairs weft's (one deleted, one
// changed behind its back).
func TestReconcileKeepsForeignRoutesOverFake(t *testing.T) {
	f, v, _ := programmedFake(t) // peers b (10.244.2.0/24) and c (10.244.3.0/24)
	dev, err := f.LinkByName("flannel.1")
	if err != nil {
		t.Fatal(err)
	}
	idx := dev.Attrs().Index
	foreign := []struct {
		why    string
		route  *netlink.Route
		dst    string
		metric int
	}{
		{"outside the Network (`ip route add 192.0.2.0/24 dev flannel.1`)", fakeRoute(idx, "192.0.2.0/24", "", 0, 0), "192.0.2.0/24", 0},
		{"outside the Network, flannel's shape", fakeRoute(idx, "192.0.3.0/24", "192.0.3.0", 0, 0), "192.0.3.0/24", 0},
		{"inside the Network, protocol static", fakeRoute(idx, "10.244.9.0/24", "10.244.9.0", unix.RTPROT_STATIC, 0), "10.244.9.0/24", 0},
		{"inside the Network, no gateway", fakeRoute(idx, "10.244.8.0/24", "", 0, 0), "10.244.8.0/24", 0},
		{"inside the Network, another metric", fakeRoute(idx, "10.244.7.0/24", "10.244.7.0", 0, 100), "10.244.7.0/24", 100},
		{"inside the Network, gateway not the subnet's .0", fakeRoute(idx, "10.244.5.0/24", "10.244.5.1", 0, 0), "10.244.5.0/24", 0},
	}
	flannel := []struct{ dst, gw string }{
		{"10.244.3.0/24", "10.244.3.0"}, // c's route as flannel left it, next to weft's
		{"10.244.6.0/24", "10.244.6.0"}, // a departed peer's
	}
	for _, r := range foreign {
		if err := f.RouteReplace(r.route); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range flannel {
		if err := f.RouteReplace(fakeRoute(idx, r.dst, r.gw, 0, 0)); err != nil {
			t.Fatal(err)
		}
	}
	// b's route deleted by hand; c's changed behind our back (same metric).
	if err := f.RouteDel(&netlink.Route{LinkIndex: idx, Dst: host.PrefixIPNet(netip.MustParsePrefix("10.244.2.0/24")), Priority: 717826}); err != nil {
		t.Fatal(err)
	}
	if err := f.RouteReplace(fakeRoute(idx, "10.244.3.0/24", "10.244.3.99", unix.RTPROT_STATIC, 717827)); err != nil {
		t.Fatal(err)
	}
	f.ResetOps()

	if err := v.reconcile(); err != nil {
		t.Fatalf("reconcile: %v", err)
	}
	for _, r := range foreign {
		if !hasFakeRoute(t, f, r.dst, r.metric) {
			t.Errorf("reconcile deleted a route it does not own: %s metric %d (%s)", r.dst, r.metric, r.why)
		}
	}
	for _, r := range flannel {
		if hasFakeRoute(t, f, r.dst, 0) {
			t.Errorf("flannel's route %s via %s not taken over", r.dst, r.gw)
		}
	}
	if d := cmp.Diff([]string{
		"route replace 10.244.2.0/24 via 10.244.2.0 dev flannel.1 proto 119 onlink metric 717826",
		"route replace 10.244.3.0/24 via 10.244.3.0 dev flannel.1 proto 119 onlink metric 717827",
		"route del 10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink",
		"route del 10.244.6.0/24 via 10.244.6.0 dev flannel.1 onlink",
	}, routeOps(f.Ops())); d != "" {
		t.Errorf("reconcile writes (-want +got):\n%s", d)
	}
	want := `route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 proto 119 onlink metric 717826
route 10.244.3.0/24 via 10.244.3.0 dev flannel.1 proto 119 onlink metric 717827
route 10.244.5.0/24 via 10.244.5.1 dev flannel.1 onlink
route 10.244.7.0/24 via 10.244.7.0 dev flannel.1 onlink metric 100
route 10.244.8.0/24 dev flannel.1 scope link
route 10.244.9.0/24 via 10.244.9.0 dev flannel.1 proto static onlink
route 192.0.2.0/24 dev flannel.1 scope link
route 192.0.3.0/24 via 192.0.3.0 dev flannel.1 onlink`
	if d := cmp.Diff(lines(want), lines(f.Lines("route"))); d != "" {
		t.Errorf("routes after reconcile (-want +got):\n%s", d)
	}
	// Converged: the next reconcile writes nothing.
	f.ResetOps()
	if err := v.reconcile(); err != nil {
		t.Fatalf("second reconcile: %v", err)
	}
	if ops := routeOps(f.Ops()); len(ops) != 0 {
		t.Errorf("second reconcile wrote %q", ops)
	}
}

// routeOps keeps the route writes of ops (a reconcile also re-applies the
// device's settings).
func routeOps(ops []string) []string {
	var res []string
	for _, op := range ops {
		if strings.HasPrefix(op, "route ") {
			res = append(res, op)
		}
	}
	return res
}
