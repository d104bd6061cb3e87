package masq

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/google/nftables/expr"
)

func TestNormalize(t *testing.T) {
	pfx := netip.MustParsePrefix
	for _, tc := range []struct {
		name    string
		in      Rules
		want    Rules
		wantErr bool
	}{
		{"defaults port", Rules{Network: pfx("10.244.0.0/16"), Subnet: pfx("10.244.1.0/24")},
			Rules{Network: pfx("10.244.0.0/16"), Subnet: pfx("10.244.1.0/24"), VXLANPort: 8472}, false},
		{"masks host bits", Rules{Network: pfx("10.244.3.4/16"), Subnet: pfx("10.244.1.7/24"), VXLANPort: 4789},
			Rules{Network: pfx("10.244.0.0/16"), Subnet: pfx("10.244.1.0/24"), VXLANPort: 4789}, false},
		{"ipv6", Rules{IPv6Network: pfx("fd00:10::/48"), IPv6Subnet: pfx("fd00:10:0:1::/64")},
			Rules{IPv6Network: pfx("fd00:10::/48"), IPv6Subnet: pfx("fd00:10:0:1::/64"), VXLANPort: 8472}, false},
		{"dual stack", Rules{Network: pfx("10.244.3.4/16"), Subnet: pfx("10.244.1.7/24"), IPv6Network: pfx("fd00:10::1/48"), IPv6Subnet: pfx("fd00:10:0:1::1/64")},
			Rules{Network: pfx("10.244.0.0/16"), Subnet: pfx("10.244.1.0/24"), IPv6Network: pfx("fd00:10::/48"), IPv6Subnet: pfx("fd00:10:0:1::/64"), VXLANPort: 8472}, false},
		{"nothing", Rules{}, Rules{}, true},
		{"ipv6 in the IPv4 fields", Rules{Network: pfx("fd00:10::/48"), Subnet: pfx("fd00:10:0:1::/64")}, Rules{}, true},
		{"ipv4 in the IPv6 fields", Rules{IPv6Network: pfx("10.244.0.0/16"), IPv6Subnet: pfx("10.244.1.0/24")}, Rules{}, true},
		{"ipv6 subnet missing", Rules{Network: pfx("10.244.0.0/16"), Subnet: pfx("10.244.1.0/24"), IPv6Network: pfx("fd00:10::/48")}, Rules{}, true},
		{"ipv6 subnet outside", Rules{IPv6Network: pfx("fd00:10::/48"), IPv6Subnet: pfx("fd00:11:0:1::/64")}, Rules{}, true},
		{"ipv6 port too big", Rules{IPv6Network: pfx("fd00:10::/48"), IPv6Subnet: pfx("fd00:10:0:1::/64"), VXLANPort: 65536}, Rules{}, true},
		{"missing subnet", Rules{Network: pfx("10.244.0.0/16")}, Rules{}, true},
		{"subnet outside network", Rules{Network: pfx("10.244.0.0/16"), Subnet: pfx("10.245.1.0/24")}, Rules{}, true},
		{"subnet wider than network", Rules{Network: pfx("10.244.0.0/16"), Subnet: pfx("10.0.0.0/8")}, Rules{}, true},
		{"mixed families", Rules{Network: pfx("10.244.0.0/16"), Subnet: pfx("fd00::/64")}, Rules{}, true},
		{"4in6", Rules{Network: pfx("::ffff:10.244.0.0/112"), Subnet: pfx("::ffff:10.244.1.0/120")}, Rules{}, true},
		{"port too big", Rules{Network: pfx("10.244.0.0/16"), Subnet: pfx("10.244.1.0/24"), VXLANPort: 70000}, Rules{}, true},
		{"negative port", Rules{Network: pfx("10.244.0.0/16"), Subnet: pfx("10.244.1.0/24"), VXLANPort: -1}, Rules{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.in.normalize()
			if tc.wantErr {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("normalize(%+v) error = %v, want ErrInvalid", tc.in, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("normalize(%+v) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
		})
	}
}

// TestEncodeDecode checks that every rule survives encode → decode and that the
// chain's rules give back the Rules they were built from.
func TestEncodeDecode(t *testing.T) {
	for _, in := range []famRules{
		{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.1.0/24"), VXLANPort: 8472},
		{Network: netip.MustParsePrefix("10.0.0.0/8"), Subnet: netip.MustParsePrefix("10.3.3.3/32"), VXLANPort: 4789},
		{Network: netip.MustParsePrefix("fd00:10::/48"), Subnet: netip.MustParsePrefix("fd00:10:0:1::/64"), VXLANPort: 1},
	} {
		is6 := in.Network.Addr().Is6()
		var got []ruleSpec
		for i, s := range specs(in) {
			d, err := decode(s.encode(is6), is6)
			if err != nil {
				t.Fatalf("%v rule %d: decode: %v", in.Network, i+1, err)
			}
			got = append(got, d)
		}
		r, err := rulesFrom(got)
		if err != nil || *r != in {
			t.Fatalf("rulesFrom(%v) = %+v, %v; want %+v", in.Network, r, err, in)
		}
	}
}

func TestRulesFromDrift(t *testing.T) {
	r := famRules{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.1.0/24"), VXLANPort: 8472}
	for _, tc := range []struct {
		name   string
		mutate func([]ruleSpec) []ruleSpec
	}{
		{"missing rule", func(s []ruleSpec) []ruleSpec { return s[1:] }},
		{"extra rule", func(s []ruleSpec) []ruleSpec { return append(s, s[0]) }},
		{"swapped", func(s []ruleSpec) []ruleSpec { s[2], s[3] = s[3], s[2]; return s }},
		{"no fully-random", func(s []ruleSpec) []ruleSpec { s[3].Action = actReturn; return s }},
		{"network differs in rule 6", func(s []ruleSpec) []ruleSpec {
			s[5].Daddr.Prefix = netip.MustParsePrefix("10.0.0.0/8")
			return s
		}},
		{"negation lost", func(s []ruleSpec) []ruleSpec { s[4].Saddr.Not = false; return s }},
		{"subnet outside network", func(s []ruleSpec) []ruleSpec {
			s[4].Daddr.Prefix = netip.MustParsePrefix("192.168.0.0/24")
			return s
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := rulesFrom(tc.mutate(specs(r))); !errors.Is(err, ErrDrift) {
				t.Fatalf("rulesFrom = %+v, %v; want ErrDrift", got, err)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	good := specs(famRules{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.1.0/24"), VXLANPort: 8472})
	for _, tc := range []struct {
		name string
		ex   []expr.Any
	}{
		{"no verdict", good[2].encode(false)[:3]},
		{"accept verdict", append(good[2].encode(false)[:3], &expr.Verdict{Kind: expr.VerdictAccept})},
		{"plain masquerade", append(good[3].encode(false)[:6], &expr.Masq{})},
		{"after verdict", append(good[0].encode(false), &expr.Counter{})},
		{"unknown expression", append([]expr.Any{&expr.Log{}}, good[0].encode(false)...)},
		{"non-contiguous mask", []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{0xff, 0x00, 0xff, 0}, Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{10, 0, 0, 0}},
			&expr.Verdict{Kind: expr.VerdictReturn}}},
		{"host bits under mask", []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{0xff, 0xff, 0, 0}, Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{10, 244, 1, 0}},
			&expr.Verdict{Kind: expr.VerdictReturn}}},
		{"tcp port", []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{6}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x21, 0x18}},
			&expr.Verdict{Kind: expr.VerdictReturn}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if s, err := decode(tc.ex, false); !errors.Is(err, ErrDrift) {
				t.Fatalf("decode = %+v, %v; want ErrDrift", s, err)
			}
		})
	}
}
