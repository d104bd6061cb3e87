package masq

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/backend"
)

// kubeProxyMark is the bit kube-proxy sets on packets it wants masqueraded itself.
const kubeProxyMark = 0x4000

// ErrInvalid is wrapped by errors about Rules that cannot be installed.
var ErrInvalid = errors.New("invalid masquerade rules")

// ErrDrift is wrapped by Current when weft's table exists but is not exactly what
// Ensure writes (edited by hand, written by another version). Ensure replaces it.
var ErrDrift = errors.New("masquerade table differs from weft's rules")

// Rules says what to masquerade on this node, per address family. Either family may
// be absent (zero prefixes): an IPv4-only overlay leaves IPv6Network and IPv6Subnet
// zero, an IPv6-only one Network and Subnet. Each present family gets its own table
// (ip weft, ip6 weft) with the same six rules.
type Rules struct {
	Network     netip.Prefix // IPv4 cluster pod Network, e.g. 10.244.0.0/16; zero = no IPv4 rules
	Subnet      netip.Prefix // this node's IPv4 lease subnet, e.g. 10.244.1.0/24
	IPv6Network netip.Prefix // IPv6 cluster pod Network, e.g. fd00:10::/48; zero = no IPv6 rules
	IPv6Subnet  netip.Prefix // this node's IPv6 lease subnet, e.g. fd00:10:0:1::/64
	VXLANPort   int          // 0 → backend.DefaultPort: UDP to this port is never masqueraded
}

// famRules is one family's rules: what one table holds.
type famRules struct {
	Network   netip.Prefix
	Subnet    netip.Prefix
	VXLANPort int
}

// normalize returns r with the default port filled in and prefixes masked, or an
// error wrapping ErrInvalid. At least one family must be present.
func (r Rules) normalize() (Rules, error) {
	has4 := r.Network.IsValid() || r.Subnet.IsValid()
	has6 := r.IPv6Network.IsValid() || r.IPv6Subnet.IsValid()
	if !has4 && !has6 {
		return r, fmt.Errorf("%w: neither an IPv4 nor an IPv6 network is set", ErrInvalid)
	}
	if r.VXLANPort == 0 {
		r.VXLANPort = backend.DefaultPort
	}
	if has4 {
		f, err := famRules{Network: r.Network, Subnet: r.Subnet, VXLANPort: r.VXLANPort}.normalize(false)
		if err != nil {
			return r, err
		}
		r.Network, r.Subnet = f.Network, f.Subnet
	}
	if has6 {
		f, err := famRules{Network: r.IPv6Network, Subnet: r.IPv6Subnet, VXLANPort: r.VXLANPort}.normalize(true)
		if err != nil {
			return r, err
		}
		r.IPv6Network, r.IPv6Subnet = f.Network, f.Subnet
	}
	return r, nil
}

// of returns normalized r's rules for the table family fam, or nil when r has none
// of that family.
func (r Rules) of(fam nftables.TableFamily) *famRules {
	if fam == nftables.TableFamilyIPv6 {
		if !r.IPv6Network.IsValid() {
			return nil
		}
		return &famRules{Network: r.IPv6Network, Subnet: r.IPv6Subnet, VXLANPort: r.VXLANPort}
	}
	if !r.Network.IsValid() {
		return nil
	}
	return &famRules{Network: r.Network, Subnet: r.Subnet, VXLANPort: r.VXLANPort}
}

// normalize checks one family's rules (IPv6 when is6) and masks the prefixes; the
// error wraps ErrInvalid.
func (r famRules) normalize(is6 bool) (famRules, error) {
	fam := "IPv4"
	if is6 {
		fam = "IPv6"
	}
	if !r.Network.IsValid() || !r.Subnet.IsValid() {
		return r, fmt.Errorf("%w: %s network %v and subnet %v must both be set", ErrInvalid, fam, r.Network, r.Subnet)
	}
	// A 4in6 prefix would silently match nothing in either table.
	if r.Network.Addr().Is4In6() || r.Subnet.Addr().Is4In6() {
		return r, fmt.Errorf("%w: IPv4-mapped prefixes (%v, %v)", ErrInvalid, r.Network, r.Subnet)
	}
	if r.Network.Addr().Is6() != is6 || r.Subnet.Addr().Is6() != is6 {
		return r, fmt.Errorf("%w: %s network %v and subnet %v must both be %s", ErrInvalid, fam, r.Network, r.Subnet, fam)
	}
	r.Network, r.Subnet = r.Network.Masked(), r.Subnet.Masked()
	if r.Subnet.Bits() < r.Network.Bits() || !r.Network.Contains(r.Subnet.Addr()) {
		return r, fmt.Errorf("%w: subnet %v is not inside network %v", ErrInvalid, r.Subnet, r.Network)
	}
	if r.VXLANPort < 1 || r.VXLANPort > 65535 {
		return r, fmt.Errorf("%w: VXLAN port %d out of range 1-65535", ErrInvalid, r.VXLANPort)
	}
	return r, nil
}

// family returns the nftables table family for r's address family.
func (r famRules) family() nftables.TableFamily { return familyOf(r.Network) }

// action is what a rule does with a packet that matches.
type action uint8

const (
	actReturn action = iota + 1
	actMasquerade
)

// addrMatch is an optional match on a source or destination prefix.
type addrMatch struct {
	Prefix netip.Prefix // invalid = no match on this address
	Not    bool         // match addresses outside Prefix
}

// ruleSpec is one rule of the chain in a form that can be compared: specs builds it
// from Rules, encode turns it into nftables expressions and decode turns the kernel's
// expressions back into it.
type ruleSpec struct {
	Mark     bool   // meta mark & 0x4000 == 0x4000
	UDPDport uint16 // 0 = no match on the UDP destination port
	Saddr    addrMatch
	Daddr    addrMatch
	Action   action // masquerade is always fully-random
	Comment  string // shown by `nft list`; not part of the comparison
}

// specs returns the chain's rules for normalized r, in order (see doc.go).
func specs(r famRules) []ruleSpec {
	multicast := netip.MustParsePrefix("224.0.0.0/4")
	if r.Network.Addr().Is6() {
		multicast = netip.MustParsePrefix("ff00::/8")
	}
	pods := addrMatch{Prefix: r.Network}
	notNet := addrMatch{Prefix: r.Network, Not: true}
	return []ruleSpec{
		{Mark: true, Action: actReturn, Comment: "weft: kube-proxy masquerades marked packets"},
		// Early, so no later rule can NAT an outer VXLAN packet (flannel#1279).
		{UDPDport: uint16(r.VXLANPort), Action: actReturn, Comment: "weft: never NAT VXLAN"},
		{Saddr: pods, Daddr: pods, Action: actReturn, Comment: "weft: pod to pod"},
		{Saddr: pods, Daddr: addrMatch{Prefix: multicast, Not: true}, Action: actMasquerade, Comment: "weft: pod to outside"},
		{Saddr: notNet, Daddr: addrMatch{Prefix: r.Subnet}, Action: actReturn, Comment: "weft: outside to local pod"},
		{Saddr: notNet, Daddr: pods, Action: actMasquerade, Comment: "weft: outside to remote pod"},
	}
}

// sameRules reports whether two spec lists match, ignoring comments.
func sameRules(a, b []ruleSpec) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		x.Comment, y.Comment = "", ""
		if x != y {
			return false
		}
	}
	return true
}

// rulesFrom recovers Rules from the chain's decoded specs and checks that the specs
// are exactly what specs would produce for them; otherwise it returns ErrDrift.
func rulesFrom(got []ruleSpec) (*famRules, error) {
	if len(got) != 6 {
		return nil, fmt.Errorf("%w: %d rules, want 6", ErrDrift, len(got))
	}
	r := famRules{Network: got[2].Saddr.Prefix, Subnet: got[4].Daddr.Prefix, VXLANPort: int(got[1].UDPDport)}
	r, err := r.normalize(r.Network.Addr().Is6())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDrift, err)
	}
	if !sameRules(got, specs(r)) {
		return nil, fmt.Errorf("%w: rules are not the ones for network %v subnet %v port %d",
			ErrDrift, r.Network, r.Subnet, r.VXLANPort)
	}
	return &r, nil
}

// addrOffsets returns the network-header offsets of the source and destination
// addresses and their length for an address family.
func addrOffsets(is6 bool) (saddr, daddr, size uint32) {
	if is6 {
		return 8, 24, 16
	}
	return 12, 16, 4
}

// encode returns the nftables expressions of s. Every rule carries a counter so
// `nft list` (and tests) can see which rule a packet took.
func (s ruleSpec) encode(is6 bool) []expr.Any {
	var out []expr.Any
	if s.Mark {
		mark := binaryutil.NativeEndian.PutUint32(kubeProxyMark)
		out = append(out,
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mark, Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: mark})
	}
	if s.UDPDport != 0 {
		out = append(out,
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(s.UDPDport)})
	}
	so, do, size := addrOffsets(is6)
	out = append(out, s.Saddr.encode(so, size)...)
	out = append(out, s.Daddr.encode(do, size)...)
	out = append(out, &expr.Counter{})
	switch s.Action {
	case actReturn:
		out = append(out, &expr.Verdict{Kind: expr.VerdictReturn})
	case actMasquerade:
		// flannel masquerades with --random-fully too: no port-preserving guesswork
		// that could collide with another node's mapping.
		out = append(out, &expr.Masq{FullyRandom: true})
	}
	return out
}

// encode returns the load/mask/compare expressions for an address match.
func (m addrMatch) encode(offset, size uint32) []expr.Any {
	if !m.Prefix.IsValid() {
		return nil
	}
	out := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: size}}
	if m.Prefix.Bits() != int(size)*8 {
		mask := netipMask(m.Prefix.Bits(), int(size))
		out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: size, Mask: mask, Xor: make([]byte, size)})
	}
	op := expr.CmpOpEq
	if m.Not {
		op = expr.CmpOpNeq
	}
	return append(out, &expr.Cmp{Op: op, Register: 1, Data: m.Prefix.Addr().AsSlice()})
}

// netipMask returns a network mask of bits ones in size bytes.
func netipMask(bits, size int) []byte {
	mask := make([]byte, size)
	for i := range mask {
		switch {
		case bits >= 8:
			mask[i] = 0xff
			bits -= 8
		case bits > 0:
			mask[i] = byte(0xff << (8 - bits))
			bits = 0
		}
	}
	return mask
}
