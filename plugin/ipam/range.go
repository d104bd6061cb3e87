package ipam

import (
	"fmt"
	"net/netip"
)

// Range is the pool addresses come from, in host-local's terms. The zero
// fields of a Range are filled in by Canonicalize.
type Range struct {
	// Subnet is the network the addresses belong to (masked by Canonicalize).
	Subnet netip.Prefix
	// RangeStart and RangeEnd bound the pool (inclusive). Defaults: the
	// first and the last usable address of Subnet.
	RangeStart netip.Addr
	RangeEnd   netip.Addr
	// Gateway is skipped by the allocator. Default: the first usable address.
	Gateway netip.Addr
}

// Canonicalize fills the defaults and checks that every address lies inside
// Subnet, between the network and the broadcast address, with
// RangeStart <= RangeEnd. IPv4 and IPv6 both work; all fields share one family.
func (r *Range) Canonicalize() error {
	if !r.Subnet.IsValid() {
		return fmt.Errorf("subnet missing")
	}
	r.Subnet = r.Subnet.Masked()
	first, last, ok := usable(r.Subnet)
	if !ok {
		return fmt.Errorf("subnet %s is too small to allocate from", r.Subnet)
	}
	if !r.Gateway.IsValid() {
		r.Gateway = first
	}
	if !r.RangeStart.IsValid() {
		r.RangeStart = first
	}
	if !r.RangeEnd.IsValid() {
		r.RangeEnd = last
	}
	for _, f := range []struct {
		name string
		ip   netip.Addr
	}{{"gateway", r.Gateway}, {"rangeStart", r.RangeStart}, {"rangeEnd", r.RangeEnd}} {
		if f.ip.Zone() != "" || f.ip.Compare(first) < 0 || f.ip.Compare(last) > 0 || !r.Subnet.Contains(f.ip) {
			return fmt.Errorf("%s %s is not a usable address of %s (%s-%s)", f.name, f.ip, r.Subnet, first, last)
		}
	}
	if r.RangeStart.Compare(r.RangeEnd) > 0 {
		return fmt.Errorf("rangeStart %s is after rangeEnd %s", r.RangeStart, r.RangeEnd)
	}
	return nil
}

// Contains reports whether ip is in [RangeStart, RangeEnd].
func (r Range) Contains(ip netip.Addr) bool {
	return ip.BitLen() == r.RangeStart.BitLen() && ip.Compare(r.RangeStart) >= 0 && ip.Compare(r.RangeEnd) <= 0
}

// next returns the address after ip, wrapping from RangeEnd to RangeStart.
func (r Range) next(ip netip.Addr) netip.Addr {
	if ip.Compare(r.RangeEnd) >= 0 || ip.Compare(r.RangeStart) < 0 {
		return r.RangeStart
	}
	return ip.Next()
}

// String renders the pool as host-local does: "start-end".
func (r Range) String() string { return r.RangeStart.String() + "-" + r.RangeEnd.String() }

// usable returns the first and last host address of p: for IPv4 the network
// and broadcast addresses are excluded, for IPv6 the subnet-router anycast
// address (the first) is excluded.
func usable(p netip.Prefix) (first, last netip.Addr, ok bool) {
	network := p.Addr()
	last = lastAddr(p)
	first = network.Next()
	if network.Is4() {
		last = last.Prev()
	}
	if !first.IsValid() || !last.IsValid() || first.Compare(last) > 0 {
		return netip.Addr{}, netip.Addr{}, false
	}
	return first, last, true
}

// lastAddr is the highest address of the prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	bits := p.Bits()
	for i := range b {
		hostBits := 8*(i+1) - bits
		switch {
		case hostBits >= 8:
			b[i] = 0xff
		case hostBits > 0:
			b[i] |= byte(1<<hostBits) - 1
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
