package lab

import (
	"fmt"
	"net/netip"
)

// Family is a set of IP families: of the underlay (the addresses on every
// namespace's eth0) or of the overlay (the network config in etcd).
type Family string

// The three families a lab runs; "" means IPv4.
const (
	IPv4 Family = "ipv4"
	Dual Family = "dual" // IPv4 and IPv6
	IPv6 Family = "ipv6"
)

// Has4 reports whether f includes IPv4.
func (f Family) Has4() bool { return f != IPv6 }

// Has6 reports whether f includes IPv6.
func (f Family) Has6() bool { return f == Dual || f == IPv6 }

// Singles splits f into its single families: [IPv4], [IPv4 IPv6] or [IPv6].
func (f Family) Singles() []Family {
	var out []Family
	if f.Has4() {
		out = append(out, IPv4)
	}
	if f.Has6() {
		out = append(out, IPv6)
	}
	return out
}

func (f Family) valid() bool { return f == IPv4 || f == Dual || f == IPv6 }

// pick returns v4 for IPv4 and v6 for IPv6 (f must be a single family).
func pick[T any](f Family, v4, v6 T) T {
	if f == IPv6 {
		return v6
	}
	return v4
}

// Underlay addresses for IPv6 (fd00:198:18::/64), in step with the IPv4 ones:
// node N is fd00:198:18::N (N as the last byte), etcd ::200, the outside host
// ::250. They are added with nodad, so they are usable at once.
var (
	Underlay6  = netip.MustParsePrefix("fd00:198:18::/64")
	EtcdIP6    = netip.MustParseAddr("fd00:198:18::200")
	OutsideIP6 = netip.MustParseAddr("fd00:198:18::250")
)

// DefaultIPv6Network is the IPv6 pod network of dual-stack and IPv6-only labs.
const DefaultIPv6Network = "fc00::/48"

// underlayAddrs are the eth0 addresses, per the underlay family, of a host
// whose IPv4 and IPv6 underlay addresses are ip4 and ip6.
func (l *Lab) underlayAddrs(ip4, ip6 netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	if l.opts.Underlay.Has4() {
		out = append(out, netip.PrefixFrom(ip4, Underlay.Bits()))
	}
	if l.opts.Underlay.Has6() {
		out = append(out, netip.PrefixFrom(ip6, Underlay6.Bits()))
	}
	return out
}

// nodeAddrs are node idx's underlay addresses (both families; the lab plugs
// only those of its underlay family).
func nodeAddrs(idx int) (netip.Addr, netip.Addr) {
	ip4 := Underlay.Addr().As4()
	ip4[3] = byte(idx)
	ip6 := Underlay6.Addr().As16()
	ip6[15] = byte(idx)
	return netip.AddrFrom4(ip4), netip.AddrFrom16(ip6)
}

// OutsideAddr is the outside host's address of the single family f (zero when
// the underlay does not have that family).
func (l *Lab) OutsideAddr(f Family) netip.Addr {
	if (f == IPv6 && !l.opts.Underlay.Has6()) || (f != IPv6 && !l.opts.Underlay.Has4()) {
		return netip.Addr{}
	}
	return pick(f, OutsideIP, OutsideIP6)
}

// Overlay and UnderlayFamily are the lab's families (defaults applied).
func (l *Lab) Overlay() Family        { return l.opts.Overlay }
func (l *Lab) UnderlayFamily() Family { return l.opts.Underlay }

// NetworkConfig is the <prefix>/config value the lab writes, per the overlay
// family: IPv4 {"Network":...}, dual stack adds "EnableIPv6" and
// "IPv6Network", IPv6-only has "EnableIPv4":false and no Network.
func (l *Lab) NetworkConfig() string {
	o := l.opts
	switch o.Overlay {
	case Dual:
		return fmt.Sprintf(`{"Network":%q,"SubnetLen":24,"EnableIPv6":true,"IPv6Network":%q,"Backend":{"Type":"vxlan","VNI":1}}`, o.Network, o.IPv6Network)
	case IPv6:
		return fmt.Sprintf(`{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":%q,"Backend":{"Type":"vxlan","VNI":1}}`, o.IPv6Network)
	}
	return fmt.Sprintf(`{"Network":%q,"SubnetLen":24,"Backend":{"Type":"vxlan","VNI":1}}`, o.Network)
}
