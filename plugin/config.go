package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"unicode"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/weftnet/weft/plugin/ipam"
	"github.com/weftnet/weft/subnetenv"
)

// Defaults of NetConf, chosen to match flannel's CNI plugin.
const (
	DefaultBridge     = "cni0"
	DefaultDataDir    = ipam.DefaultDataDir
	DefaultSubnetFile = subnetenv.DefaultSubnetFile
)

// NetConf is the weft plugin's configuration: the plugin object of the
// conflist with name and cniVersion injected by the runtime. Unknown keys are
// ignored (runtimes add their own, e.g. runtimeConfig).
type NetConf struct {
	types.PluginConf

	// CNIVersions is the conflist's list; the runtime injects the one it chose
	// as cniVersion, so the plugin only accepts it.
	CNIVersions []string `json:"cniVersions,omitempty"`
	// Bridge is the node bridge the pods attach to. Default "cni0".
	Bridge string `json:"bridge,omitempty"`
	// SubnetFile is the agent's subnet.env. Default /run/flannel/subnet.env.
	SubnetFile string `json:"subnetFile,omitempty"`
	// DataDir holds the IPAM state (host-local layout). Default /var/lib/cni/networks.
	DataDir string `json:"dataDir,omitempty"`
	// MTU overrides FLANNEL_MTU for cni0 and the veths when > 0.
	MTU int `json:"mtu,omitempty"`
	// HairpinMode lets a pod reach itself through a Service (DNAT to its own
	// IP). Default true.
	HairpinMode bool `json:"hairpinMode"`
	// IsDefaultGateway gives pods a default route via the bridge. Default
	// true. Pods always get a route to the cluster Network via the bridge.
	IsDefaultGateway bool `json:"isDefaultGateway"`
	// IPMasq is accepted for flannel compatibility and ignored: masquerading
	// pod traffic is weftd's job (--ip-masq), done once per node.
	IPMasq bool `json:"ipMasq,omitempty"`
	// IPAM optionally overrides the ranges taken from subnet.env, per family.
	IPAM *IPAMConf `json:"ipam,omitempty"`
	// LogFile, when set, receives the plugin's log lines (never stdout).
	LogFile string `json:"logFile,omitempty"`
	// LegacyAttachments is GC's list under its pre-1.1.0-final name;
	// libcni sends both names.
	LegacyAttachments []types.GCAttachment `json:"cni.dev/attachments,omitempty"`

	// rngs are the IPAM overrides, parsed and canonicalized: at most one
	// per family, in the config's order.
	rngs []ipam.Range
}

// IPAMConf is the host-local shaped override: one or two range sets of one
// range each, at most one per family.
type IPAMConf struct {
	// Type may be empty or "host-local"; weft always does its own IPAM.
	Type   string        `json:"type,omitempty"`
	Ranges [][]RangeConf `json:"ranges,omitempty"`
}

// RangeConf is one host-local range.
type RangeConf struct {
	Subnet     string `json:"subnet"`
	RangeStart string `json:"rangeStart,omitempty"`
	RangeEnd   string `json:"rangeEnd,omitempty"`
	Gateway    string `json:"gateway,omitempty"`
}

// networkName is the spec's pattern for network names (they become a
// directory name under dataDir).
var networkName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`)

// LoadNetConf parses and validates the stdin config. It returns a
// *types.Error: code 6 for undecodable JSON, 7 (naming the key) for a wrong
// type or an invalid value.
func LoadNetConf(stdin []byte) (*NetConf, error) {
	c := &NetConf{
		Bridge:           DefaultBridge,
		SubnetFile:       DefaultSubnetFile,
		DataDir:          DefaultDataDir,
		HairpinMode:      true,
		IsDefaultGateway: true,
	}
	if err := json.Unmarshal(stdin, c); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			// Field is the JSON path, prefixed by the embedded struct's Go name.
			key := strings.TrimPrefix(te.Field, "PluginConf.")
			return nil, cniErr(types.ErrInvalidNetworkConfig, "invalid network config: key %q must be %s, not %s", key, te.Type, te.Value)
		}
		return nil, cniErr(types.ErrDecodingFailure, "decode network config: %v", err)
	}
	if err := c.validate(); err != nil {
		return nil, cniErr(types.ErrInvalidNetworkConfig, "invalid network config: %v", err)
	}
	return c, nil
}

// validate checks values and parses the IPAM override. Each error names its key.
func (c *NetConf) validate() error {
	if !networkName.MatchString(c.Name) {
		return fmt.Errorf("key \"name\": %q must match %s", c.Name, networkName)
	}
	if err := validIfName(c.Bridge); err != nil {
		return fmt.Errorf("key \"bridge\": %w", err)
	}
	for _, f := range []struct{ key, path string }{{"subnetFile", c.SubnetFile}, {"dataDir", c.DataDir}, {"logFile", c.LogFile}} {
		if f.path != "" && !filepath.IsAbs(f.path) {
			return fmt.Errorf("key %q: %q must be an absolute path", f.key, f.path)
		}
	}
	if c.SubnetFile == "" || c.DataDir == "" {
		return fmt.Errorf("keys \"subnetFile\" and \"dataDir\" must not be empty")
	}
	// 68 is the IPv4 minimum MTU (RFC 791); 65535 the largest an IP packet can be.
	if c.MTU != 0 && (c.MTU < 68 || c.MTU > 65535) {
		return fmt.Errorf("key \"mtu\": %d is outside 68..65535", c.MTU)
	}
	if c.IPAM != nil {
		rngs, err := c.IPAM.parse()
		if err != nil {
			return err
		}
		c.rngs = rngs
	}
	return nil
}

// parse turns the override into canonical ranges, one per family at most.
func (ic *IPAMConf) parse() ([]ipam.Range, error) {
	if ic.Type != "" && ic.Type != "host-local" {
		return nil, fmt.Errorf("key \"ipam.type\": %q is not supported (weft does its own IPAM; leave it empty)", ic.Type)
	}
	if len(ic.Ranges) > 2 {
		return nil, fmt.Errorf("key \"ipam.ranges\": weft supports one range set per family (IPv4, IPv6), not %d", len(ic.Ranges))
	}
	var out []ipam.Range
	for i, set := range ic.Ranges {
		if len(set) != 1 {
			return nil, fmt.Errorf("key \"ipam.ranges[%d]\": weft supports exactly one range per range set", i)
		}
		r, err := parseRange(set[0], fmt.Sprintf("ipam.ranges[%d][0]", i))
		if err != nil {
			return nil, err
		}
		if len(out) > 0 && out[0].Subnet.Addr().Is6() == r.Subnet.Addr().Is6() {
			return nil, fmt.Errorf("key \"ipam.ranges\": both range sets are for the same family (%s and %s): give at most one per family", out[0].Subnet, r.Subnet)
		}
		out = append(out, r)
	}
	return out, nil
}

// parseRange parses one range: an IPv4 or an IPv6 subnet, and addresses of
// its family.
func parseRange(rc RangeConf, key string) (ipam.Range, error) {
	var r ipam.Range
	var err error
	if r.Subnet, err = netip.ParsePrefix(rc.Subnet); err != nil || r.Subnet.Addr().Is4In6() || r.Subnet.Addr().Zone() != "" {
		return ipam.Range{}, fmt.Errorf("key \"%s.subnet\": %q is not an IPv4 or IPv6 CIDR", key, rc.Subnet)
	}
	fam := "IPv4"
	if r.Subnet.Addr().Is6() {
		fam = "IPv6"
	}
	for _, f := range []struct {
		key, s string
		dst    *netip.Addr
	}{{"rangeStart", rc.RangeStart, &r.RangeStart}, {"rangeEnd", rc.RangeEnd, &r.RangeEnd}, {"gateway", rc.Gateway, &r.Gateway}} {
		if f.s == "" {
			continue
		}
		if *f.dst, err = netip.ParseAddr(f.s); err != nil || f.dst.Is6() != r.Subnet.Addr().Is6() || f.dst.Is4In6() {
			return ipam.Range{}, fmt.Errorf("key \"%s.%s\": %q is not an %s address (the subnet is %s)", key, f.key, f.s, fam, rc.Subnet)
		}
	}
	if err := r.Canonicalize(); err != nil {
		return ipam.Range{}, fmt.Errorf("key \"%s\": %w", key, err)
	}
	return r, nil
}

// validIfName applies the kernel's rules for interface names.
func validIfName(s string) error {
	if s == "" || len(s) > 15 || s == "." || s == ".." {
		return fmt.Errorf("%q is not a valid interface name (1-15 characters, not . or ..)", s)
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r == '/' || r == ':' || unicode.IsSpace(r) }) {
		return fmt.Errorf("%q is not a valid interface name (no /, : or spaces)", s)
	}
	return nil
}

// validAttachments is the GC keep-list from both key names.
func (c *NetConf) validAttachments() map[types.GCAttachment]bool {
	keep := make(map[types.GCAttachment]bool, len(c.ValidAttachments)+len(c.LegacyAttachments))
	for _, a := range append(append([]types.GCAttachment{}, c.ValidAttachments...), c.LegacyAttachments...) {
		keep[a] = true
	}
	return keep
}
