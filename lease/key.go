package lease

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// noIPv4Key is the IPv4 part of the key of an IPv6-only lease: what
// flannel's MakeSubnetKey writes for an empty IPv4 subnet, and what its
// ParseSubnetKey needs to find the IPv6 part.
const noIPv4Key = "0.0.0.0-0"

// FormatKey renders the lease key below <prefix>/subnets/: "10.244.1.0-24",
// "10.244.1.0-24&fc00:0:0:1::-64" for a dual-stack lease, or
// "0.0.0.0-0&fc00:0:0:1::-64" for an IPv6-only one (v4 is the zero Prefix).
func FormatKey(v4, v6 netip.Prefix) string {
	k := noIPv4Key
	if v4.IsValid() {
		k = v4.Addr().String() + "-" + strconv.Itoa(v4.Bits())
	}
	if v6.IsValid() {
		k += "&" + v6.Addr().String() + "-" + strconv.Itoa(v6.Bits())
	}
	return k
}

// ParseKey parses a key made by FormatKey (the part after <prefix>/subnets/).
// The IPv6 part is optional; the IPv4 part must be a masked IPv4 prefix, or
// "0.0.0.0-0" before an IPv6 part (an IPv6-only lease: v4 is then the zero
// Prefix). Addresses must be in canonical form (as FormatKey, and flannel,
// write them), so that FormatKey(ParseKey(k)) == k.
func ParseKey(key string) (v4, v6 netip.Prefix, err error) {
	s4, s6, dual := strings.Cut(key, "&")
	switch {
	case s4 == noIPv4Key && !dual:
		return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("lease key %q: neither an IPv4 nor an IPv6 subnet", key)
	case s4 == noIPv4Key:
	default:
		v4, err = parseKeyPart(s4)
		if err != nil {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("lease key %q: %w", key, err)
		}
		if !v4.Addr().Is4() {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("lease key %q: %s is not IPv4", key, s4)
		}
	}
	if dual {
		v6, err = parseKeyPart(s6)
		if err != nil {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("lease key %q: %w", key, err)
		}
		if !v6.Addr().Is6() || v6.Addr().Is4In6() {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("lease key %q: %s is not IPv6", key, s6)
		}
	}
	return v4, v6, nil
}

func parseKeyPart(s string) (netip.Prefix, error) {
	i := strings.LastIndexByte(s, '-')
	if i < 0 {
		return netip.Prefix{}, fmt.Errorf("%q: want <ip>-<len>", s)
	}
	addr, err := netip.ParseAddr(s[:i])
	if err != nil || addr.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q: bad address", s)
	}
	// Only the canonical form: Lease.Key() must give back the exact etcd
	// key, or renewals and deletes would address another key.
	if addr.String() != s[:i] {
		return netip.Prefix{}, fmt.Errorf("%q: address not in canonical form %s", s, addr)
	}
	bits, err := strconv.Atoi(s[i+1:])
	if err != nil || s[i+1:] != strconv.Itoa(bits) {
		return netip.Prefix{}, fmt.Errorf("%q: bad prefix length", s)
	}
	p, err := addr.Prefix(bits)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q: %w", s, err)
	}
	if p.Addr() != addr {
		return netip.Prefix{}, fmt.Errorf("%q: host bits set", s)
	}
	return p, nil
}
