package host

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/test/nettest"
)

// openNS opens a fresh namespace, closed and removed in t.Cleanup.
func openNS(t *testing.T) *NS {
	t.Helper()
	nettest.Privileged(t)
	path := nettest.NewNS(t, "hst").Path
	n, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

// addDummy adds an up link (one end of a veth pair: this kernel may lack the
// dummy driver) with addr (setup for production only).
func addDummy(t *testing.T, n *NS, name string, addr netip.Prefix) int {
	t.Helper()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: 1500}, PeerName: name + "p"}
	if err := n.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	l, err := n.LinkByName(name)
	if err == nil {
		err = n.AddrReplace(l, &netlink.Addr{IPNet: PrefixIPNet(addr)})
	}
	if err == nil {
		err = n.LinkSetUp(l)
	}
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Index
}

func TestOpenIsolatesTheNamespace(t *testing.T) {
	n := openNS(t)
	self, err := Open("")
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	id, err := n.ID()
	if err != nil {
		t.Fatal(err)
	}
	selfID, err := self.ID()
	if err != nil {
		t.Fatal(err)
	}
	if id == selfID {
		t.Fatalf("namespace and caller's share ID %d", id)
	}
	links, err := n.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	if len(links) != 1 || links[0].Attrs().Name != "lo" {
		t.Fatalf("fresh namespace lists %d links", len(links))
	}
	var dev string
	if err := n.Do(func() error {
		b, err := os.ReadFile("/proc/thread-self/net/dev")
		dev = string(b)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Count(dev, ":") != 1 { // only lo
		t.Fatalf("Do does not run in the namespace: /proc/thread-self/net/dev is\n%s", dev)
	}
}

func TestSetAppSolicit(t *testing.T) {
	n := openNS(t)
	idx := addDummy(t, n, "eth0", netip.MustParsePrefix("192.0.2.1/24"))
	if err := n.SetAppSolicit(unix.AF_INET, idx, 3); err != nil {
		t.Fatal(err)
	}
	if v, err := n.ReadSysctl("net/ipv4/neigh/eth0/app_solicit"); err != nil || strings.TrimSpace(v) != "3" {
		t.Fatalf("app_solicit reads %q, %v; want 3", v, err)
	}
	// The IPv6 neighbour table (NDP) is set apart: the IPv4 write left it
	// alone, and its own write reaches it.
	if v, err := n.ReadSysctl("net/ipv6/neigh/eth0/app_solicit"); err != nil || strings.TrimSpace(v) != "0" {
		t.Fatalf("IPv6 app_solicit reads %q, %v; want 0 before it is set", v, err)
	}
	if err := n.SetAppSolicit(unix.AF_INET6, idx, 2); err != nil {
		t.Fatal(err)
	}
	if v, err := n.ReadSysctl("net/ipv6/neigh/eth0/app_solicit"); err != nil || strings.TrimSpace(v) != "2" {
		t.Fatalf("IPv6 app_solicit reads %q, %v; want 2", v, err)
	}
	if err := n.SetAppSolicit(unix.AF_INET, 9999, 3); err == nil {
		t.Fatal("SetAppSolicit on an absent link succeeded")
	}
	if err := n.SetAppSolicit(unix.AF_BRIDGE, idx, 3); !errors.Is(err, unix.EAFNOSUPPORT) {
		t.Fatalf("SetAppSolicit(AF_BRIDGE) = %v, want EAFNOSUPPORT", err)
	}
}

func TestCloneIsTheSameNamespace(t *testing.T) {
	n := openNS(t)
	c, err := n.Clone()
	if err != nil {
		t.Fatal(err)
	}
	cn := c.(*NS)
	idN, errN := n.ID()
	idC, errC := cn.ID()
	if err := errors.Join(errN, errC); err != nil || idN != idC {
		t.Fatalf("IDs %d and %d (%v)", idN, idC, err)
	}
	addDummy(t, cn, "eth0", netip.MustParsePrefix("192.0.2.1/24"))
	if _, err := n.LinkByName("eth0"); err != nil {
		t.Fatalf("link added through the clone: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := n.LinkByName("eth0"); err != nil {
		t.Fatalf("original after closing the clone: %v", err)
	}
}

func TestSubscriptionsEndWithContext(t *testing.T) {
	n := openNS(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var errs []error
	onErr := func(err error) { errs = append(errs, err) }
	links, err := n.SubscribeLinks(ctx, onErr)
	if err != nil {
		t.Fatal(err)
	}
	neighs, err := n.SubscribeNeigh(ctx, onErr)
	if err != nil {
		t.Fatal(err)
	}
	idx := addDummy(t, n, "eth0", netip.MustParsePrefix("192.0.2.1/24"))
	for u := range links {
		if u.Attrs().Index == idx {
			break
		}
	}
	if err := n.NeighSet(&netlink.Neigh{LinkIndex: idx, IP: net.ParseIP("192.0.2.9"),
		HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 9}, State: netlink.NUD_PERMANENT}); err != nil {
		t.Fatal(err)
	}
	for u := range neighs {
		if u.IP.Equal(net.ParseIP("192.0.2.9")) {
			break
		}
	}
	cancel()
	waitClosed(t, links)
	waitClosed(t, neighs)
	if len(errs) != 0 {
		t.Fatalf("ended by ctx, onErr told %v", errs)
	}
}

// family is one address family's values for apply and report.
type family struct {
	af                 int
	dev                string
	local, peerPub, gw string // the device's local IP, the peer's public IP and .0
	addr, subnet       netip.Prefix
	addrFlags          int
	sysctl             string // the neighbour table's directory under /proc/sys
}

var (
	ipv4 = family{af: unix.AF_INET, dev: "flannel.1", local: "192.0.2.1", peerPub: "192.0.2.2", gw: "10.244.2.0",
		addr: netip.MustParsePrefix("10.244.1.0/32"), subnet: netip.MustParsePrefix("10.244.2.0/24"), sysctl: "net/ipv4/neigh/"}
	ipv6 = family{af: unix.AF_INET6, dev: "flannel-v6.1", local: "fd00::1", peerPub: "fd00::2", gw: "fd10:244:2::",
		addr: netip.MustParsePrefix("fd10:244:1::/128"), subnet: netip.MustParsePrefix("fd10:244:2::/64"),
		addrFlags: unix.IFA_F_NODAD, sysctl: "net/ipv6/neigh/"}
)

// apply performs the same writes on any Host: a VXLAN device of family fm
// over the underlay u, with an address, a neighbour, an FDB entry, a route
// (without a metric) and app_solicit.
func apply(h Host, u int, fm family) error {
	mac := net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1}
	peer := net.HardwareAddr{0x02, 0xbb, 0, 0, 0, 2}
	local := net.ParseIP(fm.local)
	if fm.af == unix.AF_INET {
		local = local.To4()
	}
	vx := &netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{Name: fm.dev, MTU: 1430, HardwareAddr: mac},
		VxlanId:   1, VtepDevIndex: u, SrcAddr: local, Port: 8472, L2miss: true,
	}
	if err := h.LinkAdd(vx); err != nil {
		return fmt.Errorf("link add: %w", err)
	}
	l, err := h.LinkByName(fm.dev)
	if err != nil {
		return err
	}
	idx := l.Attrs().Index
	steps := []func() error{
		// No link-local address (the kernel's would show in the dumps).
		func() error { return h.LinkSetIP6AddrGenMode(l, 1) },
		func() error { return h.LinkSetUp(l) },
		func() error {
			return h.AddrReplace(l, &netlink.Addr{IPNet: PrefixIPNet(fm.addr), Flags: fm.addrFlags})
		},
		func() error {
			return h.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: fm.af, State: netlink.NUD_PERMANENT,
				IP: net.ParseIP(fm.gw), HardwareAddr: peer})
		},
		func() error {
			return h.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT,
				Flags: netlink.NTF_SELF, IP: net.ParseIP(fm.peerPub), HardwareAddr: peer})
		},
		func() error {
			return h.RouteReplace(&netlink.Route{LinkIndex: idx, Dst: PrefixIPNet(fm.subnet),
				Gw: net.ParseIP(fm.gw), Flags: int(netlink.FLAG_ONLINK), Protocol: 119})
		},
		func() error { return h.SetAppSolicit(fm.af, idx, 3) },
	}
	for i, s := range steps {
		if err := s(); err != nil {
			return fmt.Errorf("step %d: %w", i, err)
		}
	}
	return nil
}

// report renders what h reports about fm's device through the Host methods.
func report(h Host, fm family) ([]string, error) {
	l, err := h.LinkByName(fm.dev)
	if err != nil {
		return nil, err
	}
	vx := l.(*netlink.Vxlan)
	a := l.Attrs()
	out := []string{fmt.Sprintf("link %s vxlan id %d local %s port %d l2miss %t learning %t mtu %d mac %s up %t",
		a.Name, vx.VxlanId, vx.SrcAddr, vx.Port, vx.L2miss, vx.Learning, a.MTU, a.HardwareAddr, a.Flags&net.FlagUp != 0)}
	addrs, err := h.AddrList(l, fm.af)
	if err != nil {
		return nil, err
	}
	for _, ad := range addrs {
		out = append(out, fmt.Sprintf("addr %s nodad %t", ad.IPNet, ad.Flags&unix.IFA_F_NODAD != 0))
	}
	neighs, err := h.NeighList(a.Index, fm.af)
	if err != nil {
		return nil, err
	}
	for _, n := range neighs {
		out = append(out, fmt.Sprintf("neigh %s lladdr %s state %#x", n.IP, n.HardwareAddr, n.State))
	}
	fdb, err := h.NeighList(a.Index, unix.AF_BRIDGE)
	if err != nil {
		return nil, err
	}
	for _, n := range fdb {
		out = append(out, fmt.Sprintf("fdb %s dst %s", n.HardwareAddr, n.IP))
	}
	routes, err := h.RouteListFiltered(fm.af, &netlink.Route{LinkIndex: a.Index}, netlink.RT_FILTER_OIF)
	if err != nil {
		return nil, err
	}
	for _, r := range routes {
		out = append(out, fmt.Sprintf("route %s via %s proto %d onlink %t metric %d",
			r.Dst, r.Gw, r.Protocol, r.Flags&int(netlink.FLAG_ONLINK) != 0, r.Priority))
	}
	v, err := h.ReadSysctl(fm.sysctl + fm.dev + "/app_solicit")
	if err != nil {
		return nil, err
	}
	out = append(out, "app_solicit "+strings.TrimSpace(v))
	slices.Sort(out)
	return out, nil
}

// TestFakeReportsWhatProductionReports applies the same writes to a Fake and
// to a namespace and compares what each then reports, for an IPv4 and an
// IPv6 device.
func TestFakeReportsWhatProductionReports(t *testing.T) {
	for _, fm := range []family{ipv4, ipv6} {
		t.Run(fm.dev, func(t *testing.T) {
			n := openNS(t)
			under := netip.MustParsePrefix(fm.local + "/24")
			if fm.af == unix.AF_INET6 {
				under = netip.MustParsePrefix(fm.local + "/64")
			}
			nu := addDummy(t, n, "eth0", under)
			f := NewFake()
			fu := f.AddUnderlay("eth0", 1500, under)
			if err := apply(n, nu, fm); err != nil {
				t.Fatalf("namespace: %v", err)
			}
			if err := apply(f, fu, fm); err != nil {
				t.Fatalf("fake: %v", err)
			}
			got, err := report(n, fm)
			if err != nil {
				t.Fatalf("namespace: %v", err)
			}
			want, err := report(f, fm)
			if err != nil {
				t.Fatalf("fake: %v", err)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("namespace reports\n%s\nfake reports\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			t.Logf("both report\n%s\nfake recorded\n%s", strings.Join(got, "\n"), strings.Join(f.Ops(), "\n"))
		})
	}
}

func TestCloseTwice(t *testing.T) {
	n := openNS(t)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
