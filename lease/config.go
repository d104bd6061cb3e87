package lease

import (
	"net/netip"
)

// Network is the overlay configuration stored at <prefix>/config, after
// defaults are applied. Field names follow flannel's JSON keys.
type Network struct {
	Network    netip.Prefix // IPv4 cluster network, e.g. 10.244.0.0/16
	SubnetLen  int
	SubnetMin  netip.Addr
	SubnetMax  netip.Addr
	EnableIPv4 bool
	EnableIPv6 bool

	IPv6Network   netip.Prefix
	IPv6SubnetLen int
	IPv6SubnetMin netip.Addr
	IPv6SubnetMax netip.Addr

	Backend Backend
}

// Backend is the "Backend" object of the config. Only "vxlan" is supported.
type Backend struct {
	Type          string
	VNI           int
	Port          int // 0 = kernel default 8472
	MTU           int // 0 = derive from the underlay
	GBP           bool
	Learning      bool
	DirectRouting bool
}

// TODO(issue 2): ParseNetwork (case-insensitive keys, defaults, Validate).
