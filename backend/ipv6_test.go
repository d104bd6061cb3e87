package backend

import (
	"errors"
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

// The IPv6 datapath over the Fake: node a is fd00::1 on eth0 (dual stack:
// 198.18.0.1 too), lease fd10:244:0:1::/64 in the Network fd10:244::/48.

var network6 = netip.MustParsePrefix("fd10:244::/48")

func peerB6() Peer {
	return Peer{Subnet: netip.MustParsePrefix("fd10:244:0:2::/64"), PublicIP: netip.MustParseAddr("fd00::2"), VtepMAC: macB, Name: "b"}
}

func peerC6() Peer {
	return Peer{Subnet: netip.MustParsePrefix("fd10:244:0:3::/64"), PublicIP: netip.MustParseAddr("fd00:1::3"), VtepMAC: macC, Name: "c"}
}

// dualUnderlay returns eth0 in f (IPv4 and IPv6 addresses), adding it first.
func dualUnderlay(f *host.Fake) int {
	if l, err := f.LinkByName("eth0"); err == nil {
		return l.Attrs().Index
	}
	return f.AddUnderlay("eth0", 1500, netip.MustParsePrefix("198.18.0.1/24"), netip.MustParsePrefix("fd00::1/64"))
}

// newFakeVXLAN6 returns an IPv6 datapath over f with a fixed device MAC.
func newFakeVXLAN6(t *testing.T, f *host.Fake, mode Mode, edit func(*Config)) *VXLAN {
	t.Helper()
	cfg := Config{
		Device:  DeviceConfig{LocalIP: netip.MustParseAddr("fd00::1"), UnderlayIndex: dualUnderlay(f)},
		Mode:    mode,
		Network: network6,
	}
	if edit != nil {
		edit(&cfg)
	}
	v, err := New(f, cfg, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	v.device.newMAC = func() (net.HardwareAddr, error) { return net.HardwareAddr{0x0e, 0, 0, 0, 0, 6}, nil }
	return v
}

func TestIPv6DatapathOverFake(t *testing.T) {
	f := host.NewFake()
	v := newFakeVXLAN6(t, f, ModeProactive, nil)
	dev, err := v.EnsureDevice()
	if err != nil {
		t.Fatal(err)
	}
	if err := v.SetAddress(netip.MustParsePrefix("fd10:244:0:1::/64")); err != nil {
		t.Fatal(err)
	}
	if dev.Name != "flannel-v6.1" || dev.MTU != 1430 || dev.MAC.String() != "0e:00:00:00:00:06" {
		t.Errorf("device %+v", dev)
	}
	want := []string{
		"link add flannel-v6.1 vxlan id 1 local fd00::1 dev eth0 port 8472 nolearning l2miss mtu 1430",
		"link set flannel-v6.1 addrgenmode 1",
		"sysctl net/ipv6/conf/flannel-v6.1/accept_ra = 0",
		"neightbl flannel-v6.1 ndisc app_solicit 3",
		"link set flannel-v6.1 up",
		"addr replace fd10:244:0:1::/128 dev flannel-v6.1 nodad",
	}
	if d := cmp.Diff(want, f.Ops()); d != "" {
		t.Errorf("ops (-want +got):\n%s", d)
	}

	if err := v.SetPeers([]Peer{peerB6(), peerC6()}); err != nil {
		t.Fatal(err)
	}
	wantLines := `fdb 0a:00:00:00:00:02 dev flannel-v6.1 self dst fd00::2 permanent
fdb 0a:00:00:00:00:03 dev flannel-v6.1 self dst fd00:1::3 permanent
neigh fd10:244:0:2:: lladdr 0a:00:00:00:00:02 dev flannel-v6.1 permanent
neigh fd10:244:0:3:: lladdr 0a:00:00:00:00:03 dev flannel-v6.1 permanent
route fd00::/64 dev eth0 proto kernel metric 256
route fd10:244:0:1::/128 dev flannel-v6.1 proto kernel metric 256
route fd10:244:0:2::/64 via fd10:244:0:2:: dev flannel-v6.1 proto 119 onlink metric 2
route fd10:244:0:3::/64 via fd10:244:0:3:: dev flannel-v6.1 proto 119 onlink metric 3`
	if d := cmp.Diff(lines(wantLines), lines(f.Lines("neigh", "fdb", "route"))); d != "" {
		t.Errorf("state (-want +got):\n%s", d)
	}
	if !v.Ready() {
		t.Error("not Ready")
	}

	// Idempotent, and a restart (a new datapath with another MAC on offer)
	// reuses the device and its MAC and rewrites nothing.
	f.ResetOps()
	if err := v.SetPeers([]Peer{peerC6(), peerB6()}); err != nil {
		t.Fatal(err)
	}
	v2 := newFakeVXLAN6(t, f, ModeProactive, nil)
	v2.device.newMAC = func() (net.HardwareAddr, error) { return macX, nil }
	dev2, err := v2.EnsureDevice()
	if err != nil {
		t.Fatal(err)
	}
	if dev2.MAC.String() != dev.MAC.String() || dev2.Index != dev.Index {
		t.Errorf("restart got device %+v, want the existing %+v", dev2, dev)
	}
	if err := v2.SetAddress(netip.MustParsePrefix("fd10:244:0:1::/64")); err != nil {
		t.Fatal(err)
	}
	if err := v2.SetPeers([]Peer{peerB6(), peerC6()}); err != nil {
		t.Fatal(err)
	}
	for _, op := range f.Ops() {
		if !strings.HasPrefix(op, "sysctl ") && !strings.HasPrefix(op, "neightbl ") && !strings.Contains(op, "addrgenmode") &&
			op != "addr replace fd10:244:0:1::/128 dev flannel-v6.1 nodad" {
			t.Errorf("idempotent SetPeers or restart wrote %q", op)
		}
	}

	// Removal deletes the peer's three entries, route first.
	f.ResetOps()
	if err := v2.SetPeers([]Peer{peerB6()}); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{
		"route del fd10:244:0:3::/64 via fd10:244:0:3:: dev flannel-v6.1 proto 119 onlink metric 3",
		"neigh del fd10:244:0:3:: dev flannel-v6.1",
		"fdb del 0a:00:00:00:00:03 dev flannel-v6.1 self dst fd00:1::3",
	}, f.Ops()); d != "" {
		t.Errorf("removal ops (-want +got):\n%s", d)
	}
}

func TestIPv6SetAddressKeepsLinkLocal(t *testing.T) {
	f := host.NewFake()
	v := newFakeVXLAN6(t, f, ModeProactive, nil)
	if _, err := v.EnsureDevice(); err != nil {
		t.Fatal(err)
	}
	link, _ := f.LinkByName("flannel-v6.1")
	for _, p := range []string{"fd10:244:0:9::/128", "fe80::1/64", "10.244.9.0/32"} {
		if err := f.AddrReplace(link, &netlink.Addr{IPNet: host.PrefixIPNet(netip.MustParsePrefix(p))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.SetAddress(netip.MustParsePrefix("10.244.1.0/24")); err == nil {
		t.Error("SetAddress with an IPv4 lease on the IPv6 datapath succeeded")
	}
	f.ResetOps()
	if err := v.SetAddress(netip.MustParsePrefix("fd10:244:0:1::/64")); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{
		"addr replace fd10:244:0:1::/128 dev flannel-v6.1 nodad",
		"addr del fd10:244:0:9::/128 dev flannel-v6.1",
	}, f.Ops()); d != "" {
		t.Errorf("ops (-want +got):\n%s", d)
	}
	want := "addr 10.244.9.0/32 dev flannel-v6.1\naddr 198.18.0.1/24 dev eth0\naddr fd00::1/64 dev eth0\n" +
		"addr fd10:244:0:1::/128 dev flannel-v6.1 nodad\naddr fe80::1/64 dev flannel-v6.1"
	if got := f.Lines("addr"); got != want {
		t.Errorf("addresses:\n%s\nwant:\n%s", got, want)
	}
}

func TestIPv6Validation(t *testing.T) {
	f := host.NewFake()
	for name, edit := range map[string]func(*Config){
		"IPv4 Network": func(c *Config) { c.Network = netip.MustParsePrefix("10.244.0.0/16") },
		"MTU below 1280 for IPv6": func(c *Config) {
			c.Device.UnderlayMTU = 1349 // 1349 − 70 = 1279
		},
	} {
		cfg := Config{Device: DeviceConfig{LocalIP: netip.MustParseAddr("fd00::1"), UnderlayIndex: dualUnderlay(f)}, Network: network6}
		edit(&cfg)
		v, err := New(f, cfg, nil)
		if err == nil {
			_, err = v.EnsureDevice()
		}
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// An IPv6 Network on the IPv4 datapath is refused too.
	if _, err := New(f, Config{Device: DeviceConfig{LocalIP: netip.MustParseAddr("198.18.0.1"), UnderlayIndex: dualUnderlay(f)},
		Network: network6}, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("IPv6 Network on the IPv4 datapath: %v, want ErrInvalidConfig", err)
	}

	v := newFakeVXLAN6(t, f, ModeProactive, nil)
	if _, err := v.EnsureDevice(); err != nil {
		t.Fatal(err)
	}
	v4subnet, v4pub := peerC6(), peerC6()
	v4subnet.Subnet = netip.MustParsePrefix("10.244.3.0/24")
	v4pub.PublicIP = netip.MustParseAddr("198.18.0.3")
	err := v.SetPeers([]Peer{peerB6(), v4subnet, v4pub})
	if !errors.Is(err, ErrInvalidPeer) {
		t.Fatalf("SetPeers with IPv4 peers: %v, want ErrInvalidPeer", err)
	}
	for _, want := range []string{"subnet 10.244.3.0/24 is IPv4, this datapath is IPv6", "public IP 198.18.0.3 is IPv4, this datapath is IPv6"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if got := f.Lines("neigh"); got != "neigh fd10:244:0:2:: lladdr 0a:00:00:00:00:02 dev flannel-v6.1 permanent" {
		t.Errorf("neighbours:\n%s", got)
	}
	// And the IPv4 datapath refuses IPv6 peers.
	if _, err := validatePeer(peerB6(), netip.MustParseAddr("198.18.0.1")); err == nil ||
		!strings.Contains(err.Error(), "subnet fd10:244:0:2::/64 is IPv6, this datapath is IPv4") {
		t.Errorf("validatePeer(IPv6 peer) on IPv4: %v", err)
	}
	mixed := peerB()
	mixed.PublicIP = netip.MustParseAddr("fd00::2")
	if _, err := validatePeer(mixed, netip.MustParseAddr("198.18.0.1")); err == nil ||
		!strings.Contains(err.Error(), "public IP fd00::2 is IPv6, this datapath is IPv4") {
		t.Errorf("validatePeer(IPv6 public IP) on IPv4: %v", err)
	}
}

func l3Miss6(ip string) netlink.NeighUpdate {
	u := l3Miss(ip)
	u.Family = unix.AF_INET6
	return u
}

func TestIPv6MissOverFake(t *testing.T) {
	f := host.NewFake()
	var answered, ignored []string
	v := newFakeVXLAN6(t, f, ModeOnDemand, func(c *Config) {
		c.Observer = Observer{
			MissAnswered: func(kind string, _ time.Duration) { answered = append(answered, kind) },
			MissIgnored:  func(kind string) { ignored = append(ignored, kind) },
		}
	})
	dev, err := v.EnsureDevice()
	if err != nil {
		t.Fatal(err)
	}
	if err := v.SetPeers([]Peer{peerB6(), peerC6()}); err != nil {
		t.Fatal(err)
	}
	// The Network route: the kernel stores an IPv6 route without a metric
	// at 1024, which is where the datapath wants it.
	if got := f.Lines("route"); !strings.Contains(got, "route fd10:244::/48 dev flannel-v6.1 proto 119 scope link metric 1024") {
		t.Errorf("routes:\n%s", got)
	}
	f.ResetOps()
	for _, u := range []netlink.NeighUpdate{l3Miss6("fd10:244:0:2::9"), l2Miss(macC), l3Miss6("fd10:244:77::1"), l3Miss("10.244.2.9")} {
		u.LinkIndex = dev.Index
		if err := v.HandleMiss(u); err != nil {
			t.Fatalf("HandleMiss: %v", err)
		}
	}
	if d := cmp.Diff([]string{
		"fdb replace 0a:00:00:00:00:02 dev flannel-v6.1 self dst fd00::2 permanent",
		"neigh replace fd10:244:0:2::9 lladdr 0a:00:00:00:00:02 dev flannel-v6.1 reachable",
		"fdb replace 0a:00:00:00:00:03 dev flannel-v6.1 self dst fd00:1::3 permanent",
	}, f.Ops()); d != "" {
		t.Errorf("writes (-want +got):\n%s", d)
	}
	// The IPv4 address is no miss of the IPv6 device: neither answered
	// nor counted as ignored.
	if d := cmp.Diff([]string{"l3", "l2"}, answered); d != "" {
		t.Errorf("answered (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"l3"}, ignored); d != "" {
		t.Errorf("ignored (-want +got):\n%s", d)
	}
	// The next SetPeers activates both; a reconcile then finds the kernel
	// as wanted (IPv6 metrics included) and writes nothing.
	if err := v.SetPeers([]Peer{peerB6(), peerC6()}); err != nil {
		t.Fatal(err)
	}
	if got := f.Lines("route"); !strings.Contains(got, "fd10:244:0:2::/64 via fd10:244:0:2::") || !strings.Contains(got, "fd10:244:0:3::/64 via fd10:244:0:3::") {
		t.Errorf("peers not activated; routes:\n%s", got)
	}
	f.ResetOps()
	if err := v.reconcile(); err != nil {
		t.Fatal(err)
	}
	for _, op := range f.Ops() {
		if strings.HasPrefix(op, "route") || strings.HasPrefix(op, "neigh ") || strings.HasPrefix(op, "fdb") {
			t.Errorf("reconcile rewrote %q", op)
		}
	}
	if err := v.SetPeers(nil); err != nil {
		t.Fatal(err)
	}
	if got := f.Lines("neigh", "fdb"); got != "" {
		t.Errorf("after the peers left:\n%s", got)
	}
}

// TestIPv6FlannelRouteTakenOver: flannel's IPv6 peer route (proto boot,
// added without a metric, so at 1024) is replaced by weft's.
func TestIPv6FlannelRouteTakenOver(t *testing.T) {
	f := host.NewFake()
	v := newFakeVXLAN6(t, f, ModeProactive, nil)
	dev, err := v.EnsureDevice()
	if err != nil {
		t.Fatal(err)
	}
	b := peerB6()
	if err := f.RouteReplace(&netlink.Route{LinkIndex: dev.Index, Dst: host.PrefixIPNet(b.Subnet), Gw: b.Subnet.Addr().AsSlice(),
		Flags: int(netlink.FLAG_ONLINK)}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.EnsureDevice(); err != nil { // the dump that finds it
		t.Fatal(err)
	}
	if err := v.SetPeers([]Peer{b}); err != nil {
		t.Fatal(err)
	}
	if got := f.Lines("route"); strings.Contains(got, "metric 1024") || !strings.Contains(got, "fd10:244:0:2::/64 via fd10:244:0:2:: dev flannel-v6.1 proto 119 onlink metric 2") {
		t.Errorf("routes:\n%s", got)
	}
}

func TestIPv6DirectRoutingOverFake(t *testing.T) {
	f := host.NewFake()
	v := newFakeVXLAN6(t, f, ModeProactive, func(c *Config) { c.DirectRouting = true })
	if _, err := v.EnsureDevice(); err != nil {
		t.Fatal(err)
	}
	// b is on eth0's fd00::/64, c (fd00:1::3) is not.
	if err := v.SetPeers([]Peer{peerB6(), peerC6()}); err != nil {
		t.Fatal(err)
	}
	want := `fdb 0a:00:00:00:00:03 dev flannel-v6.1 self dst fd00:1::3 permanent
neigh fd10:244:0:3:: lladdr 0a:00:00:00:00:03 dev flannel-v6.1 permanent
route fd00::/64 dev eth0 proto kernel metric 256
route fd10:244:0:2::/64 via fd00::2 dev eth0 proto 119 metric 2
route fd10:244:0:3::/64 via fd10:244:0:3:: dev flannel-v6.1 proto 119 onlink metric 3`
	if d := cmp.Diff(lines(want), lines(f.Lines("neigh", "fdb", "route"))); d != "" {
		t.Errorf("state (-want +got):\n%s", d)
	}
}

// TestDualStackOverFake: an IPv4 and an IPv6 datapath side by side on one
// underlay, same VNI and port; each keeps to its own device and family, and
// a restart of either rewrites nothing of the other's.
func TestDualStackOverFake(t *testing.T) {
	f := host.NewFake()
	eth0 := dualUnderlay(f)
	v4, err := New(f, Config{Device: DeviceConfig{LocalIP: netip.MustParseAddr("198.18.0.1"), UnderlayIndex: eth0},
		Network: netip.MustParsePrefix("10.244.0.0/16"), DirectRouting: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	v6 := newFakeVXLAN6(t, f, ModeProactive, func(c *Config) { c.DirectRouting = true })
	for _, s := range []struct {
		v     *VXLAN
		lease string
		peers []Peer
	}{{v4, "10.244.1.0/24", []Peer{peerC()}}, {v6, "fd10:244:0:1::/64", []Peer{peerC6()}}} {
		if _, err := s.v.EnsureDevice(); err != nil {
			t.Fatal(err)
		}
		if err := s.v.SetAddress(netip.MustParsePrefix(s.lease)); err != nil {
			t.Fatal(err)
		}
		if err := s.v.SetPeers(s.peers); err != nil {
			t.Fatal(err)
		}
	}
	want := `addr 10.244.1.0/32 dev flannel.1
addr 198.18.0.1/24 dev eth0
addr fd00::1/64 dev eth0
addr fd10:244:0:1::/128 dev flannel-v6.1 nodad
fdb 0a:00:00:00:00:03 dev flannel-v6.1 self dst fd00:1::3 permanent
fdb 0a:00:00:00:00:03 dev flannel.1 self dst 198.18.1.3 permanent
neigh 10.244.3.0 lladdr 0a:00:00:00:00:03 dev flannel.1 permanent
neigh fd10:244:0:3:: lladdr 0a:00:00:00:00:03 dev flannel-v6.1 permanent
neightbl flannel-v6.1 ndisc app_solicit 3
neightbl flannel.1 app_solicit 3
route 10.244.3.0/24 via 10.244.3.0 dev flannel.1 proto 119 onlink metric 717827
route fd00::/64 dev eth0 proto kernel metric 256
route fd10:244:0:1::/128 dev flannel-v6.1 proto kernel metric 256
route fd10:244:0:3::/64 via fd10:244:0:3:: dev flannel-v6.1 proto 119 onlink metric 3`
	if d := cmp.Diff(lines(want), lines(f.Lines("addr", "neigh", "fdb", "route", "neightbl"))); d != "" {
		t.Errorf("state (-want +got):\n%s", d)
	}
	for _, l := range lines(f.Lines("link")) {
		if strings.Contains(l, "vxlan") && !strings.Contains(l, "id 1 ") {
			t.Errorf("device %q, want VNI 1", l)
		}
	}
	// Reconciles of each (with DirectRouting, over the underlay too) leave
	// the other family's entries alone.
	f.ResetOps()
	for _, v := range []*VXLAN{v4, v6} {
		if err := v.reconcile(); err != nil {
			t.Fatal(err)
		}
	}
	for _, op := range f.Ops() {
		if strings.Contains(op, " del ") || strings.HasPrefix(op, "route") || strings.HasPrefix(op, "neigh ") || strings.HasPrefix(op, "fdb") {
			t.Errorf("reconcile wrote %q", op)
		}
	}
}
