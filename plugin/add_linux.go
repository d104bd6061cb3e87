package plugin

import (
	"errors"
	"net/netip"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netlink"

	"github.com/weftnet/weft/host"
	"github.com/weftnet/weft/plugin/ipam"
)

// CmdAdd attaches a pod: cni0 with the gateway, an address from the node's
// subnet, a veth pair with the pod side configured. Whatever it made is undone
// when a later step fails. The result is printed in the config's version.
func CmdAdd(args *skel.CmdArgs) error {
	start := time.Now()
	conf, err := LoadNetConf(args.StdinData)
	if err != nil {
		return err
	}
	log, closeLog := conf.logger()
	defer closeLog()
	env, err := loadSubnetEnv(conf.SubnetFile)
	if err != nil {
		log.Error("ADD failed", "container", args.ContainerID, "err", err)
		return err
	}
	p, err := conf.makePlan(env)
	if err != nil {
		return err
	}
	res, err := add(args, conf, p, log)
	if err != nil {
		log.Error("ADD failed", "container", args.ContainerID, "ifname", args.IfName, "err", err)
		return err
	}
	ips := make([]string, len(res.IPs))
	for i, ip := range res.IPs {
		ips[i] = ip.Address.String()
	}
	log.Info("ADD", "container", args.ContainerID, "ifname", args.IfName, "ips", ips, "took", time.Since(start))
	if err := types.PrintResult(res, conf.CNIVersion); err != nil {
		return cniErr(types.ErrIOFailure, "print result: %v", err)
	}
	return nil
}

// add does the work of CmdAdd; rollback undoes the steps done so far on error.
//
// It holds one connection to the pod netns and one to the node's for the
// whole ADD: every netlink request goes through them, and the one write that
// has to happen inside the pod netns (switching DAD off) is the pod
// connection's.
func add(args *skel.CmdArgs, conf *NetConf, p plan, log *slogLogger) (_ *current.Result, err error) {
	a := &attachment{containerID: args.ContainerID, ifname: args.IfName, hostName: hostVethName(args.ContainerID, args.IfName)}
	if args.Netns == "" {
		return nil, cniErr(types.ErrInvalidNetNS, "no netns given (CNI_NETNS)")
	}
	if a.pod, err = host.Open(args.Netns); err != nil {
		return nil, cniErr(types.ErrInvalidNetNS, "open netns %q: %v", args.Netns, err)
	}
	defer a.pod.Close()
	// The pod netns connection is opened first: the spec wants an existing
	// CNI_IFNAME to be an error that changes nothing (no bridge, no address,
	// not even the allocator's cursor), so it is looked up before any of that.
	if _, err := a.pod.LinkByName(a.ifname); err == nil {
		return nil, cniErr(CodeIfNameExists, "interface %q already exists in netns %s", a.ifname, args.Netns)
	} else if !isLinkNotFound(err) {
		return nil, internal(err, "look up %s in %s", a.ifname, args.Netns)
	}
	node, err := host.Open("")
	if err != nil {
		return nil, internal(err, "netlink connection")
	}
	defer node.Close()
	br, err := ensureBridge(node, conf.Bridge, p, log)
	if err != nil {
		return nil, err
	}
	for _, f := range p.fams {
		if err := enableForwarding(node, f.is6()); err != nil {
			return nil, err
		}
	}
	store, err := openStore(conf)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	defer func() {
		if err != nil {
			rollback(node, store, a, log)
		}
	}()
	for _, f := range p.fams {
		ip, err := ipam.NewAllocator(store, f.rng, f.rangeID).Get(a.containerID, a.ifname)
		if err != nil {
			return nil, allocErr(f, err)
		}
		a.ips = append(a.ips, ip)
	}
	return attach(node, br, a, conf, p)
}

// attach creates and configures the veth and builds the result.
func attach(node *host.NS, br *netlink.Bridge, a *attachment, conf *NetConf, p plan) (*current.Result, error) {
	if err := createVeth(node, br, a, p.mtu); err != nil {
		return nil, err
	}
	podVeth, err := configurePod(a, p, conf.IsDefaultGateway)
	if err != nil {
		return nil, err
	}
	// The node side comes up last, with our alias (GC finds its network's
	// orphaned veths by it). That gives the pair carrier, and the
	// kernel's carrier work (linkwatch: the bridge port, qdiscs, IPv6
	// addrconf) takes rtnl_lock: done earlier, the pod's address and route
	// requests queued behind it; now it runs after them. It also keeps
	// traffic off the pod until the pod side is configured.
	if err := node.SetPortUp(a.hostName, vethAlias(conf.Name, a.containerID, a.ifname), conf.HairpinMode); err != nil {
		return nil, internal(err, "set %s up (hairpin %t)", a.hostName, conf.HairpinMode)
	}
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: br.Name, Mac: br.HardwareAddr.String()},
			{Name: a.hostName, Mac: hostVethMAC(a.containerID, a.ifname).String()},
			{Name: a.ifname, Mac: podVeth.HardwareAddr.String(), Sandbox: a.pod.Path()},
		},
		Routes: podRoutes(p, conf.IsDefaultGateway),
		DNS:    conf.DNS,
	}
	for i, f := range p.fams {
		res.IPs = append(res.IPs, &current.IPConfig{
			Address:   ipNet(netip.PrefixFrom(a.ips[i], f.rng.Subnet.Bits())),
			Gateway:   f.gateway.Addr().AsSlice(),
			Interface: current.Int(2),
		})
	}
	// Interface MTU is a 1.1.0 field.
	if ok, _ := version.GreaterThanOrEqualTo(conf.CNIVersion, "1.1.0"); ok {
		for _, i := range res.Interfaces[1:] {
			i.Mtu = p.mtu
		}
	}
	return res, nil
}

// rollback undoes a failed ADD: the veth (its pod side goes with it) and the
// addresses reserved so far. Errors are logged; the ADD error is what the
// runtime needs.
func rollback(h *host.NS, store ipam.Store, a *attachment, log *slogLogger) {
	if l, err := h.LinkByName(a.hostName); err == nil && a.ownVeth {
		if err := ignoreNotFound(h.LinkDel(l)); err != nil {
			log.Error("rollback: delete veth", "veth", a.hostName, "err", err)
		}
	}
	for _, ip := range a.ips {
		// Any Allocator of the store releases any of its addresses.
		if err := ipam.NewAllocator(store, ipam.Range{}, 0).ReleaseIP(a.containerID, a.ifname, ip); err != nil {
			log.Error("rollback: release address", "ip", ip.String(), "err", err)
		}
	}
}

// openStore opens the disk store of the network.
func openStore(conf *NetConf) (*ipam.DiskStore, error) {
	store, err := ipam.OpenDiskStore(conf.DataDir, conf.Name)
	if err != nil {
		return nil, cniErr(types.ErrIOFailure, "open IPAM store in %s: %v", conf.DataDir, err)
	}
	return store, nil
}

// allocErr maps allocator errors to codes.
func allocErr(f family, err error) error {
	switch {
	case errors.Is(err, ipam.ErrExhausted):
		return cniErr(CodeIPExhausted, "allocate %s address: %v (release stale reservations with CNI GC or DEL)", f.name(), err)
	}
	return cniErr(types.ErrIOFailure, "allocate %s address: %v", f.name(), err)
}
