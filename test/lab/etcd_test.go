package lab

import (
	"net/netip"
	"testing"
)

func TestLeaseKVDecode(t *testing.T) {
	const (
		mac  = `{"VNI":1,"VtepMAC":"0e:00:00:00:00:04"}`
		mac6 = `{"VNI":1,"VtepMAC":"0e:00:00:00:00:06"}`
	)
	for _, c := range []struct {
		name, key, value  string
		subnet, subnet6   string
		public, public6   string
		wantErr, wantMAC6 bool
	}{
		{name: "ipv4", key: "10.244.3.0-24",
			value:  `{"PublicIP":"198.18.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":` + mac + `}`,
			subnet: "10.244.3.0/24", public: "198.18.0.2"},
		{name: "dual", key: "10.244.3.0-24&fc00:0:0:3::-64",
			value:  `{"PublicIP":"198.18.0.2","PublicIPv6":"fd00:198:18::2","BackendType":"vxlan","BackendData":` + mac + `,"BackendV6Data":` + mac6 + `}`,
			subnet: "10.244.3.0/24", subnet6: "fc00:0:0:3::/64", public: "198.18.0.2", public6: "fd00:198:18::2", wantMAC6: true},
		{name: "ipv6-only", key: "0.0.0.0-0&fc00:0:0:3::-64",
			value:   `{"PublicIP":"0.0.0.0","PublicIPv6":"fd00:198:18::2","BackendType":"vxlan","BackendV6Data":` + mac6 + `}`,
			subnet6: "fc00:0:0:3::/64", public: "0.0.0.0", public6: "fd00:198:18::2", wantMAC6: true},
		{name: "no subnet at all", key: "0.0.0.0-0", value: `{"PublicIP":"0.0.0.0","BackendType":"vxlan"}`, wantErr: true},
		{name: "dual without PublicIPv6", key: "10.244.3.0-24&fc00:0:0:3::-64",
			value: `{"PublicIP":"198.18.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":` + mac + `}`, wantErr: true},
		{name: "IPv6 part not IPv6", key: "10.244.3.0-24&10.1.0.0-16", value: `{}`, wantErr: true},
		{name: "unmasked", key: "10.244.3.7-24", value: `{}`, wantErr: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			lk := LeaseKV{Key: c.key, Value: c.value}
			err := lk.decode(c.key)
			if (err != nil) != c.wantErr {
				t.Fatalf("decode(%s = %s): %v, want error %v", c.key, c.value, err, c.wantErr)
			}
			if c.wantErr {
				return
			}
			p := func(s string) netip.Prefix {
				if s == "" {
					return netip.Prefix{}
				}
				return netip.MustParsePrefix(s)
			}
			a := func(s string) netip.Addr {
				if s == "" {
					return netip.Addr{}
				}
				return netip.MustParseAddr(s)
			}
			if lk.Subnet != p(c.subnet) || lk.Subnet6 != p(c.subnet6) || lk.PublicIP != a(c.public) || lk.PublicIPv6 != a(c.public6) {
				t.Errorf("got subnet %s %s public %s %s, want %s %s %s %s", lk.Subnet, lk.Subnet6, lk.PublicIP, lk.PublicIPv6, c.subnet, c.subnet6, c.public, c.public6)
			}
			if (lk.VtepMAC6.String() == "0e:00:00:00:00:06") != c.wantMAC6 {
				t.Errorf("VtepMAC6 %s", lk.VtepMAC6)
			}
		})
	}
}
