package main

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/weftnet/weft/lease"
	"github.com/weftnet/weft/lease/etcdstore"
)

// `weftd subnets` shows the IPv6 part of dual-stack and IPv6-only leases,
// sorted by IPv4 then IPv6 subnet, with "-" for a family a lease lacks; an
// IPv4-only listing keeps its columns.
func TestSubnetsDualStackTable(t *testing.T) {
	now := time.Now()
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	entry := func(v4, v6, ip, ip6 string) etcdstore.Entry {
		l := lease.Lease{Attrs: lease.Attrs{BackendType: "vxlan"}, Expiration: now.Add(time.Hour)}
		if v4 != "" {
			l.Subnet = netip.MustParsePrefix(v4)
			l.Attrs.PublicIP = netip.MustParseAddr(ip)
			l.Attrs.BackendData = &lease.VXLANData{VNI: 1, VtepMAC: mac("0a:00:00:00:00:01")}
		}
		if v6 != "" {
			l.IPv6Subnet = netip.MustParsePrefix(v6)
			l.Attrs.PublicIPv6 = netip.MustParseAddr(ip6)
			l.Attrs.BackendV6Data = &lease.VXLANData{VNI: 1, VtepMAC: mac("0a:00:00:00:06:01")}
		}
		return etcdstore.Entry{Key: "/coreos.com/network/subnets/" + l.Key(), Lease: l}
	}
	rows := subnetRows([]etcdstore.Entry{
		entry("", "fc00:0:0:3::/64", "", "fd00::3"),
		entry("10.244.2.0/24", "fc00:0:0:2::/64", "198.18.0.2", "fd00::2"),
	}, now)
	var b strings.Builder
	if err := printSubnets(&b, rows); err != nil {
		t.Fatal(err)
	}
	want := `SUBNET         IPV6 SUBNET      PUBLIC IP   PUBLIC IPV6  VTEP MAC           VTEP MAC V6        NODE  TTL     RESERVATION
-              fc00:0:0:3::/64  -           fd00::3      -                  0a:00:00:00:06:01        1h0m0s  no
10.244.2.0/24  fc00:0:0:2::/64  198.18.0.2  fd00::2      0a:00:00:00:00:01  0a:00:00:00:06:01        1h0m0s  no
`
	if b.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}
	rows = subnetRows([]etcdstore.Entry{entry("10.244.2.0/24", "", "198.18.0.2", "")}, now)
	b.Reset()
	if err := printSubnets(&b, rows); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(b.String(), "SUBNET         PUBLIC IP   VTEP MAC") {
		t.Errorf("IPv4-only table changed its columns:\n%s", b.String())
	}
}
