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
	own := netip.MustParsePrefix("10.244.1.0/24")
	good := lease.Lease{
		Subnet: netip.MustParsePrefix("10.244.2.0/24"),
		Attrs: lease.Attrs{PublicIP: netip.MustParseAddr("198.18.0.2"), BackendType: "vxlan",
			BackendData: &lease.VXLANData{VNI: 1, VtepMAC: mac}, NodeName: "n2"},
	}
	tests := []struct {
		name   string
		mutate func(*lease.Lease)
		ok     bool
	}{
		{"peer", func(*lease.Lease) {}, true},
		{"own subnet", func(l *lease.Lease) { l.Subnet = own }, false},
		{"other backend", func(l *lease.Lease) { l.Attrs.BackendType = "host-gw" }, false},
		{"no backend data", func(l *lease.Lease) { l.Attrs.BackendData = nil }, false},
		{"bad mac", func(l *lease.Lease) { l.Attrs.BackendData = &lease.VXLANData{VNI: 1, VtepMAC: mac[:3]} }, false},
		{"other vni", func(l *lease.Lease) { l.Attrs.BackendData = &lease.VXLANData{VNI: 7, VtepMAC: mac} }, false},
		{"no public ip", func(l *lease.Lease) { l.Attrs.PublicIP = netip.Addr{} }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := good
			l.Attrs.BackendData = &lease.VXLANData{VNI: 1, VtepMAC: mac}
			tc.mutate(&l)
			p, ok := peerOf(l, own, 1)
			if ok != tc.ok {
				t.Fatalf("peerOf ok = %v, want %v", ok, tc.ok)
			}
			if ok && (p.Subnet != l.Subnet || p.PublicIP != l.Attrs.PublicIP || p.VtepMAC.String() != mac.String() || p.Name != "n2") {
				t.Fatalf("peerOf = %+v", p)
			}
		})
	}
}

func TestTotalBlocks(t *testing.T) {
	tests := []struct {
		min, max string
		length   int
		want     int
	}{
		{"10.244.1.0", "10.244.255.0", 24, 255},
		{"10.244.0.0", "10.244.255.0", 24, 256},
		{"10.0.1.0", "10.15.255.0", 24, 4095},
		{"10.244.0.4", "10.244.0.60", 30, 15},
		{"10.244.2.0", "10.244.1.0", 24, 0},
	}
	for _, tc := range tests {
		n := &lease.Network{SubnetMin: netip.MustParseAddr(tc.min), SubnetMax: netip.MustParseAddr(tc.max), SubnetLen: tc.length}
		if got := totalBlocks(n); got != tc.want {
			t.Errorf("totalBlocks(%s..%s /%d) = %d, want %d", tc.min, tc.max, tc.length, got, tc.want)
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
