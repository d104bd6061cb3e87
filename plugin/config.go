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
	// IPAM optionally overrides the range taken from subnet.env.
	IPAM *IPAMConf `json:"ipam,omitempty"`
	// LogFile, when set, receives the plugin's log lines (never stdout).
	LogFile string `json:"logFile,omitempty"`
	// LegacyAttachments is GC's list under its pre-1.1.0-final name;
	// libcni sends both names.
	LegacyAttachments []types.GCAttachment `json:"cni.dev/attachments,omitempty"`

	// rng is the IPAM override, parsed and canonicalized (zero when absent).
	rng ipam.Range
}

// IPAMConf is the host-local shaped override: one range set with one range.
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
		r, err := c.IPAM.parse()
		if err != nil {
			return err
		}
		c.rng = r
	}
	return nil
}

// parse turns the override into a canonical IPv4 range.
func (ic *IPAMConf) parse() (ipam.Range, error) {
	if ic.Type != "" && ic.Type != "host-local" {
		return ipam.Range{}, fmt.Errorf("key \"ipam.type\": %q is not supported (weft does its own IPAM; leave it empty)", ic.Type)
	}
	if len(ic.Ranges) == 0 {
		return ipam.Range{}, nil
	}
	if len(ic.Ranges) != 1 || len(ic.Ranges[0]) != 1 {
		return ipam.Range{}, fmt.Errorf("key \"ipam.ranges\": weft supports exactly one range set with one range")
	}
	rc := ic.Ranges[0][0]
	var r ipam.Range
	var err error
	if r.Subnet, err = netip.ParsePrefix(rc.Subnet); err != nil || !r.Subnet.Addr().Is4() {
		return ipam.Range{}, fmt.Errorf("key \"ipam.ranges[0][0].subnet\": %q is not an IPv4 CIDR", rc.Subnet)
	}
	for _, f := range []struct {
		key, s string
		dst    *netip.Addr
	}{{"rangeStart", rc.RangeStart, &r.RangeStart}, {"rangeEnd", rc.RangeEnd, &r.RangeEnd}, {"gateway", rc.Gateway, &r.Gateway}} {
		if f.s == "" {
			continue
		}
		if *f.dst, err = netip.ParseAddr(f.s); err != nil || !f.dst.Is4() {
			return ipam.Range{}, fmt.Errorf("key \"ipam.ranges[0][0].%s\": %q is not an IPv4 address", f.key, f.s)
		}
	}
	if err := r.Canonicalize(); err != nil {
		return ipam.Range{}, fmt.Errorf("key \"ipam.ranges[0][0]\": %w", err)
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
