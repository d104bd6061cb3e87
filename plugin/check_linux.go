package plugin

import (
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/weftnet/weft/host"
	"github.com/weftnet/weft/plugin/ipam"
)

// CmdCheck verifies what ADD made against prevResult: the pod interface
// (veth, up, MAC), its addresses and routes, the IP reservation, and the node
// side (veth peer of the pod interface, on the bridge, hairpin). The error
// (code 103) names the first difference.
func CmdCheck(args *skel.CmdArgs) error {
	conf, err := LoadNetConf(args.StdinData)
	if err != nil {
		return err
	}
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return cniErr(types.ErrDecodingFailure, "parse prevResult: %v", err)
	}
	if conf.PrevResult == nil {
		return cniErr(types.ErrInvalidNetworkConfig, "CHECK needs prevResult")
	}
	res, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return cniErr(types.ErrDecodingFailure, "convert prevResult: %v", err)
	}
	podIdx := slices.IndexFunc(res.Interfaces, func(i *current.Interface) bool {
		return i.Name == args.IfName && i.Sandbox != ""
	})
	if podIdx < 0 {
		return cniErr(CodeCheckFailed, "prevResult has no interface %q with a sandbox", args.IfName)
	}
	var ips []*current.IPConfig
	for _, ip := range res.IPs {
		if ip.Interface == nil || *ip.Interface == podIdx {
			ips = append(ips, ip)
		}
	}
	if args.Netns == "" {
		return cniErr(CodeCheckFailed, "no netns given (CNI_NETNS)")
	}
	podNS, err := host.Open(args.Netns)
	if err != nil {
		return cniErr(CodeCheckFailed, "open netns %q: %v", args.Netns, err)
	}
	defer podNS.Close()
	pod, err := checkPod(podNS, res.Interfaces[podIdx], ips, res.Routes)
	if err != nil {
		return err
	}
	if err := checkReservation(conf, args.ContainerID, args.IfName, ips); err != nil {
		return err
	}
	return checkNode(conf, hostVethName(args.ContainerID, args.IfName), pod, ips)
}

// checkPod compares the pod interface with prevResult.
func checkPod(h *host.NS, want *current.Interface, ips []*current.IPConfig, routes []*types.Route) (netlink.Link, error) {
	l, err := h.LinkByName(want.Name)
	if err != nil {
		return nil, cniErr(CodeCheckFailed, "interface %s not found in %s: %v", want.Name, want.Sandbox, err)
	}
	if l.Type() != "veth" {
		return nil, cniErr(CodeCheckFailed, "interface %s is a %s, not a veth", want.Name, l.Type())
	}
	if want.Mac != "" && !strings.EqualFold(l.Attrs().HardwareAddr.String(), want.Mac) {
		return nil, cniErr(CodeCheckFailed, "interface %s has MAC %s, prevResult says %s", want.Name, l.Attrs().HardwareAddr, want.Mac)
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		return nil, cniErr(CodeCheckFailed, "interface %s is down", want.Name)
	}
	addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, internal(err, "list addresses of %s", want.Name)
	}
	for _, ip := range ips {
		i := slices.IndexFunc(addrs, func(a netlink.Addr) bool { return a.IPNet.String() == ip.Address.String() })
		if i < 0 {
			return nil, cniErr(CodeCheckFailed, "interface %s lacks address %s", want.Name, ip.Address.String())
		}
		if addrs[i].Flags&unix.IFA_F_DADFAILED != 0 {
			return nil, cniErr(CodeCheckFailed, "address %s on interface %s failed duplicate address detection", ip.Address.String(), want.Name)
		}
	}
	have, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{LinkIndex: l.Attrs().Index}, netlink.RT_FILTER_OIF)
	if err != nil {
		return nil, internal(err, "list routes of %s", want.Name)
	}
	for _, r := range routes {
		if !slices.ContainsFunc(have, func(k netlink.Route) bool { return sameRoute(k, r) }) {
			return nil, cniErr(CodeCheckFailed, "route %s via %s missing on %s", r.Dst.String(), r.GW, want.Name)
		}
	}
	return l, nil
}

// sameRoute compares destination and gateway; a nil Dst is the default route.
func sameRoute(k netlink.Route, r *types.Route) bool {
	dst := "0.0.0.0/0"
	if r.Dst.IP.To4() == nil {
		dst = "::/0"
	}
	if k.Dst != nil {
		dst = k.Dst.String()
	}
	return dst == r.Dst.String() && (r.GW == nil || r.GW.Equal(k.Gw))
}

// checkReservation looks for each address in the IPAM store.
func checkReservation(conf *NetConf, id, ifname string, ips []*current.IPConfig) error {
	store, err := ipam.OpenDiskStore(conf.DataDir, conf.Name)
	if err != nil {
		return cniErr(types.ErrIOFailure, "open IPAM store: %v", err)
	}
	defer store.Close()
	held, err := store.GetByID(id, ifname)
	if err != nil {
		return cniErr(types.ErrIOFailure, "read IPAM store: %v", err)
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(held, func(h netip.Addr) bool { return net.IP(h.AsSlice()).Equal(ip.Address.IP) }) {
			return cniErr(CodeCheckFailed, "address %s is not reserved for %s/%s in %s", ip.Address.IP, id, ifname, ipam.NetworkDir(conf.DataDir, conf.Name))
		}
	}
	return nil
}

// checkNode verifies the node side: the pod interface's peer, on the bridge,
// with hairpin as configured, and the bridge holding the gateway.
func checkNode(conf *NetConf, hostName string, pod netlink.Link, ips []*current.IPConfig) error {
	h, err := host.Open("")
	if err != nil {
		return internal(err, "netlink connection")
	}
	defer h.Close()
	l, err := h.LinkByName(hostName)
	if err != nil {
		return cniErr(CodeCheckFailed, "node-side veth %s not found: %v", hostName, err)
	}
	if pod.Attrs().ParentIndex != l.Attrs().Index {
		return cniErr(CodeCheckFailed, "node-side veth %s (index %d) is not the peer of the pod interface (peer index %d)", hostName, l.Attrs().Index, pod.Attrs().ParentIndex)
	}
	br, err := bridgeByName(h, conf.Bridge)
	if err != nil {
		return cniErr(CodeCheckFailed, "bridge %s: %v", conf.Bridge, err)
	}
	if l.Attrs().MasterIndex != br.Index {
		return cniErr(CodeCheckFailed, "veth %s is not attached to bridge %s", hostName, conf.Bridge)
	}
	if conf.HairpinMode {
		pi, err := h.LinkGetProtinfo(l)
		if err != nil {
			return internal(err, "read bridge port flags of %s", hostName)
		}
		if !pi.Hairpin {
			return cniErr(CodeCheckFailed, "hairpin mode is off on %s", hostName)
		}
	}
	addrs, err := h.AddrList(br, netlink.FAMILY_ALL)
	if err != nil {
		return internal(err, "list addresses of %s", conf.Bridge)
	}
	for _, ip := range ips {
		gw := net.IPNet{IP: ip.Gateway, Mask: ip.Address.Mask}
		if ip.Gateway != nil && !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return a.IPNet.String() == gw.String() }) {
			return cniErr(CodeCheckFailed, "bridge %s lacks gateway address %s", conf.Bridge, gw.String())
		}
	}
	return nil
}
