package lease

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"net/netip"
	"strings"
)

// Network is the overlay configuration stored at <prefix>/config, after
// defaults are applied. Field names follow flannel's JSON keys.
type Network struct {
	Network    netip.Prefix // IPv4 cluster network, e.g. 10.244.0.0/16; zero when IPv4 is off
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

	// Notices lists the choices ParseNetwork made that the operator may not
	// expect: those that differ from what flannel would do (for example
	// "Backend absent: using vxlan") and the fields it ignored (those of a
	// family that is off). The caller logs them. Never serialised.
	Notices []string
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

// BackendVXLAN is the only backend type weft implements.
const BackendVXLAN = "vxlan"

// ConfigError says which field of the network config is wrong and why.
type ConfigError struct {
	Field  string
	Reason string
}

func (e *ConfigError) Error() string {
	return "invalid network config: " + e.Field + ": " + e.Reason
}

func cfgErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// rawNetwork is the JSON shape of <prefix>/config. encoding/json matches keys
// case-insensitively, as flannel's decoder does. Addresses stay strings so
// that errors can name the field.
type rawNetwork struct {
	Network       string
	SubnetLen     int
	SubnetMin     string
	SubnetMax     string
	EnableIPv4    *bool
	EnableIPv6    bool
	IPv6Network   string
	IPv6SubnetLen int
	IPv6SubnetMin string
	IPv6SubnetMax string
	Backend       json.RawMessage
}

// ParseNetwork decodes the JSON of <prefix>/config, applies flannel's
// defaults (plus weft's: Backend absent means vxlan, recorded in Notices) and
// validates the result. EnableIPv4 defaults to true; IPv4-only, dual stack
// and IPv6-only ("EnableIPv4":false,"EnableIPv6":true) are supported, and the
// fields of a family that is off are ignored (cleared, with a Notice).
// Unknown keys are ignored, as flannel does; so is flannel's EnableNFTables,
// whose choice weft does not need: weft always programs nftables (masquerade
// and forward rules), which is what EnableNFTables true asks of flannel. The
// Backend is refused unless it is vxlan, the only one weft implements; every
// field of flannel's vxlan backend (VNI, Port, MTU, GBP, Learning,
// DirectRouting) is implemented.
func ParseNetwork(b []byte) (*Network, error) {
	var raw rawNetwork
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("decode network config: %w", err)
	}
	n := &Network{
		SubnetLen:     raw.SubnetLen,
		EnableIPv4:    raw.EnableIPv4 == nil || *raw.EnableIPv4, // flannel: IPv4 on by default
		EnableIPv6:    raw.EnableIPv6,
		IPv6SubnetLen: raw.IPv6SubnetLen,
	}
	fields := []struct {
		name string
		s    string
		p    *netip.Prefix
		a    *netip.Addr
	}{
		{"Network", raw.Network, &n.Network, nil},
		{"SubnetMin", raw.SubnetMin, nil, &n.SubnetMin},
		{"SubnetMax", raw.SubnetMax, nil, &n.SubnetMax},
		{"IPv6Network", raw.IPv6Network, &n.IPv6Network, nil},
		{"IPv6SubnetMin", raw.IPv6SubnetMin, nil, &n.IPv6SubnetMin},
		{"IPv6SubnetMax", raw.IPv6SubnetMax, nil, &n.IPv6SubnetMax},
	}
	for _, f := range fields {
		if f.s == "" {
			continue
		}
		var err error
		if f.p != nil {
			*f.p, err = netip.ParsePrefix(f.s)
		} else {
			*f.a, err = netip.ParseAddr(f.s)
		}
		if err != nil {
			return nil, cfgErr(f.name, "cannot parse %q", f.s)
		}
	}
	n.dropDisabledFamilies()
	if err := n.parseBackend(raw.Backend); err != nil {
		return nil, err
	}
	if err := n.ApplyDefaults(); err != nil {
		return nil, err
	}
	if err := n.Validate(); err != nil {
		return nil, err
	}
	return n, nil
}

// dropDisabledFamilies clears the fields of a family that is off (flannel
// ignores them too), with a Notice, so that a valid Network means IPv4 is on
// and a valid IPv6Network means IPv6 is on.
func (n *Network) dropDisabledFamilies() {
	if !n.EnableIPv4 && (n.Network.IsValid() || n.SubnetLen != 0 || n.SubnetMin.IsValid() || n.SubnetMax.IsValid()) {
		n.Network, n.SubnetLen, n.SubnetMin, n.SubnetMax = netip.Prefix{}, 0, netip.Addr{}, netip.Addr{}
		n.Notices = append(n.Notices, "EnableIPv4 is false: Network, SubnetLen, SubnetMin and SubnetMax are ignored")
	}
	if !n.EnableIPv6 && (n.IPv6Network.IsValid() || n.IPv6SubnetLen != 0 || n.IPv6SubnetMin.IsValid() || n.IPv6SubnetMax.IsValid()) {
		n.IPv6Network, n.IPv6SubnetLen, n.IPv6SubnetMin, n.IPv6SubnetMax = netip.Prefix{}, 0, netip.Addr{}, netip.Addr{}
		n.Notices = append(n.Notices, "EnableIPv6 is false: IPv6Network, IPv6SubnetLen, IPv6SubnetMin and IPv6SubnetMax are ignored")
	}
}

func (n *Network) parseBackend(b json.RawMessage) error {
	var rb Backend
	if t := bytes.TrimSpace(b); len(t) > 0 && !bytes.Equal(t, []byte("null")) {
		if err := json.Unmarshal(t, &rb); err != nil {
			return cfgErr("Backend", "cannot decode: %v", err)
		}
	}
	if rb.Type == "" {
		// flannel picks "udp" here, a backend that no longer exists; weft
		// picks vxlan and says so.
		rb.Type = BackendVXLAN
		n.Notices = append(n.Notices, "Backend.Type not set: using vxlan (flannel would pick udp)")
	}
	if strings.EqualFold(rb.Type, BackendVXLAN) {
		rb.Type = BackendVXLAN
	}
	if rb.VNI == 0 {
		rb.VNI = DefaultVNI
	}
	n.Backend = rb
	return nil
}

// ApplyDefaults fills the fields flannel derives when they are absent:
// SubnetLen (24 for a /22 or larger Network, else prefix+2), SubnetMin (the
// second block: the first is never handed out), SubnetMax (the last block),
// the IPv6 equivalents (64 for a /62 or larger), Backend.Type vxlan and VNI 1.
// It fails only when the Network is too small to derive a SubnetLen.
func (n *Network) ApplyDefaults() error {
	if n.Backend.Type == "" {
		n.Backend.Type = BackendVXLAN
	}
	if n.Backend.VNI == 0 {
		n.Backend.VNI = DefaultVNI
	}
	if n.EnableIPv4 && n.Network.IsValid() && n.Network.Addr().Is4() {
		if err := defaultFamily("", n.Network, &n.SubnetLen, &n.SubnetMin, &n.SubnetMax, 28, 22, 24); err != nil {
			return err
		}
	}
	if n.EnableIPv6 && n.IPv6Network.IsValid() && n.IPv6Network.Addr().Is6() {
		if err := defaultFamily("IPv6", n.IPv6Network, &n.IPv6SubnetLen, &n.IPv6SubnetMin, &n.IPv6SubnetMax, 124, 62, 64); err != nil {
			return err
		}
	}
	return nil
}

// defaultFamily applies the defaults of one address family. maxNet is the
// longest usable Network prefix, bigNet the longest prefix that still gets
// the standard block length std.
func defaultFamily(fam string, netw netip.Prefix, subnetLen *int, lo, hi *netip.Addr, maxNet, bigNet, std int) error {
	if *subnetLen == 0 {
		switch {
		case netw.Bits() > maxNet:
			return cfgErr(fam+"Network", "%s is too small: the longest usable prefix is /%d", netw, maxNet)
		case netw.Bits() <= bigNet:
			*subnetLen = std
		default:
			*subnetLen = netw.Bits() + 2
		}
	}
	if *subnetLen <= netw.Bits() || *subnetLen > netw.Addr().BitLen() {
		return nil // Validate reports it
	}
	base := netw.Masked().Addr()
	if !lo.IsValid() {
		*lo = addBlocks(base, *subnetLen, big.NewInt(1))
	}
	if !hi.IsValid() {
		n := new(big.Int).Lsh(big.NewInt(1), uint(*subnetLen-netw.Bits()))
		*hi = addBlocks(base, *subnetLen, n.Sub(n, big.NewInt(1)))
	}
	return nil
}

// Validate checks a defaulted config. IPv4-only, dual stack and IPv6-only
// (EnableIPv4 false, EnableIPv6 true) are valid; the fields of a family that
// is off are not checked. Each error is a *ConfigError naming the field and
// the reason.
func (n *Network) Validate() error {
	if !n.EnableIPv4 && !n.EnableIPv6 {
		return cfgErr("EnableIPv4/EnableIPv6", "neither IPv4 nor IPv6 is enabled: set EnableIPv4 (the default) or EnableIPv6 to true")
	}
	if n.EnableIPv4 {
		if err := validateFamily("", n.Network, n.SubnetLen, n.SubnetMin, n.SubnetMax, 30); err != nil {
			return err
		}
	}
	if n.EnableIPv6 {
		if err := validateFamily("IPv6", n.IPv6Network, n.IPv6SubnetLen, n.IPv6SubnetMin, n.IPv6SubnetMax, 126); err != nil {
			return err
		}
	}
	return n.Backend.validate()
}

func validateFamily(fam string, netw netip.Prefix, subnetLen int, lo, hi netip.Addr, maxLen int) error {
	is6 := fam != ""
	switch {
	case !netw.IsValid():
		return cfgErr(fam+"Network", "missing: the config must name the cluster network, e.g. %q", map[bool]string{false: "10.244.0.0/16", true: "fc00::/48"}[is6])
	case netw.Addr().Is6() != is6 || netw.Addr().Is4In6():
		return cfgErr(fam+"Network", "%s is not an %s network", netw, map[bool]string{false: "IPv4", true: "IPv6"}[is6])
	case netw.Masked() != netw:
		return cfgErr(fam+"Network", "%s has host bits set (did you mean %s?)", netw, netw.Masked())
	case subnetLen > maxLen:
		return cfgErr(fam+"SubnetLen", "/%d is longer than /%d: a block needs room for the gateway and pods", subnetLen, maxLen)
	case subnetLen < netw.Bits()+2:
		return cfgErr(fam+"SubnetLen", "/%d must be at least /%d so that Network %s holds four blocks", subnetLen, netw.Bits()+2, netw)
	}
	for _, f := range []struct {
		name string
		a    netip.Addr
	}{{fam + "SubnetMin", lo}, {fam + "SubnetMax", hi}} {
		if !f.a.IsValid() || !netw.Contains(f.a) {
			return cfgErr(f.name, "%s is not inside %sNetwork %s", f.a, fam, netw)
		}
		if p, _ := f.a.Prefix(subnetLen); p.Addr() != f.a {
			return cfgErr(f.name, "%s is not aligned to /%d (SubnetLen)", f.a, subnetLen)
		}
	}
	if hi.Less(lo) {
		return cfgErr(fam+"SubnetMax", "%s is below %sSubnetMin %s", hi, fam, lo)
	}
	return nil
}

func (b Backend) validate() error {
	switch {
	case !strings.EqualFold(b.Type, BackendVXLAN):
		return cfgErr("Backend.Type", "unsupported backend %q: weft implements only vxlan", b.Type)
	case b.VNI < 1 || b.VNI > 1<<24-1:
		return cfgErr("Backend.VNI", "%d is outside 1..16777215", b.VNI)
	case b.Port < 0 || b.Port > 65535:
		return cfgErr("Backend.Port", "%d is outside 0..65535 (0 = kernel default 8472)", b.Port)
	case b.MTU != 0 && (b.MTU < 68 || b.MTU > 65535):
		return cfgErr("Backend.MTU", "%d is outside 68..65535 (0 = from the underlay)", b.MTU)
	}
	return nil
}

// jsonNetwork is flannel's field order for <prefix>/config.
type jsonNetwork struct {
	Network       string  `json:",omitempty"`
	SubnetLen     int     `json:",omitempty"`
	SubnetMin     string  `json:",omitempty"`
	SubnetMax     string  `json:",omitempty"`
	EnableIPv4    bool    // always written: false must survive a round trip
	EnableIPv6    bool    `json:",omitempty"`
	IPv6Network   string  `json:",omitempty"`
	IPv6SubnetLen int     `json:",omitempty"`
	IPv6SubnetMin string  `json:",omitempty"`
	IPv6SubnetMax string  `json:",omitempty"`
	Backend       Backend // Type first, as flannel's docs write it
}

// MarshalJSON renders the config as flannel writes and reads it, e.g.
// {"Network":"10.244.0.0/16","SubnetLen":24,"SubnetMin":"10.244.1.0",...,"Backend":{"Type":"vxlan","VNI":1,...}}.
func (n Network) MarshalJSON() ([]byte, error) {
	j := jsonNetwork{
		SubnetLen:     n.SubnetLen,
		EnableIPv4:    n.EnableIPv4,
		EnableIPv6:    n.EnableIPv6,
		IPv6SubnetLen: n.IPv6SubnetLen,
		Backend:       n.Backend,
	}
	str := func(v interface{ IsValid() bool }, s fmt.Stringer) string {
		if !v.IsValid() {
			return ""
		}
		return s.String()
	}
	j.Network = str(n.Network, n.Network)
	j.SubnetMin = str(n.SubnetMin, n.SubnetMin)
	j.SubnetMax = str(n.SubnetMax, n.SubnetMax)
	j.IPv6Network = str(n.IPv6Network, n.IPv6Network)
	j.IPv6SubnetMin = str(n.IPv6SubnetMin, n.IPv6SubnetMin)
	j.IPv6SubnetMax = str(n.IPv6SubnetMax, n.IPv6SubnetMax)
	return json.Marshal(j)
}
