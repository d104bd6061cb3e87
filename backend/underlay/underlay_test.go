package underlay

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/host"
	"github.com/weftnet/weft/test/nettest"
)

// newNode builds, in namespaces made for the test:
//
//	node: eth0 198.18.0.2/24 (default via 198.18.0.1) ── peer
//	      eth1 198.18.1.2/24 (MTU 1400)               ── peer
//
// and returns node opened as a host.
func newNode(t *testing.T) *host.NS {
	t.Helper()
	node := nettest.NewNS(t, "ul-node")
	peer := nettest.NewNS(t, "ul-peer")
	nettest.Veth(t, node, "eth0", "198.18.0.2/24", peer, "p0", "198.18.0.1/24")
	nettest.Veth(t, node, "eth1", "198.18.1.2/24", peer, "p1", "198.18.1.1/24")
	h := nettest.Handle(t, node.NetNS)
	eth1, err := h.LinkByName("eth1")
	if err == nil {
		err = h.LinkSetMTU(eth1, 1400)
	}
	if err != nil {
		t.Fatalf("set eth1 MTU: %v", err)
	}
	if err := h.RouteAdd(&netlink.Route{Gw: net.ParseIP("198.18.0.1")}); err != nil {
		t.Fatalf("add default route: %v", err)
	}
	return openHost(t, node)
}

// openHost opens n, closed in t.Cleanup.
func openHost(t *testing.T, n *nettest.NS) *host.NS {
	t.Helper()
	h, err := host.Open(n.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

func TestFind(t *testing.T) {
	nettest.Privileged(t)
	h := newNode(t)
	for _, tc := range []struct {
		name       string
		opts       Options
		wantName   string
		wantIP     string
		wantPublic string // "" = wantIP
	}{
		{"by name", Options{Ifaces: []string{"eth1"}}, "eth1", "198.18.1.2", ""},
		{"by IP", Options{Ifaces: []string{"198.18.1.2"}}, "eth1", "198.18.1.2", ""},
		{"first iface wins", Options{Ifaces: []string{"eth0", "eth1"}}, "eth0", "198.18.0.2", ""},
		{"missing iface skipped", Options{Ifaces: []string{"eth9", "198.18.7.7", "eth1"}}, "eth1", "198.18.1.2", ""},
		{"iface before regex", Options{Ifaces: []string{"eth1"}, IfaceRegex: []string{"^eth0$"}}, "eth1", "198.18.1.2", ""},
		{"regex on name", Options{IfaceRegex: []string{"^eth1$"}}, "eth1", "198.18.1.2", ""},
		{"regex on IP", Options{IfaceRegex: []string{`^198\.18\.1\.`}}, "eth1", "198.18.1.2", ""},
		{"regexes in order", Options{IfaceRegex: []string{"^wlan", "1$", "^eth"}}, "eth1", "198.18.1.2", ""},
		{"regex skips lo", Options{IfaceRegex: []string{"^(lo|eth0)$"}}, "eth0", "198.18.0.2", ""},
		{"regex before can-reach", Options{IfaceRegex: []string{"eth0"}, CanReach: "198.18.1.77"}, "eth0", "198.18.0.2", ""},
		{"can reach", Options{CanReach: "198.18.1.77"}, "eth1", "198.18.1.2", ""},
		{"can reach via default", Options{CanReach: "203.0.113.5"}, "eth0", "198.18.0.2", ""},
		{"default route", Options{}, "eth0", "198.18.0.2", ""},
		{"public IP", Options{PublicIP: "203.0.113.9"}, "eth0", "198.18.0.2", "203.0.113.9"},
		{"public IP with iface", Options{Ifaces: []string{"eth1"}, PublicIP: "203.0.113.9"}, "eth1", "198.18.1.2", "203.0.113.9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := Find(h, tc.opts)
			if err != nil {
				t.Fatalf("Find(%+v): %v", tc.opts, err)
			}
			link, err := h.LinkByName(tc.wantName)
			if err != nil {
				t.Fatal(err)
			}
			pub := tc.wantPublic
			if pub == "" {
				pub = tc.wantIP
			}
			want := Underlay{
				Name: tc.wantName, Index: link.Attrs().Index, MTU: link.Attrs().MTU,
				IP: netip.MustParseAddr(tc.wantIP), PublicIP: netip.MustParseAddr(pub),
			}
			if u.SkippedIPv6 = nil; !reflect.DeepEqual(u, want) {
				t.Fatalf("Find(%+v) = %+v, want %+v", tc.opts, u, want)
			}
		})
	}
	if u, _ := Find(h, Options{Ifaces: []string{"eth1"}}); u.MTU != 1400 {
		t.Fatalf("eth1 MTU = %d, want 1400", u.MTU)
	}
}

func TestFindNoMatch(t *testing.T) {
	nettest.Privileged(t)
	h := newNode(t)
	for _, tc := range []struct {
		name  string
		opts  Options
		tried []string // substrings, in order
	}{
		{"no fallback to default route", Options{Ifaces: []string{"eth9", "198.18.9.9"}, IfaceRegex: []string{"^wlan", "^lo$"}},
			[]string{"--iface=eth9: no such interface", "--iface=198.18.9.9: no interface has this address",
				"--iface-regex=^wlan: matches no interface", "--iface-regex=^lo$: matches lo, without a usable IPv4 or IPv6"}},
		{"iface without a usable address", Options{Ifaces: []string{"lo", "127.0.0.1", "::1"}},
			[]string{"--iface=lo: interface lo has no usable IPv4 or IPv6 global unicast address (skipped ::1: not a global unicast address)",
				"--iface=127.0.0.1: not an IPv4 global unicast", "--iface=::1: not a global unicast address"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := Find(h, tc.opts)
			var nf *NotFoundError
			if !errors.As(err, &nf) || !errors.Is(err, ErrNotFound) {
				t.Fatalf("Find(%+v) = %+v, %v; want *NotFoundError", tc.opts, u, err)
			}
			if len(nf.Tried) != len(tc.tried) {
				t.Fatalf("tried %q, want %d entries", nf.Tried, len(tc.tried))
			}
			for i, want := range tc.tried {
				if !strings.Contains(nf.Tried[i], want) || !strings.Contains(err.Error(), nf.Tried[i]) {
					t.Errorf("attempt %d = %q, want it to contain %q (error: %v)", i, nf.Tried[i], want, err)
				}
			}
		})
	}
}

// TestFindNoRoute checks can-reach and the default route in a namespace with no
// routes beyond its connected one.
func TestFindNoRoute(t *testing.T) {
	nettest.Privileged(t)
	node := nettest.NewNS(t, "ul-bare")
	peer := nettest.NewNS(t, "ul-peer")
	nettest.Veth(t, node, "eth0", "198.18.0.2/24", peer, "p0", "198.18.0.1/24")
	h := openHost(t, node)

	_, err := Find(h, Options{Ifaces: []string{"eth9"}, IfaceRegex: []string{"^wlan"}, CanReach: "203.0.113.5"})
	var nf *NotFoundError
	if !errors.As(err, &nf) || len(nf.Tried) != 3 || !strings.Contains(nf.Tried[2], "--iface-can-reach=203.0.113.5: no route") {
		t.Fatalf("Find(every selector misses) = %v, want three misses ending with can-reach", err)
	}
	t.Logf("error when nothing matches: %v", err)
	_, err = Find(h, Options{})
	if !errors.As(err, &nf) || len(nf.Tried) != 1 || !strings.Contains(nf.Tried[0], "default route: none in the main table, IPv4 or IPv6") {
		t.Fatalf("Find without default route = %v, want a default-route miss", err)
	}
}

func TestValidate(t *testing.T) {
	for _, o := range []Options{
		{IfaceRegex: []string{"eth("}},
		{PublicIP: "203.0.113"},
		{PublicIP: "2001:db8::1"},
		{PublicIPv6: "198.18.0.1"},
		{PublicIPv6: "::ffff:198.18.0.1"}, // IPv4-mapped: an IPv4 address
		{PublicIPv6: "fe80::1%eth0"},
		{PublicIPv6: "2001:db8::g"},
		{CanReach: "fe80::1%eth0"},
		{CanReach: "example.com"},
		{Ifaces: []string{""}},
	} {
		if err := o.Validate(); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("Validate(%+v) = %v, want ErrInvalidOptions", o, err)
		}
		// Find validates before it touches the kernel: a nil handle is never used.
		if _, err := Find(nil, o); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("Find(%+v) = %v, want ErrInvalidOptions", o, err)
		}
	}
	for _, ok := range []Options{
		{Ifaces: []string{"eth0", "10.0.0.1"}, IfaceRegex: []string{`^en`}, CanReach: "192.0.2.1", PublicIP: "::ffff:203.0.113.9"},
		{Ifaces: []string{"2001:db8::2"}, CanReach: "2001:db8::1", PublicIPv6: "2001:db8::9"},
	} {
		if err := ok.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v", ok, err)
		}
	}
}

func TestDefaultLinkIndex(t *testing.T) {
	_, dst, _ := net.ParseCIDR("10.0.0.0/8")
	_, zero, _ := net.ParseCIDR("0.0.0.0/0")
	for _, tc := range []struct {
		name   string
		routes []netlink.Route
		want   int
		ok     bool
	}{
		{"none", nil, 0, false},
		{"only specific", []netlink.Route{{Dst: dst, LinkIndex: 2}}, 0, false},
		{"nil dst", []netlink.Route{{Dst: dst, LinkIndex: 2}, {LinkIndex: 3}}, 3, true},
		{"zero dst", []netlink.Route{{Dst: zero, LinkIndex: 4}}, 4, true},
		{"lowest metric", []netlink.Route{{Dst: zero, LinkIndex: 4, Priority: 200}, {Dst: zero, LinkIndex: 5, Priority: 100}, {Dst: zero, LinkIndex: 6, Priority: 100}}, 5, true},
		{"multipath", []netlink.Route{{Dst: zero, MultiPath: []*netlink.NexthopInfo{{LinkIndex: 7}, {LinkIndex: 8}}}}, 7, true},
	} {
		if got, ok := defaultLinkIndex(tc.routes); got != tc.want || ok != tc.ok {
			t.Errorf("%s: defaultLinkIndex = %d, %v; want %d, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

// ip runs `ip args...` inside n and fails the test on error.
func ip(t *testing.T, n *nettest.NS, args ...string) {
	t.Helper()
	if out, err := n.Exec(t, "ip", args...); err != nil {
		t.Fatalf("ip %s in %s: %v: %s", strings.Join(args, " "), n.Name, err, out)
	}
}

// newNode6 builds, in namespaces made for the test, a node with no IPv4 default
// route (an IPv6-only node's view):
//
//	node: eth0 198.18.0.2/24, fd00:18::2/64              ── peer
//	      eth1 fd00:19::2/64 (MTU 1400, default via fd00:19::1) ── peer
func newNode6(t *testing.T) (*host.NS, *nettest.NS) {
	t.Helper()
	node := nettest.NewNS(t, "ul-node6")
	peer := nettest.NewNS(t, "ul-peer")
	nettest.Veth(t, node, "eth0", "198.18.0.2/24", peer, "p0", "198.18.0.1/24")
	nettest.Veth(t, node, "eth1", "", peer, "p1", "")
	ip(t, node, "-6", "addr", "add", "fd00:18::2/64", "dev", "eth0", "nodad")
	ip(t, node, "-6", "addr", "add", "fd00:19::2/64", "dev", "eth1", "nodad")
	ip(t, peer, "-6", "addr", "add", "fd00:19::1/64", "dev", "p1", "nodad")
	ip(t, node, "link", "set", "eth1", "mtu", "1400")
	ip(t, node, "-6", "route", "add", "default", "via", "fd00:19::1", "dev", "eth1")
	return openHost(t, node), node
}

func TestFindIPv6(t *testing.T) {
	nettest.Privileged(t)
	h, node := newNode6(t)
	a := netip.MustParseAddr
	for _, tc := range []struct {
		name       string
		opts       Options
		wantName   string
		want4      string // "" = none
		want6      string // "" = none
		wantPublic string // "" = want6
	}{
		{"IPv6 default route", Options{}, "eth1", "", "fd00:19::2", ""},
		{"by IPv6 address", Options{Ifaces: []string{"fd00:18::2"}}, "eth0", "198.18.0.2", "fd00:18::2", ""},
		{"by name, both families", Options{Ifaces: []string{"eth0"}}, "eth0", "198.18.0.2", "fd00:18::2", ""},
		{"by name, IPv6 only", Options{Ifaces: []string{"eth1"}}, "eth1", "", "fd00:19::2", ""},
		{"missing IPv6 address skipped", Options{Ifaces: []string{"fd00:77::1", "eth1"}}, "eth1", "", "fd00:19::2", ""},
		{"regex on IPv6", Options{IfaceRegex: []string{`^fd00:18:`}}, "eth0", "198.18.0.2", "fd00:18::2", ""},
		{"can reach IPv6", Options{CanReach: "fd00:18::77"}, "eth0", "198.18.0.2", "fd00:18::2", ""},
		{"can reach IPv6 via default", Options{CanReach: "2001:db8::1"}, "eth1", "", "fd00:19::2", ""},
		{"public IPv6", Options{PublicIPv6: "2001:db8::9"}, "eth1", "", "fd00:19::2", "2001:db8::9"},
		{"public IPv6 held picks its interface", Options{PublicIPv6: "fd00:18::2"}, "eth0", "198.18.0.2", "fd00:18::2", ""},
		{"public IPv4 held picks its interface", Options{PublicIP: "198.18.0.2"}, "eth0", "198.18.0.2", "fd00:18::2", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := Find(h, tc.opts)
			if err != nil {
				t.Fatalf("Find(%+v): %v", tc.opts, err)
			}
			link, err := h.LinkByName(tc.wantName)
			if err != nil {
				t.Fatal(err)
			}
			want := Underlay{Name: tc.wantName, Index: link.Attrs().Index, MTU: link.Attrs().MTU}
			if tc.want4 != "" {
				want.IP, want.PublicIP = a(tc.want4), a(tc.want4)
			}
			if tc.want6 != "" {
				want.IPv6, want.PublicIPv6 = a(tc.want6), a(tc.want6)
			}
			if tc.wantPublic != "" {
				want.PublicIPv6 = a(tc.wantPublic)
			}
			for _, s := range u.SkippedIPv6 { // only the link-local address
				if s.Reason != ReasonLinkLocal {
					t.Errorf("skipped %v", s)
				}
			}
			if u.SkippedIPv6 = nil; !reflect.DeepEqual(u, want) {
				t.Fatalf("Find(%+v) = %+v, want %+v", tc.opts, u, want)
			}
		})
	}
	if u, _ := Find(h, Options{}); u.MTU != 1400 {
		t.Fatalf("eth1 MTU = %d, want 1400", u.MTU)
	}
	// An IPv4 default route wins over the IPv6 one.
	ip(t, node, "route", "add", "default", "via", "198.18.0.1")
	if u, err := Find(h, Options{}); err != nil || u.Name != "eth0" || u.IP != a("198.18.0.2") || u.IPv6 != a("fd00:18::2") {
		t.Fatalf("Find with both default routes = %+v, %v; want eth0 with both addresses", u, err)
	}
}

// TestFindIPv6Flags: the IPv6 addresses an underlay must not use (flannel#2045,
// #2293) are skipped with a reason, a permanent address is preferred over a dynamic
// one, and an interface with no usable address names each skipped one. Every
// unusable or dynamic address is added after the good one, so the kernel lists it
// first: without its check, Find would pick it.
func TestFindIPv6Flags(t *testing.T) {
	nettest.Privileged(t)
	node := nettest.NewNS(t, "ul-flags")
	peer := nettest.NewNS(t, "ul-peer")
	nettest.Veth(t, node, "eth2", "198.18.2.2/24", peer, "p2", "198.18.2.1/24")
	nettest.Veth(t, node, "eth3", "", peer, "p3", "")
	h := openHost(t, node)

	// eth2, in order added (the kernel lists them newest first):
	ip(t, peer, "-6", "addr", "add", "fd00:22::7/64", "dev", "p2", "nodad") // the peer owns fd00:22::7
	err := node.Do(func(ns.NetNS) error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/eth2/use_tempaddr", []byte("2"), 0o644)
	})
	if err != nil {
		t.Fatalf("use_tempaddr on eth2: %v", err)
	}
	// The good one; mngtmpaddr with use_tempaddr makes the kernel add a temporary
	// (privacy) address in its prefix.
	ip(t, node, "-6", "addr", "add", "fd00:20::1/64", "dev", "eth2", "mngtmpaddr", "nodad")
	ip(t, node, "-6", "addr", "add", "fd00:30::1/64", "dev", "eth2", "nodad", "valid_lft", "1000", "preferred_lft", "1000") // dynamic
	ip(t, node, "-6", "addr", "add", "fd00:21::5/64", "dev", "eth2", "nodad", "preferred_lft", "0")                         // deprecated
	ip(t, node, "-6", "addr", "add", "fd00:22::7/64", "dev", "eth2")                                                        // DAD fails
	// eth3's peer is down: no carrier, so DAD never runs and its address stays tentative.
	ip(t, peer, "link", "set", "p3", "down")
	ip(t, node, "-6", "addr", "add", "fd00:23::8/64", "dev", "eth3")

	// Wait for DAD to fail on fd00:22::7 (the peer answers the first solicitation).
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := node.Exec(t, "ip", "-6", "addr", "show", "dev", "eth2", "dadfailed")
		if err != nil {
			t.Fatalf("ip addr show: %v: %s", err, out)
		}
		if strings.Contains(out, "fd00:22::7") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("DAD did not fail for fd00:22::7: %s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	out, _ := node.Exec(t, "ip", "-6", "addr", "show")
	t.Logf("addresses:\n%s", out)

	u, err := Find(h, Options{Ifaces: []string{"eth2"}})
	if err != nil {
		t.Fatalf("Find(eth2): %v", err)
	}
	if u.IP != netip.MustParseAddr("198.18.2.2") || u.IPv6 != netip.MustParseAddr("fd00:20::1") || u.PublicIPv6 != u.IPv6 {
		t.Fatalf("Find(eth2) = %+v; want IPv4 198.18.2.2 and the permanent, non-temporary fd00:20::1", u)
	}
	reasons := map[string]string{}
	for _, s := range u.SkippedIPv6 {
		switch {
		case s.Addr.IsLinkLocalUnicast():
			reasons["link-local"] = s.Reason
		case netip.MustParsePrefix("fd00:20::/64").Contains(s.Addr):
			reasons["temporary"] = s.Reason
		default:
			reasons[s.Addr.String()] = s.Reason
		}
	}
	want := map[string]string{
		"link-local": ReasonLinkLocal, "temporary": ReasonTemporary,
		"fd00:21::5": ReasonDeprecated, "fd00:22::7": ReasonDADFailed,
	}
	if !reflect.DeepEqual(reasons, want) {
		t.Fatalf("skipped %v: reasons %v, want %v", u.SkippedIPv6, reasons, want)
	}

	// Without the permanent one, the dynamic one is used.
	ip(t, node, "-6", "addr", "del", "fd00:20::1/64", "dev", "eth2")
	if u, err := Find(h, Options{Ifaces: []string{"eth2"}}); err != nil || u.IPv6 != netip.MustParseAddr("fd00:30::1") {
		t.Fatalf("Find(eth2) without the permanent address = %+v, %v; want the dynamic fd00:30::1", u, err)
	}

	// An explicitly named unusable address is refused with its reason; an interface
	// with only unusable addresses is not chosen, and the error names each one.
	_, err = Find(h, Options{Ifaces: []string{"fd00:21::5", "fd00:22::7", "eth3"}})
	var nf *NotFoundError
	if !errors.As(err, &nf) || len(nf.Tried) != 3 {
		t.Fatalf("Find(unusable) = %v; want *NotFoundError with 3 attempts", err)
	}
	for i, want := range []string{
		"--iface=fd00:21::5: " + ReasonDeprecated,
		"--iface=fd00:22::7: " + ReasonDADFailed,
		"--iface=eth3: interface eth3 has no usable IPv4 or IPv6 global unicast address (skipped fd00:23::8: " + ReasonTentative,
	} {
		if !strings.Contains(nf.Tried[i], want) {
			t.Errorf("attempt %d = %q, want %q", i, nf.Tried[i], want)
		}
	}
	t.Logf("error: %v", err)
}

// TestFindSettledWaitsForDAD: an interface whose IPv6 address is still in
// duplicate address detection (as right after boot) gets it once DAD ends,
// within the wait, where Find alone runs without it; with no DAD under way
// FindSettled answers at once.
func TestFindSettledWaitsForDAD(t *testing.T) {
	nettest.Privileged(t)
	node := nettest.NewNS(t, "ul-dad")
	peer := nettest.NewNS(t, "ul-dadpeer")
	nettest.Veth(t, node, "eth0", "198.18.0.2/24", peer, "p0", "198.18.0.1/24")
	nettest.Veth(t, node, "eth1", "", peer, "p1", "")
	h := openHost(t, node)
	// No carrier on eth1 (its peer is down): DAD cannot run, the address stays tentative.
	ip(t, peer, "link", "set", "p1", "down")
	ip(t, node, "-6", "addr", "add", "fd00:31::2/64", "dev", "eth1")

	u, err := Find(h, Options{Ifaces: []string{"eth1"}})
	if err == nil && u.IPv6.IsValid() {
		t.Fatalf("Find took the tentative address: %+v", u)
	}
	// Carrier in 300 ms: DAD runs (one solicitation, 1 s) and the address is usable.
	go func() {
		time.Sleep(300 * time.Millisecond)
		_, _ = peer.Exec(t, "ip", "link", "set", "p1", "up")
	}()
	start := time.Now()
	u, err = FindSettled(t.Context(), h, Options{Ifaces: []string{"eth1"}}, 15*time.Second, nil)
	if err != nil || u.IPv6 != netip.MustParseAddr("fd00:31::2") {
		t.Fatalf("FindSettled = %+v, %v; want fd00:31::2 once DAD is over", u, err)
	}
	t.Logf("settled after %s", time.Since(start).Round(10*time.Millisecond))

	// Nothing tentative: no wait, even when IPv6 is missing.
	start = time.Now()
	u, err = FindSettled(t.Context(), h, Options{Ifaces: []string{"eth0"}}, 15*time.Second, nil)
	if err != nil || u.IPv6.IsValid() || time.Since(start) > 2*time.Second {
		t.Fatalf("FindSettled(eth0) = %+v, %v after %s; want IPv4 only at once", u, err, time.Since(start))
	}
}
