package plugin

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/weftnet/weft/plugin/ipam"
	"github.com/weftnet/weft/subnetenv"
)

// plan is what an ADD builds, derived from NetConf and subnet.env.
type plan struct {
	rng     ipam.Range   // addresses for pods
	gateway netip.Prefix // the bridge address: gateway with the subnet's length
	network netip.Prefix // the cluster Network (always routed via the gateway)
	mtu     int
}

// loadSubnetEnv reads the agent's subnet.env. Any failure is code 11: the
// file appears once weftd holds a lease, so the runtime should retry.
func loadSubnetEnv(path string) (subnetenv.SubnetEnv, error) {
	env, err := subnetenv.ReadSubnetEnv(path)
	if err == nil && (!env.Subnet.Addr().Is4() || !env.Network.Addr().Is4()) {
		err = errNotIPv4
	}
	if err != nil {
		return subnetenv.SubnetEnv{}, cniErr(types.ErrTryAgainLater, "%v: is weftd running? it writes %s once the node has a subnet", err, path)
	}
	return env, nil
}

var errNotIPv4 = errors.New("FLANNEL_NETWORK and FLANNEL_SUBNET must be IPv4 (weft pods are IPv4 only)")

// makePlan combines subnet.env with the config's overrides.
func (c *NetConf) makePlan(env subnetenv.SubnetEnv) (plan, error) {
	p := plan{rng: c.rng, network: env.Network, mtu: env.MTU}
	if c.MTU > 0 {
		p.mtu = c.MTU
	}
	if !p.rng.Subnet.IsValid() {
		// FLANNEL_SUBNET is the gateway (.1) with the lease's length.
		p.rng = ipam.Range{Subnet: env.Subnet.Masked(), Gateway: env.Subnet.Addr()}
		if err := p.rng.Canonicalize(); err != nil {
			return plan{}, cniErr(types.ErrTryAgainLater, "FLANNEL_SUBNET=%s in %s: %v", env.Subnet, c.SubnetFile, err)
		}
	}
	p.gateway = netip.PrefixFrom(p.rng.Gateway, p.rng.Subnet.Bits())
	return p, nil
}

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
// stay right. The bridge uses the gateway's.
func ipMAC(ip netip.Addr) net.HardwareAddr {
	b := ip.As4()
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

// podRoutes are the routes a pod gets, all via the gateway: the cluster
// Network always (as flannel's plugin does through host-local "routes"), and
// the default route when isDefaultGateway.
func podRoutes(p plan, isDefaultGateway bool) []*types.Route {
	gw := net.IP(p.gateway.Addr().AsSlice())
	rs := []*types.Route{{Dst: ipNet(p.network), GW: gw}}
	if isDefaultGateway {
		rs = append(rs, &types.Route{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: gw})
	}
	return rs
}

func ipNet(p netip.Prefix) net.IPNet {
	return net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func netipPrefix(ip netip.Addr, bits int) netip.Prefix { return netip.PrefixFrom(ip, bits) }

// slogLogger keeps signatures short.
type slogLogger = slog.Logger
