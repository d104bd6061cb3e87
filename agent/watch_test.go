package agent

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/weftnet/weft/lease"
)

func TestPeerOf(t *testing.T) {
	mac, _ := net.ParseMAC("0a:00:00:00:00:02")
	mac6, _ := net.ParseMAC("0a:00:00:00:06:02")
	good := lease.Lease{
		Subnet:     netip.MustParsePrefix("10.244.2.0/24"),
		IPv6Subnet: netip.MustParsePrefix("fc00:0:0:2::/64"),
		Attrs: lease.Attrs{PublicIP: netip.MustParseAddr("198.18.0.2"), PublicIPv6: netip.MustParseAddr("fd00::2"),
			BackendType: "vxlan", NodeName: "n2"},
	}
	tests := []struct {
		name    string
		mutate  func(*lease.Lease)
		ok, ok6 bool
	}{
		{"dual-stack peer", func(*lease.Lease) {}, true, true},
		{"other backend", func(l *lease.Lease) { l.Attrs.BackendType = "host-gw" }, false, false},
		{"no backend data", func(l *lease.Lease) { l.Attrs.BackendData = nil }, false, true},
		{"no v6 backend data", func(l *lease.Lease) { l.Attrs.BackendV6Data = nil }, true, false},
		{"bad mac", func(l *lease.Lease) { l.Attrs.BackendData = &lease.VXLANData{VNI: 1, VtepMAC: mac[:3]} }, false, true},
		{"other vni", func(l *lease.Lease) {
			l.Attrs.BackendData = &lease.VXLANData{VNI: 7, VtepMAC: mac}
			l.Attrs.BackendV6Data = &lease.VXLANData{VNI: 7, VtepMAC: mac6}
		}, false, false},
		{"no public ip", func(l *lease.Lease) { l.Attrs.PublicIP = netip.Addr{} }, false, true},
		{"no public ipv6 (an IPv4-only flannel node)", func(l *lease.Lease) { l.Attrs.PublicIPv6 = netip.Addr{} }, true, false},
		{"IPv6-only lease", func(l *lease.Lease) { l.Subnet = netip.Prefix{}; l.Attrs.PublicIP = netip.Addr{} }, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := good
			l.Attrs.BackendData = &lease.VXLANData{VNI: 1, VtepMAC: mac}
			l.Attrs.BackendV6Data = &lease.VXLANData{VNI: 1, VtepMAC: mac6}
			tc.mutate(&l)
			p, ok := peerOf(l, false, 1)
			if ok != tc.ok {
				t.Fatalf("IPv4 peerOf ok = %v, want %v", ok, tc.ok)
			}
			if ok && (p.Subnet != l.Subnet || p.PublicIP != l.Attrs.PublicIP || p.VtepMAC.String() != mac.String() || p.Name != "n2") {
				t.Fatalf("IPv4 peerOf = %+v", p)
			}
			p, ok = peerOf(l, true, 1)
			if ok != tc.ok6 {
				t.Fatalf("IPv6 peerOf ok = %v, want %v", ok, tc.ok6)
			}
			if ok && (p.Subnet != l.IPv6Subnet || p.PublicIP != l.Attrs.PublicIPv6 || p.VtepMAC.String() != mac6.String() || p.Name != "n2") {
				t.Fatalf("IPv6 peerOf = %+v", p)
			}
		})
	}
}

func TestTotalBlocks(t *testing.T) {
	tests := []struct {
		min, max string
		length   int
		want     float64
	}{
		{"10.244.1.0", "10.244.255.0", 24, 255},
		{"10.244.0.0", "10.244.255.0", 24, 256},
		{"10.0.1.0", "10.15.255.0", 24, 4095},
		{"10.244.0.4", "10.244.0.60", 30, 15},
		{"10.244.2.0", "10.244.1.0", 24, 0},
		{"fc00:0:0:1::", "fc00:0:0:ffff::", 64, 65535},
		{"fc00:0:0:1::", "fc00:ffff:ffff:ffff::", 64, 1<<48 - 1},
		{"fc00:0:0:1::", "fdff:ffff:ffff:ffff::", 64, 1 << 53}, // 2^57 blocks: capped
	}
	for _, tc := range tests {
		min, max := netip.MustParseAddr(tc.min), netip.MustParseAddr(tc.max)
		n := &lease.Network{EnableIPv4: true, SubnetMin: min, SubnetMax: max, SubnetLen: tc.length}
		if min.Is6() {
			n = &lease.Network{EnableIPv6: true, IPv6SubnetMin: min, IPv6SubnetMax: max, IPv6SubnetLen: tc.length}
		}
		if got := totalBlocks(n); got != tc.want {
			t.Errorf("totalBlocks(%s..%s /%d) = %v, want %v", tc.min, tc.max, tc.length, got, tc.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
	bad := DefaultConfig()
	bad.NeighMode = "lazy"
	bad.PublicIP = "not-an-ip"
	bad.SubnetLeaseTTL = 0
	bad.HealthzPort = 70000
	err := bad.Validate()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"--neigh-mode", "--public-ip", "--subnet-lease-ttl", "--healthz-port"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}
