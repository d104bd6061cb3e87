package underlay

import (
	"errors"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"

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
