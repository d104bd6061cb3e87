package plugin

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/weftnet/weft/plugin/ipam"
	"github.com/weftnet/weft/subnetenv"
)

// plan is what an ADD builds, derived from NetConf and subnet.env.
type plan struct {
	fams []family // one per family in subnet.env, IPv4 first
	mtu  int
}

// family is one address family of a pod.
type family struct {
	rng     ipam.Range   // addresses for pods
	gateway netip.Prefix // the bridge address: gateway with the subnet's length
	network netip.Prefix // the family's cluster Network (always routed via the gateway)
	// rangeID is the range's index among the pod's families (IPv4 first):
	// host-local's range set index for flannel's ranges, naming the cursor
	// file last_reserved_ip.<rangeID>.
	rangeID int
}

// is6 tells an IPv6 family from an IPv4 one.
func (f family) is6() bool { return f.rng.Subnet.Addr().Is6() }

// name is the family's name in messages.
func (f family) name() string {
	if f.is6() {
		return "IPv6"
	}
	return "IPv4"
}

// loadSubnetEnv reads the agent's subnet.env. Any failure is code 11: the
// file appears once weftd holds a lease, so the runtime should retry.
func loadSubnetEnv(path string) (subnetenv.SubnetEnv, error) {
	env, err := subnetenv.ReadSubnetEnv(path)
	if err == nil {
		err = checkSubnetEnv(env)
	}
	if err != nil {
		return subnetenv.SubnetEnv{}, cniErr(types.ErrTryAgainLater, "%v: is weftd running? it writes %s once the node has a subnet", err, path)
	}
	return env, nil
}

// checkSubnetEnv checks each family's pair that subnetenv parsed: the IPv4
// pair IPv4, the IPv6 pair IPv6 with the node's subnet inside the Network.
// subnetenv has made sure at least one pair is complete.
func checkSubnetEnv(env subnetenv.SubnetEnv) error {
	if env.Network.IsValid() && (!env.Subnet.Addr().Is4() || !env.Network.Addr().Is4()) {
		return fmt.Errorf("FLANNEL_NETWORK=%s and FLANNEL_SUBNET=%s must be IPv4", env.Network, env.Subnet)
	}
	if !env.IPv6Network.IsValid() {
		return nil
	}
	n, sn := env.IPv6Network, env.IPv6Subnet
	if !n.Addr().Is6() || n.Addr().Is4In6() || !sn.Addr().Is6() || sn.Addr().Is4In6() {
		return fmt.Errorf("FLANNEL_IPV6_NETWORK=%s and FLANNEL_IPV6_SUBNET=%s must be IPv6", n, sn)
	}
	if sn.Bits() < n.Bits() || !n.Contains(sn.Addr()) {
		return fmt.Errorf("FLANNEL_IPV6_SUBNET=%s is not inside FLANNEL_IPV6_NETWORK=%s", sn, n)
	}
	return nil
}

// minMTUv6 is the smallest MTU IPv6 runs on (RFC 8200): the kernel takes
// IPv6 off a smaller link.
const minMTUv6 = 1280

// makePlan combines subnet.env with the config's overrides: one family per
// pair in subnet.env, its range from ipam.ranges when the config gives one
// for that family, else from the node's subnet.
func (c *NetConf) makePlan(env subnetenv.SubnetEnv) (plan, error) {
	p := plan{mtu: env.MTU}
	if c.MTU > 0 {
		p.mtu = c.MTU
	}
	for _, e := range []struct {
		network, subnet netip.Prefix
		key             string
		v6              bool
	}{{env.Network, env.Subnet, "FLANNEL_SUBNET", false}, {env.IPv6Network, env.IPv6Subnet, "FLANNEL_IPV6_SUBNET", true}} {
		if !e.network.IsValid() {
			continue
		}
		f := family{network: e.network, rangeID: len(p.fams)}
		if i := slices.IndexFunc(c.rngs, func(r ipam.Range) bool { return r.Subnet.Addr().Is6() == e.v6 }); i >= 0 {
			f.rng = c.rngs[i]
		} else {
			// The subnet.env value is the gateway (::1, .1) with the lease's length.
			f.rng = ipam.Range{Subnet: e.subnet.Masked(), Gateway: e.subnet.Addr()}
			if err := f.rng.Canonicalize(); err != nil {
				return plan{}, cniErr(types.ErrTryAgainLater, "%s=%s in %s: %v", e.key, e.subnet, c.SubnetFile, err)
			}
		}
		f.gateway = netip.PrefixFrom(f.rng.Gateway, f.rng.Subnet.Bits())
		p.fams = append(p.fams, f)
	}
	for _, r := range c.rngs {
		if !slices.ContainsFunc(p.fams, func(f family) bool { return f.is6() == r.Subnet.Addr().Is6() }) {
			return plan{}, cniErr(types.ErrInvalidNetworkConfig, "key \"ipam.ranges\": range %s is for a family %s does not have (no %s): pods get the families of subnet.env", r.Subnet, c.SubnetFile, familyKeys(r.Subnet.Addr().Is6()))
		}
	}
	if p.has6() && p.mtu < minMTUv6 {
		if c.MTU > 0 {
			return plan{}, cniErr(types.ErrInvalidNetworkConfig, "key \"mtu\": %d is below IPv6's minimum %d, and the pods get IPv6", p.mtu, minMTUv6)
		}
		return plan{}, cniErr(types.ErrTryAgainLater, "FLANNEL_MTU=%d in %s is below IPv6's minimum %d, and the pods get IPv6", p.mtu, c.SubnetFile, minMTUv6)
	}
	return p, nil
}

// familyKeys are subnet.env's keys of a family.
func familyKeys(v6 bool) string {
	if v6 {
		return "FLANNEL_IPV6_NETWORK/FLANNEL_IPV6_SUBNET"
	}
	return "FLANNEL_NETWORK/FLANNEL_SUBNET"
}

// has6 tells whether the pods get IPv6.
func (p plan) has6() bool { return slices.ContainsFunc(p.fams, family.is6) }

// hostVethName is the node-side veth name of (containerID, ifname): stable,
// unique in practice (40 bits of SHA-256) and 14 characters long, under the
// kernel's 15.
func hostVethName(containerID, ifname string) string {
	sum := sha256.Sum256([]byte(containerID + "\x00" + ifname))
	return "veth" + hex.EncodeToString(sum[:5])
}

// hostVethMAC is a stable locally administered unicast MAC for the node side.
func hostVethMAC(containerID, ifname string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("mac\x00" + containerID + "\x00" + ifname))
	return net.HardwareAddr{0x0e, sum[0], sum[1], sum[2], sum[3], sum[4]}
}

// ipMAC is 0a:58 followed by the IPv4 address (kubenet's scheme): a pod that
// gets a reused address also gets the same MAC, so neighbours' ARP entries
// stay right. The bridge uses the gateway's. For an IPv6 address it is 0a:58
// followed by the address's last four bytes: unique within a node's subnet
// as long as the pod range spans less than 2^32 addresses from its start,
// which the allocator walks in order, and stable for a reused address.
func ipMAC(ip netip.Addr) net.HardwareAddr {
	b := ip.AsSlice()
	b = b[len(b)-4:]
	return net.HardwareAddr{0x0a, 0x58, b[0], b[1], b[2], b[3]}
}

// vethAlias marks a node-side veth as weft's and records its attachment,
// network included, so GC can find veths whose container is gone and tell
// its own network's from another's on the same bridge (doc.go, "Veth tags").
// Network names and container IDs are made of [a-zA-Z0-9_.-] and ifnames
// contain neither ":" nor "/", so the tag parses back unambiguously. An
// attachment too long for an alias (the kernel takes 255 bytes) gets none
// rather than a cut one, which GC would read as another attachment's.
func vethAlias(network, containerID, ifname string) string {
	a := aliasPrefix + network + ":" + containerID + "/" + ifname
	if len(a) > maxAlias {
		return ""
	}
	return a
}

// vethTag is an attachment as a veth's alias records it. network is empty
// for a legacy tag.
type vethTag struct {
	network, containerID, ifname string
}

// parseVethAlias reads a tag written by vethAlias, or a legacy one
// ("weft:<containerID>/<ifname>", written by releases before the network
// name was recorded; network is then ""). ok is false for any other alias.
func parseVethAlias(alias string) (t vethTag, ok bool) {
	rest, scoped := strings.CutPrefix(alias, aliasPrefix)
	if scoped {
		if t.network, rest, ok = strings.Cut(rest, ":"); !ok || !networkName.MatchString(t.network) {
			return vethTag{}, false
		}
	} else if rest, ok = strings.CutPrefix(alias, legacyAliasPrefix); !ok {
		return vethTag{}, false
	}
	if t.containerID, t.ifname, ok = strings.Cut(rest, "/"); !ok ||
		!containerIDChars.MatchString(t.containerID) || validIfName(t.ifname) != nil {
		return vethTag{}, false
	}
	return t, true
}

// reservedVethIsOurs tells GC, which is releasing network's stale
// reservation (id, ifname), whether the veth named hostVethName(id, ifname)
// and carrying alias goes with it. The reservation in network's own
// directory is the proof for a veth whose tag does not name a network (a
// legacy tag, or none because the attachment was too long for one); a tag
// naming another network or another attachment (a name collision) keeps it.
func reservedVethIsOurs(alias, network, id, ifname string) bool {
	t, ok := parseVethAlias(alias)
	if !ok {
		return true
	}
	return (t.network == "" || t.network == network) && t.containerID == id && t.ifname == ifname
}

// containerIDChars is the spec's pattern for container IDs, which skel
// enforces on CNI_CONTAINERID for ADD, CHECK and DEL: that of network names.
var containerIDChars = networkName

const (
	aliasPrefix       = "weft@"
	legacyAliasPrefix = "weft:"
	maxAlias          = 255 // IFALIASZ - 1
)

// logger returns the config's logger (LogFile, else discarded: stdout is the
// CNI result and stderr ends up in runtime logs) and its closer.
func (c *NetConf) logger() (*slog.Logger, func()) {
	if c.LogFile == "" {
		return slog.New(slog.DiscardHandler), func() {}
	}
	f, err := os.OpenFile(c.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return slog.New(slog.NewTextHandler(os.Stderr, nil)).With("logFile", c.LogFile, "open", err.Error()), func() {}
	}
	var w io.Writer = f
	return slog.New(slog.NewTextHandler(w, nil)).With("pid", os.Getpid()), func() { _ = f.Close() }
}

// podRoutes are the routes a pod gets, per family and via that family's
// gateway: its cluster Network always (as flannel's plugin does through
// host-local "routes"), and its default route when isDefaultGateway.
func podRoutes(p plan, isDefaultGateway bool) []*types.Route {
	var rs []*types.Route
	for _, f := range p.fams {
		gw := net.IP(f.gateway.Addr().AsSlice())
		rs = append(rs, &types.Route{Dst: ipNet(f.network), GW: gw})
		if isDefaultGateway {
			bits := f.gateway.Addr().BitLen()
			rs = append(rs, &types.Route{Dst: net.IPNet{IP: make(net.IP, bits/8), Mask: net.CIDRMask(0, bits)}, GW: gw})
		}
	}
	return rs
}

func ipNet(p netip.Prefix) net.IPNet {
	return net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// slogLogger keeps signatures short.
type slogLogger = slog.Logger
