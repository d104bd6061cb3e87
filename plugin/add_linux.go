package plugin

import (
	"errors"
	"runtime"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

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
	log.Info("ADD", "container", args.ContainerID, "ifname", args.IfName, "ip", res.IPs[0].Address.String(), "took", time.Since(start))
	if err := types.PrintResult(res, conf.CNIVersion); err != nil {
		return cniErr(types.ErrIOFailure, "print result: %v", err)
	}
	return nil
}

// add does the work of CmdAdd; rollback undoes the steps done so far on error.
//
// The calling goroutine keeps its thread for the whole ADD: the two trips
// into the pod netns (to open a netlink socket there, and to switch DAD off)
// are plain setns calls from this thread and back, with the node netns held
// open from the start, rather than a goroutine per trip that looks up both
// namespaces again.
func add(args *skel.CmdArgs, conf *NetConf, p plan, log *slogLogger) (_ *current.Result, err error) {
	a := &attachment{containerID: args.ContainerID, ifname: args.IfName, hostName: hostVethName(args.ContainerID, args.IfName)}
	if a.podNS, err = ns.GetNS(args.Netns); err != nil {
		return nil, cniErr(types.ErrInvalidNetNS, "open netns %q: %v", args.Netns, err)
	}
	defer a.podNS.Close()
	runtime.LockOSThread()
	if a.pod, err = newNetnsTrip(int(a.podNS.Fd())); err != nil {
		runtime.UnlockOSThread()
		return nil, internal(err, "prepare to enter netns %s", args.Netns)
	}
	defer a.pod.close()
	// The pod netns socket is opened first: the spec wants an existing
	// CNI_IFNAME to be an error that changes nothing (no bridge, no address,
	// not even the allocator's cursor), so it is looked up before any of that.
	err = a.pod.do(func() (err error) {
		a.podH, err = netlink.NewHandle(syscall.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		return nil, internal(err, "netlink handle in %s", args.Netns)
	}
	defer a.podH.Close()
	if _, err := a.podH.LinkByName(a.ifname); err == nil {
		return nil, cniErr(CodeIfNameExists, "interface %q already exists in netns %s", a.ifname, args.Netns)
	} else if !isLinkNotFound(err) {
		return nil, internal(err, "look up %s in %s", a.ifname, args.Netns)
	}
	h, err := netlink.NewHandle(syscall.NETLINK_ROUTE)
	if err != nil {
		return nil, internal(err, "netlink handle")
	}
	defer h.Close()
	r, err := openRtnl()
	if err != nil {
		return nil, internal(err, "netlink socket")
	}
	defer r.Close()
	br, err := ensureBridge(h, conf.Bridge, p.gateway, p.mtu, log)
	if err != nil {
		return nil, err
	}
	if err := enableIPv4Forwarding(); err != nil {
		return nil, err
	}
	alloc, closeStore, err := openAllocator(conf, p.rng)
	if err != nil {
		return nil, err
	}
	defer closeStore()
	if a.ip, err = alloc.Get(a.containerID, a.ifname); err != nil {
		return nil, allocErr(err)
	}
	defer func() {
		if err != nil {
			rollback(h, alloc, a, log)
		}
	}()
	return attach(r, h, br, a, conf, p)
}

// attach creates and configures the veth and builds the result.
func attach(r *rtnl, h *netlink.Handle, br *netlink.Bridge, a *attachment, conf *NetConf, p plan) (*current.Result, error) {
	if err := createVeth(r, h, br, a, p.mtu); err != nil {
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
	// requests queued behind it (100-200 µs at the median on the bench
	// machine); now it runs after them. It also keeps traffic off the pod
	// until the pod side is configured.
	if err := r.upPort(a.hostName, vethAlias(conf.Name, a.containerID, a.ifname), conf.HairpinMode); err != nil {
		return nil, internal(err, "set %s up (hairpin %t)", a.hostName, conf.HairpinMode)
	}
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: br.Name, Mac: br.HardwareAddr.String()},
			{Name: a.hostName, Mac: hostVethMAC(a.containerID, a.ifname).String()},
			{Name: a.ifname, Mac: podVeth.HardwareAddr.String(), Sandbox: a.podNS.Path()},
		},
		IPs: []*current.IPConfig{{
			Address:   ipNet(netipPrefix(a.ip, p.rng.Subnet.Bits())),
			Gateway:   p.gateway.Addr().AsSlice(),
			Interface: current.Int(2),
		}},
		Routes: podRoutes(p, conf.IsDefaultGateway),
		DNS:    conf.DNS,
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
// address. Errors are logged; the ADD error is what the runtime needs.
func rollback(h *netlink.Handle, alloc *ipam.Allocator, a *attachment, log *slogLogger) {
	if l, err := h.LinkByName(a.hostName); err == nil && a.ownVeth {
		if err := ignoreNotFound(h.LinkDel(l)); err != nil {
			log.Error("rollback: delete veth", "veth", a.hostName, "err", err)
		}
	}
	if err := alloc.ReleaseIP(a.containerID, a.ifname, a.ip); err != nil {
		log.Error("rollback: release address", "ip", a.ip.String(), "err", err)
	}
}

// openAllocator opens the disk store of the network and an allocator over rng.
func openAllocator(conf *NetConf, rng ipam.Range) (*ipam.Allocator, func(), error) {
	store, err := ipam.OpenDiskStore(conf.DataDir, conf.Name)
	if err != nil {
		return nil, nil, cniErr(types.ErrIOFailure, "open IPAM store in %s: %v", conf.DataDir, err)
	}
	return ipam.NewAllocator(store, rng), func() { _ = store.Close() }, nil
}

// allocErr maps allocator errors to codes.
func allocErr(err error) error {
	switch {
	case errors.Is(err, ipam.ErrExhausted):
		return cniErr(CodeIPExhausted, "allocate address: %v (release stale reservations with CNI GC or DEL)", err)
	}
	return cniErr(types.ErrIOFailure, "allocate address: %v", err)
}
